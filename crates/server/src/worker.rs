//! Background work on the durable job queue: each node runs a few workers that claim due jobs
//! with a lease, run them, keep the lease alive while they run, and record the outcome —
//! retrying failures with exponential backoff and jitter until the job is dead-lettered.
//!
//! Today the queue carries background tasks (`integration.task`). A local enqueue wakes a
//! worker at once; jobs enqueued on other nodes are found within a second by polling.
//! TODO: wake other nodes through LISTEN/NOTIFY on PostgreSQL.

use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use splice_domain::{Event, IntegrationId, InvocationRecord, now_millis};
use splice_sandbox::{Request, RequestKind};
use splice_store::{Job, JobClaim, retry_delay};
use tracing::Instrument;

use crate::AppState;

/// The kind of a background task job.
pub const TASK_JOB: &str = "integration.task";
const LEASE: Duration = Duration::from_secs(60);
const IDLE_POLL: Duration = Duration::from_secs(1);
const RETRY_BASE: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Starts `count` workers on the current runtime.
pub fn spawn_workers(state: AppState, count: usize) {
    let node = splice_crypto::random_token(6);
    for n in 0..count {
        let worker = format!("{node}-{n}");
        tokio::spawn(run_worker(state.clone(), worker, n == 0));
    }
}

async fn run_worker(state: AppState, worker: String, purges: bool) {
    let mut last_purge = tokio::time::Instant::now();
    loop {
        let claim = JobClaim {
            worker: &worker,
            kinds: &[TASK_JOB],
            limit: 1,
            lease: LEASE,
            max_running_per_partition: None,
            now: now_millis(),
        };
        match state.store.claim_jobs(&claim).await {
            Ok(jobs) if !jobs.is_empty() => {
                for job in jobs {
                    let span = tracing::info_span!(
                        "job", job.id = %job.id, job.kind = %job.kind, attempt = job.attempts
                    );
                    run_job(&state, job).instrument(span).await;
                }
                continue;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "claiming jobs failed"),
        }
        if purges && last_purge.elapsed() > PURGE_EVERY {
            last_purge = tokio::time::Instant::now();
            purge(&state).await;
        }
        // Woken by a local enqueue, or look again after a short while.
        let _ = tokio::time::timeout(IDLE_POLL, state.jobs_ready.notified()).await;
    }
}

async fn purge(state: &AppState) {
    let retention = i64::try_from(state.task_retention.as_millis()).unwrap_or(i64::MAX);
    match state
        .store
        .purge_finished_jobs(now_millis() - retention)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "purged finished jobs"),
        Err(err) => tracing::warn!(error = %err, "purging jobs failed"),
    }
}

/// Runs one claimed job with its lease kept alive, then records the outcome.
async fn run_job(state: &AppState, job: Job) {
    let heartbeat = tokio::spawn(keep_alive(state.clone(), job.clone()));
    let outcome = run_task(state, &job).await;
    heartbeat.abort();

    let now = now_millis();
    let recorded = match &outcome {
        Ok(result) => state.store.complete_job(&job, result, now).await,
        Err(Failure { message, retry }) => {
            let retry_at = (*retry && job.attempts < job.max_attempts).then(|| {
                let jitter = rand::thread_rng().r#gen::<f64>();
                let delay = retry_delay(job.attempts, RETRY_BASE, RETRY_MAX, jitter);
                now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
            });
            state.store.fail_job(&job, message, retry_at, now).await
        }
    };
    match recorded {
        Ok(Some(finished)) => task_event(state, &finished).await,
        // Our lease lapsed and another worker owns the job now: its outcome wins.
        Ok(None) => tracing::warn!("job lease was lost; outcome dropped"),
        Err(err) => tracing::error!(error = %err, "recording a job outcome failed"),
    }
}

async fn keep_alive(state: AppState, job: Job) {
    let mut ticker = tokio::time::interval(LEASE / 3);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match state.store.heartbeat_job(&job, LEASE, now_millis()).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(err) => tracing::warn!(error = %err, "job heartbeat failed"),
        }
    }
}

/// Why a job did not succeed, and whether trying again could help.
struct Failure {
    message: String,
    retry: bool,
}

impl Failure {
    fn final_(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: false,
        }
    }
}

/// Runs an `integration.task` job in the integration's sandbox with the task limits.
async fn run_task(state: &AppState, job: &Job) -> Result<Value, Failure> {
    let integration = job.payload["integration"].as_str().unwrap_or_default();
    let name = job.payload["task"].as_str().unwrap_or_default().to_owned();
    let id = IntegrationId::parse(integration).map_err(|e| Failure::final_(e.to_string()))?;
    let loaded = match state.programs.get(state.store.as_ref(), &id).await {
        Ok(Some(loaded)) => loaded,
        Ok(None) => return Err(Failure::final_(format!("integration {id} was deleted"))),
        Err(err) => {
            return Err(Failure {
                message: err.to_string(),
                retry: true,
            });
        }
    };
    let mut program = loaded.program.clone();
    program.limits.wall_ms = state.task_wall.as_millis().try_into().unwrap_or(u64::MAX);
    let request = Request {
        kind: RequestKind::Task,
        method: "TASK".into(),
        path: name.clone(),
        body: job.payload["payload"].to_string().into(),
        ..Request::default()
    };

    let started_at = now_millis();
    let invocation = state.engine.invoke(&program, request).await;
    let (status, outcome) = match invocation.result {
        Ok(response) if (200..300).contains(&response.status) => {
            let result = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
            (response.status, Ok(result))
        }
        // The handler is missing: retrying the same code cannot help.
        Ok(response) => {
            let body = String::from_utf8_lossy(&response.body).into_owned();
            (response.status, Err(Failure::final_(body)))
        }
        Err(err) => (
            500,
            Err(Failure {
                message: err.to_string(),
                retry: true,
            }),
        ),
    };
    state.recorder.record(InvocationRecord {
        integration: id,
        install: None,
        at: started_at,
        method: "TASK".into(),
        path: format!("/{name}"),
        status,
        duration_us: i64::try_from(invocation.duration.as_micros()).unwrap_or(i64::MAX),
        error: outcome.as_ref().err().map(|f| f.message.clone()),
        logs: Value::Array(invocation.logs.iter().map(|line| json!(line)).collect()),
    });
    outcome
}

/// Records `task.finished` or `task.failed` when a task job reaches its end.
async fn task_event(state: &AppState, job: &Job) {
    let kind = match job.status {
        splice_store::JobStatus::Succeeded => "task.finished",
        splice_store::JobStatus::Failed => "task.failed",
        _ => return,
    };
    let data = json!({
        "integration": job.payload["integration"],
        "task": job.payload["task"],
        "attempts": job.attempts,
        "error": job.last_error,
    });
    if let Err(err) = state
        .store
        .record_event(&Event::new(kind, None, &job.id, data))
        .await
    {
        tracing::warn!(error = %err, "could not record a task event");
    }
}
