//! Calls to a provider's API with an identity's credentials: shared by `connector.fetch` in
//! integration code and the application's authenticated proxy.
//!
//! Relative URLs resolve against the connector's API base URL; the credential goes where the
//! provider wants it; a 401 with a token the clock thought valid is refreshed and retried
//! once; 429 and 503 answers with `Retry-After` are retried a bounded number of times for
//! idempotent methods.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use splice_catalog::{RateLimitSpec, RetryPlan, retry_plan};
use splice_domain::{Connector, IdentityId, Secret};
use splice_oauth::{TokenFailure, TokenManager};
use splice_sandbox::{FetchRequest, FetchResponse, HostError};

use crate::credentials::{ApiTarget, Credentials, Mode, Placement, credential_value};

/// Outbound responses larger than this are refused rather than buffered.
const MAX_BODY: usize = 16 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);
/// Rate-limited idempotent requests are retried at most this often, waiting at most this long.
const MAX_RETRIES: u32 = 2;
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);
const IDEMPOTENT: &[&str] = &["GET", "HEAD", "OPTIONS", "PUT", "DELETE"];
/// Pause before retrying an idempotent request whose connection failed (times the attempt).
const TRANSPORT_RETRY: Duration = Duration::from_millis(100);

pub fn host_error(code: &str, message: impl Into<String>) -> HostError {
    HostError {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// Whose credentials a call carries.
#[derive(Clone, Debug)]
pub enum Principal {
    /// A user's identity on the connector.
    Identity(IdentityId),
    /// The connector's own client-credentials token.
    App,
}

/// Makes outbound calls, plain or with a connector's credentials.
#[derive(Clone)]
pub struct Outbound {
    http: reqwest::Client,
    tokens: Arc<TokenManager>,
    credentials: Credentials,
}

/// A principal's credential and what goes with it.
pub struct Credential {
    pub secret: Secret,
    /// Identity values used to build the provider's URLs (a shop, an instance URL).
    pub values: std::collections::BTreeMap<String, String>,
    /// When an identity's access token expires; `None` when it has no known lifetime (and
    /// for the connector's own token, which the token manager keeps fresh).
    pub expires_at: Option<splice_domain::Millis>,
}

impl Outbound {
    pub fn new(http: reqwest::Client, tokens: Arc<TokenManager>, credentials: Credentials) -> Self {
        Self {
            http,
            tokens,
            credentials,
        }
    }

    /// How long before its expiry an access token is refreshed.
    pub fn refresh_margin(&self) -> Duration {
        self.tokens.margin()
    }

    /// The credential (access token, API key) for a principal; `force` refreshes first.
    pub async fn secret(
        &self,
        connector: &Connector,
        principal: &Principal,
        force: bool,
    ) -> Result<Credential, HostError> {
        match principal {
            Principal::App => {
                let token = self
                    .tokens
                    .app_token(connector)
                    .await
                    .map_err(token_error)?;
                Ok(Credential {
                    secret: token,
                    values: Default::default(),
                    expires_at: None,
                })
            }
            Principal::Identity(id) => {
                let identity = self
                    .tokens
                    .access_token(id, force)
                    .await
                    .map_err(token_error)?;
                Ok(Credential {
                    secret: identity.tokens.access_token,
                    values: identity.tokens.values,
                    expires_at: identity.tokens.expires_at,
                })
            }
        }
    }

    /// Sends `request` with the principal's credentials.
    pub async fn call_as(
        &self,
        connector: &Connector,
        principal: &Principal,
        mut request: FetchRequest,
    ) -> Result<FetchResponse, HostError> {
        let mode = self
            .credentials
            .mode(connector)
            .map_err(|e| host_error("connector_misconfigured", e))?;
        let Credential { secret, values, .. } = self.secret(connector, principal, false).await?;
        let target = self
            .credentials
            .api_target(connector, &values)
            .map_err(|e| host_error("connector_misconfigured", e))?;
        request.url = resolve_url(target.base_url.as_deref(), &request.url)?;

        let first = self
            .send(with_credential(
                &request,
                &target,
                &credential_value(mode, &secret),
            ))
            .await?;
        let refreshable = matches!(mode, Mode::OAuth2 | Mode::ClientCredentials);
        if first.status != 401 || !refreshable {
            return Ok(first);
        }
        // The clock thought the token valid; the provider did not. Refresh once and retry.
        let fresh = self.secret(connector, principal, true).await?.secret;
        self.send(with_credential(
            &request,
            &target,
            &credential_value(mode, &fresh),
        ))
        .await
    }

    /// Checks a key or password the user typed with the provider's verification call, when the
    /// catalog declares one. `Ok(false)`: the provider refused it.
    pub async fn verify_credential(
        &self,
        connector: &Connector,
        secret: &Secret,
        values: &std::collections::BTreeMap<String, String>,
    ) -> Result<bool, HostError> {
        let misconfigured = |e: String| host_error("connector_misconfigured", e);
        let provider = self
            .credentials
            .provider(connector)
            .map_err(misconfigured)?;
        let Some(path) = provider.and_then(|p| p.api.verify_path.clone()) else {
            return Ok(true);
        };
        let mode = self.credentials.mode(connector).map_err(misconfigured)?;
        let target = self
            .credentials
            .api_target(connector, values)
            .map_err(misconfigured)?;
        let request = FetchRequest {
            method: "GET".into(),
            url: resolve_url(target.base_url.as_deref(), &path)?,
            ..FetchRequest::default()
        };
        let answer = self
            .send(with_credential(
                &request,
                &target,
                &credential_value(mode, secret),
            ))
            .await?;
        Ok((200..300).contains(&answer.status))
    }

    /// Sends a request, retrying rate-limited idempotent requests as `Retry-After` says.
    pub async fn send(&self, request: FetchRequest) -> Result<FetchResponse, HostError> {
        self.send_limited(request, None).await
    }

    /// Like [`Outbound::send`]; without `Retry-After`, the provider's reset header (from the
    /// catalog) gives the wait.
    async fn send_limited(
        &self,
        request: FetchRequest,
        limits: Option<&RateLimitSpec>,
    ) -> Result<FetchResponse, HostError> {
        let idempotent = IDEMPOTENT.contains(&request.method.to_ascii_uppercase().as_str());
        let mut attempt = 0;
        loop {
            let response = match self.send_once(&request).await {
                Ok(response) => response,
                // A connection that failed before any answer is retried for idempotent methods.
                Err(err) if idempotent && err.code == "fetch_failed" && attempt < MAX_RETRIES => {
                    attempt += 1;
                    tracing::debug!(url = %redact(&request.url), error = %err, "request failed; retrying");
                    tokio::time::sleep(TRANSPORT_RETRY * attempt).await;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let limited = response.status == 429 || response.status == 503;
            if !limited || !idempotent || attempt >= MAX_RETRIES {
                return Ok(response);
            }
            let header = response
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("retry-after"))
                .map(|(_, value)| value.as_str());
            let now = SystemTime::now();
            let wait = match retry_plan(header, now, MAX_RETRY_WAIT) {
                RetryPlan::Wait(wait) => wait,
                RetryPlan::Backoff => {
                    match limits.and_then(|l| l.reset_wait(&response.headers, now)) {
                        Some(wait) if wait <= MAX_RETRY_WAIT => wait,
                        // No hint, or too far out to wait inline: hand the answer back.
                        _ => return Ok(response),
                    }
                }
                RetryPlan::Reschedule(_) => return Ok(response),
            };
            tracing::debug!(url = %redact(&request.url), wait_ms = wait.as_millis() as u64, "rate limited; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn send_once(&self, request: &FetchRequest) -> Result<FetchResponse, HostError> {
        let url = url::Url::parse(&request.url)
            .map_err(|e| host_error("invalid_url", format!("{}: {e}", redact(&request.url))))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(host_error(
                "invalid_url",
                "only http and https URLs can be fetched",
            ));
        }
        let method = reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| {
                host_error("invalid_method", format!("bad method {:?}", request.method))
            })?;

        let mut builder = self.http.request(method, url).timeout(TIMEOUT);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let response = builder
            .send()
            .await
            .map_err(|e| host_error("fetch_failed", e.without_url().to_string()))?;

        let status = response.status();
        let url = response.url().to_string();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_BODY)
        {
            return Err(host_error(
                "response_too_large",
                "response body exceeds 16 MiB",
            ));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| host_error("fetch_failed", e.without_url().to_string()))?;
        if body.len() > MAX_BODY {
            return Err(host_error(
                "response_too_large",
                "response body exceeds 16 MiB",
            ));
        }
        Ok(FetchResponse {
            status: status.as_u16(),
            status_text: status.canonical_reason().unwrap_or_default().to_owned(),
            url,
            headers,
            body,
        })
    }
}

/// A copy of `request` carrying the credential where the provider wants it.
fn with_credential(request: &FetchRequest, target: &ApiTarget, credential: &str) -> FetchRequest {
    let mut request = request.clone();
    for (name, value) in &target.headers {
        if !request
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            request.headers.push((name.clone(), value.clone()));
        }
    }
    match &target.placement {
        Placement::Header { name, prefix } => {
            request
                .headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            request
                .headers
                .push((name.clone(), format!("{prefix}{credential}")));
        }
        Placement::Query { name } => {
            if let Ok(mut url) = url::Url::parse(&request.url) {
                url.query_pairs_mut().append_pair(name, credential);
                request.url = url.into();
            }
        }
    }
    request
}

/// An absolute URL as is; a relative one joined to the connector's base URL.
fn resolve_url(base: Option<&str>, url: &str) -> Result<String, HostError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(url.to_owned());
    }
    let Some(base) = base else {
        return Err(host_error(
            "invalid_url",
            format!("{url:?} is relative and the connector has no API base URL"),
        ));
    };
    let path = url.trim_start_matches('/');
    Ok(format!("{}/{path}", base.trim_end_matches('/')))
}

/// A URL without its query string, for logs (queries can carry API keys).
fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or_default()
}

pub fn token_error(err: TokenFailure) -> HostError {
    match err {
        TokenFailure::NotFound => host_error("identity_not_found", "the identity was deleted"),
        TokenFailure::NeedsReauth(reason) => host_error(
            "needs_reauth",
            format!("the identity must be authorized again: {reason}"),
        ),
        TokenFailure::ConnectorMisconfigured(reason) => {
            host_error("connector_misconfigured", reason)
        }
        TokenFailure::Unavailable(reason) => host_error("provider_unavailable", reason),
        TokenFailure::Store(err) => {
            tracing::error!(error = %err, "token lookup failed");
            host_error("internal", "token lookup failed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `Outbound` over a throwaway store (its token side is unused here).
    async fn outbound() -> (Outbound, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cipher = splice_crypto::Cipher::new(&splice_crypto::MasterKey::generate());
        let store = splice_store::SqlStore::open_sqlite(&dir.path().join("db"), cipher)
            .await
            .unwrap();
        let credentials = Credentials::new(Arc::new(splice_catalog::Catalog::builtin()));
        let client = splice_oauth::OAuthClient::new(reqwest::Client::new());
        let tokens = Arc::new(TokenManager::new(
            Arc::new(store),
            client,
            Arc::new(credentials.clone()),
            splice_oauth::Lifecycle::default(),
        ));
        (
            Outbound::new(reqwest::Client::new(), tokens, credentials),
            dir,
        )
    }

    /// A server that drops its first connection unanswered and answers `200 ok` after.
    async fn drops_first_connection() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (first, _) = listener.accept().await.unwrap();
            drop(first);
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let reply = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        url
    }

    #[tokio::test]
    async fn idempotent_requests_survive_a_dropped_connection() {
        let (outbound, _dir) = outbound().await;
        let url = drops_first_connection().await;
        let get = FetchRequest {
            method: "GET".into(),
            url,
            ..FetchRequest::default()
        };
        let answer = outbound.send(get).await.unwrap();
        assert_eq!((answer.status, &answer.body[..]), (200, &b"ok"[..]));

        // A POST is not retried: its first attempt may have had effects.
        let url = drops_first_connection().await;
        let post = FetchRequest {
            method: "POST".into(),
            url,
            ..FetchRequest::default()
        };
        assert_eq!(outbound.send(post).await.unwrap_err().code, "fetch_failed");
    }

    #[test]
    fn relative_urls_join_the_base_and_absolute_ones_stay() {
        let base = Some("https://api.example/v1/");
        assert_eq!(
            resolve_url(base, "/users?x=1").unwrap(),
            "https://api.example/v1/users?x=1"
        );
        assert_eq!(
            resolve_url(base, "users").unwrap(),
            "https://api.example/v1/users"
        );
        assert_eq!(
            resolve_url(base, "https://other.example/a").unwrap(),
            "https://other.example/a"
        );
        assert_eq!(resolve_url(None, "/users").unwrap_err().code, "invalid_url");
    }

    #[test]
    fn credentials_go_where_the_provider_wants_them() {
        let request = FetchRequest {
            method: "GET".into(),
            url: "https://api.example/a?b=1".into(),
            headers: vec![("authorization".into(), "Bearer from-code".into())],
            ..FetchRequest::default()
        };
        let header = ApiTarget {
            base_url: None,
            placement: Placement::Header {
                name: "Authorization".into(),
                prefix: "Bearer ".into(),
            },
            headers: vec![("Notion-Version".into(), "2022-06-28".into())],
        };
        let sent = with_credential(&request, &header, "tok");
        assert_eq!(
            sent.headers,
            vec![
                ("Notion-Version".to_string(), "2022-06-28".to_string()),
                ("Authorization".to_string(), "Bearer tok".to_string()),
            ]
        );

        let query = ApiTarget {
            placement: Placement::Query {
                name: "api_key".into(),
            },
            ..header
        };
        assert_eq!(
            with_credential(&request, &query, "k y").url,
            "https://api.example/a?b=1&api_key=k+y"
        );
        assert_eq!(
            redact("https://api.example/a?api_key=secret"),
            "https://api.example/a"
        );
    }
}
