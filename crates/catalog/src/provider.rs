//! One provider's description, as read from its file, and what it turns into.
//!
//! A provider file says how to authenticate (auth mode and its section), which settings the
//! URLs need, how token responses are laid out, where the account id comes from, and how the
//! API is called. The methods here fill templates and build `splice_oauth` requests; they do
//! no I/O.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};
use splice_domain::{ClientAuth, Secret};
use splice_oauth::client::{BodyFormat, ProviderAuthorize, ProviderRequest, UserinfoRequest};
use splice_oauth::response::ResponseShape;

use crate::CatalogError;
use crate::template::{placeholders, render};

/// A setting value that is safe inside a host name or a path segment.
const DEFAULT_SETTING_PATTERN: &str = r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$";

/// A value captured from a callback query: ids, never URLs.
const CALLBACK_VALUE_PATTERN: &str = r"^[A-Za-z0-9_.-]{1,128}$";

/// A provider as its file describes it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// The catalog key, also the file name.
    pub name: String,
    pub display_name: String,
    pub docs_url: String,
    pub auth_mode: AuthMode,
    /// Values the URLs need, from the connector or from each identity.
    #[serde(default)]
    pub settings: Vec<Setting>,
    pub oauth2: Option<OAuth2Spec>,
    pub api_key: Option<ApiKeySpec>,
    /// How the provider's account id is found when the token response lacks it.
    pub account: Option<AccountSpec>,
    #[serde(default)]
    pub api: ApiSpec,
    #[serde(default)]
    pub rate_limit: RateLimitSpec,
}

/// How a connector authenticates to the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// OAuth 2.0 authorization code, with the user's consent.
    Oauth2,
    /// OAuth 2.0 client credentials: the connector's own token, no user.
    Oauth2ClientCredentials,
    /// A key the user pastes, sent in a header or a query parameter.
    ApiKey,
    /// HTTP Basic with a user name and password (or key).
    Basic,
}

/// A value a provider's URLs need, such as a shop or subdomain.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    pub name: String,
    pub label: String,
    /// Who supplies it: the developer once per connector, or the user at connect time.
    #[serde(default)]
    pub source: SettingSource,
    pub default: Option<String>,
    /// A regular expression the value must match; host-safe text when absent.
    pub pattern: Option<String>,
    pub example: Option<String>,
}

/// Who supplies a setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SettingSource {
    #[default]
    Connector,
    Identity,
}

/// The OAuth 2.0 side of a provider.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Spec {
    /// The consent page; absent for client credentials.
    pub authorization_url: Option<String>,
    pub token_url: String,
    /// Where refresh grants go when not to `token_url`.
    pub refresh_url: Option<String>,
    pub revocation_url: Option<String>,
    #[serde(default)]
    pub default_scopes: Vec<String>,
    #[serde(default = "space")]
    pub scope_separator: String,
    #[serde(default = "scope")]
    pub scope_param: String,
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    #[serde(default)]
    pub pkce: bool,
    #[serde(default)]
    pub client_auth: ClientAuth,
    #[serde(default)]
    pub body_format: BodyFormat,
    #[serde(default = "json")]
    pub accept: String,
    #[serde(default)]
    pub token_headers: BTreeMap<String, String>,
    /// Values the provider adds to the callback query, by the name they are kept under
    /// (QuickBooks sends `realmId`).
    #[serde(default)]
    pub callback_capture: BTreeMap<String, String>,
    #[serde(default)]
    pub response: ResponseShape,
}

/// The API key side of a provider.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    pub placement: ApiKeyPlacement,
    /// The header or query parameter name; may hold placeholders.
    pub name: String,
    /// Written before the key (`Bearer `, `Token `); may hold placeholders.
    #[serde(default)]
    pub prefix: String,
}

/// Where an API key travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyPlacement {
    Header,
    Query,
}

/// Where the provider account id comes from when the token response does not say.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSpec {
    /// A URL to call with the new token; may use settings and captured values.
    pub userinfo_url: Option<String>,
    /// A JSON body to POST instead of a GET (GraphQL APIs).
    pub userinfo_body: Option<String>,
    #[serde(default = "bearer")]
    pub auth_prefix: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON pointer to the id in the userinfo answer.
    pub id_path: Option<String>,
    /// Further values to keep from the userinfo answer, by name.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
    /// Use a setting's value as the account id (Shopify's shop).
    pub from_setting: Option<String>,
    /// Use a captured value as the account id (QuickBooks' realm).
    pub from_capture: Option<String>,
}

/// How API calls are made once a token is held.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    /// Base for relative calls; may use settings and captured values.
    pub base_url: Option<String>,
    #[serde(default = "authorization")]
    pub auth_header: String,
    #[serde(default = "bearer")]
    pub auth_prefix: String,
    /// Headers every call needs (`Notion-Version`); may use captured values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A cheap authenticated `GET` (relative to `base_url`) that checks a key or password the
    /// user typed before it is stored; any 2xx answer accepts it.
    pub verify_path: Option<String>,
}

impl Default for ApiSpec {
    fn default() -> Self {
        Self {
            base_url: None,
            auth_header: authorization(),
            auth_prefix: bearer(),
            headers: BTreeMap::new(),
            verify_path: None,
        }
    }
}

/// Hints for reading the provider's rate limiting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Whether 429s carry `Retry-After` (see [`crate::retry_after`]).
    #[serde(default)]
    pub retry_after: bool,
    pub remaining_header: Option<String>,
    pub reset_header: Option<String>,
    /// What the reset header holds: `epoch_seconds`, `delay_seconds` or `epoch_millis`.
    pub reset_unit: Option<String>,
}

impl RateLimitSpec {
    /// The wait a rate-limited answer's reset header asks for (when the provider has one and
    /// the answer carries it), measured from `now`.
    pub fn reset_wait(
        &self,
        headers: &[(String, String)],
        now: std::time::SystemTime,
    ) -> Option<std::time::Duration> {
        use std::time::{Duration, UNIX_EPOCH};
        let name = self.reset_header.as_deref()?;
        let raw = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))?
            .1
            .trim();
        // Without a declared unit the header's meaning is unknown: use none.
        let at = match self.reset_unit.as_deref()? {
            "delay_seconds" => {
                let seconds: f64 = raw
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)?;
                return Some(Duration::from_secs_f64(seconds.min(86_400.0)));
            }
            "epoch_millis" => UNIX_EPOCH + Duration::from_millis(raw.parse().ok()?),
            _ => UNIX_EPOCH + Duration::from_secs(raw.parse().ok()?),
        };
        Some(at.duration_since(now).unwrap_or(Duration::ZERO))
    }
}

/// What `GET /v1/providers` shows of a provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProviderSummary {
    pub name: String,
    pub display_name: String,
    pub auth_mode: AuthMode,
    pub settings: Vec<SettingSummary>,
    pub default_scopes: Vec<String>,
    pub docs_url: String,
}

/// A setting as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SettingSummary {
    pub name: String,
    pub label: String,
    pub source: SettingSource,
    pub required: bool,
    pub default: Option<String>,
    pub example: Option<String>,
}

fn space() -> String {
    " ".into()
}
fn scope() -> String {
    "scope".into()
}
fn json() -> String {
    "application/json".into()
}
fn bearer() -> String {
    "Bearer ".into()
}
fn authorization() -> String {
    "Authorization".into()
}

impl Provider {
    /// The summary for listings.
    pub fn summary(&self) -> ProviderSummary {
        let settings = self
            .settings
            .iter()
            .map(|s| SettingSummary {
                name: s.name.clone(),
                label: s.label.clone(),
                source: s.source,
                required: s.default.is_none(),
                default: s.default.clone(),
                example: s.example.clone(),
            })
            .collect();
        ProviderSummary {
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            auth_mode: self.auth_mode,
            settings,
            default_scopes: self
                .oauth2
                .iter()
                .flat_map(|o| o.default_scopes.clone())
                .collect(),
            docs_url: self.docs_url.clone(),
        }
    }

    /// The declared settings' values: given ones checked against their patterns, defaults
    /// for the rest. Undeclared keys are dropped so nothing else reaches a URL.
    pub fn resolve_settings(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, CatalogError> {
        let mut values = BTreeMap::new();
        for setting in &self.settings {
            let value = match given.get(&setting.name).filter(|v| !v.is_empty()) {
                Some(value) => value.clone(),
                None => setting
                    .default
                    .clone()
                    .ok_or_else(|| CatalogError::MissingSetting(setting.name.clone()))?,
            };
            let pattern = setting
                .pattern
                .as_deref()
                .unwrap_or(DEFAULT_SETTING_PATTERN);
            if !compile(pattern)?.is_match(&value) {
                return Err(CatalogError::InvalidSetting {
                    name: setting.name.clone(),
                    reason: format!("must match {pattern}"),
                });
            }
            values.insert(setting.name.clone(), value);
        }
        Ok(values)
    }

    /// The authorization request for `values` (resolved settings); `scopes` replaces the
    /// defaults when given.
    pub fn authorize(
        &self,
        values: &BTreeMap<String, String>,
        client_id: &str,
        scopes: Option<&[String]>,
    ) -> Result<ProviderAuthorize, CatalogError> {
        let oauth2 = self.oauth2()?;
        let url = oauth2
            .authorization_url
            .as_deref()
            .ok_or_else(|| self.unsupported("an authorization URL"))?;
        Ok(ProviderAuthorize {
            authorization_url: render(url, values)?,
            client_id: client_id.to_owned(),
            scopes: scopes.map_or_else(|| oauth2.default_scopes.clone(), <[String]>::to_vec),
            scope_separator: oauth2.scope_separator.clone(),
            scope_param: oauth2.scope_param.clone(),
            params: oauth2.authorize_params.clone(),
        })
    }

    /// The token request settings for exchanges, refreshes and client credentials.
    pub fn token_request(
        &self,
        values: &BTreeMap<String, String>,
        client_id: &str,
        client_secret: Secret,
    ) -> Result<ProviderRequest, CatalogError> {
        let oauth2 = self.oauth2()?;
        let refresh_url = match &oauth2.refresh_url {
            Some(url) => Some(render(url, values)?),
            None => None,
        };
        Ok(ProviderRequest {
            token_url: render(&oauth2.token_url, values)?,
            refresh_url,
            client_id: client_id.to_owned(),
            client_secret,
            client_auth: oauth2.client_auth,
            body_format: oauth2.body_format,
            accept: oauth2.accept.clone(),
            headers: pairs(&oauth2.token_headers),
            shape: oauth2.response.clone(),
        })
    }

    /// The values the provider put in the callback query, checked to be plain ids.
    pub fn callback_captures(
        &self,
        query: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, CatalogError> {
        let Some(oauth2) = &self.oauth2 else {
            return Ok(BTreeMap::new());
        };
        let pattern = compile(CALLBACK_VALUE_PATTERN)?;
        let mut captured = BTreeMap::new();
        for (name, param) in &oauth2.callback_capture {
            let value = query
                .get(param)
                .ok_or_else(|| CatalogError::MissingSetting(param.clone()))?;
            if !pattern.is_match(value) {
                return Err(CatalogError::InvalidSetting {
                    name: param.clone(),
                    reason: "is not a plain id".into(),
                });
            }
            captured.insert(name.clone(), value.clone());
        }
        Ok(captured)
    }

    /// The userinfo call that finds the account id, when the provider needs one.
    pub fn userinfo_request(
        &self,
        values: &BTreeMap<String, String>,
    ) -> Result<Option<UserinfoRequest>, CatalogError> {
        let Some(account) = &self.account else {
            return Ok(None);
        };
        let Some(url) = &account.userinfo_url else {
            return Ok(None);
        };
        Ok(Some(UserinfoRequest {
            url: render(url, values)?,
            post_body: account.userinfo_body.clone(),
            auth_prefix: account.auth_prefix.clone(),
            headers: pairs(&account.headers),
        }))
    }

    /// The account id and captured values in a userinfo answer.
    pub fn read_userinfo(
        &self,
        info: &serde_json::Value,
    ) -> (Option<String>, BTreeMap<String, String>) {
        let Some(account) = &self.account else {
            return (None, BTreeMap::new());
        };
        let at = |path: &str| match info.pointer(path)? {
            serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let id = account.id_path.as_deref().and_then(at);
        let captured = account
            .capture
            .iter()
            .filter_map(|(name, path)| Some((name.clone(), at(path)?)))
            .collect();
        (id, captured)
    }

    /// The account id the provider gives without a token: a setting or a captured value.
    pub fn account_id_from(&self, values: &BTreeMap<String, String>) -> Option<String> {
        let account = self.account.as_ref()?;
        let key = account
            .from_setting
            .as_ref()
            .or(account.from_capture.as_ref())?;
        values.get(key).cloned()
    }

    /// The API base URL for relative calls, filled from settings and captured values.
    pub fn api_base_url(
        &self,
        values: &BTreeMap<String, String>,
    ) -> Result<Option<String>, CatalogError> {
        self.api
            .base_url
            .as_deref()
            .map(|url| render(url, values))
            .transpose()
    }

    /// The API key's header or parameter name and prefix, filled from settings.
    pub fn api_key_target(
        &self,
        values: &BTreeMap<String, String>,
    ) -> Result<(ApiKeyPlacement, String, String), CatalogError> {
        let spec = self
            .api_key
            .as_ref()
            .ok_or_else(|| self.unsupported("API keys"))?;
        let prefix = render(&spec.prefix, values)?;
        // An empty prefix setting leaves only the separating space behind.
        let prefix = if prefix.trim().is_empty() {
            String::new()
        } else {
            prefix
        };
        Ok((spec.placement, render(&spec.name, values)?, prefix))
    }

    /// Checks that the file agrees with itself; run on every load.
    /// Headers every API call needs (`Notion-Version`), templated with `values`.
    pub fn api_headers(
        &self,
        values: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, String)>, CatalogError> {
        self.api
            .headers
            .iter()
            .map(|(name, value)| Ok((name.clone(), render(value, values)?)))
            .collect()
    }

    /// The token revocation endpoint (RFC 7009), templated with `values`, when there is one.
    pub fn revocation_url(
        &self,
        values: &BTreeMap<String, String>,
    ) -> Result<Option<String>, CatalogError> {
        match self
            .oauth2
            .as_ref()
            .and_then(|o| o.revocation_url.as_deref())
        {
            Some(url) => Ok(Some(render(url, values)?)),
            None => Ok(None),
        }
    }

    /// Checks the connector-level settings alone (identity settings come at connect time):
    /// each is given or has a default, and matches its pattern.
    pub fn check_connector_settings(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<(), CatalogError> {
        let mut connector_only = self.clone();
        connector_only
            .settings
            .retain(|s| s.source == SettingSource::Connector);
        connector_only.resolve_settings(given).map(|_| ())
    }

    /// Settings the user supplies at connect time.
    pub fn identity_settings(&self) -> impl Iterator<Item = &Setting> {
        self.settings
            .iter()
            .filter(|s| s.source == SettingSource::Identity)
    }

    pub(crate) fn validate(&self) -> Result<(), CatalogError> {
        if let Some(unit) = self.rate_limit.reset_unit.as_deref()
            && !["epoch_seconds", "delay_seconds", "epoch_millis"].contains(&unit)
        {
            return Err(CatalogError::Invalid {
                provider: self.name.clone(),
                reason: format!(
                    "rate_limit.reset_unit {unit:?} is not epoch_seconds, delay_seconds or epoch_millis"
                ),
            });
        }
        let invalid = |reason: String| CatalogError::Invalid {
            provider: self.name.clone(),
            reason,
        };
        let slug = compile(r"^[a-z0-9][a-z0-9_-]*$")?;
        if !slug.is_match(&self.name) {
            return Err(invalid(
                "names are lowercase letters, digits, - and _".into(),
            ));
        }

        match (self.auth_mode, &self.oauth2, &self.api_key) {
            (AuthMode::Oauth2, Some(o), _) if o.authorization_url.is_none() => {
                return Err(invalid("oauth2 needs an authorization_url".into()));
            }
            (AuthMode::Oauth2 | AuthMode::Oauth2ClientCredentials, None, _) => {
                return Err(invalid("an oauth2 mode needs an [oauth2] section".into()));
            }
            (AuthMode::ApiKey, _, None) => {
                return Err(invalid("api_key needs an [api_key] section".into()));
            }
            _ => {}
        }

        for setting in &self.settings {
            if let Some(pattern) = &setting.pattern {
                compile(pattern)?;
            }
        }
        self.check_placeholders()
    }

    /// Every placeholder must name a setting, or, outside the OAuth endpoints, a value
    /// captured from the token response, the callback or userinfo.
    fn check_placeholders(&self) -> Result<(), CatalogError> {
        let settings: Vec<&str> = self.settings.iter().map(|s| s.name.as_str()).collect();
        let mut captures = settings.clone();
        let mut endpoints = Vec::new();
        if let Some(o) = &self.oauth2 {
            endpoints.extend(o.authorization_url.as_deref());
            endpoints.push(o.token_url.as_str());
            endpoints.extend(o.refresh_url.as_deref());
            endpoints.extend(o.revocation_url.as_deref());
            captures.extend(o.response.capture.keys().map(String::as_str));
            captures.extend(o.callback_capture.keys().map(String::as_str));
        }
        if let Some(a) = &self.account {
            captures.extend(a.capture.keys().map(String::as_str));
        }

        let mut later = Vec::new();
        later.extend(self.api.base_url.as_deref());
        later.extend(self.api.headers.values().map(String::as_str));
        if let Some(a) = &self.account {
            later.extend(a.userinfo_url.as_deref());
        }
        if let Some(k) = &self.api_key {
            later.push(&k.name);
            later.push(&k.prefix);
        }

        let unknown = |templates: &[&str], known: &[&str]| {
            templates
                .iter()
                .flat_map(|t| placeholders(t))
                .find(|name| !known.contains(name))
                .map(str::to_owned)
        };
        if let Some(name) = unknown(&endpoints, &settings) {
            return Err(CatalogError::Invalid {
                provider: self.name.clone(),
                reason: format!("OAuth endpoint uses {{{name}}}, which is not a setting"),
            });
        }
        if let Some(name) = unknown(&later, &captures) {
            return Err(CatalogError::Invalid {
                provider: self.name.clone(),
                reason: format!("{{{name}}} is neither a setting nor a captured value"),
            });
        }
        Ok(())
    }

    fn oauth2(&self) -> Result<&OAuth2Spec, CatalogError> {
        self.oauth2
            .as_ref()
            .ok_or_else(|| self.unsupported("OAuth 2.0"))
    }

    fn unsupported(&self, what: &str) -> CatalogError {
        CatalogError::Unsupported {
            provider: self.name.clone(),
            what: what.to_owned(),
        }
    }
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn compile(pattern: &str) -> Result<Regex, CatalogError> {
    Regex::new(pattern).map_err(|e| CatalogError::InvalidSetting {
        name: "pattern".into(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod rate_limit_tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::RateLimitSpec;

    fn spec(unit: &str) -> RateLimitSpec {
        RateLimitSpec {
            retry_after: false,
            remaining_header: None,
            reset_header: Some("X-RateLimit-Reset".into()),
            reset_unit: Some(unit.into()),
        }
    }

    #[test]
    fn reset_headers_in_each_unit_become_waits() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let headers = |v: &str| vec![("x-ratelimit-reset".to_string(), v.to_string())];
        let wait = |unit: &str, v: &str| spec(unit).reset_wait(&headers(v), now);
        assert_eq!(
            wait("epoch_seconds", "1700000030"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            wait("epoch_millis", "1700000001500"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(wait("delay_seconds", "12"), Some(Duration::from_secs(12)));
        assert_eq!(
            wait("delay_seconds", "1.5"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            wait("epoch_seconds", "1699999990"),
            Some(Duration::ZERO),
            "past resets wait nothing"
        );
        assert_eq!(wait("epoch_seconds", "soon"), None);
        assert_eq!(
            RateLimitSpec::default().reset_wait(&headers("5"), now),
            None
        );
    }
}
