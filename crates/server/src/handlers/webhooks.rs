//! `POST /v1/connectors/{id}/webhook`: providers' webhooks, public. The signature is checked on
//! the raw bytes before anything else; handshakes are answered; the event is committed to the
//! queue (once per provider delivery id) and the provider gets its 2xx at once. Routing to
//! installs and running handlers happen on the queue (see `worker`).
//!
//! Asana issues a secret per webhook in its handshake: it is stored (sealed) under the hook
//! named by `?hook=` on the first handshake, and a second handshake for the same hook is
//! refused, so nobody can replace it by replaying the unsigned handshake.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use splice_domain::{Connector, ConnectorConfig, ConnectorId, Secret, now_millis};
use splice_store::{HookClaim, NewJob};
use splice_webhooks::{HandshakeOrder, HandshakeReply, ProviderKind, Scheme, WebhookRequest};

use super::connector_id;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::recent::Recent;
use crate::worker::WEBHOOK_JOB;

/// How a connector's webhooks are read: the provider's format, its scheme, and the secret
/// (none for providers that issue one per hook at registration: Asana).
pub struct Verifier {
    kind: ProviderKind,
    scheme: Scheme,
    secret: Option<Vec<u8>>,
}

/// How long a connector's verifier is used without reading the connector again (see
/// [`crate::recent`]).
pub const VERIFIER_TTL: Duration = Duration::from_secs(1);

/// Connectors' webhook verifiers, recently read: a burst of deliveries checks signatures
/// without a database read (and the secret's decryption) each.
pub type Verifiers = Recent<ConnectorId, Arc<Verifier>>;

/// The connector's verifier, from memory or read from the store. A connector that is missing
/// or takes no webhooks is not remembered.
async fn connector_verifier(state: &AppState, id: &ConnectorId) -> ApiResult<Arc<Verifier>> {
    if let Some(verifier) = state.webhook_verifiers.get(id) {
        return Ok(verifier);
    }
    let connector = state
        .store
        .get_connector(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("connector {id}")))?;
    let verifier = Arc::new(verifier(&connector)?);
    state.webhook_verifiers.put(id.clone(), verifier.clone());
    Ok(verifier)
}

/// Names a hook of a connector (`?hook=`), for providers that issue a secret per hook.
const DEFAULT_HOOK: &str = "default";

fn hook_name(request: &WebhookRequest<'_>) -> ApiResult<String> {
    check_hook(
        request
            .query_param("hook")
            .unwrap_or_else(|| DEFAULT_HOOK.to_owned()),
    )
}

fn check_hook(hook: String) -> ApiResult<String> {
    let valid = (1..=64).contains(&hook.len())
        && hook
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(ApiError::invalid(
            "hook must be 1-64 letters, digits, '.', '_' or '-'",
        ));
    }
    Ok(hook)
}

fn verifier(connector: &Connector) -> ApiResult<Verifier> {
    let not_configured = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this connector takes no webhooks",
        )
    };
    let ConnectorConfig::Provider(config) = &connector.config else {
        return Err(not_configured());
    };
    let webhook = config.webhook.as_ref().ok_or_else(not_configured)?;
    let name = webhook.provider.as_deref().unwrap_or(&config.provider);
    let kind = ProviderKind::from_str(name).unwrap_or(ProviderKind::Generic);
    let scheme = match &webhook.scheme {
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| {
            tracing::error!(connector.id = %connector.id, error = %e, "invalid webhook scheme");
            not_configured()
        })?,
        None => kind.default_scheme().ok_or_else(not_configured)?,
    };
    let secret = webhook
        .secret
        .as_ref()
        .map(|s| s.expose().as_bytes().to_vec());
    if secret.is_none() && kind != ProviderKind::Asana {
        return Err(not_configured());
    }
    Ok(Verifier {
        kind,
        scheme,
        secret,
    })
}

pub async fn receive_webhook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let id = connector_id(&id)?;
    let verifier = connector_verifier(&state, &id).await?;

    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let target = match uri.query() {
        Some(query) => format!("{}{}?{query}", state.public_base(), uri.path()),
        None => format!("{}{}", state.public_base(), uri.path()),
    };
    let request = WebhookRequest::new("POST", &target, &pairs, &body);

    // Unsigned handshakes (Microsoft Graph, Asana) come before verification.
    let configured = verifier.secret.as_deref().unwrap_or_default();
    if verifier.kind.handshake_order() == HandshakeOrder::BeforeVerification
        && let Some(reply) = splice_webhooks::handshake(verifier.kind, &request, configured)
    {
        if let Some(secret) = &reply.secret_to_store {
            let hook = hook_name(&request)?;
            let secret = Secret::new(secret.clone());
            match state
                .store
                .add_hook_secret(&id, &hook, &secret, now_millis())
                .await?
            {
                HookClaim::Stored => tracing::info!(connector.id = %id, hook, "hook secret stored"),
                HookClaim::Taken => {
                    tracing::warn!(connector.id = %id, hook, "hook secret offered again; refused");
                    return Err(ApiError::conflict(format!(
                        "hook {hook:?} of connector {id} already has a secret; open another hook"
                    )));
                }
                HookClaim::NotOpen => {
                    tracing::warn!(connector.id = %id, hook, "handshake for a hook nobody opened; refused");
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "unknown_hook",
                        format!(
                            "hook {hook:?} was not opened (POST /v1/connectors/{id}/hooks) or \
                             its handshake came too late"
                        ),
                    ));
                }
            }
        }
        return Ok(handshake_response(reply));
    }
    let secret = match &verifier.secret {
        Some(secret) => secret.clone(),
        None => {
            let hook = hook_name(&request)?;
            let stored = state.store.hook_secret(&id, &hook).await?;
            let unknown = || {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unknown_hook",
                    format!("no secret was issued for hook {hook:?} of this connector"),
                )
            };
            stored.ok_or_else(unknown)?.expose().as_bytes().to_vec()
        }
    };
    splice_webhooks::verify(&verifier.scheme, &secret, &request, SystemTime::now()).map_err(
        |e| {
            tracing::warn!(connector.id = %id, error = e.code(), "webhook signature rejected");
            ApiError::new(StatusCode::UNAUTHORIZED, e.code(), e.to_string())
        },
    )?;
    if verifier.kind.handshake_order() == HandshakeOrder::AfterVerification
        && let Some(reply) = splice_webhooks::handshake(verifier.kind, &request, &secret)
    {
        return Ok(handshake_response(reply));
    }

    let info = splice_webhooks::describe(verifier.kind, &request);
    let event: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let payload = json!({
        "connector": id,
        "type": info.event_type,
        "account_ids": info.account_ids,
        "delivery_id": info.delivery_id,
        "event": event,
    });
    let mut job = NewJob::new(WEBHOOK_JOB, payload, now_millis());
    job.partition = Some(id.to_string());
    job.idempotency_key = info.dedupe_key().map(|key| format!("webhook:{id}:{key}"));
    let (stored, created) = state.enqueuer.enqueue(job).await?;
    state.jobs_enqueued();
    tracing::info!(connector.id = %id, job.id = %stored.id, duplicate = !created, event = %info.event_type, "webhook accepted");
    Ok((
        StatusCode::OK,
        axum::Json(json!({"ok": true, "duplicate": !created})),
    )
        .into_response())
}

fn handshake_response(reply: HandshakeReply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let mut response = (status, reply.body).into_response();
    if let Some(content_type) = reply.content_type {
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
    }
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// How long an opened hook waits for the provider's handshake.
const HOOK_OPEN_FOR: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenHook {
    /// Letters, digits, `.`, `_`, `-`; generated when absent.
    name: Option<String>,
}

/// `POST /v1/connectors/{id}/hooks`: opens a hook for a provider that issues a secret per
/// webhook in its handshake (Asana). Register the returned URL with the provider within ten
/// minutes; the handshake then sets the hook's secret, once.
pub async fn open_hook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    crate::extract::JsonBody(body): crate::extract::JsonBody<OpenHook>,
) -> ApiResult<(StatusCode, axum::Json<Value>)> {
    let id = connector_id(&id)?;
    let connector = state
        .store
        .get_connector(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("connector {id}")))?;
    let verifier = verifier(&connector)?;
    if verifier.kind != ProviderKind::Asana || verifier.secret.is_some() {
        return Err(ApiError::invalid(
            "only connectors whose provider issues a secret per webhook (asana, without a \
             webhook.secret) have hooks",
        ));
    }
    let name = check_hook(
        body.name
            .unwrap_or_else(|| format!("hook-{}", splice_crypto::random_token(8))),
    )?;
    let url = format!(
        "{}/v1/connectors/{id}/webhook?hook={name}",
        state.public_base()
    );
    let now = now_millis();
    let expires_at = now + i64::try_from(HOOK_OPEN_FOR.as_millis()).unwrap_or(i64::MAX);
    if !state.store.open_hook(&id, &name, expires_at, now).await? {
        return Err(ApiError::conflict(format!(
            "hook {name:?} of connector {id} exists"
        )));
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({
            "name": name,
            "url": url,
            "expires_at": splice_domain::rfc3339(expires_at),
        })),
    ))
}
