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
