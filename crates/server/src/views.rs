//! How entities look in API responses. Secrets never appear here: connector views drop the
//! client secret and identity views carry no tokens.

use serde_json::{Value, json};
use splice_domain::{Connector, ConnectorConfig, Identity, Install, Integration, Meta, Session};
use splice_domain::{InvocationRecord, rfc3339};

use crate::AppState;

/// Adds the common `tags`, `created_at`, `updated_at`, `version` fields.
fn with_meta(mut body: Value, meta: &Meta) -> Value {
    if let Some(map) = body.as_object_mut() {
        map.insert("tags".into(), json!(meta.tags));
        map.insert("created_at".into(), json!(rfc3339(meta.created_at)));
        map.insert("updated_at".into(), json!(rfc3339(meta.updated_at)));
        map.insert("version".into(), json!(meta.version));
    }
    body
}

pub fn connector(state: &AppState, connector: &Connector) -> Value {
    let (mut config, provider) = match &connector.config {
        ConnectorConfig::OAuth2(oauth) => (serde_json::to_value(oauth), None),
        ConnectorConfig::Provider(p) => (serde_json::to_value(p), Some(p.provider.as_str())),
    };
    if let Ok(Some(map)) = config.as_mut().map(|c| c.as_object_mut()) {
        map.remove("client_secret");
        map.remove("provider");
        if let Some(webhook) = map.get_mut("webhook").and_then(|w| w.as_object_mut()) {
            let set = webhook.remove("secret").is_some_and(|s| !s.is_null());
            webhook.insert("secret_set".into(), set.into());
        }
    }
    let body = json!({
        "id": connector.id,
        "type": connector.config.kind(),
        "provider": provider,
        "config": config.unwrap_or_default(),
        "callback_url": state.callback_url(),
        "webhook_url": format!("{}/v1/connectors/{}/webhook", state.public_base(), connector.id),
        "status": if connector.misconfigured.is_some() { "misconfigured" } else { "ok" },
        "status_reason": connector.misconfigured,
    });
    with_meta(body, &connector.meta)
}

pub fn integration(integration: &Integration) -> Value {
    let runtime = integration.runtime;
    let body = json!({
        "id": integration.id,
        "files": integration.files,
        "connectors": integration.connectors,
        "isolation": runtime.isolation,
        "schedules": integration.schedules,
        "limits": {
            "memory_mb": runtime.memory_mb,
            "cpu_ms": runtime.cpu_ms,
            "wall_ms": runtime.wall_ms,
        },
    });
    with_meta(body, &integration.meta)
}

pub fn identity(identity: &Identity) -> Value {
    let body = json!({
        "id": identity.id,
        "connector": identity.connector,
        "tenant": identity.tenant,
        "subject": identity.subject,
        "status": identity.status,
        "status_reason": identity.status_reason,
        "status_at": rfc3339(identity.status_at),
        "expires_at": identity.tokens.expires_at.map(rfc3339),
        "scopes": identity.tokens.scopes,
        "values": identity.tokens.values,
        "refreshed_at": rfc3339(identity.refresh.refreshed_at),
        "failure_days": identity.refresh.failure_days,
        "next_attempt_at": identity.refresh.next_attempt_at.map(rfc3339),
    });
    with_meta(body, &identity.meta)
}

pub fn install(install: &Install) -> Value {
    let body = json!({
        "id": install.id,
        "integration": install.integration,
        "tenant": install.tenant,
        "identities": install.identities,
    });
    with_meta(body, &install.meta)
}

pub fn session(state: &AppState, session: &Session) -> Value {
    let body = json!({
        "id": session.id,
        "integration": session.integration,
        "tenant": session.tenant,
        "status": session.status,
        "url": session_url(state, session),
        "redirect_url": session.redirect_url,
        "steps": session.steps,
        "error": session.error,
        "install": session.install,
        "expires_at": rfc3339(session.expires_at),
    });
    with_meta(body, &session.meta)
}

pub fn session_url(state: &AppState, session: &Session) -> String {
    format!("{}/connect/{}", state.public_base(), session.id)
}

pub fn invocation(record: &InvocationRecord) -> Value {
    json!({
        "at": rfc3339(record.at),
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "duration_ms": record.duration_us as f64 / 1000.0,
        "install": record.install,
        "error": record.error,
        "logs": record.logs,
    })
}

/// A list response: `{"items": [...]}`.
pub fn items(items: impl IntoIterator<Item = Value>) -> Value {
    json!({ "items": items.into_iter().collect::<Vec<_>>() })
}
