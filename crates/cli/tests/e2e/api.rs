//! The API's edges: health without a key, authentication, malformed bodies and unknown ids.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::api::{assert_error, deploy};
use crate::support::app::TestApp;

const EMPTY_JS: &str = r#"import { Integration } from "splice";

const integration = new Integration();

export default integration;
"#;

#[tokio::test]
async fn health_needs_no_key() {
    let app = TestApp::start().await;
    let response = app.send(app.request(Method::GET, "/health")).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
}

#[tokio::test]
async fn missing_or_wrong_admin_key_is_unauthorized() {
    let app = TestApp::start().await;
    let key = app.admin_key();
    let truncated = format!("Bearer {}", &key[..key.len() - 1]);
    let wrong_scheme = format!("Basic {key}");
    let bad_headers = [
        None,
        Some("Bearer wrong"),
        Some(&truncated),
        Some(&wrong_scheme),
    ];
    let requests = [
        (Method::GET, "/v1/connectors/idp"),
        (Method::POST, "/v1/connectors"),
        (Method::PUT, "/v1/integrations/anything"),
        (Method::GET, "/v1/integrations/anything/installs"),
        (Method::GET, "/v1/sessions/ses_unknown"),
    ];

    for (method, path) in &requests {
        for header in bad_headers {
            let mut request = app.request(method.clone(), path);
            if *method != Method::GET {
                request = request.json(&json!({}));
            }
            if let Some(value) = header {
                request = request.header(AUTHORIZATION, value);
            }
            let reply = app.send(request).await.reply();
            assert_error(&reply, StatusCode::UNAUTHORIZED, &["unauthorized"]);
        }
    }

    // The refused PUT created nothing.
    let (status, _) = app.get("/v1/integrations/anything").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_or_invalid_bodies_are_bad_requests() {
    let app = TestApp::start().await;
    let codes = ["malformed_json", "invalid_request"];

    let truncated = app
        .authed(Method::POST, "/v1/connectors")
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"id": "idp", "type": "oauth2", "config": {"#);
    let reply = app.send(truncated).await.reply();
    assert_error(&reply, StatusCode::BAD_REQUEST, &codes);

    let unknown_type = json!({ "id": "idp", "type": "no-such-type", "config": {}, "tags": {} });
    let reply = app.post("/v1/connectors", &unknown_type).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, &codes);

    let reply = app.get("/v1/connectors/idp").await;
    assert_error(&reply, StatusCode::NOT_FOUND, &["not_found"]);
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let app = TestApp::start().await;
    deploy(&app, "known", EMPTY_JS, json!({})).await;
    let session = json!({ "tenant": "acme", "tags": {}, "redirect_url": "https://app.example/" });

    let lookups = [
        (Method::GET, "/v1/connectors/nope"),
        (Method::GET, "/v1/integrations/nope"),
        (Method::POST, "/v1/integrations/nope/sessions"),
        (Method::GET, "/v1/sessions/ses_nope"),
        (Method::POST, "/v1/sessions/ses_nope/commit"),
        (Method::GET, "/v1/integrations/known/installs/ins_nope"),
        (Method::DELETE, "/v1/integrations/known/installs/ins_nope"),
    ];
    for (method, path) in lookups {
        let mut request = app.authed(method.clone(), path);
        if method == Method::POST {
            request = request.json(&session);
        }
        let reply = app.send(request).await.reply();
        assert_eq!(
            reply.0,
            StatusCode::NOT_FOUND,
            "{method} {path}: {}",
            reply.1
        );
        assert_error(&reply, StatusCode::NOT_FOUND, &["not_found"]);
    }
}

/// Errors produced below the handlers (a method not allowed, a body over the limit) have the
/// same JSON shape and stable codes; an integration's own error responses pass unchanged.
#[tokio::test]
async fn every_platform_error_is_json_and_integration_errors_are_their_own() {
    let app = TestApp::start().await;
    let code = r#"import { Integration } from "splice";
const integration = new Integration();
integration.router.post("/echo", (ctx) => { ctx.body = { bytes: ctx.request.rawBody.length }; });
integration.router.get("/missing", (ctx) => { ctx.status = 404; ctx.body = "nope"; });
export default integration;
"#;
    deploy(&app, "errs", code, json!({})).await;

    let answer = app.send(app.authed(Method::PATCH, "/v1/connectors")).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        answer.json()["error"]["code"],
        "method_not_allowed",
        "{}",
        answer.text
    );
    assert!(answer.headers.get("allow").is_some());

    // Announced as 9 MiB over the 8 MiB limit; refused on the announcement, so the test does
    // not race the server closing the connection while a client is still sending.
    for (path, authed) in [
        ("/v1/connectors/none/webhook", false),
        ("/v1/connectors", true),
        ("/v1/integrations/errs/api/echo", true),
    ] {
        let (status, body) = oversized_post(&app, path, authed).await;
        assert_eq!(status, 413, "{path}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(body["error"]["code"], "payload_too_large", "{path}: {body}");
    }

    let answer = app
        .send(app.authed(Method::GET, "/v1/integrations/errs/api/missing"))
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.text, "nope");
}

/// POSTs a request announcing a 9 MiB JSON body but sending only its first bytes; returns the
/// status and body of the answer.
async fn oversized_post(app: &TestApp, path: &str, authed: bool) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = url::Url::parse(&app.url(path)).expect("a URL");
    let address = format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port().unwrap_or(80)
    );
    let mut stream = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let auth = if authed {
        format!("Authorization: Bearer {}\r\n", app.admin_key())
    } else {
        String::new()
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{{\"x\": \"",
        9 << 20
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "no answer to an oversized body on {path}");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}
