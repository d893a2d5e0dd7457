//! Liveness, readiness, and the answer for routes that do not exist.

use axum::Json;
use axum::http::Uri;
use serde_json::{Value, json};

use crate::error::ApiError;

/// `GET /health`: the process is up and serving.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

/// `GET /ready`: the node can serve requests (its database answers).
pub async fn ready(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the database does not answer",
        )
    })?;
    Ok(Json(json!({"status": "ready"})))
}

pub async fn unknown_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!("route {}", uri.path()))
}
