//! The conversation with a provider: authorization URLs, code exchange, refresh, userinfo.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use splice_domain::{ClientAuth, Millis, OAuth2Config, Secret, now_millis};
use url::Url;

use crate::response::{ResponseShape, TokenError, TokenSet, parse_token_response_with};

const TOKEN_TIMEOUT: Duration = Duration::from_secs(20);

/// Sent unless the provider asks for another: several APIs refuse requests without one.
const USER_AGENT: &str = "splice";

/// What goes into one authorization request besides the connector's settings.
#[derive(Clone, Debug)]
pub struct AuthorizeRequest<'a> {
    pub redirect_uri: &'a str,
    pub state: &'a str,
    /// The PKCE S256 challenge, when the connector uses PKCE.
    pub code_challenge: Option<&'a str>,
}

/// A provider's authorization endpoint, with its scope and parameter conventions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderAuthorize {
    /// The consent page, already templated with the connector's settings.
    pub authorization_url: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    /// What joins scopes: `" "` by the standard, `","` at some providers.
    pub scope_separator: String,
    /// The query parameter that carries scopes, normally `scope`.
    pub scope_param: String,
    /// Fixed extra parameters (`access_type=offline`, `audience=...`).
    pub params: BTreeMap<String, String>,
}

/// How a provider wants its token requests sent and its responses read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRequest {
    /// The token endpoint, already templated with the connector's settings.
    pub token_url: String,
    /// Where refresh grants go when that is not `token_url`.
    pub refresh_url: Option<String>,
    pub client_id: String,
    pub client_secret: Secret,
    pub client_auth: ClientAuth,
    pub body_format: BodyFormat,
    /// The `Accept` header; GitHub answers form-encoded without `application/json`.
    pub accept: String,
    /// Extra request headers (a `User-Agent` some providers insist on).
    pub headers: Vec<(String, String)>,
    pub shape: ResponseShape,
}

impl ProviderAuthorize {
    /// The authorization endpoint of a hand-configured generic OAuth 2.0 connector.
    pub fn generic(config: &OAuth2Config) -> Self {
        Self {
            authorization_url: config.authorization_url.clone(),
            client_id: config.client_id.clone(),
            scopes: config.scopes.clone(),
            scope_separator: " ".into(),
            scope_param: "scope".into(),
            params: config.authorize_params.clone(),
        }
    }
}

impl ProviderRequest {
    /// The token endpoint of a hand-configured generic OAuth 2.0 connector.
    pub fn generic(config: &OAuth2Config) -> Self {
        Self {
            token_url: config.token_url.clone(),
            refresh_url: None,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            client_auth: config.client_auth,
            body_format: BodyFormat::Form,
            accept: "application/json".into(),
            headers: Vec::new(),
            shape: ResponseShape::default(),
        }
    }
}

/// How token request parameters travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// `application/x-www-form-urlencoded`, as RFC 6749 says.
    #[default]
    Form,
    /// A JSON object (Notion, Atlassian, Zendesk).
    Json,
    /// Query parameters on a POST with an empty body (ClickUp).
    Query,
}

/// A request for the provider's description of the authorized account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserinfoRequest {
    pub url: String,
    /// `POST` with `body` as JSON (GraphQL APIs), else `GET`.
    pub post_body: Option<String>,
    /// What precedes the token in `Authorization` (`Bearer `, or Mailchimp's `OAuth `).
    pub auth_prefix: String,
    pub headers: Vec<(String, String)>,
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

    /// The consent URL for a catalog provider: its scope separator and fixed parameters.
    pub fn authorize_url_with(
        &self,
        target: &ProviderAuthorize,
        request: &AuthorizeRequest<'_>,
    ) -> Result<Url, url::ParseError> {
        let mut url = Url::parse(&target.authorization_url)?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &target.client_id)
                .append_pair("redirect_uri", request.redirect_uri)
                .append_pair("state", request.state);
            if !target.scopes.is_empty() {
                let scopes = target.scopes.join(&target.scope_separator);
                query.append_pair(&target.scope_param, &scopes);
            }
            if let Some(challenge) = request.code_challenge {
                query
                    .append_pair("code_challenge", challenge)
                    .append_pair("code_challenge_method", "S256");
            }
            for (key, value) in &target.params {
                query.append_pair(key, value);
            }
        }
        Ok(url)
    }

    /// Exchanges an authorization code the way `request` describes.
    pub async fn exchange_code_with(
        &self,
        request: &ProviderRequest,
        code: &str,
        redirect_uri: &str,
        code_verifier: Option<&Secret>,
    ) -> Result<TokenSet, TokenError> {
        let mut params = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ];
        if let Some(verifier) = code_verifier {
            params.push(("code_verifier", verifier.expose()));
        }
        self.provider_request(request, &request.token_url, params)
            .await
    }

    /// Refreshes the way `request` describes; refresh tokens of named tokens work the same.
    pub async fn refresh_with(
        &self,
        request: &ProviderRequest,
        refresh_token: &Secret,
    ) -> Result<TokenSet, TokenError> {
        let params = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        let url = request.refresh_url.as_ref().unwrap_or(&request.token_url);
        self.provider_request(request, url, params).await
    }

    /// Mints a token with the client's own credentials (RFC 6749 section 4.4).
    pub async fn client_credentials_with(
        &self,
        request: &ProviderRequest,
        scopes: &[String],
        scope_separator: &str,
    ) -> Result<TokenSet, TokenError> {
        let scope = scopes.join(scope_separator);
        let mut params = vec![("grant_type", "client_credentials")];
        if !scope.is_empty() {
            params.push(("scope", &scope));
        }
        self.provider_request(request, &request.token_url, params)
            .await
    }

    /// The provider's description of the account behind `access_token`, as JSON.
    pub async fn userinfo(
        &self,
        request: &UserinfoRequest,
        access_token: &Secret,
    ) -> Result<serde_json::Value, TokenError> {
        let builder = match &request.post_body {
            Some(body) => self
                .http
                .post(&request.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone()),
            None => self.http.get(&request.url),
        };
        let auth = format!("{}{}", request.auth_prefix, access_token.expose());
        let builder = with_headers(builder, &request.headers)
            .header(reqwest::header::AUTHORIZATION, auth)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(TOKEN_TIMEOUT);

        let response = builder.send().await.map_err(transient)?;
        let status = response.status();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(TokenError::Transient(format!(
                "userinfo answered HTTP {status}"
            )));
        }
        if !status.is_success() {
            return Err(TokenError::Invalid(format!(
                "userinfo answered HTTP {status}"
            )));
        }
        response
            .json()
            .await
            .map_err(|e| TokenError::Invalid(format!("userinfo is not JSON: {e}")))
    }

    async fn provider_request(
        &self,
        request: &ProviderRequest,
        url: &str,
        mut params: Vec<(&str, &str)>,
    ) -> Result<TokenSet, TokenError> {
        let mut url =
            Url::parse(url).map_err(|e| TokenError::Invalid(format!("token URL: {e}")))?;
        let mut builder_auth = None;
        match request.client_auth {
            ClientAuth::Body => {
                params.push(("client_id", &request.client_id));
                params.push(("client_secret", request.client_secret.expose()));
            }
            ClientAuth::Basic => {
                builder_auth = Some(basic_auth(&request.client_id, &request.client_secret));
            }
        }
        if request.body_format == BodyFormat::Query {
            url.query_pairs_mut().extend_pairs(&params);
        }

        let mut builder = self
            .http
            .post(url)
            .header(reqwest::header::ACCEPT, &request.accept)
            .timeout(TOKEN_TIMEOUT);
        builder = with_headers(builder, &request.headers);
        if let Some(value) = builder_auth {
            builder = builder.header(reqwest::header::AUTHORIZATION, value);
        }
        builder = match request.body_format {
            BodyFormat::Form => builder.form(&params),
            BodyFormat::Json => {
                let object: serde_json::Map<String, serde_json::Value> = params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                    .collect();
                builder.json(&object)
            }
            BodyFormat::Query => builder,
        };

        let response = builder.send().await.map_err(transient)?;
        let status = response.status().as_u16();
        let content_type = header_text(response.headers(), reqwest::header::CONTENT_TYPE);
        let body = response.bytes().await.map_err(transient)?;
        let received_at: Millis = now_millis();
        parse_token_response_with(
            &request.shape,
            status,
            content_type.as_deref(),
            &body,
            received_at,
        )
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

/// Adds `headers`, and a `User-Agent` when they hold none.
fn with_headers(
    mut builder: reqwest::RequestBuilder,
    headers: &[(String, String)],
) -> reqwest::RequestBuilder {
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("user-agent"))
    {
        builder = builder.header(reqwest::header::USER_AGENT, USER_AGENT);
    }
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder
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
        let target = ProviderAuthorize::generic(&config());
        let url = client.authorize_url_with(&target, &request).unwrap();
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
