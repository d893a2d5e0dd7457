//! `/v1/webhooks`: URLs the application registers for Splice's events. Each delivery is a
//! signed POST, retried with backoff on the job queue, and listed with its attempts.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use splice_domain::{Meta, Secret, Tags, Webhook, now_millis, rfc3339};
use splice_store::JobQuery;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::views;
use crate::worker::DELIVERY_JOB;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    url: String,
    /// Event types to deliver (`identity.needs_reauth`, `install.created`, …); empty: all.
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    tags: Tags,
}

/// Registers a URL; the answer is the only one that shows the signing secret.
pub async fn create_webhook(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    match url::Url::parse(&body.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => {}
        _ => return Err(ApiError::invalid("url must be an absolute http(s) URL")),
    }
    if body.url.len() > 2048 {
        return Err(ApiError::invalid("url is longer than 2048 characters"));
    }
    if let Some(unknown) = body
        .events
        .iter()
        .find(|e| !splice_domain::EVENT_TYPES.contains(&e.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "events: {unknown:?} is not an event type; they are {}",
            splice_domain::EVENT_TYPES.join(", ")
        )));
    }
    let webhook = Webhook {
        id: format!("whk_{}", hex_token()),
        url: body.url,
        events: body.events,
        secret: Secret::new(format!("whsec_{}", splice_crypto::random_token(32))),
        meta: Meta::new(body.tags, now_millis()),
    };
    state.store.create_webhook(&webhook).await?;
    let mut view = webhook_view(&webhook);
    if let Some(map) = view.as_object_mut() {
        map.insert("secret".into(), webhook.secret.expose().into());
    }
    Ok((StatusCode::CREATED, Json(view)))
}

fn hex_token() -> String {
    splice_crypto::sha256_hex(&splice_crypto::random_token(32))[..32].to_owned()
}

pub async fn list_webhooks(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let webhooks = state.store.list_webhooks().await?;
    Ok(Json(views::items(webhooks.iter().map(webhook_view))))
}

pub async fn get_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let webhook = load(&state, &id).await?;
    Ok(Json(webhook_view(&webhook)))
}

pub async fn delete_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !state.store.delete_webhook(&id).await? {
        return Err(ApiError::not_found(format!("webhook {id:?}")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The deliveries of a webhook, newest first, with their attempts.
pub async fn list_deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    load(&state, &id).await?;
    let query = JobQuery {
        kind: Some(DELIVERY_JOB.into()),
        partition: Some(id),
        limit: 200,
        ..Default::default()
    };
    let jobs = state.store.list_jobs(&query).await?;
    Ok(Json(views::items(jobs.iter().map(|job| {
        json!({
            "id": job.id,
            "event": job.payload.get("event").and_then(|e| e.get("id")),
            "type": job.payload.get("event").and_then(|e| e.get("type")),
            "status": job.status.as_str(),
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "next_attempt_at": (job.status == splice_store::JobStatus::Queued).then(|| rfc3339(job.run_at)),
            "last_error": job.last_error,
            "result": job.result,
            "created_at": rfc3339(job.created_at),
            "started_at": job.started_at.map(rfc3339),
        "finished_at": job.finished_at.map(rfc3339),
        })
    }))))
}

async fn load(state: &AppState, id: &str) -> ApiResult<Webhook> {
    state
        .store
        .get_webhook(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("webhook {id:?}")))
}

fn webhook_view(webhook: &Webhook) -> Value {
    json!({
        "id": webhook.id,
        "url": webhook.url,
        "events": webhook.events,
        "tags": webhook.meta.tags,
        "created_at": rfc3339(webhook.meta.created_at),
        "updated_at": rfc3339(webhook.meta.updated_at),
        "version": webhook.meta.version,
    })
}
