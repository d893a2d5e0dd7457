//! The hosted connect flow, public and unauthenticated: the session URL sends the user to each
//! connector's authorization page in turn, and the OAuth callback stores what comes back.
//!
//! `state` is 256 random bits, stored server-side only as its SHA-256, bound to one session
//! step, single use (taken with a delete), and short-lived. The PKCE verifier lives beside it
//! and never leaves the server.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use splice_crypto::{pkce_challenge, random_token, sha256_hex};
use splice_domain::{
    AuthState, ConnectorConfig, Identity, IdentityId, IdentityStatus, Meta, RefreshState, Secret,
    Session, SessionError, SessionId, SessionStatus, Tags, TokenSet, now_millis,
};
use splice_oauth::{AuthorizeRequest, TokenError, TokenResponse};

use super::sessions::millis;
use crate::AppState;
use crate::extract::QueryPairs;

/// How long the user may take at the provider's consent page.
const STATE_TTL: Duration = Duration::from_secs(600);

/// A page shown to the end user when the flow cannot go on.
pub struct Page {
    status: StatusCode,
    message: String,
}

impl Page {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Splice</title></head>\
             <body><h1>Connection could not continue</h1><p>{}</p></body></html>",
            escape_html(&self.message)
        );
        (self.status, Html(body)).into_response()
    }
}

impl From<splice_store::StoreError> for Page {
    fn from(err: splice_store::StoreError) -> Self {
        tracing::error!(error = %err, "connect flow storage failure");
        Page::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong. Please try again.",
        )
    }
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `GET /connect/{session}`: redirects to the next authorization page, or back to the
/// application when every step is done.
pub async fn start_connect(
    State(state): State<AppState>,
    Path(session): Path<String>,
) -> Result<Response, Page> {
    let gone = || Page::new(StatusCode::NOT_FOUND, "This connection link is invalid.");
    let id = SessionId::parse(&session).map_err(|_| gone())?;
    let session = state.store.get_session(&id).await?.ok_or_else(gone)?;
    if session.expires_at <= now_millis() {
        return Err(Page::new(
            StatusCode::GONE,
            "This connection link has expired.",
        ));
    }
    match session.status {
        SessionStatus::Pending => {}
        SessionStatus::Completed | SessionStatus::Committed | SessionStatus::Failed => {
            return Ok(Redirect::to(&finish_url(&session)).into_response());
        }
    }
    let Some((step, current)) = session.next_step() else {
        return Ok(Redirect::to(&finish_url(&session)).into_response());
    };

    let connector = state
        .store
        .get_connector(&current.connector)
        .await?
        .ok_or_else(|| {
            Page::new(
                StatusCode::NOT_FOUND,
                format!("Connector {} no longer exists.", current.connector),
            )
        })?;
    let ConnectorConfig::OAuth2(config) = &connector.config;

    let state_value = random_token(32);
    let verifier = config.pkce.then(|| Secret::new(random_token(32)));
    let challenge = verifier.as_ref().map(|v| pkce_challenge(v.expose()));
    let auth_state = AuthState {
        state_hash: sha256_hex(&state_value),
        session: session.id.clone(),
        step,
        connector: connector.id.clone(),
        pkce_verifier: verifier,
        expires_at: (now_millis() + millis(STATE_TTL)).min(session.expires_at),
    };
    state.store.put_auth_state(&auth_state).await?;

    let callback = state.callback_url();
    let request = AuthorizeRequest {
        redirect_uri: &callback,
        state: &state_value,
        code_challenge: challenge.as_deref(),
    };
    let url = state.oauth.authorize_url(config, &request).map_err(|_| {
        Page::new(
            StatusCode::BAD_GATEWAY,
            "The connector's authorization URL is invalid.",
        )
    })?;
    Ok(Redirect::to(url.as_str()).into_response())
}

/// `GET /v1/oauth/callback`: checks `state`, exchanges the code, stores or reuses the
/// identity, then continues with the next step or returns to the application.
pub async fn oauth_callback(
    State(state): State<AppState>,
    query: QueryPairs,
) -> Result<Response, Page> {
    let Some(state_value) = query.get("state") else {
        return Err(Page::new(
            StatusCode::BAD_REQUEST,
            "The provider's answer has no state.",
        ));
    };
    let unknown = || {
        Page::new(
            StatusCode::BAD_REQUEST,
            "This authorization was already used or is unknown.",
        )
    };
    let auth = state
        .store
        .take_auth_state(&sha256_hex(state_value))
        .await?
        .ok_or_else(unknown)?;
    if auth.expires_at <= now_millis() {
        return Err(Page::new(
            StatusCode::BAD_REQUEST,
            "This authorization has expired. Please start again.",
        ));
    }
    let mut session = state
        .store
        .get_session(&auth.session)
        .await?
        .ok_or_else(unknown)?;
    let expected = session.next_step().map(|(i, s)| (i, s.connector.clone()));
    if session.status != SessionStatus::Pending
        || expected != Some((auth.step, auth.connector.clone()))
    {
        return Err(Page::new(
            StatusCode::CONFLICT,
            "This session has already moved on.",
        ));
    }

    if let Some(error) = query.get("error") {
        let description = query
            .get("error_description")
            .unwrap_or("the provider reported an error");
        return fail(&state, session, error, description).await;
    }
    let Some(code) = query.get("code") else {
        return fail(
            &state,
            session,
            "invalid_response",
            "the provider sent no code",
        )
        .await;
    };

    let connector = state.store.get_connector(&auth.connector).await?;
    let Some(connector) = connector else {
        return fail(
            &state,
            session,
            "connector_deleted",
            "the connector no longer exists",
        )
        .await;
    };
    let ConnectorConfig::OAuth2(config) = &connector.config;
    let exchanged = state
        .oauth
        .exchange_code(
            config,
            code,
            &state.callback_url(),
            auth.pkce_verifier.as_ref(),
        )
        .await;
    let tokens = match exchanged {
        Ok(tokens) => tokens,
        Err(err) => {
            tracing::warn!(session.id = %session.id, connector.id = %connector.id, error = %err, "code exchange failed");
            let (code, description) = exchange_failure(&err);
            return fail(&state, session, code, &description).await;
        }
    };

    let subject = match &config.userinfo_url {
        Some(url) => match state.oauth.subject(url, &tokens.access_token).await {
            Ok(subject) => Some(subject),
            Err(err) => {
                tracing::warn!(connector.id = %connector.id, error = %err, "userinfo failed; identity will not be reused");
                None
            }
        },
        None => None,
    };

    let (identity, new) = identity_for(&state, &session, &auth, subject, tokens).await?;
    session.steps[auth.step].identity = Some(identity.id.clone());
    session.status = if session.next_step().is_some() {
        SessionStatus::Pending
    } else {
        SessionStatus::Completed
    };
    session.meta.updated_at = now_millis();
    session.meta.version += 1;
    state
        .store
        .attach_identity(&session, &identity, new)
        .await?;
    tracing::info!(session.id = %session.id, identity.id = %identity.id, reused = !new, "identity connected");

    let next = match session.status {
        SessionStatus::Pending => format!("{}/connect/{}", state.public_base(), session.id),
        _ => finish_url(&session),
    };
    Ok(Redirect::to(&next).into_response())
}

/// The tenant's existing identity for this provider account with fresh tokens, or a new one.
async fn identity_for(
    state: &AppState,
    session: &Session,
    auth: &AuthState,
    subject: Option<String>,
    response: TokenResponse,
) -> Result<(Identity, bool), Page> {
    let now = now_millis();
    let existing = match &subject {
        Some(subject) => {
            state
                .store
                .find_identity_by_subject(&auth.connector, &session.tenant, subject)
                .await?
        }
        None => None,
    };
    if let Some(mut identity) = existing {
        identity.tokens = TokenSet {
            access_token: response.access_token,
            // A re-consent may omit the refresh token (Google does): keep the one we have.
            refresh_token: response.refresh_token.or(identity.tokens.refresh_token),
            expires_at: response.expires_at,
            scopes: response.scopes.unwrap_or_default(),
        };
        identity.status = IdentityStatus::Healthy;
        identity.status_reason = None;
        identity.status_at = now;
        identity.refresh = RefreshState {
            refreshed_at: now,
            ..RefreshState::default()
        };
        identity.meta.updated_at = now;
        identity.meta.version += 1;
        return Ok((identity, false));
    }
    let identity = Identity {
        id: IdentityId::generate(),
        connector: auth.connector.clone(),
        tenant: session.tenant.clone(),
        subject,
        status: IdentityStatus::Healthy,
        status_reason: None,
        status_at: now,
        tokens: TokenSet {
            access_token: response.access_token,
            refresh_token: response.refresh_token,
            expires_at: response.expires_at,
            scopes: response.scopes.unwrap_or_default(),
        },
        refresh: RefreshState {
            refreshed_at: now,
            ..RefreshState::default()
        },
        meta: Meta::new(Tags::default(), now),
    };
    Ok((identity, true))
}

/// Marks the session failed and returns the user to the application with the error.
async fn fail(
    state: &AppState,
    mut session: Session,
    code: &str,
    description: &str,
) -> Result<Response, Page> {
    session.status = SessionStatus::Failed;
    session.error = Some(SessionError {
        code: code.to_owned(),
        description: description.to_owned(),
    });
    session.meta.updated_at = now_millis();
    session.meta.version += 1;
    state.store.update_session(&session).await?;
    tracing::info!(session.id = %session.id, error = code, "session failed");
    Ok(Redirect::to(&finish_url(&session)).into_response())
}

/// The application's redirect URL with `session=` or `error=` and `error_description=`.
fn finish_url(session: &Session) -> String {
    let Ok(mut url) = url::Url::parse(&session.redirect_url) else {
        return session.redirect_url.clone();
    };
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("session", session.id.as_str());
        if let Some(error) = &session.error {
            query
                .append_pair("error", &error.code)
                .append_pair("error_description", &error.description);
        }
    }
    url.into()
}

fn exchange_failure(err: &TokenError) -> (&'static str, String) {
    match err {
        TokenError::Rejected { error, .. } => (
            "authorization_failed",
            format!("the provider rejected the code ({error})"),
        ),
        TokenError::Misconfigured { error, .. } => (
            "connector_misconfigured",
            format!("the provider rejected the connector ({error})"),
        ),
        TokenError::Transient(_) => (
            "provider_unavailable",
            "the provider could not be reached".to_owned(),
        ),
        TokenError::Invalid(reason) => (
            "invalid_response",
            format!("the provider's answer was unusable: {reason}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
