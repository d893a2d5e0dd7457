//! Checks the oidc-provider fixture and the scripted browser on their own, without Splice, so
//! that a failure in the Splice tests points at Splice and not at the harness.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{StatusCode, Url};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::browser::{Browser, Consent, query_param};
use crate::support::oidc::{OidcOptions, OidcProvider};
use crate::support::random_hex;

/// Never connected to: the browser stops at the redirect.
const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
const CLIENT_ID: &str = "fixture-client";

struct Pkce {
    verifier: String,
    challenge: String,
}

impl Pkce {
    fn new() -> Self {
        let verifier = random_hex(64);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

fn authorization_url(idp: &OidcProvider, state: &str, pkce: Option<&Pkce>) -> String {
    let mut url = Url::parse(&idp.authorization_url()).expect("authorization URL");
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid offline_access")
        .append_pair("prompt", "consent")
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("state", state);
    if let Some(pkce) = pkce {
        url.query_pairs_mut()
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
    }
    url.into()
}

/// Walks the browser through login and consent and returns the authorization code.
async fn authorize(idp: &OidcProvider, login: &str, pkce: Option<&Pkce>) -> String {
    let state = random_hex(16);
    let browser = Browser::new(REDIRECT_URI);
    let url = authorization_url(idp, &state, pkce);

    let done = browser.authorize(&url, login, Consent::Grant).await;

    assert_eq!(
        query_param(&done, "state").as_deref(),
        Some(state.as_str()),
        "{done}"
    );
    assert_eq!(
        query_param(&done, "iss").as_deref(),
        Some(idp.issuer()),
        "{done}"
    );
    query_param(&done, "code").unwrap_or_else(|| panic!("no code in {done}"))
}

async fn token_request(
    idp: &OidcProvider,
    secret: &str,
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut fields = vec![("client_id", CLIENT_ID), ("client_secret", secret)];
    fields.extend_from_slice(form);
    let response = reqwest::Client::new()
        .post(idp.token_url())
        .form(&fields)
        .send()
        .await
        .expect("POST /token");
    let status = response.status();
    (
        status,
        response.json().await.expect("token response is JSON"),
    )
}

async fn userinfo(idp: &OidcProvider, access_token: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(idp.userinfo_url())
        .bearer_auth(access_token)
        .send()
        .await
        .expect("GET /me");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn text<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("no string {field} in {body}"))
}

#[tokio::test]
async fn fixture_walks_login_and_consent() {
    let secret = random_hex(32);
    let idp = OidcProvider::start(REDIRECT_URI, CLIENT_ID, &secret).await;
    assert!(
        idp.issuer().starts_with("http://127.0.0.1:"),
        "{}",
        idp.issuer()
    );
    assert!(!idp.issuer().ends_with('/'));

    // Code flow with PKCE, confidential client authenticating in the body.
    let pkce = Pkce::new();
    let code = authorize(&idp, "alice", Some(&pkce)).await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let (status, tokens) = token_request(&idp, &secret, &exchange).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 4);
    assert!(
        text(&tokens, "scope").contains("offline_access"),
        "{tokens}"
    );
    let access_token = text(&tokens, "access_token");
    let first_refresh = text(&tokens, "refresh_token");

    let (status, me) = userinfo(&idp, access_token).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me, serde_json::json!({ "sub": "alice" }));

    // Opaque token values are the stored models' ids, which is what /__stats lists.
    let stats = idp.stats().await;
    assert_eq!(stats.grants("authorization_code"), 1, "{:?}", stats.raw);
    assert_eq!(stats.grants("refresh_token"), 0);
    assert_eq!(stats.access_tokens(), vec![access_token.to_owned()]);
    assert_eq!(stats.refresh_tokens(), vec![first_refresh.to_owned()]);
    assert_eq!(stats.newest_refresh_token().as_deref(), Some(first_refresh));

    // Refresh rotates the refresh token.
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", first_refresh),
    ];
    let (status, rotated) = token_request(&idp, &secret, &refresh).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second_refresh = text(&rotated, "refresh_token");
    assert_ne!(second_refresh, first_refresh);
    let (status, me) = userinfo(&idp, text(&rotated, "access_token")).await;
    assert_eq!(
        (status, me),
        (StatusCode::OK, serde_json::json!({ "sub": "alice" }))
    );

    let stats = idp.stats().await;
    assert_eq!(stats.grants("refresh_token"), 1, "{:?}", stats.raw);
    assert!(
        stats
            .access_tokens()
            .contains(&text(&rotated, "access_token").to_owned())
    );
    assert_eq!(
        stats.newest_refresh_token().as_deref(),
        Some(second_refresh)
    );

    // Reusing a rotated refresh token is refused and revokes the whole grant, so the newest
    // one dies too: the behaviour the Splice test relies on to prove rotation is stored.
    let (status, reused) = token_request(&idp, &secret, &refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reused}");
    assert_eq!(reused["error"], "invalid_grant");
    let newest = [
        ("grant_type", "refresh_token"),
        ("refresh_token", second_refresh),
    ];
    let (status, revoked) = token_request(&idp, &secret, &newest).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{revoked}");
    assert_eq!(idp.stats().await.grant_errors("refresh_token"), 2);

    // PKCE is allowed, not required.
    let code = authorize(&idp, "bob", None).await;
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
    ];
    let (status, tokens) = token_request(&idp, &secret, &exchange).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (_, me) = userinfo(&idp, text(&tokens, "access_token")).await;
    assert_eq!(me, serde_json::json!({ "sub": "bob" }));

    // Refusing consent ends at the redirect URI with access_denied.
    let state = random_hex(16);
    let url = authorization_url(&idp, &state, None);
    let done = Browser::new(REDIRECT_URI)
        .authorize(&url, "carol", Consent::Refuse)
        .await;
    assert_eq!(
        query_param(&done, "error").as_deref(),
        Some("access_denied"),
        "{done}"
    );
    assert_eq!(query_param(&done, "state").as_deref(), Some(state.as_str()));
    assert_eq!(query_param(&done, "code"), None);
}

#[tokio::test]
async fn fixture_supports_basic_client_auth() {
    let secret = random_hex(32);
    let options = OidcOptions {
        token_auth_method: "client_secret_basic",
        ..Default::default()
    };
    let idp = OidcProvider::start_with(REDIRECT_URI, CLIENT_ID, &secret, options).await;
    let code = authorize(&idp, "dave", None).await;

    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
    ];
    let response = reqwest::Client::new()
        .post(idp.token_url())
        .basic_auth(CLIENT_ID, Some(&secret))
        .form(&form)
        .send()
        .await
        .expect("POST /token");
    let status = response.status();
    let tokens: Value = response.json().await.expect("token response is JSON");

    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (_, me) = userinfo(&idp, text(&tokens, "access_token")).await;
    assert_eq!(me, serde_json::json!({ "sub": "dave" }));
}
