//! Integration code that does not compile or does not behave: a syntax error at deploy time,
//! a route that never returns and a route that allocates without bound.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::api::{assert_error, deploy, error_code, error_message, integration_body};
use crate::support::app::TestApp;

const PING_JS: &str = r#"import { Integration } from "splice";

const integration = new Integration();

integration.router.get("/ping", async (ctx) => {
  ctx.body = { pong: VERSION };
});

export default integration;
"#;

/// The line of `BROKEN_JS` that does not parse.
const BROKEN_LINE: u32 = 6;
const BROKEN_JS: &str = r#"import { Integration } from "splice";

const integration = new Integration();

integration.router.get("/ping", async (ctx) => {
  ctx.body = { pong: 2 ;
});

export default integration;
"#;

const RUNAWAY_JS: &str = r#"import { Integration } from "splice";

const integration = new Integration();

integration.router.get("/spin", async (ctx) => {
  for (;;) {}
});

integration.router.get("/bomb", async (ctx) => {
  const chunks = [];
  for (;;) {
    chunks.push(new Array(1 << 20).fill(chunks.length));
  }
});

integration.router.get("/ok", async (ctx) => {
  ctx.body = { ok: true };
});

export default integration;
"#;

fn ping(version: u32) -> String {
    PING_JS.replace("VERSION", &version.to_string())
}

/// The decimal numbers that occur in `text`, in order.
fn numbers_in(text: &str) -> Vec<u32> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse().ok())
        .collect()
}

#[tokio::test]
async fn syntax_error_is_rejected_and_previous_version_keeps_serving() {
    let app = TestApp::start().await;
    let deployed = deploy(&app, "pinger", &ping(1), json!({})).await;
    assert_eq!(
        app.get("/v1/integrations/pinger/api/ping").await.1,
        json!({ "pong": 1 })
    );

    let body = integration_body(BROKEN_JS, json!({}));
    let reply = app.put("/v1/integrations/pinger", &body).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, &["compile_error"]);
    let error = reply.1;
    let message = error_message(&error);
    assert!(message.contains("integration.js"), "{error}");
    let numbers = numbers_in(message);
    assert!(
        numbers.contains(&BROKEN_LINE),
        "no line {BROKEN_LINE} in {error}"
    );
    assert!(numbers.len() >= 2, "no column in {error}");

    let (status, pong) = app.get("/v1/integrations/pinger/api/ping").await;
    assert_eq!((status, pong), (StatusCode::OK, json!({ "pong": 1 })));
    let (status, current) = app.get("/v1/integrations/pinger").await;
    assert_eq!(status, StatusCode::OK, "{current}");
    assert_eq!(current["version"], deployed["version"], "{current}");

    let redeployed = deploy(&app, "pinger", &ping(2), json!({})).await;
    assert_ne!(redeployed["version"], deployed["version"]);
    assert_eq!(
        app.get("/v1/integrations/pinger/api/ping").await.1,
        json!({ "pong": 2 })
    );
}

#[tokio::test]
async fn runaway_routes_fail_cleanly_and_the_server_keeps_serving() {
    let app = TestApp::start().await;
    deploy(&app, "runaway", RUNAWAY_JS, json!({})).await;

    for route in ["spin", "bomb"] {
        let (status, body) = app
            .get(&format!("/v1/integrations/runaway/api/{route}"))
            .await;
        assert!(status.is_server_error(), "/{route}: {status} {body}");
        let code = error_code(&body);
        let stable = !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        assert!(stable, "/{route}: no machine-readable code in {body}");
        assert!(
            !error_message(&body).is_empty(),
            "/{route}: no message in {body}"
        );
    }

    let (status, body) = app.get("/v1/integrations/runaway/api/ok").await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "ok": true })));
    assert_eq!(app.get("/health").await.0, StatusCode::OK);
}
