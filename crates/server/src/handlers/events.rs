//! `/v1/events`: what happened to identities, connectors and installs, for the application.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use splice_domain::{TenantId, rfc3339};
use splice_store::EventQuery;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
use crate::views;

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// `?type=`, `?tenant=`, `?subject=`, `?limit=`; newest first, or oldest first after the
/// `?after=evt_…` cursor (for polling).
pub async fn list_events(
    State(state): State<AppState>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    let limit = match query.get("limit") {
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::invalid(format!("limit must be 1-{MAX_LIMIT}")))?,
        None => DEFAULT_LIMIT,
    };
    let filter = EventQuery {
        kind: query.get("type").map(str::to_owned),
        tenant: query.get("tenant").map(TenantId::parse).transpose()?,
        subject: query.get("subject").map(str::to_owned),
        after: query.get("after").map(str::to_owned),
        limit,
    };
    let events = state.store.list_events(&filter).await?;
    Ok(Json(views::items(events.iter().map(|event| {
        json!({
            "id": event.id,
            "type": event.kind,
            "at": rfc3339(event.at),
            "tenant": event.tenant,
            "subject": event.subject,
            "data": event.data,
        })
    }))))
}
