//! Background tasks and the job queue: `POST /v1/integrations/{id}/tasks/{name}` queues a run of
//! the integration's task handler and answers 202 with a status URL; `/v1/jobs` lists jobs
//! (dead letters with `?status=failed`) and replays them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use splice_domain::{now_millis, parse_rfc3339, rfc3339};
use splice_store::{Job, JobQuery, JobStatus};

use super::integration_id;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, QueryPairs};
use crate::views;
use crate::worker::{DEFAULT_TASK_ATTEMPTS, NewTask, check_task_name, enqueue_task};

const MAX_ATTEMPTS: u32 = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartTask {
    /// Handed to the handler as `ctx.payload`.
    #[serde(default)]
    payload: Value,
    /// Do not start before this time (RFC 3339).
    not_before: Option<String>,
    max_attempts: Option<u32>,
    /// Starting the same task twice with one key queues it once.
    idempotency_key: Option<String>,
}

pub async fn start_task(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<StartTask>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = integration_id(&id)?;
    // From the program cache: on a busy queue this is asked once per task.
    if state
        .programs
        .get(state.store.as_ref(), &id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(format!("integration {id}")));
    }
    check_task_name(&name).map_err(ApiError::invalid)?;
    let now = now_millis();
    let run_at = match &body.not_before {
        Some(raw) => parse_rfc3339(raw)
            .ok_or_else(|| ApiError::invalid("not_before must be an RFC 3339 time"))?
            .max(now),
        None => now,
    };
    let max_attempts = body.max_attempts.unwrap_or(DEFAULT_TASK_ATTEMPTS);
    if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
        return Err(ApiError::invalid(format!(
            "max_attempts must be 1-{MAX_ATTEMPTS}"
        )));
    }
    let task = NewTask {
        integration: id,
        name,
        payload: body.payload,
        run_at,
        max_attempts,
        idempotency_key: body.idempotency_key,
    };
    let stored = enqueue_task(&state.enqueuer, &state.jobs, task).await?;
    Ok((StatusCode::ACCEPTED, Json(job_view(&state, &stored))))
}

/// `GET /v1/tasks/{id}` (and `/v1/jobs/{id}`): where a job is.
pub async fn get_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let job = state
        .store
        .get_job(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("job {id:?}")))?;
    Ok(Json(job_view(&state, &job)))
}

/// `GET /v1/jobs?status=failed&kind=…&limit=…`, newest first.
pub async fn list_jobs(State(state): State<AppState>, query: QueryPairs) -> ApiResult<Json<Value>> {
    let status = query
        .get("status")
        .map(|s| {
            JobStatus::parse(s).ok_or_else(|| ApiError::invalid(format!("unknown status {s:?}")))
        })
        .transpose()?;
    let limit = match query.get("limit") {
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ApiError::invalid("limit must be 1-500"))?,
        None => 50,
    };
    let filter = JobQuery {
        status,
        kind: query.get("kind").map(str::to_owned),
        partition: query.get("integration").map(str::to_owned),
        limit,
    };
    let jobs = state.store.list_jobs(&filter).await?;
    Ok(Json(views::items(
        jobs.iter().map(|job| job_view(&state, job)),
    )))
}

/// `POST /v1/jobs/{id}/replay`: a dead letter (or cancelled job) runs again from scratch.
pub async fn replay_job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    if state.store.get_job(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("job {id:?}")));
    }
    let job = state
        .store
        .replay_job(&id, now_millis())
        .await?
        .ok_or_else(|| ApiError::conflict("only failed or cancelled jobs can be replayed"))?;
    state.jobs_enqueued();
    Ok(Json(job_view(&state, &job)))
}

fn job_view(state: &AppState, job: &Job) -> Value {
    json!({
        "id": job.id,
        "kind": job.kind,
        "integration": job.payload.get("integration"),
        "task": job.payload.get("task"),
        "status": job.status.as_str(),
        "status_url": format!("{}/v1/tasks/{}", state.public_base(), job.id),
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "run_at": rfc3339(job.run_at),
        "result": job.result,
        "error": job.last_error,
        "created_at": rfc3339(job.created_at),
        "updated_at": rfc3339(job.updated_at),
        "started_at": job.started_at.map(rfc3339),
        "finished_at": job.finished_at.map(rfc3339),
    })
}
