//! Outbound webhooks to the application: registered once with a secret shown once, each
//! delivery signed over timestamp and body, retried until the application answers 2xx, and
//! listed with its attempts.

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::api::{deploy, items, str_field};
use crate::support::app::TestApp;
use crate::support::receiver::Receiver;

const EMPTY_JS: &str = r#"import { Integration } from "splice";
export default new Integration();
"#;

async fn wait_for(
    receiver: &Receiver,
    n: usize,
    within: Duration,
) -> Vec<crate::support::receiver::Received> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = receiver.received();
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn events_are_delivered_signed_and_retried() {
    let app = TestApp::start().await;
    // The application fails the first delivery, then accepts.
    let receiver = Receiver::start(vec![500, 200]).await;

    let body = json!({"url": receiver.url, "events": ["install.created"]});
    let (status, created) = app.post("/v1/webhooks", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = str_field(&created, "secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    let id = str_field(&created, "id").to_owned();
    let (_, shown) = app.get(&format!("/v1/webhooks/{id}")).await;
    assert!(
        shown.get("secret").is_none(),
        "the secret is shown only once: {shown}"
    );
    let unknown = json!({"url": "https://app.example/hook", "events": ["nope.event"]});
    let (status, refused) = app.post("/v1/webhooks", &unknown).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(refused.to_string().contains("nope.event"), "{refused}");
    let (status, _) = app.post("/v1/webhooks", &json!({"url": "ftp://x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // An install is created: one install.created event.
    deploy(&app, "plain", EMPTY_JS, json!({})).await;
    let session = json!({"tenant": "acme", "redirect_url": "https://app.example/done"});
    let (_, session) = app.post("/v1/integrations/plain/sessions", &session).await;
    let path = format!("/v1/sessions/{}/commit", str_field(&session, "id"));
    let (_, install) = app.post(&path, &json!({})).await;
    let install_id = str_field(&install, "id").to_owned();

    let got = wait_for(&receiver, 2, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 2, "one failed attempt, one retry: {got:?}");
    assert_eq!(got[0].body, got[1].body, "the retry carries the same event");
    let delivery = &got[1];
    let event: Value = serde_json::from_str(&delivery.body).expect("a JSON body");
    assert_eq!(event["type"], "install.created", "{event}");
    assert_eq!(event["subject"], install_id.as_str(), "{event}");
    assert_eq!(delivery.header("splice-event-id"), event["id"].as_str());

    // The signature: HMAC-SHA256 over "<t>.<body>" with the secret.
    let header = delivery
        .header("splice-signature")
        .expect("a signature header");
    let (t, v1) = header.split_once(',').expect("t=…,v1=…");
    let t = t.strip_prefix("t=").expect("t=");
    let v1 = v1.strip_prefix("v1=").expect("v1=");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.{}", delivery.body).as_bytes());
    assert_eq!(v1, hex::encode(mac.finalize().into_bytes()));

    // The delivery is listed with its attempts.
    let (_, deliveries) = app.get(&format!("/v1/webhooks/{id}/deliveries")).await;
    let list = items(&deliveries);
    assert_eq!(list.len(), 1, "{deliveries}");
    assert_eq!(list[0]["status"], "succeeded", "{deliveries}");
    assert_eq!(list[0]["attempts"], 2, "{deliveries}");

    // Events the webhook did not ask for are not delivered.
    let (status, _) = app
        .delete(&format!("/v1/integrations/plain/installs/{install_id}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 2);
}
