//! Reading token endpoint responses the way providers actually send them.
//!
//! RFC 6749 section 5 describes a JSON object with a numeric `expires_in` and a space-separated
//! `scope`. Real providers answer form-encoded bodies, send numbers as strings, separate scopes
//! with commas or send arrays, write `bearer` in lowercase or not at all, and report errors in
//! a 200. This module accepts all of that and rejects only what cannot be used.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use splice_domain::{Millis, Secret};

/// A successful token response, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenResponse {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    /// Absolute expiry of the access token; `None` when the provider gave no usable lifetime.
    pub expires_at: Option<Millis>,
    /// Granted scopes, when the provider said.
    pub scopes: Option<Vec<String>>,
}

/// Why a token request failed, by what the caller should do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The grant is dead (`invalid_grant` and equivalents): the user must authorize again.
    #[error("the provider rejected the grant ({error}): {description}")]
    Rejected { error: String, description: String },
    /// The connector's client credentials or settings are wrong: the developer must act.
    #[error("the provider rejected the client ({error}): {description}")]
    Misconfigured { error: String, description: String },
    /// Network failure, 5xx or 429: try again later.
    #[error("the provider is unavailable: {0}")]
    Transient(String),
    /// The response cannot be used (no access token, unknown token type, unreadable body).
    #[error("unusable token response: {0}")]
    Invalid(String),
}

/// OAuth error codes that mean the client, not the user's grant, is at fault.
const CLIENT_ERRORS: &[&str] = &[
    "invalid_client",
    "unauthorized_client",
    "unsupported_grant_type",
    "bad_client_secret",
    "invalid_client_id",
];

/// OAuth error codes that mean the provider is temporarily unable to answer.
const TRANSIENT_ERRORS: &[&str] = &["temporarily_unavailable", "server_error", "slow_down"];

/// Parses a token endpoint response received at `received_at`.
pub fn parse_token_response(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    received_at: Millis,
) -> Result<TokenResponse, TokenError> {
    parse_token_response_with(
        &ResponseShape::default(),
        status,
        content_type,
        body,
        received_at,
    )
    .map(|set| set.token)
}

/// Parses a token endpoint response laid out as `shape` says.
///
/// Failures go through the provider's equivalents first (`shape.failures`), then the generic
/// rules: an `error` member or a failed success rule is an error whatever the status.
pub fn parse_token_response_with(
    shape: &ResponseShape,
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    received_at: Millis,
) -> Result<TokenSet, TokenError> {
    let Some(fields) = read_fields(content_type, body) else {
        return Err(unreadable(shape, status));
    };
    let root = Value::Object(fields);

    if let Some(error) = str_at(&root, "/error") {
        let description = str_at(&root, "/error_description").unwrap_or_default();
        return Err(classify_with(shape, status, error, description));
    }
    if !shape.succeeded(&root) {
        return Err(classify_with(shape, status, "not_ok", ""));
    }
    if status == 429 || status >= 500 {
        return Err(TokenError::Transient(format!("HTTP {status}")));
    }
    if !(200..300).contains(&status) {
        return match shape.rule_for(status, None) {
            Some(class) => Err(class.error(format!("http_{status}"), String::new())),
            None => Err(TokenError::Invalid(format!(
                "HTTP {status} without an OAuth error"
            ))),
        };
    }

    read_token_set(shape, &root, received_at)
}

/// Where a provider puts things in its token response, and what its failures mean.
///
/// Paths are JSON pointers (`/authed_user/access_token`); a form-encoded body reads as a flat
/// object, so `/access_token` works for both.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseShape {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: String,
    pub scope: String,
    /// The unit of `expires_in`.
    pub expiry_unit: ExpiryUnit,
    /// Lifetime to assume when the response states none; `None` means non-expiring.
    pub default_lifetime_secs: Option<i64>,
    /// Whether `token_type` must be absent or `bearer` (Slack's `bot`/`user` kinds are not).
    pub check_token_type: bool,
    /// A member that must hold a given value for the response to count as success.
    pub success: Option<SuccessRule>,
    /// Candidates for the provider account id, first present wins.
    pub account_id: Vec<AccountIdPath>,
    /// Extra values kept with the identity, by name.
    pub capture: BTreeMap<String, String>,
    /// Further tokens in the same response (Slack's user token next to the bot token).
    pub tokens: BTreeMap<String, TokenShape>,
    /// The named token that stands in when the top-level access token is absent.
    pub primary_fallback: Option<String>,
    /// Provider-specific meanings of failures, checked before the generic rules.
    pub failures: Vec<FailureRule>,
}

impl Default for ResponseShape {
    fn default() -> Self {
        Self {
            access_token: "/access_token".into(),
            refresh_token: "/refresh_token".into(),
            expires_in: "/expires_in".into(),
            scope: "/scope".into(),
            expiry_unit: ExpiryUnit::Seconds,
            default_lifetime_secs: None,
            check_token_type: true,
            success: None,
            account_id: Vec::new(),
            capture: BTreeMap::new(),
            tokens: BTreeMap::new(),
            primary_fallback: None,
            failures: Vec::new(),
        }
    }
}

/// Where one named token's parts live.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenShape {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<String>,
    pub scope: Option<String>,
}

/// Success means the member at `path` equals `equals` (Slack: `/ok` is `true`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessRule {
    pub path: String,
    pub equals: Value,
}

/// A candidate for the account id: the value at `path`, written after `prefix`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountIdPath {
    pub path: String,
    #[serde(default)]
    pub prefix: String,
}

/// The unit a provider states lifetimes in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryUnit {
    #[default]
    Seconds,
    Milliseconds,
}

/// A provider-specific failure: an error code, a status, or both, and what it means.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRule {
    pub status: Option<u16>,
    pub error: Option<String>,
    pub class: FailureClass,
}

/// What a failed token request means for the identity or connector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The grant is dead: the user must authorize again.
    NeedsReauth,
    /// The client credentials or settings are wrong: the developer must act.
    Misconfigured,
    /// Try again later.
    Transient,
}

impl FailureClass {
    fn error(self, error: String, description: String) -> TokenError {
        match self {
            Self::NeedsReauth => TokenError::Rejected { error, description },
            Self::Misconfigured => TokenError::Misconfigured { error, description },
            Self::Transient => TokenError::Transient(format!("{error}: {description}")),
        }
    }
}

/// A token response read through a [`ResponseShape`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSet {
    /// The token used for API calls: the top-level one, or the shape's fallback.
    pub token: TokenResponse,
    /// Every named token the response carried, by the shape's names.
    pub tokens: BTreeMap<String, TokenResponse>,
    /// The provider's id for the account, when the response holds it.
    pub account_id: Option<String>,
    /// Captured values (instance URL, team id, realm id), by the shape's names.
    pub captured: BTreeMap<String, String>,
}

impl ResponseShape {
    fn succeeded(&self, root: &Value) -> bool {
        if root.get("ok") == Some(&Value::Bool(false)) {
            return false;
        }
        match &self.success {
            Some(rule) => root.pointer(&rule.path) == Some(&rule.equals),
            None => true,
        }
    }

    /// The provider's own class for this failure, if one of its rules matches.
    fn rule_for(&self, status: u16, error: Option<&str>) -> Option<FailureClass> {
        self.failures
            .iter()
            .find(|rule| {
                let error_matches = match rule.error.as_deref() {
                    Some(expected) => Some(expected) == error,
                    // A status-only rule never hides a client error behind another class.
                    None => error.is_none_or(|e| !CLIENT_ERRORS.contains(&e)),
                };
                rule.status.is_none_or(|s| s == status)
                    && error_matches
                    && (rule.status.is_some() || rule.error.is_some())
            })
            .map(|rule| rule.class)
    }
}

fn unreadable(shape: &ResponseShape, status: u16) -> TokenError {
    if status == 429 || status >= 500 {
        return TokenError::Transient(format!("HTTP {status}"));
    }
    match shape.rule_for(status, None) {
        Some(class) => class.error(format!("http_{status}"), String::new()),
        None => TokenError::Invalid(format!("HTTP {status} with an unreadable body")),
    }
}

fn classify_with(shape: &ResponseShape, status: u16, error: &str, description: &str) -> TokenError {
    match shape.rule_for(status, Some(error)) {
        Some(class) => class.error(error.to_owned(), description.to_owned()),
        None => classify_error(status, error, Some(description)),
    }
}

fn read_token_set(
    shape: &ResponseShape,
    root: &Value,
    received_at: Millis,
) -> Result<TokenSet, TokenError> {
    let mut tokens = BTreeMap::new();
    for (name, part) in &shape.tokens {
        let paths = Paths {
            access_token: &part.access_token,
            refresh_token: part.refresh_token.as_deref(),
            expires_in: part.expires_in.as_deref(),
            scope: part.scope.as_deref(),
        };
        if let Some(token) = read_token(shape, root, &paths, received_at) {
            tokens.insert(name.clone(), token);
        }
    }

    let paths = Paths {
        access_token: &shape.access_token,
        refresh_token: Some(&shape.refresh_token),
        expires_in: Some(&shape.expires_in),
        scope: Some(&shape.scope),
    };
    let fallback = || {
        let name = shape.primary_fallback.as_ref()?;
        tokens.get(name).cloned()
    };
    let token = read_token(shape, root, &paths, received_at)
        .or_else(fallback)
        .ok_or_else(|| TokenError::Invalid("no access_token".into()))?;

    if shape.check_token_type {
        check_token_type(str_at(root, "/token_type"))?;
    }

    let account_id = shape.account_id.iter().find_map(|candidate| {
        scalar_at(root, &candidate.path).map(|id| format!("{}{id}", candidate.prefix))
    });
    let captured = shape
        .capture
        .iter()
        .filter_map(|(name, path)| Some((name.clone(), scalar_at(root, path)?)))
        .collect();

    Ok(TokenSet {
        token,
        tokens,
        account_id,
        captured,
    })
}

struct Paths<'a> {
    access_token: &'a str,
    refresh_token: Option<&'a str>,
    expires_in: Option<&'a str>,
    scope: Option<&'a str>,
}

fn read_token(
    shape: &ResponseShape,
    root: &Value,
    paths: &Paths<'_>,
    received_at: Millis,
) -> Option<TokenResponse> {
    let access_token = str_at(root, paths.access_token).filter(|t| !t.is_empty())?;
    let refresh_token = paths
        .refresh_token
        .and_then(|p| str_at(root, p))
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    let lifetime = paths.expires_in.and_then(|p| root.pointer(p));
    Some(TokenResponse {
        access_token: Secret::new(access_token),
        refresh_token,
        expires_at: expires_at(shape, lifetime, received_at),
        scopes: paths.scope.and_then(|p| root.pointer(p)).and_then(scopes),
    })
}

fn check_token_type(kind: Option<&str>) -> Result<(), TokenError> {
    match kind {
        None => Ok(()),
        Some(kind) if kind.eq_ignore_ascii_case("bearer") => Ok(()),
        Some(other) => Err(TokenError::Invalid(format!(
            "unsupported token_type {other:?}"
        ))),
    }
}

/// Reads the body as JSON, or as a form when the provider sent one (or JSON fails).
fn read_fields(content_type: Option<&str>, body: &[u8]) -> Option<Map<String, Value>> {
    let is_form = content_type.is_some_and(|ct| ct.contains("application/x-www-form-urlencoded"));
    if !is_form && let Ok(Value::Object(map)) = serde_json::from_slice(body) {
        return Some(map);
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    let map: Map<String, Value> = pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    (map.contains_key("access_token") || map.contains_key("error")).then_some(map)
}

fn str_at<'a>(root: &'a Value, path: &str) -> Option<&'a str> {
    root.pointer(path).and_then(Value::as_str)
}

/// A string or number at `path`, as text; ids are numbers at some providers.
fn scalar_at(root: &Value, path: &str) -> Option<String> {
    match root.pointer(path)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The lifetime as a number or a decimal string in the shape's unit; anything else means the
/// shape's default lifetime, or no known expiry.
fn expires_at(
    shape: &ResponseShape,
    lifetime: Option<&Value>,
    received_at: Millis,
) -> Option<Millis> {
    let amount = match lifetime {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    let millis = match (amount, shape.expiry_unit) {
        (Some(s), ExpiryUnit::Seconds) if s > 0 => s.saturating_mul(1000),
        (Some(ms), ExpiryUnit::Milliseconds) if ms > 0 => ms,
        _ => match shape.default_lifetime_secs {
            Some(s) => s.saturating_mul(1000),
            None => {
                tracing::warn!(
                    "token response has no usable expires_in; treating the token as non-expiring"
                );
                return None;
            }
        },
    };
    Some(received_at.saturating_add(millis))
}

/// A scope string split on spaces or commas, or an array of strings.
fn scopes(value: &Value) -> Option<Vec<String>> {
    let list: Vec<String> = match value {
        Value::String(s) => s
            .split([' ', ','])
            .filter(|part| !part.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => return None,
    };
    Some(list)
}

/// The scopes granted: what the response said, or, when it said nothing, what was requested
/// (RFC 6749 section 5.1).
pub fn granted_scopes(stated: Option<&[String]>, requested: &[String]) -> Vec<String> {
    stated.unwrap_or(requested).to_vec()
}

/// The required scopes that `granted` lacks.
///
/// Extra grants are never a failure. A resource prefix is ignored (Microsoft answers
/// `https://graph.microsoft.com/Mail.Read` for `Mail.Read`), and `offline_access` counts as
/// granted when a refresh token came back, since Microsoft never echoes it.
pub fn missing_scopes(granted: &[String], required: &[String], has_refresh: bool) -> Vec<String> {
    let bare = |scope: &str| -> String {
        match scope.rsplit_once('/') {
            Some((prefix, name)) if prefix.starts_with("https://") => name.to_owned(),
            _ => scope.to_owned(),
        }
    };
    let have: Vec<String> = granted.iter().map(|s| bare(s)).collect();
    required
        .iter()
        .filter(|scope| !(has_refresh && scope.as_str() == "offline_access"))
        .filter(|scope| !have.contains(&bare(scope)))
        .cloned()
        .collect()
}

fn classify_error(status: u16, error: &str, description: Option<&str>) -> TokenError {
    let description = description.unwrap_or_default().to_owned();
    let error = error.to_owned();
    if CLIENT_ERRORS.contains(&error.as_str()) {
        TokenError::Misconfigured { error, description }
    } else if TRANSIENT_ERRORS.contains(&error.as_str()) || status == 429 || status >= 500 {
        TokenError::Transient(format!("{error}: {description}"))
    } else {
        TokenError::Rejected { error, description }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const AT: Millis = 1_700_000_000_000;
    const JSON: Option<&str> = Some("application/json; charset=utf-8");

    fn parse_json(status: u16, body: Value) -> Result<TokenResponse, TokenError> {
        parse_token_response(status, JSON, body.to_string().as_bytes(), AT)
    }

    #[test]
    fn form_encoded_response_with_comma_scopes() {
        // Origin: GitHub answers form-encoded unless asked for JSON (case C04).
        let body = b"access_token=gho_FAKE0001&scope=repo%2Cgist&token_type=bearer";
        let form = Some("application/x-www-form-urlencoded; charset=utf-8");
        let parsed = parse_token_response(200, form, body, AT).unwrap();
        assert_eq!(parsed.access_token.expose(), "gho_FAKE0001");
        assert_eq!(
            parsed.scopes,
            Some(vec!["repo".to_string(), "gist".to_string()])
        );
        assert_eq!(parsed.expires_at, None);
        assert_eq!(parsed.refresh_token, None);
    }

    #[test]
    fn error_member_in_a_200_is_an_error() {
        let body = json!({"error": "bad_verification_code", "error_description": "expired"});
        let err = parse_json(200, body).unwrap_err();
        assert_eq!(
            err,
            TokenError::Rejected {
                error: "bad_verification_code".into(),
                description: "expired".into()
            }
        );
    }

    #[test]
    fn ok_false_bodies_fail_and_client_errors_are_misconfiguration() {
        // Origin: Slack reports failures as 200 with ok:false (case C03).
        let err = parse_json(200, json!({"ok": false, "error": "invalid_code"})).unwrap_err();
        assert!(matches!(err, TokenError::Rejected { ref error, .. } if error == "invalid_code"));
        let err = parse_json(200, json!({"ok": false, "error": "bad_client_secret"})).unwrap_err();
        assert!(matches!(err, TokenError::Misconfigured { .. }), "{err:?}");
        let err = parse_json(401, json!({"error": "invalid_client"})).unwrap_err();
        assert!(matches!(err, TokenError::Misconfigured { .. }), "{err:?}");
    }

    #[test]
    fn expires_in_as_string_number_or_garbage() {
        // Origin: Azure AD v1 sends strings; others send non-standard expiry fields (case C05).
        let azure = json!({"access_token": "a", "token_type": "Bearer", "expires_in": "3599",
            "expires_on": "1700003599", "refresh_token": "r"});
        assert_eq!(
            parse_json(200, azure).unwrap().expires_at,
            Some(AT + 3_599_000)
        );

        let iso = json!({"access_token": "b", "expires_in": 3600,
            "expires_at": "2025-10-10T12:00:00Z"});
        assert_eq!(
            parse_json(200, iso).unwrap().expires_at,
            Some(AT + 3_600_000)
        );

        let garbage = json!({"access_token": "c", "expires_in": "soon"});
        assert_eq!(parse_json(200, garbage).unwrap().expires_at, None);
    }

    #[test]
    fn missing_expiry_is_none_not_now() {
        // Origin: GitHub OAuth apps send no expires_in (case C06).
        let body = json!({"access_token": "gho_FAKE0002", "token_type": "bearer", "scope": "repo"});
        let parsed = parse_json(200, body).unwrap();
        assert_eq!(parsed.expires_at, None);
        let zero = json!({"access_token": "x", "expires_in": 0});
        assert_eq!(parse_json(200, zero).unwrap().expires_at, None);
    }

    #[test]
    fn token_type_is_case_insensitive_optional_and_bearer_only() {
        // Origin: lowercase bearer, LinkedIn's missing token_type, and a MAC token (case C07).
        let lower = json!({"access_token": "lin_oa_FAKE0001", "token_type": "bearer"});
        assert!(parse_json(200, lower).is_ok());
        let missing = json!({"access_token": "AQV_FAKE", "expires_in": 5183999});
        assert_eq!(
            parse_json(200, missing).unwrap().expires_at,
            Some(AT + 5_183_999_000)
        );
        let mac = json!({"access_token": "m", "token_type": "mac", "expires_in": 3600});
        let err = parse_json(200, mac).unwrap_err();
        assert_eq!(
            err,
            TokenError::Invalid("unsupported token_type \"mac\"".into())
        );
    }

    #[test]
    fn scopes_as_space_comma_or_array() {
        // Origin: GitHub commas, Twitch arrays, standard spaces (case C08).
        let cases = [
            (json!("repo,user:email"), vec!["repo", "user:email"]),
            (
                json!(["channel:read:subscriptions", "user:read:email"]),
                vec!["channel:read:subscriptions", "user:read:email"],
            ),
            (
                json!("openid email profile"),
                vec!["openid", "email", "profile"],
            ),
        ];
        for (scope, expected) in cases {
            let body = json!({"access_token": "t", "token_type": "bearer", "scope": scope});
            let parsed = parse_json(200, body).unwrap();
            assert_eq!(parsed.scopes.unwrap(), expected);
        }
    }

    #[test]
    fn transient_failures_are_told_apart() {
        let html = parse_token_response(503, Some("text/html"), b"<html>down</html>", AT);
        assert!(matches!(html, Err(TokenError::Transient(_))), "{html:?}");
        let limited = parse_json(429, json!({"message": "slow down"}));
        assert!(
            matches!(limited, Err(TokenError::Transient(_))),
            "{limited:?}"
        );
        let unavailable = parse_json(400, json!({"error": "temporarily_unavailable"}));
        assert!(
            matches!(unavailable, Err(TokenError::Transient(_))),
            "{unavailable:?}"
        );
    }

    #[test]
    fn missing_access_token_is_invalid() {
        let err = parse_json(200, json!({"token_type": "bearer"})).unwrap_err();
        assert_eq!(err, TokenError::Invalid("no access_token".into()));
        let err = parse_token_response(400, Some("text/plain"), b"nope", AT).unwrap_err();
        assert!(matches!(err, TokenError::Invalid(_)));
    }

    #[test]
    fn invalid_grant_keeps_its_description() {
        // Origin: Google and Microsoft dead refresh tokens (case C14).
        let body = json!({"error": "invalid_grant",
            "error_description": "AADSTS700082: The refresh token has expired due to inactivity."});
        match parse_json(400, body).unwrap_err() {
            TokenError::Rejected { error, description } => {
                assert_eq!(error, "invalid_grant");
                assert!(description.starts_with("AADSTS700082"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn slack_shape() -> ResponseShape {
        ResponseShape {
            check_token_type: false,
            success: Some(SuccessRule {
                path: "/ok".into(),
                equals: Value::Bool(true),
            }),
            primary_fallback: Some("user".into()),
            account_id: vec![
                AccountIdPath {
                    path: "/team/id".into(),
                    prefix: "team:".into(),
                },
                AccountIdPath {
                    path: "/enterprise/id".into(),
                    prefix: "enterprise:".into(),
                },
            ],
            tokens: BTreeMap::from([(
                "user".to_string(),
                TokenShape {
                    access_token: "/authed_user/access_token".into(),
                    refresh_token: Some("/authed_user/refresh_token".into()),
                    expires_in: Some("/authed_user/expires_in".into()),
                    scope: Some("/authed_user/scope".into()),
                },
            )]),
            failures: vec![FailureRule {
                status: None,
                error: Some("invalid_refresh_token".into()),
                class: FailureClass::NeedsReauth,
            }],
            ..ResponseShape::default()
        }
    }

    fn parse_shaped(
        shape: &ResponseShape,
        status: u16,
        body: Value,
    ) -> Result<TokenSet, TokenError> {
        parse_token_response_with(shape, status, JSON, body.to_string().as_bytes(), AT)
    }

    #[test]
    fn nested_named_tokens_and_prefixed_account_ids() {
        // Case C01 b: only user scopes, so no top-level token; the user token stands in.
        let body = json!({"ok": true, "app_id": "A0FAKEAPP01",
            "authed_user": {"id": "U0FAKEUSER2", "scope": "search:read",
                "access_token": "xoxp-FAKE-0000000002-user", "token_type": "user"},
            "team": {"id": "T0FAKETEAM2", "name": "Example Workspace 2"},
            "enterprise": null, "is_enterprise_install": false});
        let set = parse_shaped(&slack_shape(), 200, body).unwrap();
        assert_eq!(set.token.access_token.expose(), "xoxp-FAKE-0000000002-user");
        assert_eq!(
            set.tokens["user"].scopes,
            Some(vec!["search:read".to_string()])
        );
        assert_eq!(set.tokens["user"].expires_at, None);
        assert_eq!(set.account_id.as_deref(), Some("team:T0FAKETEAM2"));

        // Case C01 c: an org-wide install has a null team and an enterprise id.
        let body = json!({"ok": true, "access_token": "xoxb-FAKE-0000000003-bot",
            "token_type": "bot", "scope": "chat:write", "team": null,
            "enterprise": {"id": "E0FAKEORG1", "name": "Example Org"},
            "is_enterprise_install": true, "authed_user": {"id": "U0FAKEUSER3"}});
        let set = parse_shaped(&slack_shape(), 200, body).unwrap();
        assert_eq!(set.account_id.as_deref(), Some("enterprise:E0FAKEORG1"));
        assert!(set.tokens.is_empty());
    }

    #[test]
    fn success_rule_and_provider_failure_equivalents() {
        let shape = slack_shape();
        // Case C02: a spent Slack refresh token means the user must authorize again.
        let err = parse_shaped(
            &shape,
            200,
            json!({"ok": false, "error": "invalid_refresh_token"}),
        );
        assert!(
            matches!(err, Err(TokenError::Rejected { ref error, .. }) if error == "invalid_refresh_token")
        );
        // Case C03 b: codes are single-use; a reused one is the user's to restart.
        let err = parse_shaped(
            &shape,
            200,
            json!({"ok": false, "error": "code_already_used"}),
        );
        assert!(matches!(err, Err(TokenError::Rejected { .. })), "{err:?}");
        // A body without ok:true fails the success rule even with a token in it.
        let err = parse_shaped(&shape, 200, json!({"access_token": "xoxb-1"}));
        assert!(matches!(err, Err(TokenError::Rejected { ref error, .. }) if error == "not_ok"));
    }

    #[test]
    fn status_rules_do_not_hide_client_errors() {
        // Atlassian answers a spent rotating refresh token with 403 (case C12).
        let shape = ResponseShape {
            failures: vec![FailureRule {
                status: Some(403),
                error: None,
                class: FailureClass::NeedsReauth,
            }],
            ..ResponseShape::default()
        };
        let bare = parse_token_response_with(&shape, 403, Some("text/plain"), b"Forbidden", AT);
        assert!(matches!(bare, Err(TokenError::Rejected { ref error, .. }) if error == "http_403"));
        let client = parse_shaped(&shape, 403, json!({"error": "invalid_client"}));
        assert!(
            matches!(client, Err(TokenError::Misconfigured { .. })),
            "{client:?}"
        );
        let generic = parse_token_response(403, Some("text/plain"), b"Forbidden", AT);
        assert!(
            matches!(generic, Err(TokenError::Invalid(_))),
            "{generic:?}"
        );
    }

    #[test]
    fn expiry_units_and_default_lifetime() {
        let millis = ResponseShape {
            expiry_unit: ExpiryUnit::Milliseconds,
            ..ResponseShape::default()
        };
        let set = parse_shaped(
            &millis,
            200,
            json!({"access_token": "a", "expires_in": 5000}),
        )
        .unwrap();
        assert_eq!(set.token.expires_at, Some(AT + 5000));

        let defaulted = ResponseShape {
            default_lifetime_secs: Some(7200),
            ..ResponseShape::default()
        };
        let set = parse_shaped(&defaulted, 200, json!({"access_token": "a"})).unwrap();
        assert_eq!(set.token.expires_at, Some(AT + 7_200_000));
    }

    #[test]
    fn captures_stringify_numbers_and_skip_nulls() {
        let shape = ResponseShape {
            account_id: vec![AccountIdPath {
                path: "/user/id".into(),
                prefix: String::new(),
            }],
            capture: BTreeMap::from([
                ("realm".to_string(), "/realm".to_string()),
                ("gone".to_string(), "/missing".to_string()),
            ]),
            ..ResponseShape::default()
        };
        let body = json!({"access_token": "a", "user": {"id": 42}, "realm": null});
        let set = parse_shaped(&shape, 200, body).unwrap();
        assert_eq!(set.account_id.as_deref(), Some("42"));
        assert!(set.captured.is_empty());
    }

    #[test]
    fn granted_scopes_may_differ_from_requested() {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();

        // Case C09 a: Google adds openid; extra scopes are never an error.
        let body = json!({"access_token": "ya29.FAKE-0001", "expires_in": 3599,
            "token_type": "Bearer", "id_token": "eyJhbGciOiJub25lIn0.FAKE.",
            "scope": "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile"});
        let granted = parse_json(200, body).unwrap().scopes.unwrap();
        let email = "https://www.googleapis.com/auth/userinfo.email";
        let profile = "https://www.googleapis.com/auth/userinfo.profile";
        assert_eq!(granted, strings(&["openid", email, profile]));
        assert!(missing_scopes(&granted, &strings(&[email, profile]), false).is_empty());

        // Case C09 b: Microsoft prefixes the resource and never echoes offline_access.
        let granted = strings(&[
            "https://graph.microsoft.com/Files.ReadWrite.All",
            "https://graph.microsoft.com/Mail.Read",
            "https://graph.microsoft.com/User.Read",
        ]);
        let required = strings(&["offline_access", "Files.ReadWrite.All", "Mail.Read"]);
        assert!(missing_scopes(&granted, &required, true).is_empty());
        assert_eq!(
            missing_scopes(&granted, &required, false),
            strings(&["offline_access"])
        );

        // Case C09 c: no scope in the response means the requested ones were granted.
        let body = json!({"access_token": "FAKE-AT-C", "token_type": "Bearer", "expires_in": 3600});
        let stated = parse_json(200, body).unwrap().scopes;
        assert_eq!(
            granted_scopes(stated.as_deref(), &strings(&["read:user"])),
            strings(&["read:user"])
        );
    }
}
