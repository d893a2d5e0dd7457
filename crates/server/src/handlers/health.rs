//! Liveness, and the answer for routes that do not exist.

use axum::Json;
use axum::http::Uri;
use serde_json::{Value, json};

use crate::error::ApiError;

/// `GET /health`: the process is up and serving.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

pub async fn unknown_route(uri: Uri) -> ApiError {
    ApiError::not_found(format!("route {}", uri.path()))
}
