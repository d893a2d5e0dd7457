//! Stopping a node: on SIGTERM it stops accepting, lets in-flight invocations finish, then
//! exits cleanly.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::support::api::deploy;
use crate::support::app::TestApp;

const SLOW_JS: &str = r#"import { Integration } from "splice";
const integration = new Integration();
integration.router.get("/slow", async (ctx) => {
  await new Promise((resolve) => setTimeout(resolve, 800));
  ctx.body = "finished";
});
export default integration;
"#;

#[tokio::test]
async fn sigterm_finishes_in_flight_invocations_then_exits() {
    let app = TestApp::start().await;
    deploy(&app, "slow", SLOW_JS, json!({})).await;

    let in_flight = app.send(app.authed(reqwest::Method::GET, "/v1/integrations/slow/api/slow"));
    let stop = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.terminate();
    };
    let (response, ()) = tokio::join!(in_flight, stop);
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
    assert_eq!(response.text, "finished");

    let status = app
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("splice exited");
    assert!(status.success(), "exit status {status}\n{}", app.logs());
    let refused = reqwest::get(app.url("/health")).await;
    assert!(refused.is_err(), "a stopped node still answers");
    assert!(
        app.logs().contains("shutdown signal received"),
        "{}",
        app.logs()
    );
}
