//! The conversation with a provider: authorization URLs, code exchange, refresh, userinfo.

use std::time::Duration;

use base64::Engine as _;
use splice_domain::{ClientAuth, Millis, OAuth2Config, Secret, now_millis};
use url::Url;

use crate::response::{TokenError, TokenResponse, parse_token_response};

const TOKEN_TIMEOUT: Duration = Duration::from_secs(20);

/// What goes into one authorization request besides the connector's settings.
#[derive(Clone, Debug)]
pub struct AuthorizeRequest<'a> {
    pub redirect_uri: &'a str,
    pub state: &'a str,
    /// The PKCE S256 challenge, when the connector uses PKCE.
    pub code_challenge: Option<&'a str>,
}

/// Talks to providers' OAuth endpoints over a shared HTTP client.
#[derive(Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
}

impl OAuthClient {
    pub fn new(http: reqwest::Client) -> Self {
        Self { http }
    }

    /// The URL that sends the user to the provider's consent page.
    pub fn authorize_url(
        &self,
        config: &OAuth2Config,
        request: &AuthorizeRequest<'_>,
    ) -> Result<Url, url::ParseError> {
        let mut url = Url::parse(&config.authorization_url)?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &config.client_id)
                .append_pair("redirect_uri", request.redirect_uri)
                .append_pair("state", request.state);
            if !config.scopes.is_empty() {
                query.append_pair("scope", &config.scopes.join(" "));
            }
            if let Some(challenge) = request.code_challenge {
                query
                    .append_pair("code_challenge", challenge)
                    .append_pair("code_challenge_method", "S256");
            }
            for (key, value) in &config.authorize_params {
                query.append_pair(key, value);
            }
        }
        Ok(url)
    }

    /// Exchanges an authorization code for tokens.
    pub async fn exchange_code(
        &self,
        config: &OAuth2Config,
        code: &str,
        redirect_uri: &str,
        code_verifier: Option<&Secret>,
    ) -> Result<TokenResponse, TokenError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ];
        if let Some(verifier) = code_verifier {
            form.push(("code_verifier", verifier.expose()));
        }
        self.token_request(config, form).await
    }

    /// Trades a refresh token for a new access token (and maybe a new refresh token).
    pub async fn refresh(
        &self,
        config: &OAuth2Config,
        refresh_token: &Secret,
    ) -> Result<TokenResponse, TokenError> {
        let form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        self.token_request(config, form).await
    }

    async fn token_request(
        &self,
        config: &OAuth2Config,
        mut form: Vec<(&str, &str)>,
    ) -> Result<TokenResponse, TokenError> {
        let mut request = self
            .http
            .post(&config.token_url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(TOKEN_TIMEOUT);
        match config.client_auth {
            ClientAuth::Body => {
                form.push(("client_id", &config.client_id));
                form.push(("client_secret", config.client_secret.expose()));
            }
            ClientAuth::Basic => {
                let value = basic_auth(&config.client_id, &config.client_secret);
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
        }

        let response = request.form(&form).send().await.map_err(transient)?;
        let status = response.status().as_u16();
        let content_type = header_text(response.headers(), reqwest::header::CONTENT_TYPE);
        let body = response.bytes().await.map_err(transient)?;
        let received_at: Millis = now_millis();
        parse_token_response(status, content_type.as_deref(), &body, received_at)
    }

    /// The provider's id for the user behind `access_token`: userinfo `sub`, else `id`.
    pub async fn subject(
        &self,
        userinfo_url: &str,
        access_token: &Secret,
    ) -> Result<String, TokenError> {
        let response = self
            .http
            .get(userinfo_url)
            .bearer_auth(access_token.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(TOKEN_TIMEOUT)
            .send()
            .await
            .map_err(transient)?;
        let status = response.status();
        if !status.is_success() {
            return Err(TokenError::Invalid(format!(
                "userinfo answered HTTP {status}"
            )));
        }
        let info: serde_json::Value = response
            .json()
            .await
            .map_err(|e| TokenError::Invalid(format!("userinfo is not JSON: {e}")))?;
        match info.get("sub").or_else(|| info.get("id")) {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
            _ => Err(TokenError::Invalid("userinfo has no sub or id".into())),
        }
    }
}

/// RFC 6749 section 2.3.1: id and secret are form-encoded before Basic encoding.
fn basic_auth(client_id: &str, secret: &Secret) -> String {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret.expose()));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn header_text(
    headers: &reqwest::header::HeaderMap,
    name: reqwest::header::HeaderName,
) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn transient(err: reqwest::Error) -> TokenError {
    // reqwest errors can carry the URL; token URLs hold no secrets, but keep the message short.
    TokenError::Transient(err.without_url().to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config() -> OAuth2Config {
        OAuth2Config {
            authorization_url: "https://idp.example/auth?tenant=x".into(),
            token_url: "https://idp.example/token".into(),
            client_id: "client id".into(),
            client_secret: Secret::new("s&cret"),
            scopes: vec!["openid".into(), "offline_access".into()],
            pkce: true,
            authorize_params: BTreeMap::from([("prompt".into(), "consent".into())]),
            client_auth: ClientAuth::Basic,
            userinfo_url: None,
        }
    }

    #[test]
    fn authorize_url_carries_state_pkce_scopes_and_extra_params() {
        let client = OAuthClient::new(reqwest::Client::new());
        let request = AuthorizeRequest {
            redirect_uri: "http://127.0.0.1:8080/v1/oauth/callback",
            state: "st",
            code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
        };
        let url = client.authorize_url(&config(), &request).unwrap();
        let pairs: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(pairs["tenant"], "x");
        assert_eq!(pairs["response_type"], "code");
        assert_eq!(pairs["client_id"], "client id");
        assert_eq!(pairs["scope"], "openid offline_access");
        assert_eq!(pairs["state"], "st");
        assert_eq!(
            pairs["code_challenge"],
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(pairs["code_challenge_method"], "S256");
        assert_eq!(pairs["prompt"], "consent");
        assert_eq!(
            pairs["redirect_uri"],
            "http://127.0.0.1:8080/v1/oauth/callback"
        );
    }

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let value = basic_auth("client id", &Secret::new("s&cret"));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value.trim_start_matches("Basic "))
            .unwrap();
        assert_eq!(decoded, b"client+id:s%26cret");
    }
}
