//! `/v1/connectors`: create, list, read, replace and delete connectors.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use splice_catalog::AuthMode;
use splice_domain::{
    Connector, ConnectorConfig, ConnectorId, Meta, OAuth2Config, ProviderConfig, Secret, Tags,
    now_millis,
};

use super::connector_id;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::views;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConnector {
    id: String,
    /// `oauth2` for a hand-configured OAuth 2.0 connector; implied by `provider`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// A provider catalog entry (`GET /v1/providers`).
    provider: Option<String>,
    #[serde(default)]
    config: Value,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceConnector {
    #[serde(rename = "type")]
    kind: Option<String>,
    provider: Option<String>,
    config: Value,
    #[serde(default)]
    tags: Tags,
    /// When given, the write only happens if the stored version still matches.
    version: Option<i64>,
}

pub async fn create_connector(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateConnector>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = ConnectorId::parse(&body.id)?;
    let config = parse_config(
        &state,
        body.kind.as_deref(),
        body.provider.as_deref(),
        body.config,
    )?;
    let connector = Connector {
        id,
        config,
        misconfigured: None,
        meta: Meta::new(body.tags, now_millis()),
    };

    state.store.create_connector(&connector).await?;
    tracing::info!(connector.id = %connector.id, "connector created");
    Ok((
        StatusCode::CREATED,
        Json(views::connector(&state, &connector)),
    ))
}

pub async fn list_connectors(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let connectors = state.store.list_connectors().await?;
    Ok(Json(views::items(
        connectors.iter().map(|c| views::connector(&state, c)),
    )))
}

pub async fn get_connector(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let connector = load(&state, &id).await?;
    Ok(Json(views::connector(&state, &connector)))
}

/// Replaces a connector's configuration and tags. An omitted `client_secret` keeps the
/// stored one, so reading a connector and writing it back works.
pub async fn update_connector(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReplaceConnector>,
) -> ApiResult<Json<Value>> {
    let mut connector = load(&state, &id).await?;
    if body.version.is_some_and(|v| v != connector.meta.version) {
        return Err(ApiError::conflict(format!(
            "connector {id} is at version {}, not {}",
            connector.meta.version,
            body.version.unwrap_or_default()
        )));
    }

    let mut config = body.config;
    if let (Some(map), Some(current)) = (config.as_object_mut(), connector.config.client_secret()) {
        map.entry("client_secret")
            .or_insert_with(|| current.expose().into());
    }
    // Likewise the webhook signing secret.
    let webhook = config.get_mut("webhook").and_then(|w| w.as_object_mut());
    if let (Some(webhook), Some(current)) = (webhook, connector.config.webhook_secret()) {
        webhook
            .entry("secret")
            .or_insert_with(|| current.expose().into());
    }
    let (kind, provider) = match (&connector.config, body.kind, body.provider) {
        (_, kind, Some(provider)) => (kind, Some(provider)),
        (ConnectorConfig::Provider(p), kind, None) => (kind, Some(p.provider.clone())),
        (ConnectorConfig::OAuth2(_), kind, None) => (kind.or(Some("oauth2".into())), None),
    };
    connector.config = parse_config(&state, kind.as_deref(), provider.as_deref(), config)?;
    connector.meta.tags = body.tags;
    connector.misconfigured = None;
    connector.meta.updated_at = now_millis();
    connector.meta.version += 1;

    state.store.update_connector(&connector).await?;
    state.token_cache.clear();
    state.webhook_verifiers.clear();
    Ok(Json(views::connector(&state, &connector)))
}

/// Deletes a connector and its identities, unless an integration still uses it.
pub async fn delete_connector(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = connector_id(&id)?;
    let users: Vec<String> = state
        .store
        .list_integrations()
        .await?
        .into_iter()
        .filter(|i| i.connectors.values().any(|c| *c == id))
        .map(|i| i.id.to_string())
        .collect();
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "connector {id} is used by integrations: {}",
            users.join(", ")
        )));
    }
    if !state.store.delete_connector(&id).await? {
        return Err(ApiError::not_found(format!("connector {id}")));
    }
    state.token_cache.clear();
    state.webhook_verifiers.clear();
    Ok(StatusCode::NO_CONTENT)
}

async fn load(state: &AppState, id: &str) -> ApiResult<Connector> {
    let id = connector_id(id)?;
    state
        .store
        .get_connector(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("connector {id}")))
}

/// Validates a connector's type (or catalog provider) and configuration.
fn parse_config(
    state: &AppState,
    kind: Option<&str>,
    provider: Option<&str>,
    config: Value,
) -> ApiResult<ConnectorConfig> {
    match (kind, provider) {
        (Some("oauth2") | None, None) if kind.is_some() => parse_oauth2(config),
        (None, None) => Err(ApiError::invalid(
            "give \"type\": \"oauth2\" or a catalog \"provider\"",
        )),
        (None | Some("provider"), Some(name)) => parse_provider(state, name, config),
        (Some("oauth2"), Some(_)) => Err(ApiError::invalid(
            "give either \"type\": \"oauth2\" or a catalog \"provider\", not both",
        )),
        (Some(other), _) => Err(ApiError::invalid(format!(
            "type {other:?} is not supported; use \"oauth2\", or \"provider\" with a catalog entry"
        ))),
    }
}

/// A catalog connector: the entry must exist, its connector-level settings must be valid, and
/// OAuth entries need the app's client id and secret.
fn parse_provider(state: &AppState, name: &str, config: Value) -> ApiResult<ConnectorConfig> {
    let entry = state.credentials.catalog().get(name).ok_or_else(|| {
        ApiError::invalid(format!(
            "provider {name:?} is not in the catalog (GET /v1/providers)"
        ))
    })?;
    let mut parsed: ProviderConfig =
        serde_json::from_value(config).map_err(|e| ApiError::invalid(format!("config: {e}")))?;
    parsed.provider = name.to_owned();
    entry
        .check_connector_settings(&parsed.settings)
        .map_err(|e| ApiError::invalid(format!("config.settings: {e}")))?;
    let oauth = matches!(
        entry.auth_mode,
        AuthMode::Oauth2 | AuthMode::Oauth2ClientCredentials
    );
    if oauth {
        if parsed.client_id.as_deref().is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                "config.client_id is required for this provider",
            ));
        }
        if parsed.client_secret.as_ref().is_none_or(Secret::is_empty) {
            return Err(ApiError::invalid(
                "config.client_secret is required for this provider",
            ));
        }
    }
    if let Some(webhook) = &parsed.webhook {
        check_webhook(name, webhook)?;
    }
    Ok(ConnectorConfig::Provider(parsed))
}

/// A webhook section must name a format Splice reads, with a scheme it can verify.
fn check_webhook(provider: &str, webhook: &splice_domain::WebhookConfig) -> ApiResult<()> {
    use splice_webhooks::{ProviderKind, Scheme};
    use std::str::FromStr;
    let kind = match &webhook.provider {
        Some(name) => ProviderKind::from_str(name).map_err(|_| {
            ApiError::invalid(format!(
                "config.webhook.provider {name:?} is not a known format"
            ))
        })?,
        None => ProviderKind::from_str(provider).unwrap_or(ProviderKind::Generic),
    };
    match &webhook.scheme {
        Some(scheme) => serde_json::from_value::<Scheme>(scheme.clone())
            .map(drop)
            .map_err(|e| ApiError::invalid(format!("config.webhook.scheme: {e}"))),
        None if kind.default_scheme().is_none() => Err(ApiError::invalid(format!(
            "config.webhook.scheme is required for the {} format",
            kind.as_str()
        ))),
        None => Ok(()),
    }
}

fn parse_oauth2(config: Value) -> ApiResult<ConnectorConfig> {
    let oauth: OAuth2Config =
        serde_json::from_value(config).map_err(|e| ApiError::invalid(format!("config: {e}")))?;
    check_url("config.authorization_url", &oauth.authorization_url)?;
    check_url("config.token_url", &oauth.token_url)?;
    if let Some(userinfo) = &oauth.userinfo_url {
        check_url("config.userinfo_url", userinfo)?;
    }
    if oauth.client_id.is_empty() {
        return Err(ApiError::invalid("config.client_id must not be empty"));
    }
    if oauth.client_secret.is_empty() {
        return Err(ApiError::invalid("config.client_secret must not be empty"));
    }
    let reserved = [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
    ];
    if let Some(key) = oauth
        .authorize_params
        .keys()
        .find(|k| reserved.contains(&k.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "config.authorize_params cannot set {key:?}"
        )));
    }
    Ok(ConnectorConfig::OAuth2(oauth))
}

fn check_url(field: &str, value: &str) -> ApiResult<()> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        _ => Err(ApiError::invalid(format!(
            "{field} must be an absolute http(s) URL"
        ))),
    }
}
