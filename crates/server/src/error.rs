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

/// The stable code of an error status the platform answers without a more specific one.
pub fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::UNAUTHORIZED => "unauthorized",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    }
}

/// Marks a response an integration's code produced: its error statuses and bodies are the
/// integration's own and pass through as they are.
#[derive(Clone, Copy, Debug)]
pub struct FromIntegration;

/// Gives every error the platform answers the `{"error":{"code","message"}}` shape, also
/// those produced below the handlers (a method not allowed, a body over the limit), keeping
/// their status and headers. Integration responses and HTML pages pass unchanged.
///
/// A body announced larger than the server takes is refused before it is read. Every 5xx
/// answer, an integration's too, is logged as an error with its request's method and path
/// (the cause of one of Splice's own is logged where it arose).
pub async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let announced = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > crate::BODY_LIMIT as u64) {
        let message = format!("the body is over the limit of {} bytes", crate::BODY_LIMIT);
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
            .into_response();
    }
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() {
        // The path only: query strings carry OAuth codes and states.
        tracing::error!(status = status.as_u16(), %method, path = %uri.path(), "response failed");
    }
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<FromIntegration>().is_some()
    {
        return response;
    }
    let content_type = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/json") || content_type.starts_with("text/html") {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let fresh = ApiError::new(status, code_for(status), message).into_response();
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    for (name, value) in &fresh_parts.headers {
        parts.headers.insert(name.clone(), value.clone());
    }
    Response::from_parts(parts, body)
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
