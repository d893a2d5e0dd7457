//! Reading token endpoint responses the way providers actually send them.
//!
//! RFC 6749 section 5 describes a JSON object with a numeric `expires_in` and a space-separated
//! `scope`. Real providers answer form-encoded bodies, send numbers as strings, separate scopes
//! with commas or send arrays, write `bearer` in lowercase or not at all, and report errors in
//! a 200. This module accepts all of that and rejects only what cannot be used.

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
    let fields = match read_fields(content_type, body) {
        Some(fields) => fields,
        None if status == 429 || status >= 500 => {
            return Err(TokenError::Transient(format!("HTTP {status}")));
        }
        None => {
            return Err(TokenError::Invalid(format!(
                "HTTP {status} with an unreadable body"
            )));
        }
    };

    // An `error` member is an error whatever the status (RFC 6749 section 5.2; GitHub, Slack).
    if let Some(error) = text(&fields, "error") {
        return Err(classify_error(
            status,
            error,
            text(&fields, "error_description"),
        ));
    }
    if fields.get("ok") == Some(&Value::Bool(false)) {
        return Err(classify_error(status, "not_ok", None));
    }
    if status == 429 || status >= 500 {
        return Err(TokenError::Transient(format!("HTTP {status}")));
    }
    if !(200..300).contains(&status) {
        return Err(TokenError::Invalid(format!(
            "HTTP {status} without an OAuth error"
        )));
    }

    read_tokens(&fields, received_at)
}

fn read_tokens(
    fields: &Map<String, Value>,
    received_at: Millis,
) -> Result<TokenResponse, TokenError> {
    let access_token = text(fields, "access_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| TokenError::Invalid("no access_token".into()))?;

    match text(fields, "token_type") {
        None => {}
        Some(kind) if kind.eq_ignore_ascii_case("bearer") => {}
        Some(other) => {
            return Err(TokenError::Invalid(format!(
                "unsupported token_type {other:?}"
            )));
        }
    }

    Ok(TokenResponse {
        access_token: Secret::new(access_token),
        refresh_token: text(fields, "refresh_token")
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        expires_at: expires_at(fields, received_at),
        scopes: fields.get("scope").and_then(scopes),
    })
}

/// Reads the body as JSON, or as a form when the provider sent one (or JSON fails).
fn read_fields(content_type: Option<&str>, body: &[u8]) -> Option<Map<String, Value>> {
    let is_form = content_type.is_some_and(|ct| ct.contains("application/x-www-form-urlencoded"));
    if !is_form {
        if let Ok(Value::Object(map)) = serde_json::from_slice(body) {
            return Some(map);
        }
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    let map: Map<String, Value> = pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    (map.contains_key("access_token") || map.contains_key("error")).then_some(map)
}

fn text<'a>(fields: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    fields.get(key).and_then(Value::as_str)
}

/// `expires_in` as a number or a decimal string; anything else means no known expiry.
fn expires_at(fields: &Map<String, Value>, received_at: Millis) -> Option<Millis> {
    let seconds = match fields.get("expires_in")? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match seconds {
        Some(s) if s > 0 => Some(received_at.saturating_add(s.saturating_mul(1000))),
        _ => {
            tracing::warn!(
                "token response has no usable expires_in; treating the token as non-expiring"
            );
            None
        }
    }
}

/// A scope string split on spaces or commas, or an array of strings.
fn scopes(value: &Value) -> Option<Vec<String>> {
    let list: Vec<String> = match value {
        Value::String(s) => s
            .split(|c: char| c == ' ' || c == ',')
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
}
