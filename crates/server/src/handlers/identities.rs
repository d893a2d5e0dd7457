//! `/v1/connectors/{id}/identities`: list, read and delete identities, and hand the
//! application a fresh access token.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use splice_domain::{Identity, IdentityId, rfc3339};

use super::{connector_id, list_filters};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
use crate::views;

pub async fn list_identities(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    let id = connector_id(&id)?;
    let (tenant, tags) = list_filters(&query)?;
    if state.store.get_connector(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("connector {id}")));
    }
    let identities = state
        .store
        .list_identities(&id, tenant.as_ref(), &tags)
        .await?;
    Ok(Json(views::items(identities.iter().map(views::identity))))
}

pub async fn get_identity(
    State(state): State<AppState>,
    Path((connector, identity)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let identity = load(&state, &connector, &identity).await?;
    Ok(Json(views::identity(&identity)))
}

pub async fn delete_identity(
    State(state): State<AppState>,
    Path((connector, identity)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let identity = load(&state, &connector, &identity).await?;
    state.store.delete_identity(&identity.id).await?;
    tracing::info!(identity.id = %identity.id, "identity deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// The one endpoint that returns a token: fresh, refreshed first when near expiry.
pub async fn get_token(
    State(state): State<AppState>,
    Path((connector, identity)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let identity = load(&state, &connector, &identity).await?;
    let fresh = state.tokens.access_token(&identity.id, false).await?;
    Ok(Json(json!({
        "access_token": fresh.tokens.access_token.expose(),
        "token_type": "Bearer",
        "expires_at": fresh.tokens.expires_at.map(rfc3339),
        "scopes": fresh.tokens.scopes,
    })))
}

async fn load(state: &AppState, connector: &str, identity: &str) -> ApiResult<Identity> {
    let not_found = || ApiError::not_found(format!("identity {identity:?}"));
    let connector = connector_id(connector)?;
    let id = IdentityId::parse(identity).map_err(|_| not_found())?;
    let identity = state.store.get_identity(&id).await?;
    identity
        .filter(|i| i.connector == connector)
        .ok_or_else(not_found)
}
