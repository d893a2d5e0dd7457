//! API key authentication: `Authorization: Bearer <key>` on every `/v1` route that is not
//! public. Keys are compared by SHA-256 digest in constant time; no key is kept in memory.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use splice_crypto::{constant_time_eq, sha256_hex};

use crate::AppState;
use crate::error::ApiError;

/// Rejects requests without a valid key before any handler runs.
pub async fn require_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <api key>"))?;
    let presented = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or_else(|| ApiError::unauthorized("Authorization must use the Bearer scheme"))?;

    let digest = sha256_hex(presented.trim());
    if !constant_time_eq(digest.as_bytes(), state.admin_key_hash.as_bytes()) {
        return Err(ApiError::unauthorized("invalid API key"));
    }
    Ok(next.run(request).await)
}
