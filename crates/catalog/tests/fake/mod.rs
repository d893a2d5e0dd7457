//! A local fake provider: answers queued responses and records what it was sent.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use splice_catalog::{Catalog, Provider};
use splice_domain::{ClientAuth, Secret, now_millis};
use splice_oauth::client::{BodyFormat, OAuthClient, ProviderRequest};
use splice_oauth::response::{TokenError, TokenResponse, TokenSet};

pub const CLIENT_ID: &str = "client id/1";
pub const CLIENT_SECRET: &str = "s&cret:2";
pub const REDIRECT_URI: &str = "https://splice.test/v1/oauth/callback";
pub const JSON: &str = "application/json; charset=utf-8";
pub const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// One queued answer.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// A JSON answer with status 200.
pub fn ok(body: serde_json::Value) -> Answer {
    status(200, body)
}

pub fn status(status: u16, body: serde_json::Value) -> Answer {
    Answer {
        status,
        content_type: JSON,
        body: body.to_string(),
    }
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body's parameters, read by its content type; the query for empty bodies.
    pub fn params(&self) -> BTreeMap<String, String> {
        let content_type = self.header("content-type").unwrap_or_default();
        if content_type.starts_with("application/json") {
            let value: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
            let object = value.as_object().unwrap();
            return object
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
        }
        if content_type.starts_with("application/x-www-form-urlencoded") {
            return serde_urlencoded::from_bytes(&self.body).unwrap();
        }
        assert!(self.body.is_empty(), "unexpected body");
        self.query.clone()
    }

    /// The client id and secret from a Basic header, form-decoded as RFC 6749 says.
    pub fn basic(&self) -> Option<(String, String)> {
        let value = self.header("authorization")?.strip_prefix("Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap();
        let text = String::from_utf8(decoded).unwrap();
        let (id, secret) = text.split_once(':').unwrap();
        let decode = |s: &str| -> String {
            let pairs: Vec<(String, String)> =
                serde_urlencoded::from_str(&format!("v={s}")).unwrap();
            pairs[0].1.clone()
        };
        Some((decode(id), decode(secret)))
    }
}

#[derive(Default)]
struct Inner {
    answers: VecDeque<Answer>,
    seen: Vec<Seen>,
}

/// The fake provider; every path answers from the same queue.
#[derive(Clone)]
pub struct Fake {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl Fake {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, inner }
    }

    pub fn queue(&self, answer: Answer) {
        self.inner.lock().unwrap().answers.push_back(answer);
    }

    pub fn last(&self) -> Seen {
        self.inner.lock().unwrap().seen.last().cloned().unwrap()
    }

    /// `url` with its scheme and host replaced by the fake's.
    pub fn local(&self, url: &str) -> String {
        let parsed = url::Url::parse(url).unwrap();
        let query = parsed.query().map(|q| format!("?{q}")).unwrap_or_default();
        format!("{}{}{}", self.base, parsed.path(), query)
    }
}

async fn answer(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = uri
        .query()
        .map(|q| serde_urlencoded::from_str(q).unwrap())
        .unwrap_or_default();
    let mut inner = inner.lock().unwrap();
    inner.seen.push(Seen {
        method,
        path: uri.path().to_owned(),
        query,
        headers,
        body: body.to_vec(),
    });
    match inner.answers.pop_front() {
        Some(a) => (
            StatusCode::from_u16(a.status).unwrap(),
            [("content-type", a.content_type)],
            a.body,
        )
            .into_response(),
        None => (StatusCode::IM_A_TEAPOT, "no answer queued").into_response(),
    }
}

/// A catalog provider wired to a fake: settings resolved, endpoints pointed at the fake.
pub struct Flow {
    pub provider: Provider,
    pub values: BTreeMap<String, String>,
    /// The token request as the catalog built it, before pointing it at the fake.
    pub request: ProviderRequest,
    pub fake: Fake,
    client: OAuthClient,
}

impl Flow {
    pub async fn new(name: &str, settings: &[(&str, &str)]) -> Self {
        let provider = Catalog::builtin().get(name).unwrap().clone();
        let given = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let values = provider.resolve_settings(&given).unwrap();
        let request = provider
            .token_request(&values, CLIENT_ID, Secret::new(CLIENT_SECRET))
            .unwrap();
        Self {
            provider,
            values,
            request,
            fake: Fake::start().await,
            client: OAuthClient::new(reqwest::Client::new()),
        }
    }

    fn local_request(&self) -> ProviderRequest {
        let mut request = self.request.clone();
        request.token_url = self.fake.local(&request.token_url);
        request.refresh_url = request.refresh_url.as_deref().map(|u| self.fake.local(u));
        request
    }

    pub async fn exchange(&self, answer: Answer) -> (Seen, Result<TokenSet, TokenError>) {
        self.fake.queue(answer);
        let verifier = Secret::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let verifier = self
            .provider
            .oauth2
            .as_ref()
            .unwrap()
            .pkce
            .then_some(&verifier);
        let result = self
            .client
            .exchange_code_with(&self.local_request(), "code-1", REDIRECT_URI, verifier)
            .await;
        (self.fake.last(), result)
    }

    pub async fn refresh(
        &self,
        refresh_token: &str,
        answer: Answer,
    ) -> (Seen, Result<TokenSet, TokenError>) {
        self.fake.queue(answer);
        let result = self
            .client
            .refresh_with(&self.local_request(), &Secret::new(refresh_token))
            .await;
        (self.fake.last(), result)
    }

    pub async fn client_credentials(
        &self,
        scopes: &[String],
        answer: Answer,
    ) -> (Seen, Result<TokenSet, TokenError>) {
        self.fake.queue(answer);
        let result = self
            .client
            .client_credentials_with(&self.local_request(), scopes, " ")
            .await;
        (self.fake.last(), result)
    }

    /// Calls the provider's userinfo through the fake and reads it.
    pub async fn userinfo(
        &self,
        captured: &BTreeMap<String, String>,
        answer: Answer,
    ) -> (Seen, Option<String>, BTreeMap<String, String>) {
        let mut values = self.values.clone();
        values.extend(captured.clone());
        let mut request = self.provider.userinfo_request(&values).unwrap().unwrap();
        request.url = self.fake.local(&request.url);
        self.fake.queue(answer);
        let info = self
            .client
            .userinfo(&request, &Secret::new("access-1"))
            .await
            .unwrap();
        let (id, captured) = self.provider.read_userinfo(&info);
        (self.fake.last(), id, captured)
    }
}

/// How the client credentials and parameters are expected to travel.
pub struct Sent<'a> {
    pub path: &'a str,
    pub auth: ClientAuth,
    pub format: BodyFormat,
}

/// Checks the parts every token request shares, and returns its parameters.
pub fn check_sent(seen: &Seen, grant: &str, sent: Sent<'_>) -> BTreeMap<String, String> {
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, sent.path);
    assert_eq!(seen.header("accept"), Some("application/json"));
    let content_type = seen.header("content-type");
    match sent.format {
        BodyFormat::Form => assert_eq!(content_type, Some("application/x-www-form-urlencoded")),
        BodyFormat::Json => assert_eq!(content_type, Some("application/json")),
        BodyFormat::Query => assert!(seen.body.is_empty(), "query format sends no body"),
    }

    let params = seen.params();
    assert_eq!(params["grant_type"], grant);
    match sent.auth {
        ClientAuth::Body => {
            assert_eq!(params["client_id"], CLIENT_ID);
            assert_eq!(params["client_secret"], CLIENT_SECRET);
            assert_eq!(seen.header("authorization"), None);
        }
        ClientAuth::Basic => {
            assert_eq!(seen.basic(), Some((CLIENT_ID.into(), CLIENT_SECRET.into())));
            assert!(!params.contains_key("client_secret"));
        }
    }
    if grant == "authorization_code" {
        assert_eq!(params["code"], "code-1");
        assert_eq!(params["redirect_uri"], REDIRECT_URI);
    }
    params
}

/// Asserts that `token` expires `seconds` after now, give or take the test's own time.
pub fn assert_lifetime(token: &TokenResponse, seconds: i64) {
    let expires_at = token.expires_at.expect("an expiry");
    let remaining = expires_at - now_millis();
    assert!(
        (seconds * 1000 - 10_000..=seconds * 1000).contains(&remaining),
        "expires in {remaining} ms, expected about {seconds} s"
    );
}

pub fn scopes(items: &[&str]) -> Option<Vec<String>> {
    Some(items.iter().map(|s| s.to_string()).collect())
}
