//! Provider webhooks signed by the providers' own libraries: GitHub deliveries signed with
//! `@octokit/webhooks-methods` and Stripe events signed with the `stripe` package are accepted
//! and queued, and the same deliveries tampered with (one byte of body, another secret, a stale
//! Stripe timestamp) are refused with 401 and a stable code before anything is queued.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::api::{assert_error, items};
use crate::support::app::{ApiResponse, TestApp};
use crate::support::random_hex;
use crate::support::signers::{github_signature, stripe_signature};

/// Stripe's default replay window, which the connector keeps.
const STRIPE_TOLERANCE_SECS: u64 = 300;

const STRIPE_USER_AGENT: &str = "Stripe/1.0 (+https://stripe.com/docs/webhooks)";

/// A push event as GitHub sends it: compact JSON, non-ASCII text kept as UTF-8.
const GITHUB_PUSH: &str = concat!(
    r#"{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","#,
    r#""after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","#,
    r#""repository":{"id":1296269,"full_name":"octocat/Hello-World","private":false},"#,
    r#""pusher":{"name":"octocat"},"sender":{"login":"octocat","id":583231},"#,
    r#""head_commit":{"id":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","#,
    r#""message":"Café ☕: fix the naïve “quoted” path\n\nSigned-off-by: Zoë <zoe@example.com>","#,
    r#""timestamp":"2024-05-01T12:00:00+02:00"}}"#,
);

/// A Stripe event as Stripe sends it: pretty-printed with two-space indents.
fn stripe_event(id: &str) -> String {
    format!(
        r#"{{
  "id": "{id}",
  "object": "event",
  "api_version": "2024-06-20",
  "created": 1714557600,
  "data": {{
    "object": {{
      "id": "pi_3PBqZ2LkdIwHu7ix0f8Wz1Qm",
      "object": "payment_intent",
      "amount": 2000,
      "currency": "eur",
      "description": "Abonnement « Équipe » — 1 mois",
      "status": "succeeded"
    }}
  }},
  "livemode": false,
  "pending_webhooks": 1,
  "request": {{
    "id": null,
    "idempotency_key": "b1e3a6d2-7f0c-4b7e-9a51-2f5c8e0d9c41"
  }},
  "type": "payment_intent.succeeded"
}}"#
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `body` with exactly one byte changed: its first digit, incremented (9 wraps to 0).
fn tamper(body: &str) -> String {
    let mut bytes = body.as_bytes().to_vec();
    let digit = bytes
        .iter_mut()
        .find(|b| b.is_ascii_digit())
        .expect("the body has a digit to change");
    *digit = if *digit == b'9' { b'0' } else { *digit + 1 };
    String::from_utf8(bytes).expect("changing a digit keeps UTF-8")
}

/// Creates connector `id` from catalog entry `provider` with `config`; panics unless 201.
async fn create_connector(app: &TestApp, id: &str, provider: &str, config: Value) {
    let body = json!({"id": id, "provider": provider, "config": config});
    let (status, created) = app.post("/v1/connectors", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["config"]["webhook"]["secret_set"], true,
        "{created}"
    );
}

/// Posts `body` to connector `id`'s webhook endpoint with `headers`, unauthenticated as a
/// provider would.
async fn post_webhook(
    app: &TestApp,
    id: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> ApiResponse {
    let path = format!("/v1/connectors/{id}/webhook");
    let mut request = app
        .request(Method::POST, &path)
        .header("content-type", content_type)
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.send(request).await
}

#[track_caller]
fn assert_accepted(answer: &ApiResponse, duplicate: bool) {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(
        answer.json(),
        json!({"ok": true, "duplicate": duplicate}),
        "{}",
        answer.text
    );
}

#[track_caller]
fn assert_refused(answer: &ApiResponse, code: &str) {
    assert_error(&answer.reply(), StatusCode::UNAUTHORIZED, &[code]);
}

/// The queued provider webhooks, once every one of them has been routed (or after a few
/// seconds, whatever state they are in).
async fn webhook_jobs(app: &TestApp) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app.get("/v1/jobs?kind=webhook.event").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let jobs = items(&body).clone();
        let settled = jobs.iter().all(|job| job["status"] == "succeeded");
        if settled || tokio::time::Instant::now() > deadline {
            return jobs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that exactly `n` webhooks were queued and each was routed (to no install and no
/// integration: none exists in these tests).
async fn assert_queued(app: &TestApp, n: usize) {
    let jobs = webhook_jobs(app).await;
    assert_eq!(jobs.len(), n, "{jobs:?}");
    for job in &jobs {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(
            job["result"],
            json!({"installs": [], "unmatched": []}),
            "{job}"
        );
    }
}

/// Posts a GitHub push delivery with its own delivery id, signed with `signature`.
async fn post_push(app: &TestApp, content_type: &str, signature: &str, body: &str) -> ApiResponse {
    let delivery = format!("72d3162e-cc78-11e3-81ab-{}", random_hex(12));
    let headers = [
        ("user-agent", "GitHub-Hookshot/044aadd"),
        ("x-github-event", "push"),
        ("x-github-delivery", delivery.as_str()),
        ("x-hub-signature-256", signature),
    ];
    post_webhook(app, "github", content_type, &headers, body).await
}

#[tokio::test]
async fn github_deliveries_signed_by_octokit_are_accepted_and_tampered_ones_refused() {
    let app = TestApp::start().await;
    let secret = format!("gh-{}", random_hex(32));
    let config = json!({
        "client_id": "Iv1.8a61f9b3a7aba766",
        "client_secret": format!("cs-{}", random_hex(32)),
        "webhook": { "secret": secret },
    });
    create_connector(&app, "github", "github", config).await;

    // GitHub signs the raw UTF-8 bytes of the body, whatever they contain.
    let json_type = "application/json";
    let signature = github_signature(&secret, GITHUB_PUSH);
    assert!(signature.starts_with("sha256="), "{signature}");
    let answer = post_push(&app, json_type, &signature, GITHUB_PUSH).await;
    assert_accepted(&answer, false);

    // One byte of the body changed, or a signature made with another secret.
    let answer = post_push(&app, json_type, &signature, &tamper(GITHUB_PUSH)).await;
    assert_refused(&answer, "signature_mismatch");
    let wrong = github_signature(&format!("gh-{}", random_hex(32)), GITHUB_PUSH);
    let answer = post_push(&app, json_type, &wrong, GITHUB_PUSH).await;
    assert_refused(&answer, "signature_mismatch");

    // A webhook set to form encoding is signed over the form body as sent.
    let form_type = "application/x-www-form-urlencoded";
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", GITHUB_PUSH)
        .finish();
    let signature = github_signature(&secret, &form);
    let answer = post_push(&app, form_type, &signature, &form).await;
    assert_accepted(&answer, false);
    let answer = post_push(&app, form_type, &signature, &tamper(&form)).await;
    assert_refused(&answer, "signature_mismatch");

    assert_queued(&app, 2).await;
    assert!(!app.logs().contains(&secret), "the secret reached the log");
}

/// Posts a Stripe event to the `billing` connector, signed with `signature`.
async fn post_event(app: &TestApp, signature: &str, body: &str) -> ApiResponse {
    let headers = [
        ("user-agent", STRIPE_USER_AGENT),
        ("stripe-signature", signature),
    ];
    let content_type = "application/json; charset=utf-8";
    post_webhook(app, "billing", content_type, &headers, body).await
}

#[tokio::test]
async fn stripe_events_signed_by_stripe_node_are_accepted_and_tampered_ones_refused() {
    let app = TestApp::start().await;
    let secret = format!("whsec_{}", random_hex(32));
    let config = json!({ "webhook": { "secret": secret } });
    create_connector(&app, "billing", "stripe", config).await;

    // Signed now: accepted once, and Stripe's retry of the same event is a duplicate.
    let event = stripe_event(&format!("evt_{}", random_hex(24)));
    let signature = stripe_signature(&secret, &event, None);
    assert!(
        signature.starts_with("t=") && signature.contains(",v1="),
        "{signature}"
    );
    let answer = post_event(&app, &signature, &event).await;
    assert_accepted(&answer, false);
    let answer = post_event(&app, &signature, &event).await;
    assert_accepted(&answer, true);

    // A delivery signed a few minutes ago, still inside the window, is accepted.
    let recent = stripe_event(&format!("evt_{}", random_hex(24)));
    let earlier = now_secs() - STRIPE_TOLERANCE_SECS / 2;
    let signature_then = stripe_signature(&secret, &recent, Some(earlier));
    let answer = post_event(&app, &signature_then, &recent).await;
    assert_accepted(&answer, false);

    // One byte of the body changed, or a signature made with another secret.
    let fresh = stripe_event(&format!("evt_{}", random_hex(24)));
    let answer = post_event(&app, &signature, &tamper(&event)).await;
    assert_refused(&answer, "signature_mismatch");
    let other_secret = format!("whsec_{}", random_hex(32));
    let wrong = stripe_signature(&other_secret, &fresh, None);
    let answer = post_event(&app, &wrong, &fresh).await;
    assert_refused(&answer, "signature_mismatch");

    // Correctly signed, but longer ago than the replay window allows.
    let stale = now_secs() - STRIPE_TOLERANCE_SECS - 60;
    let signature_stale = stripe_signature(&secret, &fresh, Some(stale));
    let answer = post_event(&app, &signature_stale, &fresh).await;
    assert_refused(&answer, "timestamp_out_of_window");

    assert_queued(&app, 2).await;
    assert!(!app.logs().contains(&secret), "the secret reached the log");
}
