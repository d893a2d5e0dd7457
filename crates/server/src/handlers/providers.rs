//! `/v1/providers`: the provider catalog, with the settings each entry needs.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::views;

pub async fn list_providers(State(state): State<AppState>) -> Json<Value> {
    let summaries = state.credentials.catalog().summaries();
    Json(views::items(summaries.iter().map(|s| json!(s))))
}

pub async fn get_provider(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let provider = state
        .credentials
        .catalog()
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("provider {name:?}")))?;
    Ok(Json(json!(provider.summary())))
}
