//! Provider webhooks end to end: verified on the raw bytes, acknowledged once per delivery, and
//! routed to the event handler of every install — across integrations — whose identity
//! carries the event's provider account, and of no other; an event no install matches goes to
//! the integrations' handlers for unmatched events.

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::api::{deploy, items, str_field};
use crate::support::app::TestApp;
use crate::support::browser::{Browser, Consent, query_param};
use crate::support::oidc::{OidcOptions, OidcProvider};
use crate::support::random_hex;

const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const REDIRECT_URL: &str = "https://app.example/done";

/// A chat provider whose accounts are the provider's users; its webhooks use Slack's format.
const CHAT_PROVIDER: &str = r#"name = "teamchat"
display_name = "Team chat"
docs_url = "https://example.com/docs"
auth_mode = "oauth2"

[[settings]]
name = "issuer"
label = "Issuer URL"
pattern = "^https?://[^\\s{}]+$"

[oauth2]
authorization_url = "{issuer}/auth"
token_url = "{issuer}/token"
default_scopes = ["openid", "offline_access"]
authorize_params = { prompt = "consent" }

[account]
userinfo_url = "{issuer}/me"
id_path = "/sub"
"#;

fn handler_js(label: &str) -> String {
    format!(
        r#"import {{ Integration }} from "splice";
const integration = new Integration();
integration.event.on("chat:message", async (ctx) => {{
  console.log("{label} got", ctx.event.event.text, "for", ctx.install, "type", ctx.type);
}});
export default integration;
"#
    )
}

/// Handles only events that matched no install, under another name for the connector.
const UNMATCHED_JS: &str = r#"import { Integration } from "splice";
const integration = new Integration();
integration.event.unmatched("talk:*", async (ctx) => {
  console.log("unmatched", ctx.event.event.text, "install", ctx.install, "type", ctx.type);
});
export default integration;
"#;

fn slack_signature(timestamp: &str, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).expect("any key length");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_webhook(
    app: &TestApp,
    body: &str,
    signature: Option<String>,
) -> (StatusCode, String) {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        .to_string();
    let signature = signature.unwrap_or_else(|| slack_signature(&timestamp, body));
    let request = app
        .request(Method::POST, "/v1/connectors/chat/webhook")
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", timestamp)
        .header("x-slack-signature", signature)
        .body(body.to_owned());
    let answer = app.send(request).await;
    (answer.status, answer.text)
}

/// Connects `login` for `tenant` to `integration` and commits; returns the install id.
async fn install(app: &TestApp, integration: &str, tenant: &str, login: &str) -> String {
    let body = json!({"tenant": tenant, "redirect_url": REDIRECT_URL});
    let (status, session) = app
        .post(&format!("/v1/integrations/{integration}/sessions"), &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let done = Browser::new(REDIRECT_URL)
        .authorize(str_field(&session, "url"), login, Consent::Grant)
        .await;
    let id = str_field(&session, "id");
    assert_eq!(query_param(&done, "session").as_deref(), Some(id), "{done}");
    let (status, install) = app
        .post(&format!("/v1/sessions/{id}/commit"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{install}");
    str_field(&install, "id").to_owned()
}

/// The event handler runs recorded for an integration, waiting up to a few seconds for `n`.
async fn event_runs(app: &TestApp, integration: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, logs) = app
            .get(&format!("/v1/integrations/{integration}/logs"))
            .await;
        let runs: Vec<Value> = items(&logs)
            .iter()
            .filter(|l| l["method"] == "EVENT")
            .cloned()
            .collect();
        if runs.len() >= n || tokio::time::Instant::now() > deadline {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_verified_webhook_reaches_every_matching_install_once() {
    let dir = tempfile::tempdir().expect("a providers folder");
    std::fs::write(dir.path().join("teamchat.toml"), CHAT_PROVIDER).unwrap();
    let folder = dir.path().to_string_lossy().into_owned();
    let app = TestApp::start_with_env(&[("SPLICE_PROVIDERS_DIR", folder.as_str())]).await;
    let callback = format!("{}/v1/oauth/callback", app.public_url());
    let secret = format!("cs-{}", random_hex(32));
    let idp =
        OidcProvider::start_with(&callback, "splice-chat", &secret, OidcOptions::default()).await;

    let connector = json!({
        "id": "chat",
        "provider": "teamchat",
        "config": {
            "client_id": "splice-chat",
            "client_secret": secret,
            "settings": { "issuer": idp.issuer() },
            "webhook": { "provider": "slack", "secret": SIGNING_SECRET },
        },
    });
    let (status, created) = app.post("/v1/connectors", &connector).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(!created.to_string().contains(SIGNING_SECRET), "{created}");
    let webhook_url = str_field(&created, "webhook_url");
    assert!(
        webhook_url.ends_with("/v1/connectors/chat/webhook"),
        "{created}"
    );

    for name in ["alpha", "beta", "gamma"] {
        deploy(&app, name, &handler_js(name), json!({ "chat": "chat" })).await;
    }
    deploy(&app, "delta", UNMATCHED_JS, json!({ "talk": "chat" })).await;
    // Team T0001 installs two integrations (one identity, reused); team T0002 installs a third.
    let alpha = install(&app, "alpha", "acme", "T0001").await;
    let beta = install(&app, "beta", "acme", "T0001").await;
    install(&app, "gamma", "globex", "T0002").await;

    // Slack's URL verification is answered once the signature checks out.
    let challenge = json!({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}).to_string();
    let (status, text) = post_webhook(&app, &challenge, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(text, "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P");

    // A tampered signature is refused before anything else happens.
    let event = json!({
        "type": "event_callback", "team_id": "T0001", "event_id": "Ev0001",
        "event": {"type": "message", "text": "hello"},
    })
    .to_string();
    let (status, text) = post_webhook(&app, &event, Some("v0=deadbeef".into())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(text.contains("signature"), "{text}");

    // Accepted once; the provider's retry of the same event is acknowledged, not run again.
    let (status, text) = post_webhook(&app, &event, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("\"duplicate\":false"), "{text}");
    let (status, text) = post_webhook(&app, &event, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("\"duplicate\":true"), "{text}");

    let runs = event_runs(&app, "alpha", 1).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["install"], alpha.as_str());
    assert_eq!(runs[0]["path"], "/chat:message");
    assert!(
        runs[0]["logs"].to_string().contains("alpha got hello"),
        "{runs:?}"
    );
    let runs = event_runs(&app, "beta", 1).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["install"], beta.as_str());

    // The other team's install hears nothing; give stray jobs time to show up first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(event_runs(&app, "gamma", 0).await.is_empty());
    assert_eq!(
        event_runs(&app, "alpha", 2).await.len(),
        1,
        "the retry ran twice"
    );

    // Updating the connector without repeating the secrets keeps them.
    let update = json!({"config": {
        "client_id": "splice-chat",
        "settings": { "issuer": idp.issuer() },
        "webhook": { "provider": "slack" },
    }});
    let (status, updated) = app.put("/v1/connectors/chat", &update).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        updated["config"]["webhook"]["secret_set"], true,
        "{updated}"
    );
    let next = event.replace("Ev0001", "Ev0002");
    let (status, text) = post_webhook(&app, &next, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(event_runs(&app, "alpha", 2).await.len(), 2);

    // An event from a team nobody installed for goes to the handlers declared for unmatched
    // events, without an install; integrations that declare none run nothing.
    let stray = event
        .replace("T0001", "T0404")
        .replace("Ev0001", "Ev0404")
        .replace("hello", "anyone?");
    let (status, text) = post_webhook(&app, &stray, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let runs = event_runs(&app, "delta", 1).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["install"], Value::Null, "{runs:?}");
    assert_eq!(runs[0]["path"], "/talk:message", "{runs:?}");
    assert!(
        runs[0]["logs"]
            .to_string()
            .contains("unmatched anyone? install null"),
        "{runs:?}"
    );
    let (_, jobs) = app.get("/v1/jobs?kind=webhook.event").await;
    let routed = items(&jobs)
        .iter()
        .find(|j| j["result"]["unmatched"].is_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(routed["result"]["installs"], json!([]), "{jobs}");
    let mut unmatched: Vec<String> =
        serde_json::from_value(routed["result"]["unmatched"].clone()).expect("integration ids");
    unmatched.sort();
    assert_eq!(unmatched, ["alpha", "beta", "delta", "gamma"], "{jobs}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(event_runs(&app, "alpha", 3).await.len(), 2);
    assert!(event_runs(&app, "gamma", 0).await.is_empty());

    assert!(
        !app.logs().contains(SIGNING_SECRET),
        "the signing secret reached the log"
    );
}

/// Asana issues a secret per webhook in an unsigned handshake: Splice takes it only for a hook
/// the application opened, echoes it, keeps the first one (sealed), refuses to replace it,
/// and checks later deliveries with it.
#[tokio::test]
async fn asana_hook_secrets_are_kept_from_the_handshake_and_checked() {
    let app = TestApp::start().await;
    let connector = json!({
        "id": "asana", "provider": "asana",
        "config": {
            "client_id": "1201234567890", "client_secret": "asana-client-secret",
            "webhook": { "provider": "asana" },
        },
    });
    let (status, created) = app.post("/v1/connectors", &connector).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // Webhook sections Splice could not verify are refused when the connector is written.
    for (webhook, complaint) in [
        (json!({"provider": "telepathy"}), "config.webhook.provider"),
        (
            json!({"provider": "generic", "secret": "s"}),
            "config.webhook.scheme is required",
        ),
        (
            json!({"provider": "generic", "secret": "s", "scheme": {"scheme": "rot13"}}),
            "config.webhook.scheme:",
        ),
    ] {
        let mut bad = connector.clone();
        bad["id"] = json!("asana-bad");
        bad["config"]["webhook"] = webhook;
        let (status, refused) = app.post("/v1/connectors", &bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        assert!(refused.to_string().contains(complaint), "{refused}");
    }
    let post = |path: &str, headers: Vec<(&'static str, String)>, body: &str| {
        let mut request = app
            .request(Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_owned());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request
    };
    let hook_secret = format!("{}{}", random_hex(32), random_hex(32));
    let path = "/v1/connectors/asana/webhook?hook=project-1201";

    // A handshake for a hook nobody opened is refused: anyone can send one.
    let uninvited = post(path, vec![("x-hook-secret", "attacker".into())], "");
    let answer = app.send(uninvited).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text);
    assert_eq!(answer.json()["error"]["code"], "unknown_hook");

    // The application opens the hook, then registers its URL with Asana.
    let (status, opened) = app
        .post(
            "/v1/connectors/asana/hooks",
            &json!({"name": "project-1201"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    assert_eq!(opened["url"], app.url(path), "{opened}");
    let (status, again) = app
        .post(
            "/v1/connectors/asana/hooks",
            &json!({"name": "project-1201"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let (status, generated) = app.post("/v1/connectors/asana/hooks", &json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{generated}");
    assert!(
        str_field(&generated, "name").starts_with("hook-"),
        "{generated}"
    );
    let (status, bad) = app
        .post("/v1/connectors/asana/hooks", &json!({"name": "a&hook=b"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    // The handshake is answered with the secret echoed, and the secret is stored.
    let handshake = post(path, vec![("x-hook-secret", hook_secret.clone())], "");
    let answer = app.send(handshake).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let echoed = answer
        .headers
        .get("x-hook-secret")
        .and_then(|v| v.to_str().ok());
    assert_eq!(echoed, Some(hook_secret.as_str()));

    // Replaying the unsigned handshake cannot swap the secret.
    let impostor = post(path, vec![("x-hook-secret", "impostor".into())], "");
    let answer = app.send(impostor).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.text);

    let body = json!({"events": [{"action": "changed", "resource": {"gid": "1202", "resource_type": "task"}, "user": {"gid": "42"}}]}).to_string();
    let sign = |secret: &str| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(body.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    };
    let signed = post(path, vec![("x-hook-signature", sign(&hook_secret))], &body);
    let answer = app.send(signed).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert!(
        answer.text.contains("\"duplicate\":false"),
        "{}",
        answer.text
    );

    let forged = post(path, vec![("x-hook-signature", sign("impostor"))], &body);
    let answer = app.send(forged).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
    assert_eq!(answer.json()["error"]["code"], "signature_mismatch");

    let other_hook = "/v1/connectors/asana/webhook?hook=project-9999";
    let unknown = post(
        other_hook,
        vec![("x-hook-signature", sign(&hook_secret))],
        &body,
    );
    let answer = app.send(unknown).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text);
    assert_eq!(answer.json()["error"]["code"], "unknown_hook");

    // Connectors with a signing secret of their own have no hooks.
    let stripe = json!({"id": "stripe", "provider": "stripe",
        "config": {"webhook": {"secret": "whsec_test"}}});
    let (status, created) = app.post("/v1/connectors", &stripe).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, refused) = app.post("/v1/connectors/stripe/hooks", &json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    let bad_hook = "/v1/connectors/asana/webhook?hook=no%20spaces";
    let answer = app
        .send(post(bad_hook, vec![("x-hook-secret", "s".into())], ""))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);

    let (_, shown) = app.get("/v1/connectors/asana").await;
    assert!(!shown.to_string().contains(&hook_secret), "{shown}");
    assert!(
        !app.logs().contains(&hook_secret),
        "the hook secret reached the log"
    );
}

/// Signature verifiers are kept in memory between deliveries; a secret changed on this node
/// applies to the next delivery.
#[tokio::test]
async fn a_rotated_webhook_secret_applies_to_the_next_delivery() {
    let app = TestApp::start().await;
    let config = |secret: &str| {
        json!({
            "settings": { "base_url": "http://127.0.0.1:9" },
            "webhook": {
                "provider": "generic",
                "secret": secret,
                "scheme": {"scheme": "hmac", "header": "X-Signature", "algorithm": "sha256",
                           "encoding": "hex", "prefix": "sha256="},
            },
        })
    };
    let deliver = |secret: &'static str| signed_delivery(&app, secret);
    let created = json!({"id": "hooks", "provider": "api_key", "config": config("first-secret")});
    let (status, created) = app.post("/v1/connectors", &created).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(deliver("first-secret").await, StatusCode::OK);
    assert_eq!(deliver("second-secret").await, StatusCode::UNAUTHORIZED);

    let replaced = json!({"provider": "api_key", "config": config("second-secret")});
    let (status, updated) = app.put("/v1/connectors/hooks", &replaced).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(deliver("first-secret").await, StatusCode::UNAUTHORIZED);
    assert_eq!(deliver("second-secret").await, StatusCode::OK);

    let (status, _) = app.delete("/v1/connectors/hooks").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(deliver("second-secret").await, StatusCode::NOT_FOUND);
}

/// Posts a generic webhook to the `hooks` connector signed with `secret`; its status.
async fn signed_delivery(app: &TestApp, secret: &str) -> StatusCode {
    let body = json!({"type": "ping", "data": {"n": 1}}).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let request = app
        .request(Method::POST, "/v1/connectors/hooks/webhook")
        .header("content-type", "application/json")
        .header("x-signature", signature)
        .body(body);
    app.send(request).await.status
}
