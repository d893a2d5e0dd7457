//! Background work on the durable job queue: each node has `queue_workers` slots; one claim
//! loop takes as many due jobs as there are free slots in a single statement, under a lease,
//! and runs each on its own task, which keeps the lease alive and records the outcome —
//! retrying failures with exponential backoff and jitter until the job is dead-lettered.
//!
//! Job kinds: background tasks (`integration.task`), incoming provider webhooks
//! (`webhook.event`: routed to every install whose identities carry the event's provider
//! account id, one `integration.event` job per install), and event handler runs
//! (`integration.event`), schedule firings (`integration.cron`) and deliveries to the
//! application's webhooks (`webhook.delivery`). A local enqueue wakes the claim loop at once;
//! on PostgreSQL it is also announced to the other nodes (`NOTIFY`), whose listeners wake
//! theirs. Polling (every second by default) remains as the fallback for a lost announcement.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::Rng;
use serde_json::{Value, json};
use splice_domain::{ConnectorId, Event, IntegrationId, InvocationRecord, Millis, now_millis};
use splice_sandbox::{Request, RequestKind};
use splice_store::{
    Announcement, Job, JobClaim, JobOutcome, NewJob, Store, StoreError, retry_delay,
};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::AppState;
use crate::batch::Write;

/// The kind of a background task job.
pub const TASK_JOB: &str = "integration.task";
/// A verified provider webhook, waiting to be routed to installs.
pub const WEBHOOK_JOB: &str = "webhook.event";
/// One provider event for one install's event handler.
pub const EVENT_JOB: &str = "integration.event";
/// One firing of a schedule (for the integration, or one install).
pub const CRON_JOB: &str = "integration.cron";
/// One signed delivery of an event to a webhook the application registered.
pub const DELIVERY_JOB: &str = "webhook.delivery";
const KINDS: &[&str] = &[TASK_JOB, WEBHOOK_JOB, EVENT_JOB, CRON_JOB, DELIVERY_JOB];
const DELIVERY_ATTEMPTS: u32 = 8;
/// The header carrying `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "splice-signature";
const IDLE_POLL: Duration = Duration::from_secs(1);
const RETRY_BASE: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);
const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// A background task to queue, from the API or from integration code.
pub struct NewTask {
    pub integration: IntegrationId,
    pub name: String,
    pub payload: Value,
    pub run_at: splice_domain::Millis,
    pub max_attempts: u32,
    /// Starting the same task twice with one key queues it once.
    pub idempotency_key: Option<String>,
}

/// Attempts of a task unless its starter says otherwise.
pub const DEFAULT_TASK_ATTEMPTS: u32 = 3;

/// Task names are 1-128 characters.
pub fn check_task_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 128 {
        return Err("task names are 1-128 characters");
    }
    Ok(())
}

/// Queues a task (once per idempotency key) and wakes the workers.
pub async fn enqueue_task(
    enqueuer: &crate::batch::Enqueuer,
    signals: &JobSignals,
    task: NewTask,
) -> Result<Job, splice_store::StoreError> {
    let id = task.integration;
    let payload = json!({"integration": id, "task": task.name, "payload": task.payload});
    let mut job = NewJob::new(TASK_JOB, payload, task.run_at);
    job.partition = Some(id.to_string());
    job.max_attempts = task.max_attempts;
    job.idempotency_key = task.idempotency_key.map(|key| format!("task:{id}:{key}"));
    let (stored, _) = enqueuer.enqueue(job).await?;
    signals.enqueued();
    Ok(stored)
}

/// Wakes workers when jobs are enqueued: here through `ready`, on other nodes through the
/// announcer.
#[derive(Default)]
pub struct JobSignals {
    ready: tokio::sync::Notify,
    announce: tokio::sync::Notify,
    /// This node's job slots, once the runner started.
    slots: OnceLock<Slots>,
    stopping: AtomicBool,
}

impl JobSignals {
    /// Jobs were committed: wake one local worker at once, and have the announcer tell the
    /// other nodes (it coalesces a burst into a few announcements).
    pub fn enqueued(&self) {
        self.ready.notify_one();
        self.announce.notify_one();
    }
}

/// Where the store can announce to other nodes (PostgreSQL), listens: enqueued jobs wake the
/// claim loop, deploys drop stale programs. Sends this node's job announcements too.
///
/// While the listener is down, announcements may be missed: the program cache goes back to
/// checking versions, and a ping (`"*"`) every second tells when the listener hears again.
pub fn spawn_announcements(state: AppState) {
    tokio::spawn(async move {
        let mut listener = loop {
            match state.store.listen().await {
                Ok(Some(listener)) => break listener,
                Ok(None) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "listening for announcements failed; retrying")
                }
            }
            tokio::time::sleep(IDLE_POLL).await;
        };
        let announcer = state.clone();
        tokio::spawn(async move {
            loop {
                announcer.jobs.announce.notified().await;
                if let Err(err) = announcer.store.announce_jobs().await {
                    tracing::warn!(error = %err, "announcing jobs failed");
                }
            }
        });
        state.programs.set_listening(true);
        loop {
            match listener.next().await {
                Ok(Announcement::Jobs) => state.jobs.ready.notify_one(),
                Ok(Announcement::Deployed(what)) => {
                    state.programs.announced(&what);
                    state.connector_users.clear();
                    if !state.programs.is_listening() {
                        state.programs.set_listening(true);
                        tracing::info!("announcements heard again");
                    }
                }
                Ok(Announcement::Lost) => deaf(&state),
                Err(err) => {
                    tracing::warn!(error = %err, "announcements lost; reconnecting");
                    deaf(&state);
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
        }
    });
}

/// The listener may have missed announcements: check versions again, and ping until it hears.
fn deaf(state: &AppState) {
    if !state.programs.is_listening() {
        return;
    }
    state.programs.set_listening(false);
    let state = state.clone();
    tokio::spawn(async move {
        while !state.programs.is_listening() {
            tokio::time::sleep(IDLE_POLL).await;
            if let Err(err) = state.store.announce_deploy("*").await {
                tracing::debug!(error = %err, "announcement ping failed");
            }
        }
    });
}

/// A node's job slots: `run` is taken while a job runs, `recording` while its outcome waits to
/// be written. A job frees its slot as soon as its outcome is queued for writing, so the next
/// claim does not wait for the write; `recording` (twice the slots) bounds how many outcomes
/// may wait.
struct Slots {
    run: Arc<Semaphore>,
    recording: Arc<Semaphore>,
    count: usize,
}

/// Starts this node's job runner: one claim loop that takes as many due jobs as it has free
/// slots (`count`) in one claim, and runs each on its own task.
pub fn spawn_workers(state: AppState, count: usize) {
    if count == 0 {
        return;
    }
    let slots = Slots {
        run: Arc::new(Semaphore::new(count)),
        recording: Arc::new(Semaphore::new(count * 2)),
        count,
    };
    let (run, recording) = (slots.run.clone(), slots.recording.clone());
    if state.jobs.slots.set(slots).is_err() {
        tracing::error!("job workers were started twice");
        return;
    }
    let node = format!("node-{}", splice_crypto::random_token(6));
    tokio::spawn(claim_loop(state, node, run, recording));
}

async fn claim_loop(
    state: AppState,
    node: String,
    slots: Arc<Semaphore>,
    recording: Arc<Semaphore>,
) {
    let mut last_purge = tokio::time::Instant::now();
    loop {
        // Wait for a free slot, then take every other free one.
        let Ok(first) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        if state.jobs.stopping.load(Ordering::SeqCst) {
            return;
        }
        let claim = JobClaim {
            worker: &node,
            kinds: KINDS,
            limit: u32::try_from(permits.len()).unwrap_or(u32::MAX),
            lease: state.queue_lease,
            max_running_per_partition: state.queue_max_running,
            now: now_millis(),
        };
        let wanted = permits.len();
        match state.store.claim_jobs(&claim).await {
            Ok(jobs) => {
                let claimed = jobs.len();
                for (job, permit) in jobs.into_iter().zip(permits.drain(..)) {
                    let span = tracing::info_span!(
                        "job", job.id = %job.id, job.kind = %job.kind, attempt = job.attempts
                    );
                    let (state, recording) = (state.clone(), recording.clone());
                    tokio::spawn(
                        async move {
                            let finished = run_job(&state, &job).await;
                            let Ok(waiting) = recording.acquire_owned().await else {
                                return;
                            };
                            drop(permit);
                            record_outcome(&state, job, finished).await;
                            drop(waiting);
                        }
                        .instrument(span),
                    );
                }
                drop(permits);
                if claimed == wanted {
                    // Every slot got a job: more may be due.
                    continue;
                }
            }
            Err(err) => {
                drop(permits);
                tracing::warn!(error = %err, "claiming jobs failed");
            }
        }
        if last_purge.elapsed() > PURGE_EVERY {
            last_purge = tokio::time::Instant::now();
            purge(&state).await;
        }
        // Woken by an enqueue (here or announced by another node), or look again later.
        let _ = tokio::time::timeout(state.queue_poll, state.jobs.ready.notified()).await;
    }
}

/// Stops claiming jobs and waits up to `grace` for the running ones to finish; a job still
/// running after that runs again elsewhere once its lease lapses.
pub async fn stop_workers(state: &AppState, grace: Duration) {
    let Some(slots) = state.jobs.slots.get() else {
        return;
    };
    state.jobs.stopping.store(true, Ordering::SeqCst);
    state.jobs.ready.notify_one();
    let all = u32::try_from(slots.count).unwrap_or(u32::MAX);
    let idle = async {
        let run = slots.run.acquire_many(all).await;
        let recorded = slots.recording.acquire_many(all.saturating_mul(2)).await;
        (run, recorded)
    };
    match tokio::time::timeout(grace, idle).await {
        Ok((Ok(run), Ok(recorded))) => {
            run.forget();
            recorded.forget();
        }
        Ok(_) => {}
        Err(_) => {
            tracing::warn!("jobs still running at shutdown; they run again after their lease")
        }
    }
    slots.run.close();
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

/// Runs one claimed job with its lease kept alive, and says what it came to.
async fn run_job(state: &AppState, job: &Job) -> Finished {
    let heartbeat = tokio::spawn(keep_alive(state.clone(), job.clone()));
    let outcome = match job.kind.as_str() {
        TASK_JOB => run_task(state, job).await,
        WEBHOOK_JOB => route_webhook(state, job).await,
        EVENT_JOB => run_event(state, job).await,
        CRON_JOB => run_cron(state, job).await,
        DELIVERY_JOB => deliver(state, job).await,
        other => Err(Failure::final_(format!("unknown job kind {other:?}"))),
    };
    heartbeat.abort();

    match outcome {
        Ok(result) => Finished::Succeeded(result),
        Err(Failure { message, retry }) => {
            let retry_at = (retry && job.attempts < job.max_attempts).then(|| {
                let jitter = rand::thread_rng().r#gen::<f64>();
                let delay = retry_delay(job.attempts, RETRY_BASE, RETRY_MAX, jitter);
                now_millis() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
            });
            Finished::Failed { message, retry_at }
        }
    }
}

/// Writes a run's outcome (with the next batch), unless the run lost its job.
async fn record_outcome(state: &AppState, job: Job, finished: Finished) {
    match state.outcomes.submit((job, finished)).await {
        Ok(Some(_)) => {}
        // Our lease lapsed and another worker owns the job now: its outcome wins.
        Ok(None) => tracing::warn!("job lease was lost; outcome dropped"),
        Err(err) => tracing::error!(error = %err, "recording a job outcome failed"),
    }
}

/// What a run came to.
pub enum Finished {
    Succeeded(Value),
    /// Queued again for `retry_at` while attempts are left, otherwise dead-lettered.
    Failed {
        message: String,
        retry_at: Option<Millis>,
    },
}

impl Finished {
    fn outcome(&self) -> JobOutcome<'_> {
        match self {
            Finished::Succeeded(result) => JobOutcome::Succeeded(result),
            Finished::Failed { message, retry_at } => JobOutcome::Failed {
                error: message,
                retry_at: *retry_at,
            },
        }
    }
}

/// Records the outcomes of runs that finish together in one transaction, each with the event
/// it means for the application ([`finished_event`]).
pub struct OutcomeWrites(pub Arc<dyn Store>);

impl Write for OutcomeWrites {
    type Item = (Job, Finished);
    type Output = Option<Job>;
    /// One: outcomes that come while a batch is written make the next one bigger.
    const WRITERS: usize = 1;

    async fn write(&self, runs: Vec<(Job, Finished)>) -> Vec<Result<Option<Job>, StoreError>> {
        let store = self.0.as_ref();
        let outcomes: Vec<(&Job, JobOutcome<'_>)> = runs
            .iter()
            .map(|(job, done)| (job, done.outcome()))
            .collect();
        match store
            .finish_jobs(&outcomes, now_millis(), &finished_event)
            .await
        {
            Ok(finished) => finished.into_iter().map(Ok).collect(),
            // One bad outcome must not lose the others: each is written alone.
            Err(err) => {
                tracing::warn!(error = %err, jobs = runs.len(), "batch of outcomes failed; writing one by one");
                let mut answers = Vec::with_capacity(outcomes.len());
                for run in &outcomes {
                    let alone = store
                        .finish_jobs(std::slice::from_ref(run), now_millis(), &finished_event)
                        .await;
                    answers.push(alone.map(|mut one| one.pop().flatten()));
                }
                answers
            }
        }
    }
}

async fn keep_alive(state: AppState, job: Job) {
    let lease = state.queue_lease;
    let mut ticker = tokio::time::interval(lease / 3);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        match state.store.heartbeat_job(&job, lease, now_millis()).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(err) => tracing::warn!(error = %err, "job heartbeat failed"),
        }
    }
}

/// How long the integrations using a connector are remembered (see [`crate::recent`]).
pub const CONNECTOR_USERS_TTL: Duration = Duration::from_secs(1);

/// The integrations that declare each connector, and the name each gives it.
pub type ConnectorUsers = crate::recent::Recent<ConnectorId, Arc<Vec<(IntegrationId, String)>>>;

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
    let name = job.payload["task"].as_str().unwrap_or_default().to_owned();
    let request = Request {
        kind: RequestKind::Task,
        method: "TASK".into(),
        path: name,
        body: job.payload["payload"].to_string().into(),
        ..Request::default()
    };
    let response = invoke(state, job, request, None, Unhandled::Record).await?;
    if !(200..300).contains(&response.status) {
        // The handler is missing: retrying the same code cannot help.
        let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        let message = match (
            answer["error"]["code"].as_str(),
            answer["error"]["message"].as_str(),
        ) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            _ => String::from_utf8_lossy(&response.body).into_owned(),
        };
        return Err(Failure::final_(message));
    }
    Ok(serde_json::from_slice(&response.body).unwrap_or(Value::Null))
}

/// Routes a verified webhook: one `integration.event` job per install whose identities on the
/// connector carry one of the event's provider account ids.
async fn route_webhook(state: &AppState, job: &Job) -> Result<Value, Failure> {
    let store_error = |e: splice_store::StoreError| Failure {
        message: e.to_string(),
        retry: true,
    };
    let connector = job.payload["connector"].as_str().unwrap_or_default();
    let connector = ConnectorId::parse(connector).map_err(|e| Failure::final_(e.to_string()))?;
    let accounts: Vec<&str> = job.payload["account_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();

    let identities = state
        .store
        .identities_with_subjects(&connector, &accounts)
        .await
        .map_err(store_error)?;
    let mut routed = Vec::new();
    for identity in &identities {
        for install_id in state
            .store
            .installs_using(identity)
            .await
            .map_err(store_error)?
        {
            let Some(install) = state
                .store
                .get_install(&install_id)
                .await
                .map_err(store_error)?
            else {
                continue;
            };
            let Some(name) = install
                .identities
                .iter()
                .find(|(_, id)| *id == identity)
                .map(|(name, _)| name.clone())
            else {
                continue;
            };
            let target = EventTarget {
                integration: &install.integration,
                install: Some(install.id.as_str()),
                name: &name,
            };
            enqueue_event(state, job, &target)
                .await
                .map_err(store_error)?;
            routed.push(install.id.to_string());
        }
    }
    if !routed.is_empty() {
        state.jobs_enqueued();
        return Ok(json!({ "installs": routed }));
    }

    // No install matched: integrations using the connector may handle it as unmatched.
    let mut unmatched = Vec::new();
    let using = match state.connector_users.get(&connector) {
        Some(using) => using,
        None => {
            let using = Arc::new(
                state
                    .store
                    .integrations_using(&connector)
                    .await
                    .map_err(store_error)?,
            );
            state.connector_users.put(connector.clone(), using.clone());
            using
        }
    };
    for (integration, name) in using.iter() {
        let target = EventTarget {
            integration,
            install: None,
            name,
        };
        enqueue_event(state, job, &target)
            .await
            .map_err(store_error)?;
        unmatched.push(integration.to_string());
    }
    if unmatched.is_empty() {
        tracing::info!(connector.id = %connector, event = %job.payload["type"], "webhook matched no install or integration; dropped");
    } else {
        state.jobs_enqueued();
    }
    Ok(json!({ "installs": routed, "unmatched": unmatched }))
}

/// Where one provider event goes: an install's handler, or (no install) the integration's
/// handler for unmatched events; `name` is the connector's name in that integration's code.
struct EventTarget<'a> {
    integration: &'a IntegrationId,
    install: Option<&'a str>,
    name: &'a str,
}

/// Queues one `integration.event` job for a routed webhook, once per webhook and target.
async fn enqueue_event(
    state: &AppState,
    webhook: &Job,
    target: &EventTarget<'_>,
) -> Result<(), splice_store::StoreError> {
    let payload = json!({
        "integration": target.integration,
        "install": target.install,
        "unmatched": target.install.is_none(),
        "name": target.name,
        "type": webhook.payload["type"],
        "event": webhook.payload["event"],
    });
    let mut event = NewJob::new(EVENT_JOB, payload, now_millis());
    event.partition = Some(target.integration.to_string());
    let scope = target.install.unwrap_or(target.integration.as_str());
    event.idempotency_key = Some(format!("event:{}:{scope}", webhook.id));
    state.store.enqueue_job(&event, now_millis()).await?;
    Ok(())
}

/// Runs an install's event handler for one provider event.
///
/// An event no install matched runs the integration's `unmatched` handler, without an install.
async fn run_event(state: &AppState, job: &Job) -> Result<Value, Failure> {
    let install = job.payload["install"].as_str().map(str::to_owned);
    let path = format!(
        "{}:{}",
        job.payload["name"].as_str().unwrap_or_default(),
        job.payload["type"].as_str().unwrap_or_default()
    );
    let mut headers: Vec<(String, String)> = install
        .iter()
        .map(|i| ("x-splice-install".to_owned(), i.clone()))
        .collect();
    if job.payload["unmatched"] == true {
        headers.push(("x-splice-unmatched".into(), "1".into()));
    }
    let request = Request {
        kind: RequestKind::Event,
        method: "EVENT".into(),
        path,
        headers,
        body: job.payload["event"].to_string().into(),
        ..Request::default()
    };
    let unhandled = if job.payload["unmatched"] == true {
        Unhandled::Quiet
    } else {
        Unhandled::Record
    };
    let response = invoke(state, job, request, install, unhandled).await?;
    // No handler for this event type: nothing to do, nothing to retry.
    Ok(json!({ "handled": response.status != 404 }))
}

/// Runs a schedule's handler for one firing.
async fn run_cron(state: &AppState, job: &Job) -> Result<Value, Failure> {
    let install = job.payload["install"].as_str().map(str::to_owned);
    let request = Request {
        kind: RequestKind::Cron,
        method: "CRON".into(),
        path: job.payload["schedule"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        headers: install
            .iter()
            .map(|i| ("x-splice-install".to_owned(), i.clone()))
            .collect(),
        body: json!({ "slot": job.payload["slot"] }).to_string().into(),
        ..Request::default()
    };
    let response = invoke(state, job, request, install, Unhandled::Record).await?;
    Ok(json!({ "handled": response.status != 404 }))
}

/// Whether a run that found no handler (404) goes into the invocation log.
#[derive(PartialEq)]
enum Unhandled {
    Record,
    /// For events no install matched: most integrations declare no handler for those.
    Quiet,
}

/// Runs a background invocation with the task limits and records it in the invocation log.
///
/// The handler sees the job's id and attempt (`ctx.job`), so the effects of a run repeated
/// after a crash can be recognised.
async fn invoke(
    state: &AppState,
    job: &Job,
    mut request: Request,
    install: Option<String>,
    unhandled: Unhandled,
) -> Result<splice_sandbox::Response, Failure> {
    request
        .headers
        .push(("x-splice-job".into(), job.id.clone()));
    request
        .headers
        .push(("x-splice-attempt".into(), job.attempts.to_string()));
    let id = IntegrationId::parse(job.payload["integration"].as_str().unwrap_or_default())
        .map_err(|e| Failure::final_(e.to_string()))?;
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
    let (method, path) = (request.method.clone(), format!("/{}", request.path));

    let started_at = now_millis();
    let invocation = state.engine.invoke(&program, request).await;
    let (status, outcome) = match invocation.result {
        Ok(response) => (response.status, Ok(response)),
        Err(err) => (
            500,
            Err(Failure {
                message: err.to_string(),
                retry: true,
            }),
        ),
    };
    if status == 404 && unhandled == Unhandled::Quiet {
        return outcome;
    }
    state.recorder.record(InvocationRecord {
        integration: id,
        install,
        at: started_at,
        method,
        path,
        status,
        duration_us: i64::try_from(invocation.duration.as_micros()).unwrap_or(i64::MAX),
        error: outcome.as_ref().err().map(|f| f.message.clone()),
        logs: Value::Array(invocation.logs.iter().map(|line| json!(line)).collect()),
    });
    outcome
}

/// What a finished job means for the application: `task.finished` or `task.failed` for
/// tasks, `job.dead_lettered` for any other job (but deliveries) out of attempts.
fn finished_event(job: &Job) -> Option<Event> {
    let failed = job.status == splice_store::JobStatus::Failed;
    let kind = match (job.kind.as_str(), job.status) {
        (TASK_JOB, splice_store::JobStatus::Succeeded) => "task.finished",
        (TASK_JOB, splice_store::JobStatus::Failed) => "task.failed",
        (DELIVERY_JOB, _) => return None,
        (_, _) if failed => "job.dead_lettered",
        _ => return None,
    };
    let data = json!({
        "kind": job.kind,
        "integration": job.payload.get("integration"),
        "task": job.payload.get("task"),
        "attempts": job.attempts,
        "error": job.last_error,
    });
    Some(Event::new(kind, None, &job.id, data))
}

/// Signs and POSTs one event to one registered webhook; anything but a 2xx is retried.
async fn deliver(state: &AppState, job: &Job) -> Result<Value, Failure> {
    let id = job.payload["webhook"].as_str().unwrap_or_default();
    let webhook = match state.store.get_webhook(id).await {
        Ok(Some(webhook)) => webhook,
        Ok(None) => return Err(Failure::final_("the webhook was deleted")),
        Err(err) => {
            return Err(Failure {
                message: err.to_string(),
                retry: true,
            });
        }
    };
    let body = job.payload["event"].to_string();
    let timestamp = now_millis() / 1000;
    let signature = sign(webhook.secret.expose(), timestamp, &body);
    let request = splice_sandbox::FetchRequest {
        method: "POST".into(),
        url: webhook.url.clone(),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (
                SIGNATURE_HEADER.into(),
                format!("t={timestamp},v1={signature}"),
            ),
            (
                "splice-event-id".into(),
                job.payload["event"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
            ),
        ],
        body: Some(body.into()),
        connector: None,
    };
    match state.outbound.send(request).await {
        Ok(answer) if (200..300).contains(&answer.status) => Ok(json!({ "status": answer.status })),
        Ok(answer) => Err(Failure {
            message: format!("HTTP {}", answer.status),
            retry: true,
        }),
        Err(err) => Err(Failure {
            message: err.message,
            retry: true,
        }),
    }
}

/// Hex HMAC-SHA256 of `"<timestamp>.<body>"` under the webhook's secret.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("{timestamp}.{body}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Turns new events into deliveries: one job per (event, matching webhook), keyed so that
/// every node may do this and each delivery still exists once. Webhooks get the events that
/// happened after they were registered.
pub fn spawn_dispatcher(state: AppState) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(IDLE_POLL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(err) = dispatch_events(&state).await {
                tracing::warn!(error = %err, "event dispatch failed");
            }
        }
    });
}

async fn dispatch_events(state: &AppState) -> Result<(), splice_store::StoreError> {
    let webhooks = state.store.list_webhooks().await?;
    if webhooks.is_empty() {
        return Ok(());
    }
    let cursor = state.store.delivery_cursor().await?.unwrap_or_default();
    let query = splice_store::EventQuery {
        after: Some(cursor),
        limit: 200,
        ..Default::default()
    };
    let events = state.store.list_events(&query).await?;
    for event in &events {
        for webhook in &webhooks {
            let wanted = webhook.events.is_empty() || webhook.events.contains(&event.kind);
            if !wanted || event.at < webhook.meta.created_at {
                continue;
            }
            let payload = json!({
                "webhook": webhook.id,
                "event": {
                    "id": event.id,
                    "type": event.kind,
                    "at": splice_domain::rfc3339(event.at),
                    "tenant": event.tenant,
                    "subject": event.subject,
                    "data": event.data,
                },
            });
            let mut job = NewJob::new(DELIVERY_JOB, payload, now_millis());
            job.partition = Some(webhook.id.clone());
            job.max_attempts = DELIVERY_ATTEMPTS;
            job.idempotency_key = Some(format!("delivery:{}:{}", event.id, webhook.id));
            state.store.enqueue_job(&job, now_millis()).await?;
        }
    }
    if let Some(last) = events.last() {
        state.store.set_delivery_cursor(last.id.as_str()).await?;
        state.jobs_enqueued();
    }
    Ok(())
}
