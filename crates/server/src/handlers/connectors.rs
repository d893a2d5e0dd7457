//! `/v1/connectors`: create, list, read, replace and delete connectors.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use splice_domain::{
    Connector, ConnectorConfig, ConnectorId, Meta, OAuth2Config, Tags, now_millis,
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
    #[serde(rename = "type")]
    kind: String,
    config: Value,
    #[serde(default)]
    tags: Tags,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceConnector {
    #[serde(rename = "type")]
    kind: Option<String>,
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
    let config = parse_config(&body.kind, body.config)?;
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
    let ConnectorConfig::OAuth2(current) = &connector.config;
    if let Some(map) = config.as_object_mut() {
        map.entry("client_secret")
            .or_insert_with(|| current.client_secret.expose().into());
    }
    let kind = body
        .kind
        .unwrap_or_else(|| connector.config.kind().to_owned());
    connector.config = parse_config(&kind, config)?;
    connector.meta.tags = body.tags;
    connector.misconfigured = None;
    connector.meta.updated_at = now_millis();
    connector.meta.version += 1;

    state.store.update_connector(&connector).await?;
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

/// Validates a connector's type and configuration.
fn parse_config(kind: &str, config: Value) -> ApiResult<ConnectorConfig> {
    if kind != "oauth2" {
        return Err(ApiError::invalid(format!(
            "type {kind:?} is not supported; use \"oauth2\""
        )));
    }
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
    let clash: BTreeMap<_, _> = oauth
        .authorize_params
        .iter()
        .filter(|(k, _)| reserved.contains(&k.as_str()))
        .collect();
    if let Some((key, _)) = clash.into_iter().next() {
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
