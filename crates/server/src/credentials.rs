//! How each connector authenticates: the bridge from connectors (hand-configured OAuth 2.0, or
//! a provider catalog entry plus app credentials) to authorization URLs, token requests and
//! the way API calls carry credentials.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use splice_catalog::{ApiKeyPlacement, AuthMode, Catalog, Provider};
use splice_domain::{Connector, ConnectorConfig, Identity, Secret};
use splice_oauth::{Endpoints, ProviderAuthorize, ProviderRequest, TokenEndpoint};

/// How a connector's credentials are obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The user consents at the provider (authorization code).
    OAuth2,
    /// The connector's own token; no user step.
    ClientCredentials,
    /// The user pastes a key in the hosted connect form.
    ApiKey,
    /// The user enters a user name and password in the hosted connect form.
    Basic,
}

/// Where an API call's credential goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    Header { name: String, prefix: String },
    Query { name: String },
}

/// Everything needed to call a connector's API for one identity.
#[derive(Clone, Debug)]
pub struct ApiTarget {
    /// Base for relative URLs.
    pub base_url: Option<String>,
    pub placement: Placement,
    /// Extra headers every call needs.
    pub headers: Vec<(String, String)>,
}

/// The provider catalog and what it says about each connector.
#[derive(Clone)]
pub struct Credentials {
    catalog: Arc<Catalog>,
}

impl Credentials {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self { catalog }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The catalog entry of a provider connector; `None` for a hand-configured one.
    pub fn provider(&self, connector: &Connector) -> Result<Option<&Provider>, String> {
        match &connector.config {
            ConnectorConfig::OAuth2(_) => Ok(None),
            ConnectorConfig::Provider(p) => self
                .catalog
                .get(&p.provider)
                .map(Some)
                .ok_or_else(|| format!("provider {:?} is not in the catalog", p.provider)),
        }
    }

    pub fn mode(&self, connector: &Connector) -> Result<Mode, String> {
        Ok(match self.provider(connector)? {
            None => Mode::OAuth2,
            Some(p) => match p.auth_mode {
                AuthMode::Oauth2 => Mode::OAuth2,
                AuthMode::Oauth2ClientCredentials => Mode::ClientCredentials,
                AuthMode::ApiKey => Mode::ApiKey,
                AuthMode::Basic => Mode::Basic,
            },
        })
    }

    /// Settings the user must give at connect time and has not yet.
    pub fn missing_identity_settings(
        &self,
        connector: &Connector,
        given: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, String)>, String> {
        let Some(provider) = self.provider(connector)? else {
            return Ok(Vec::new());
        };
        Ok(provider
            .identity_settings()
            .filter(|s| s.default.is_none() && given.get(&s.name).is_none_or(String::is_empty))
            .map(|s| (s.name.clone(), s.label.clone()))
            .collect())
    }

    /// Connector settings, identity settings and captured values, validated, for templates.
    pub fn values(
        &self,
        connector: &Connector,
        identity_values: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, String> {
        let Some(provider) = self.provider(connector)? else {
            return Ok(identity_values.clone());
        };
        let ConnectorConfig::Provider(config) = &connector.config else {
            return Ok(identity_values.clone());
        };
        let mut given = identity_values.clone();
        given.extend(config.settings.clone());
        let mut values = provider
            .resolve_settings(&given)
            .map_err(|e| e.to_string())?;
        for (key, value) in identity_values {
            values.entry(key.clone()).or_insert_with(|| value.clone());
        }
        Ok(values)
    }

    /// The consent page for a connector, and whether to use PKCE.
    pub fn authorize(
        &self,
        connector: &Connector,
        values: &BTreeMap<String, String>,
    ) -> Result<(ProviderAuthorize, bool), String> {
        match &connector.config {
            ConnectorConfig::OAuth2(config) => {
                Ok((ProviderAuthorize::generic(config), config.pkce))
            }
            ConnectorConfig::Provider(config) => {
                let provider = self.provider(connector)?.ok_or("no provider")?;
                let client_id = config
                    .client_id
                    .as_deref()
                    .ok_or("the connector has no client_id")?;
                let target = provider
                    .authorize(values, client_id, config.scopes.as_deref())
                    .map_err(|e| e.to_string())?;
                let pkce = provider.oauth2.as_ref().is_some_and(|o| o.pkce);
                Ok((target, pkce))
            }
        }
    }

    /// How the API of this connector is called with `identity`'s values.
    pub fn api_target(
        &self,
        connector: &Connector,
        identity_values: &BTreeMap<String, String>,
    ) -> Result<ApiTarget, String> {
        let bearer = Placement::Header {
            name: "Authorization".into(),
            prefix: "Bearer ".into(),
        };
        let Some(provider) = self.provider(connector)? else {
            return Ok(ApiTarget {
                base_url: None,
                placement: bearer,
                headers: Vec::new(),
            });
        };
        let values = self.values(connector, identity_values)?;
        let placement = match provider.auth_mode {
            AuthMode::ApiKey => match provider
                .api_key_target(&values)
                .map_err(|e| e.to_string())?
            {
                (ApiKeyPlacement::Header, name, prefix) => Placement::Header { name, prefix },
                (ApiKeyPlacement::Query, name, _) => Placement::Query { name },
            },
            AuthMode::Basic => Placement::Header {
                name: "Authorization".into(),
                prefix: "Basic ".into(),
            },
            AuthMode::Oauth2 | AuthMode::Oauth2ClientCredentials => Placement::Header {
                name: provider.api.auth_header.clone(),
                prefix: provider.api.auth_prefix.clone(),
            },
        };
        Ok(ApiTarget {
            base_url: provider.api_base_url(&values).map_err(|e| e.to_string())?,
            placement,
            headers: provider.api_headers(&values).map_err(|e| e.to_string())?,
        })
    }

    /// The revocation endpoint for an identity's tokens, when the provider has one.
    pub fn revocation_url(&self, connector: &Connector, identity: &Identity) -> Option<String> {
        let provider = self.provider(connector).ok()??;
        let values = self.values(connector, &identity.tokens.values).ok()?;
        provider.revocation_url(&values).ok()?
    }
}

/// The credential value an API call carries, given how the connector stores it.
pub fn credential_value(mode: Mode, secret: &Secret) -> String {
    match mode {
        // Basic credentials are stored as `user:password`.
        Mode::Basic => base64::engine::general_purpose::STANDARD.encode(secret.expose()),
        _ => secret.expose().to_owned(),
    }
}

impl Endpoints for Credentials {
    fn token_request(
        &self,
        connector: &Connector,
        identity_values: &BTreeMap<String, String>,
    ) -> Result<TokenEndpoint, String> {
        match &connector.config {
            ConnectorConfig::OAuth2(config) => Ok(TokenEndpoint {
                request: ProviderRequest::generic(config),
                scopes: config.scopes.clone(),
                scope_separator: " ".into(),
            }),
            ConnectorConfig::Provider(config) => {
                let provider = self.provider(connector)?.ok_or("no provider")?;
                let values = self.values(connector, identity_values)?;
                let client_id = config
                    .client_id
                    .as_deref()
                    .ok_or("the connector has no client_id")?;
                let secret = config
                    .client_secret
                    .clone()
                    .ok_or("the connector has no client_secret")?;
                let request = provider
                    .token_request(&values, client_id, secret)
                    .map_err(|e| e.to_string())?;
                let oauth2 = provider.oauth2.as_ref();
                Ok(TokenEndpoint {
                    request,
                    scopes: config.scopes.clone().unwrap_or_else(|| {
                        oauth2.map(|o| o.default_scopes.clone()).unwrap_or_default()
                    }),
                    scope_separator: oauth2
                        .map_or_else(|| " ".into(), |o| o.scope_separator.clone()),
                })
            }
        }
    }
}
