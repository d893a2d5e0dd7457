//! The hosted connect flow, public and unauthenticated: the session URL takes the user through
//! each connector in turn — the provider's consent page for OAuth, a small form for API keys,
//! basic credentials, or settings the provider needs (a shop, a subdomain) — and the OAuth
//! callback stores what comes back.
//!
//! `state` is 256 random bits, stored server-side only as its SHA-256, bound to one session
//! step, single use (taken with a delete), and short-lived. The PKCE verifier lives beside it
//! and never leaves the server.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use bytes::Bytes;
use splice_crypto::{pkce_challenge, random_token, sha256_hex};
use splice_domain::{
    AuthState, Connector, ConnectorConfig, Identity, IdentityId, IdentityStatus, Meta,
    RefreshState, Secret, Session, SessionError, SessionId, SessionStatus, Tags, TokenSet,
    now_millis,
};
use splice_oauth::lifecycle::first_tokens;
use splice_oauth::{AuthorizeRequest, Endpoints, TokenError};

use super::sessions::millis;
use crate::AppState;
use crate::credentials::Mode;
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
        let body = page(
            "Connection could not continue",
            &format!("<p>{}</p>", escape_html(&self.message)),
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

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    )
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The pending session a public URL names, or the page explaining why it cannot go on.
async fn pending_session(state: &AppState, raw: &str) -> Result<Result<Session, Response>, Page> {
    let gone = || Page::new(StatusCode::NOT_FOUND, "This connection link is invalid.");
    let id = SessionId::parse(raw).map_err(|_| gone())?;
    let session = state.store.get_session(&id).await?.ok_or_else(gone)?;
    if session.expires_at <= now_millis() {
        return Err(Page::new(
            StatusCode::GONE,
            "This connection link has expired.",
        ));
    }
    if session.status != SessionStatus::Pending || session.next_step().is_none() {
        return Ok(Err(Redirect::to(&finish_url(&session)).into_response()));
    }
    Ok(Ok(session))
}

async fn step_connector(state: &AppState, session: &Session) -> Result<(usize, Connector), Page> {
    let Some((index, step)) = session.next_step() else {
        return Err(Page::new(
            StatusCode::CONFLICT,
            "This session has no step left.",
        ));
    };
    let connector = state
        .store
        .get_connector(&step.connector)
        .await?
        .ok_or_else(|| {
            Page::new(
                StatusCode::NOT_FOUND,
                format!("Connector {} no longer exists.", step.connector),
            )
        })?;
    Ok((index, connector))
}

fn mode_of(state: &AppState, connector: &Connector) -> Result<Mode, Page> {
    state
        .credentials
        .mode(connector)
        .map_err(|e| Page::new(StatusCode::BAD_GATEWAY, e))
}

/// `GET /connect/{session}`: shows the next step's form, or redirects to the next consent
/// page, or back to the application when every step is done.
pub async fn start_connect(
    State(state): State<AppState>,
    Path(session): Path<String>,
) -> Result<Response, Page> {
    let session = match pending_session(&state, &session).await? {
        Ok(session) => session,
        Err(done) => return Ok(done),
    };
    let (index, connector) = step_connector(&state, &session).await?;
    let settings = &session.steps[index].settings;

    let fields = match mode_of(&state, &connector)? {
        Mode::ApiKey => vec![("api_key".to_owned(), "API key".to_owned(), "password")],
        Mode::Basic => vec![
            ("username".to_owned(), "User name".to_owned(), "text"),
            ("password".to_owned(), "Password".to_owned(), "password"),
        ],
        Mode::OAuth2 | Mode::ClientCredentials => {
            let missing = state
                .credentials
                .missing_identity_settings(&connector, settings)
                .map_err(|e| Page::new(StatusCode::BAD_GATEWAY, e))?;
            if missing.is_empty() {
                return authorize(&state, &session, index, &connector).await;
            }
            missing
                .into_iter()
                .map(|(name, label)| (name, label, "text"))
                .collect()
        }
    };
    Ok(Html(form_page(&connector, &fields)).into_response())
}

fn form_page(connector: &Connector, fields: &[(String, String, &str)]) -> String {
    let inputs: String = fields
        .iter()
        .map(|(name, label, kind)| {
            format!(
                "<p><label>{}<br><input type=\"{kind}\" name=\"{}\" required \
                 autocomplete=\"off\"></label></p>",
                escape_html(label),
                escape_html(name)
            )
        })
        .collect();
    let title = format!("Connect {}", escape_html(connector.id.as_str()));
    page(
        &title,
        &format!(
            "<form method=\"post\">{inputs}<p><button type=\"submit\">Continue</button></p></form>"
        ),
    )
}

/// `POST /connect/{session}`: the step's form — credentials for API-key and basic connectors,
/// or provider settings before the consent page.
pub async fn submit_connect(
    State(state): State<AppState>,
    Path(session): Path<String>,
    body: Bytes,
) -> Result<Response, Page> {
    let mut session = match pending_session(&state, &session).await? {
        Ok(session) => session,
        Err(done) => return Ok(done),
    };
    let (index, connector) = step_connector(&state, &session).await?;
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let again = format!("{}/connect/{}", state.public_base(), session.id);

    let secret = match mode_of(&state, &connector)? {
        Mode::ApiKey => field("api_key").map(Secret::new),
        Mode::Basic => match (field("username"), form.get("password")) {
            (Some(user), Some(password)) if !password.is_empty() => {
                Some(Secret::new(format!("{user}:{password}")))
            }
            _ => None,
        },
        Mode::OAuth2 | Mode::ClientCredentials => {
            // Provider settings the user typed (a shop, a subdomain); checked at authorize time.
            let missing = state
                .credentials
                .missing_identity_settings(&connector, &session.steps[index].settings)
                .map_err(|e| Page::new(StatusCode::BAD_GATEWAY, e))?;
            for (name, _) in missing {
                if let Some(value) = field(&name) {
                    session.steps[index].settings.insert(name, value);
                }
            }
            session.meta.updated_at = now_millis();
            session.meta.version += 1;
            state.store.update_session(&session).await?;
            return Ok(Redirect::to(&again).into_response());
        }
    };
    let Some(secret) = secret else {
        return Err(Page::new(
            StatusCode::BAD_REQUEST,
            "Please fill in every field.",
        ));
    };

    let values = session.steps[index].settings.clone();
    match state
        .outbound
        .verify_credential(&connector, &secret, &values)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            let message = "The provider did not accept these credentials. Go back and try again.";
            return Err(Page::new(StatusCode::BAD_REQUEST, message));
        }
        Err(err) => {
            tracing::warn!(connector.id = %connector.id, error = %err, "credential check failed");
            let message = "The provider could not be reached to check these credentials.";
            return Err(Page::new(StatusCode::BAD_GATEWAY, message));
        }
    }
    let tokens = TokenSet {
        access_token: secret,
        refresh_token: None,
        expires_at: None,
        scopes: Vec::new(),
        values,
        named: BTreeMap::new(),
    };
    let (identity, new) = identity_for(&state, &session, index, &connector, None, tokens).await?;
    complete_step(&state, session, index, identity, new).await
}

/// Stores a single-use state for the step and redirects to the provider's consent page.
async fn authorize(
    state: &AppState,
    session: &Session,
    index: usize,
    connector: &Connector,
) -> Result<Response, Page> {
    let unusable = |e: String| {
        Page::new(
            StatusCode::BAD_REQUEST,
            format!("This connection cannot start: {e}"),
        )
    };
    let values = state
        .credentials
        .values(connector, &session.steps[index].settings)
        .map_err(unusable)?;
    let (target, pkce) = state
        .credentials
        .authorize(connector, &values)
        .map_err(unusable)?;

    let state_value = random_token(32);
    let verifier = pkce.then(|| Secret::new(random_token(32)));
    let challenge = verifier.as_ref().map(|v| pkce_challenge(v.expose()));
    let auth_state = AuthState {
        state_hash: sha256_hex(&state_value),
        session: session.id.clone(),
        step: index,
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
    let url = state
        .oauth
        .authorize_url_with(&target, &request)
        .map_err(|_| {
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
    let session = state
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
    let Some(connector) = state.store.get_connector(&auth.connector).await? else {
        return fail(
            &state,
            session,
            "connector_deleted",
            "the connector no longer exists",
        )
        .await;
    };

    match exchange(&state, &session, &auth, &connector, code, &query).await {
        Ok((subject, tokens)) => {
            let step = auth.step;
            let (identity, new) =
                identity_for(&state, &session, step, &connector, subject, tokens).await?;
            complete_step(&state, session, step, identity, new).await
        }
        Err((code, description)) => {
            tracing::warn!(session.id = %session.id, connector.id = %connector.id, error = code, "code exchange failed");
            fail(&state, session, code, &description).await
        }
    }
}

/// Exchanges the code the way the connector's provider wants, and finds the account id.
async fn exchange(
    state: &AppState,
    session: &Session,
    auth: &AuthState,
    connector: &Connector,
    code: &str,
    query: &QueryPairs,
) -> Result<(Option<String>, TokenSet), (&'static str, String)> {
    let misconfigured = |e: String| ("connector_misconfigured", e);
    let provider = state
        .credentials
        .provider(connector)
        .map_err(misconfigured)?;
    let mut values = session.steps[auth.step].settings.clone();
    if let Some(provider) = provider {
        let query: BTreeMap<String, String> = query.0.iter().cloned().collect();
        let captured = provider
            .callback_captures(&query)
            .map_err(|e| ("invalid_response", e.to_string()))?;
        values.extend(captured);
    }
    let endpoint = state
        .credentials
        .token_request(connector, &values)
        .map_err(misconfigured)?;
    let response = state
        .oauth
        .exchange_code_with(
            &endpoint.request,
            code,
            &state.callback_url(),
            auth.pkce_verifier.as_ref(),
        )
        .await
        .map_err(|e| exchange_failure(&e))?;

    let account_id = response.account_id.clone();
    let tokens = first_tokens(response, values);
    let subject = match account_id {
        Some(id) => Some(id),
        None => account_from_provider(state, connector, &tokens).await,
    };
    Ok((subject, tokens))
}

/// The provider account id from userinfo or from the identity's values; `None` when the
/// provider does not say (the identity is then never reused).
async fn account_from_provider(
    state: &AppState,
    connector: &Connector,
    tokens: &TokenSet,
) -> Option<String> {
    match &connector.config {
        ConnectorConfig::OAuth2(config) => {
            let url = config.userinfo_url.as_deref()?;
            match state.oauth.subject(url, &tokens.access_token).await {
                Ok(subject) => Some(subject),
                Err(err) => {
                    tracing::warn!(connector.id = %connector.id, error = %err, "userinfo failed; identity will not be reused");
                    None
                }
            }
        }
        ConnectorConfig::Provider(_) => {
            let provider = state.credentials.provider(connector).ok()??;
            let values = state.credentials.values(connector, &tokens.values).ok()?;
            if let Some(request) = provider.userinfo_request(&values).ok()? {
                match state.oauth.userinfo(&request, &tokens.access_token).await {
                    Ok(info) => {
                        let (id, _) = provider.read_userinfo(&info);
                        if id.is_some() {
                            return id;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(connector.id = %connector.id, error = %err, "userinfo failed")
                    }
                }
            }
            provider.account_id_from(&values)
        }
    }
}

/// The identity a completed step yields: on a reconnect the install's identity with new
/// tokens (its id kept); else the tenant's identity for the same provider account, or a new
/// one.
async fn identity_for(
    state: &AppState,
    session: &Session,
    index: usize,
    connector: &Connector,
    subject: Option<String>,
    tokens: TokenSet,
) -> Result<(Identity, bool), Page> {
    let now = now_millis();
    let existing = match (&session.steps[index].reconnect, &subject) {
        (Some(id), _) => state.store.get_identity(id).await?,
        (None, Some(subject)) => {
            state
                .store
                .find_identity_by_subject(&connector.id, &session.tenant, subject)
                .await?
        }
        (None, None) => None,
    };
    if let Some(mut identity) = existing {
        // A re-consent may omit the refresh token (Google does): keep the one we have.
        let refresh_token = tokens
            .refresh_token
            .clone()
            .or(identity.tokens.refresh_token.take());
        identity.tokens = TokenSet {
            refresh_token,
            ..tokens
        };
        identity.subject = subject.or(identity.subject);
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
        connector: connector.id.clone(),
        tenant: session.tenant.clone(),
        subject,
        status: IdentityStatus::Healthy,
        status_reason: None,
        status_at: now,
        tokens,
        refresh: RefreshState {
            refreshed_at: now,
            ..RefreshState::default()
        },
        meta: Meta::new(Tags::default(), now),
    };
    Ok((identity, true))
}

/// Attaches the identity to the step (one transaction) and moves the user on.
async fn complete_step(
    state: &AppState,
    mut session: Session,
    index: usize,
    identity: Identity,
    new: bool,
) -> Result<Response, Page> {
    session.steps[index].identity = Some(identity.id.clone());
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
    state.token_cache.clear();
    tracing::info!(session.id = %session.id, identity.id = %identity.id, reused = !new, "identity connected");

    let next = match session.status {
        SessionStatus::Pending => format!("{}/connect/{}", state.public_base(), session.id),
        _ => finish_url(&session),
    };
    Ok(Redirect::to(&next).into_response())
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
