//! `/v1/connectors/{id}/identities`: list, read and delete identities, and hand the
//! application a fresh access token.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use splice_domain::{Identity, IdentityId, rfc3339};
use splice_sandbox::FetchRequest;

use super::{connector_id, list_filters};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
use crate::outbound::Principal;
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
    state.token_cache.clear();
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

/// Headers never forwarded to the provider: Splice's own credentials and hop-by-hop headers.
const UNFORWARDED: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
];

/// `ANY …/identities/{identity}/proxy/{path}`: forwards the request to the provider's API base
/// URL with the identity's credentials, and passes the answer back.
pub async fn proxy(
    State(state): State<AppState>,
    Path((connector, identity, path)): Path<(String, String, String)>,
    request: axum::extract::Request,
) -> ApiResult<Response> {
    let identity = load(&state, &connector, &identity).await?;
    let connector = state
        .store
        .get_connector(&identity.connector)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("connector {}", identity.connector)))?;

    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, crate::BODY_LIMIT)
        .await
        .map_err(|e| ApiError::invalid(format!("could not read body: {e}")))?;
    let url = match parts.uri.query() {
        Some(query) => format!("/{path}?{query}"),
        None => format!("/{path}"),
    };
    let headers = parts
        .headers
        .iter()
        .filter(|(name, _)| !UNFORWARDED.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let fetch = FetchRequest {
        method: parts.method.as_str().to_owned(),
        url,
        headers,
        body: (!body.is_empty()).then_some(body),
        connector: None,
    };

    let principal = Principal::Identity(identity.id.clone());
    let answer = state
        .outbound
        .call_as(&connector, &principal, fetch)
        .await
        .map_err(|e| {
            let status = match e.code.as_str() {
                "needs_reauth" => StatusCode::CONFLICT,
                "provider_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
                "invalid_url" => StatusCode::BAD_REQUEST,
                _ => StatusCode::BAD_GATEWAY,
            };
            let code = match e.code.as_str() {
                "needs_reauth" => "needs_reauth",
                "provider_unavailable" => "provider_unavailable",
                "invalid_url" => "invalid_request",
                "connector_misconfigured" => "connector_misconfigured",
                _ => "provider_error",
            };
            ApiError::new(status, code, e.message)
        })?;

    let mut response = Response::new(axum::body::Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in answer.headers {
        let hop = ["connection", "transfer-encoding", "content-length"].contains(&name.as_str());
        if let (false, Ok(name), Ok(value)) = (
            hop,
            HeaderName::try_from(name),
            HeaderValue::try_from(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
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
