//! Sessions: created by the application, walked by the user through the hosted connect flow
//! (see [`super::connect`]), then committed into an install.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use splice_domain::{
    Install, InstallId, Meta, Session, SessionId, SessionStatus, SessionStep, Tags, TenantId,
    now_millis,
};

use super::integration_id;
use crate::AppState;
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

    let steps: Vec<SessionStep> = integration
        .connectors
        .iter()
        .map(|(name, connector)| SessionStep {
            name: name.clone(),
            connector: connector.clone(),
            identity: None,
        })
        .collect();
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
        install: None,
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
    tracing::info!(session.id = %session.id, install.id = %install.id, "session committed");
    Ok((StatusCode::CREATED, Json(views::install(&install))))
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
