//! `/v1/integrations/{id}/installs`: find installs by tenant and tags, read and delete them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;
use serde_json::json;
use splice_domain::{ConnectorConfig, Event, Identity, Install, InstallId};
use splice_sandbox::FetchRequest;

use super::{integration_id, list_filters};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryPairs;
use crate::views;

/// `?tenant=` and repeated `?tag=key=value` (all must match).
pub async fn list_installs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: QueryPairs,
) -> ApiResult<Json<Value>> {
    let id = integration_id(&id)?;
    let (tenant, tags) = list_filters(&query)?;
    if state.store.get_integration(&id).await?.is_none() {
        return Err(ApiError::not_found(format!("integration {id}")));
    }
    let installs = state
        .store
        .list_installs(&id, tenant.as_ref(), &tags)
        .await?;
    Ok(Json(views::items(installs.iter().map(views::install))))
}

pub async fn get_install(
    State(state): State<AppState>,
    Path((id, install)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let install = load(&state, &id, &install).await?;
    Ok(Json(views::install(&install)))
}

/// Deletes an install, then each of its identities that no other install uses — revoking
/// their tokens at the provider first when the catalog names a revocation endpoint.
pub async fn delete_install(
    State(state): State<AppState>,
    Path((id, install)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let install = load(&state, &id, &install).await?;
    state.store.delete_install(&install.id).await?;
    state.token_cache.clear();
    tracing::info!(install.id = %install.id, "install deleted");
    let event = Event::new(
        "install.deleted",
        Some(install.tenant.clone()),
        install.id.as_str(),
        json!({"integration": install.integration}),
    );
    state.store.record_event(&event).await?;

    for identity_id in install.identities.values() {
        if !state.store.installs_using(identity_id).await?.is_empty() {
            continue;
        }
        if let Some(identity) = state.store.get_identity(identity_id).await? {
            revoke(&state, &identity).await;
            state.store.delete_identity(identity_id).await?;
            tracing::info!(identity.id = %identity_id, "unused identity deleted");
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Best-effort RFC 7009 revocation of an identity's refresh (or access) token.
async fn revoke(state: &AppState, identity: &Identity) {
    let Ok(Some(connector)) = state.store.get_connector(&identity.connector).await else {
        return;
    };
    let Some(url) = state.credentials.revocation_url(&connector, identity) else {
        return;
    };
    let token = identity
        .tokens
        .refresh_token
        .as_ref()
        .unwrap_or(&identity.tokens.access_token);
    let body = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("token", token.expose());
        if let ConnectorConfig::Provider(config) = &connector.config {
            form.append_pair("client_id", config.client_id.as_deref().unwrap_or_default());
            if let Some(secret) = &config.client_secret {
                form.append_pair("client_secret", secret.expose());
            }
        }
        form.finish()
    };
    let request = FetchRequest {
        method: "POST".into(),
        url,
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: Some(body.into()),
        connector: None,
    };
    match state.outbound.send(request).await {
        Ok(answer) if answer.status < 300 => {
            tracing::info!(identity.id = %identity.id, "tokens revoked at the provider");
        }
        Ok(answer) => {
            tracing::warn!(identity.id = %identity.id, status = answer.status, "revocation refused")
        }
        Err(err) => tracing::warn!(identity.id = %identity.id, error = %err, "revocation failed"),
    }
}

async fn load(state: &AppState, integration: &str, install: &str) -> ApiResult<Install> {
    let not_found = || ApiError::not_found(format!("install {install:?}"));
    let integration = integration_id(integration)?;
    let id = InstallId::parse(install).map_err(|_| not_found())?;
    let install = state.store.get_install(&id).await?;
    install
        .filter(|i| i.integration == integration)
        .ok_or_else(not_found)
}
