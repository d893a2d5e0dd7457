//! Calling an integration: any method on `/v1/integrations/{id}/api/{path}` runs its router.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use splice_domain::{InvocationRecord, now_millis};
use splice_sandbox::{InvokeError, LogLevel};

use super::integration_id;
use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// Header naming the install a call is made for; recorded in the invocation log.
const INSTALL_HEADER: &str = "x-splice-install";
/// Request headers never handed to integration code.
const HIDDEN_HEADERS: &[&str] = &["authorization", "cookie"];

pub async fn invoke_integration(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> ApiResult<Response> {
    let id = integration_id(params.get("id").map(String::as_str).unwrap_or_default())?;
    let loaded = state
        .programs
        .get(state.store.as_ref(), &id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("integration {id}")))?;

    let path = format!(
        "/{}",
        params.get("path").map(String::as_str).unwrap_or_default()
    );
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, crate::BODY_LIMIT)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("could not read the body: {e}"),
            )
        })?;
    let install = parts
        .headers
        .get(INSTALL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| !HIDDEN_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let sandbox_request = splice_sandbox::Request {
        method: parts.method.as_str().to_owned(),
        path: path.clone(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers,
        body,
        kind: splice_sandbox::RequestKind::Http,
    };

    let started_at = now_millis();
    let invocation = state.engine.invoke(&loaded.program, sandbox_request).await;

    let mut logs: Vec<_> = invocation.logs.iter().map(|line| json!(line)).collect();
    if let Err(InvokeError::Exception {
        stack: Some(stack), ..
    }) = &invocation.result
    {
        let at_ms = u64::try_from(invocation.duration.as_millis()).unwrap_or(u64::MAX);
        logs.push(json!({"level": LogLevel::Error, "message": stack, "at_ms": at_ms}));
    }
    let response = invocation.result.map_err(|err| invoke_error(&id, &err));
    let (status, error) = match &response {
        Ok(r) => (r.status, None),
        Err(e) => (
            e.status.as_u16(),
            Some(format!("{}: {}", e.code, e.message)),
        ),
    };
    state.recorder.record(InvocationRecord {
        integration: id,
        install,
        at: started_at,
        method: parts.method.to_string(),
        path,
        status,
        duration_us: i64::try_from(invocation.duration.as_micros()).unwrap_or(i64::MAX),
        error,
        logs: serde_json::Value::Array(logs),
    });

    Ok(match response {
        Ok(r) => to_http(r),
        Err(e) => e.into_response(),
    })
}

fn to_http(response: splice_sandbox::Response) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut http = Response::new(Body::from(response.body));
    *http.status_mut() = status;
    http.extensions_mut().insert(crate::error::FromIntegration);
    for (name, value) in response.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            // The body's framing is the server's to set; a wrong length from code would
            // leave the client waiting for bytes that never come.
            if !FRAMING_HEADERS.contains(&name.as_str()) {
                http.headers_mut().append(name, value);
            }
        }
    }
    http
}

/// Response headers integration code may not set: framing and connection management.
const FRAMING_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
];

/// The API error for a failed invocation. The message is the integration's own failure,
/// which its developer needs; the JS stack goes to the invocation log only.
fn invoke_error(id: &splice_domain::IntegrationId, err: &InvokeError) -> ApiError {
    let (status, code) = match err {
        InvokeError::CpuLimit(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cpu_limit_exceeded"),
        InvokeError::WallLimit(_) => (StatusCode::GATEWAY_TIMEOUT, "wall_time_exceeded"),
        InvokeError::MemoryLimit(_) => (StatusCode::INTERNAL_SERVER_ERROR, "memory_limit_exceeded"),
        InvokeError::StackOverflow => (StatusCode::INTERNAL_SERVER_ERROR, "stack_overflow"),
        InvokeError::Exception { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "uncaught_exception"),
        InvokeError::InvalidProgram(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "invalid_integration")
        }
        InvokeError::Internal(_) => (StatusCode::SERVICE_UNAVAILABLE, "sandbox_unavailable"),
    };
    tracing::warn!(integration.id = %id, error = %err, "invocation failed");
    ApiError::new(status, code, format!("integration {id}: {err}"))
}
