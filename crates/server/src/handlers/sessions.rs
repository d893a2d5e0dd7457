//! Sessions: created by the application, walked by the user through the hosted connect flow
//! (see [`super::connect`]), then committed into an install.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use splice_domain::{
    Event, Install, InstallId, Meta, Session, SessionId, SessionStatus, SessionStep, Tags,
    TenantId, now_millis,
};

use super::integration_id;
use crate::AppState;
use crate::credentials::Mode;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::views;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    tenant: TenantId,
    redirect_url: String,
    #[serde(default)]
    tags: Tags,
    /// Identity-level provider settings by connector name (e.g. `{"shop": {"shop": "acme"}}`);
    /// what is missing is asked for in the connect flow.
    #[serde(default)]
    settings: BTreeMap<String, BTreeMap<String, String>>,
    /// Reconnect: re-authorize this install's identities, keeping their ids.
    install_id: Option<InstallId>,
}

/// Starts a connect session for one tenant: one step per connector the integration uses.
pub async fn create_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CreateSession>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = integration_id(&id)?;
    let integration = state
        .store
        .get_integration(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("integration {id}")))?;
    check_redirect_url(&body.redirect_url)?;

    let mut steps = Vec::new();
    for (name, connector_id) in &integration.connectors {
        let connector = state
            .store
            .get_connector(connector_id)
            .await?
            .ok_or_else(|| {
                ApiError::conflict(format!(
                    "connector {connector_id} of this integration was deleted"
                ))
            })?;
        let mode = state
            .credentials
            .mode(&connector)
            .map_err(ApiError::conflict)?;
        // Client-credentials connectors use the connector's own token: no user step.
        if mode == Mode::ClientCredentials {
            continue;
        }
        steps.push(SessionStep {
            name: name.clone(),
            connector: connector_id.clone(),
            identity: None,
            settings: body.settings.get(name).cloned().unwrap_or_default(),
            reconnect: None,
        });
    }
    if let Some(name) = body
        .settings
        .keys()
        .find(|n| !integration.connectors.contains_key(*n))
    {
        return Err(ApiError::invalid(format!(
            "settings.{name}: the integration has no such connector"
        )));
    }
    let reconnect = body.install_id.is_some();
    if let Some(install_id) = &body.install_id {
        let install = state.store.get_install(install_id).await?;
        let install = install
            .filter(|i| i.integration == integration.id && i.tenant == body.tenant)
            .ok_or_else(|| {
                ApiError::not_found(format!("install {install_id} of tenant {}", body.tenant))
            })?;
        for step in &mut steps {
            step.reconnect = install.identities.get(&step.name).cloned();
        }
    }

    let now = now_millis();
    let status = if steps.is_empty() {
        SessionStatus::Completed
    } else {
        SessionStatus::Pending
    };
    let session = Session {
        id: SessionId::generate(),
        integration: id,
        tenant: body.tenant,
        redirect_url: body.redirect_url,
        status,
        steps,
        error: None,
        install: body.install_id,
        reconnect,
        expires_at: now + millis(state.session_ttl),
        meta: Meta::new(body.tags, now),
    };
    state.store.create_session(&session).await?;
    tracing::info!(session.id = %session.id, integration.id = %session.integration, "session created");
    Ok((StatusCode::CREATED, Json(views::session(&state, &session))))
}

pub async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let session = load(&state, &id).await?;
    Ok(Json(views::session(&state, &session)))
}

/// Creates the install from a completed session, atomically with marking it committed.
pub async fn commit_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let mut session = load(&state, &id).await?;
    let now = now_millis();
    match session.status {
        SessionStatus::Completed if session.expires_at > now => {}
        SessionStatus::Completed => return Err(ApiError::conflict("the session has expired")),
        SessionStatus::Pending => {
            return Err(ApiError::conflict(
                "the user has not finished connecting yet",
            ));
        }
        SessionStatus::Committed => {
            let install = session
                .install
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            return Err(ApiError::conflict(format!(
                "the session is already committed as {install}"
            )));
        }
        SessionStatus::Failed => {
            let reason = session
                .error
                .as_ref()
                .map(|e| e.code.as_str())
                .unwrap_or("unknown");
            return Err(ApiError::conflict(format!("the session failed ({reason})")));
        }
    }

    if session.reconnect {
        return commit_reconnect(&state, session, now).await;
    }
    let identities = session
        .steps
        .iter()
        .filter_map(|step| Some((step.name.clone(), step.identity.clone()?)))
        .collect();
    let install = Install {
        id: InstallId::generate(),
        integration: session.integration.clone(),
        tenant: session.tenant.clone(),
        identities,
        meta: Meta::new(session.meta.tags.clone(), now),
    };
    session.status = SessionStatus::Committed;
    session.install = Some(install.id.clone());
    session.meta.updated_at = now;
    session.meta.version += 1;

    state.store.commit_session(&session, &install).await?;
    state.token_cache.clear();
    tracing::info!(session.id = %session.id, install.id = %install.id, "session committed");
    let event = Event::new(
        "install.created",
        Some(install.tenant.clone()),
        install.id.as_str(),
        serde_json::json!({"integration": install.integration, "session": session.id}),
    );
    if let Err(err) = state.store.record_event(&event).await {
        tracing::warn!(error = %err, "could not record install.created");
    }
    Ok((StatusCode::CREATED, Json(views::install(&install))))
}

/// A reconnect re-authorized the install's identities in place: the install stays as it is.
async fn commit_reconnect(
    state: &AppState,
    mut session: Session,
    now: i64,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let install_id = session
        .install
        .clone()
        .ok_or_else(|| ApiError::internal("reconnect without install"))?;
    let install =
        state.store.get_install(&install_id).await?.ok_or_else(|| {
            ApiError::conflict(format!("install {install_id} was deleted meanwhile"))
        })?;
    session.status = SessionStatus::Committed;
    session.meta.updated_at = now;
    session.meta.version += 1;
    state.store.commit_session(&session, &install).await?;
    state.token_cache.clear();
    tracing::info!(session.id = %session.id, install.id = %install.id, "install reconnected");
    let event = Event::new(
        "install.reconnected",
        Some(install.tenant.clone()),
        install.id.as_str(),
        serde_json::json!({"integration": install.integration, "session": session.id}),
    );
    if let Err(err) = state.store.record_event(&event).await {
        tracing::warn!(error = %err, "could not record install.reconnected");
    }
    Ok((StatusCode::OK, Json(views::install(&install))))
}

async fn load(state: &AppState, id: &str) -> ApiResult<Session> {
    let not_found = || ApiError::not_found(format!("session {id:?}"));
    let id = SessionId::parse(id).map_err(|_| not_found())?;
    state.store.get_session(&id).await?.ok_or_else(not_found)
}

fn check_redirect_url(raw: &str) -> ApiResult<()> {
    match url::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        _ => Err(ApiError::invalid(
            "redirect_url must be an absolute http(s) URL",
        )),
    }
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
