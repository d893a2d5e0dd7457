//! `/v1/integrations/{id}/installs`: find installs by tenant and tags, read and delete them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;
use splice_domain::{Install, InstallId};

use super::{integration_id, list_filters};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
use crate::views;

/// `?tenant=` and repeated `?tag=key=value` (all must match).
pub async fn list_installs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    let id = integration_id(&id)?;
    let (tenant, tags) = list_filters(&query)?;
    if state.store.get_integration(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("integration {id}")));
    }
    let installs = state
        .store
        .list_installs(&id, tenant.as_ref(), &tags)
        .await?;
    Ok(Json(views::items(installs.iter().map(views::install))))
}

pub async fn get_install(
    State(state): State<AppState>,
    Path((id, install)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let install = load(&state, &id, &install).await?;
    Ok(Json(views::install(&install)))
}

pub async fn delete_install(
    State(state): State<AppState>,
    Path((id, install)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let install = load(&state, &id, &install).await?;
    state.store.delete_install(&install.id).await?;
    tracing::info!(install.id = %install.id, "install deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn load(state: &AppState, integration: &str, install: &str) -> ApiResult<Install> {
    let not_found = || ApiError::not_found(format!("install {install:?}"));
    let integration = integration_id(integration)?;
    let id = InstallId::parse(install).map_err(|_| not_found())?;
    let install = state.store.get_install(&id).await?;
    install
        .filter(|i| i.integration == integration)
        .ok_or_else(not_found)
}
