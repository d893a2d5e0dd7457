//! The one API error type and its JSON envelope: `{"error":{"code","message"}}`.
//!
//! Codes are stable and machine-readable. 4xx messages tell the caller what to fix; 5xx bodies
//! say nothing about internals, and the cause is logged once here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use splice_domain::InvalidValue;
use splice_oauth::TokenFailure;
use splice_store::StoreError;

/// An error answered to an API caller.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra machine-readable fields (e.g. a compile error's file and line).
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// A server-side failure: the cause is logged, the caller sees a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(details), Some(map)) = (self.details, error.as_object_mut()) {
            map.insert("details".into(), details);
        }
        (self.status, axum::Json(json!({ "error": error }))).into_response()
    }
}

impl From<InvalidValue> for ApiError {
    fn from(err: InvalidValue) -> Self {
        Self::invalid(err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict(what) => Self::conflict(format!("{what} already exists")),
            StoreError::VersionMismatch(what) => Self::conflict(format!(
                "{what} was modified concurrently; read it and retry"
            )),
            StoreError::Missing(what) => Self::not_found(what),
            other => Self::internal(other),
        }
    }
}

impl From<TokenFailure> for ApiError {
    fn from(err: TokenFailure) -> Self {
        match err {
            TokenFailure::NotFound => Self::not_found("identity"),
            TokenFailure::NeedsReauth(reason) => Self::new(
                StatusCode::CONFLICT,
                "needs_reauth",
                format!("the identity must be authorized again: {reason}"),
            ),
            TokenFailure::ConnectorMisconfigured(reason) => Self::new(
                StatusCode::BAD_GATEWAY,
                "connector_misconfigured",
                format!("the provider rejected the connector's client: {reason}"),
            ),
            TokenFailure::Unavailable(reason) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "provider_unavailable",
                format!("the provider could not refresh the token: {reason}"),
            ),
            TokenFailure::Store(err) => err.into(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
