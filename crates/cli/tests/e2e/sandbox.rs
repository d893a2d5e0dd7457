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

    // Code that fails while it is loaded is refused at deploy too.
    for (source, says) in [
        (
            "throw new Error('no config at import');",
            "no config at import",
        ),
        ("export default 42;", "Integration"),
        ("while (true) {}", "cpu time limit"),
        (
            "import { nope } from './missing.js';\nexport default nope;",
            "missing.js",
        ),
    ] {
        let body = integration_body(source, json!({}));
        let reply = app.put("/v1/integrations/pinger", &body).await;
        assert_error(
            &reply,
            StatusCode::BAD_REQUEST,
            &["invalid_integration", "compile_error"],
        );
        assert!(
            error_message(&reply.1).contains(says),
            "{source}: {}",
            reply.1
        );
    }
    let (_, current) = app.get("/v1/integrations/pinger").await;
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

    // Each 5xx answer is logged once, with the request it answered.
    let failures = |logs: &str, route: &str| {
        let path = format!("path=/v1/integrations/runaway/api/{route}");
        without_colors(logs)
            .lines()
            .filter(|line| line.contains("response failed") && line.ends_with(&path))
            .count()
    };
    let mut logs = app.logs();
    for _ in 0..50 {
        if ["spin", "bomb"]
            .iter()
            .all(|route| failures(&logs, route) > 0)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        logs = app.logs();
    }
    for route in ["spin", "bomb"] {
        assert_eq!(failures(&logs, route), 1, "/{route}:\n{logs}");
    }
}

/// `text` without ANSI colour sequences.
fn without_colors(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

const ODD_JS: &str = r#"import { Integration } from "splice";

const integration = new Integration();

integration.router.get("/framing", (ctx) => {
  ctx.set("content-length", "5");
  ctx.set("transfer-encoding", "chunked");
  ctx.set("x-kept", "yes");
  ctx.body = "h";
});
integration.router.get("/throw", (ctx) => { ctx.throw(Number(ctx.query.status), "odd"); });
integration.router.get("/forever", async (ctx) => {
  setTimeout(() => {}, 1e300);
  const { id } = await integration.task.start("later", {}, { delayMs: Number(ctx.query.delay) });
  ctx.body = { id };
});
integration.task.on("later", async () => null);

export default integration;
"#;

/// What code sets that the platform must not pass on, or must not choke on: framing headers,
/// a non-error status thrown, delays beyond any cap.
#[tokio::test]
async fn odd_values_from_code_are_contained() {
    let app = TestApp::start().await;
    deploy(&app, "odd", ODD_JS, json!({})).await;

    let answer = app
        .send(app.authed(reqwest::Method::GET, "/v1/integrations/odd/api/framing"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text, "h");
    assert_eq!(answer.headers["content-length"], "1");
    assert_eq!(answer.headers["x-kept"], "yes");
    assert!(answer.headers.get("transfer-encoding").is_none());

    for status in ["99", "302", "700", "NaN"] {
        let reply = app
            .get(&format!("/v1/integrations/odd/api/throw?status={status}"))
            .await;
        assert_error(
            &reply,
            StatusCode::INTERNAL_SERVER_ERROR,
            &["uncaught_exception"],
        );
        assert!(error_message(&reply.1).contains("400-599"), "{:?}", reply.1);
    }
    let reply = app.get("/v1/integrations/odd/api/throw?status=418").await;
    assert_eq!(reply.0.as_u16(), 418);

    // A delay of 1e300 ms (or Infinity) is capped, not a crash of the sandbox thread.
    for delay in ["1e300", "Infinity"] {
        let (status, body) = app
            .get(&format!("/v1/integrations/odd/api/forever?delay={delay}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (_, task) = app
            .get(&format!("/v1/tasks/{}", body["id"].as_str().unwrap()))
            .await;
        assert_eq!(task["status"], "queued", "{task}");
    }
    assert!(!app.logs().contains("panicked"), "{}", app.logs());
}
