//! The whole OAuth story against a real provider: create a connector, deploy an integration,
//! connect a tenant through the browser, call the provider with stored tokens across two
//! refreshes, reconnect, refuse, uninstall, and finally look for leaked secrets.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::api::{assert_error, deploy, items, str_field};
use crate::support::app::TestApp;
use crate::support::browser::{Browser, Consent, query_param};
use crate::support::oidc::{OidcOptions, OidcProvider};
use crate::support::{contains_bytes, random_hex, read_tree};

const INTEGRATION: &str = "whoami";
const CLIENT_ID: &str = "splice-e2e";
const TENANT: &str = "acme";
const REDIRECT_URL: &str = "https://app.example/done";

/// Calls the provider's userinfo endpoint through the `idp` connector of the route's tenant.
const WHOAMI_JS: &str = r#"import { Integration } from "splice";

const integration = new Integration();

integration.router.get("/tenants/:tenant/me", async (ctx) => {
  const idp = await integration.tenant.connector(ctx, "idp", ctx.params.tenant);
  const res = await idp.fetch("USERINFO_URL");
  ctx.body = { me: await res.json() };
});

export default integration;
"#;

fn connector_body(idp: &OidcProvider, client_secret: &str) -> Value {
    json!({
        "id": "idp",
        "type": "oauth2",
        "config": {
            "authorization_url": idp.authorization_url(),
            "token_url": idp.token_url(),
            "client_id": CLIENT_ID,
            "client_secret": client_secret,
            "scopes": ["openid", "offline_access"],
            "pkce": true,
            "authorize_params": { "prompt": "consent" },
            "client_auth": "body",
            "userinfo_url": idp.userinfo_url(),
        },
        "tags": {},
    })
}

#[tokio::test]
async fn connect_refresh_reconnect_refuse_and_keep_secrets_out() {
    // Splice first: the provider must know the callback URL, which only needs the public URL.
    let app = TestApp::start().await;
    let client_secret = format!("cs-{}", random_hex(40));
    let callback_url = format!("{}/v1/oauth/callback", app.public_url());
    let options = OidcOptions::default();
    let ttl = Duration::from_secs(options.access_token_ttl_secs);
    let idp = OidcProvider::start_with(&callback_url, CLIENT_ID, &client_secret, options).await;

    create_connector(&app, &idp, &client_secret, &callback_url).await;
    let code = WHOAMI_JS.replace("USERINFO_URL", &idp.userinfo_url());
    deploy(&app, INTEGRATION, &code, json!({ "idp": "idp" })).await;

    // First connection: browser flow, then commit the session into an install.
    let session = connect(&app, "alice").await;
    assert_eq!(session_status(&app, &session).await, "completed");
    let install = commit(&app, &session).await;
    let identity = str_field(&install["identities"], "idp").to_owned();
    assert!(identity.starts_with("idn_"), "{install}");
    assert_eq!(install["tags"]["plan"], "pro", "{install}");

    let pro = list_installs(&app, "tenant=acme&tag=plan=pro").await;
    let listed = pro.iter().any(|item| item["id"] == install["id"]);
    assert!(listed, "install missing from {pro:?}");
    let free = list_installs(&app, "tenant=acme&tag=plan=free").await;
    assert!(free.is_empty(), "tag filter ignored: {free:?}");
    assert_single_identity(&app, &identity).await;

    assert_whoami(&app, "alice").await;
    assert_refreshes_on_expiry(&app, &idp, ttl).await;
    assert_token_endpoint(&app, &idp, &identity).await;

    // Connecting the same user again reuses the identity instead of adding one.
    let session = connect(&app, "alice").await;
    let reinstall = commit(&app, &session).await;
    assert_eq!(reinstall["identities"]["idp"], *identity, "{reinstall}");
    assert_single_identity(&app, &identity).await;
    assert_whoami(&app, "alice").await;
    let installs_before = list_installs(&app, "tenant=acme").await.len();

    // Refusing consent fails the session and installs nothing.
    let refused = refuse(&app).await;
    assert_eq!(session_status(&app, &refused).await, "failed");
    let commit_path = format!("/v1/sessions/{refused}/commit");
    let reply = app.post(&commit_path, &json!({})).await;
    assert_error(&reply, StatusCode::CONFLICT, &["conflict"]);
    let installs_after = list_installs(&app, "tenant=acme").await.len();
    assert_eq!(installs_after, installs_before);

    assert_request_logs(&app).await;

    // Uninstall.
    let reinstall_id = str_field(&reinstall, "id");
    let install_path = format!("/v1/integrations/{INTEGRATION}/installs/{reinstall_id}");
    let (status, body) = app.delete(&install_path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let reply = app.get(&install_path).await;
    assert_error(&reply, StatusCode::NOT_FOUND, &["not_found"]);

    // Every token the provider ever issued, and the client secret.
    let stats = idp.stats().await;
    let mut secrets = vec![("client secret", client_secret)];
    for token in stats.access_tokens() {
        secrets.push(("access token", token));
    }
    for token in stats.refresh_tokens() {
        secrets.push(("refresh token", token));
    }
    // Two authorization codes and two refreshes, each with an access and a refresh token.
    let raw = &stats.raw;
    assert_eq!(secrets.len(), 1 + 4 + 4, "{raw}");
    assert_no_leaks(&app, &secrets);
}

/// Calls the route after the access token expired, twice. The second refresh only works if
/// Splice stored the rotated refresh token: reusing the first one would make the provider
/// revoke the whole grant.
async fn assert_refreshes_on_expiry(app: &TestApp, idp: &OidcProvider, ttl: Duration) {
    let stats = idp.stats().await;
    assert_eq!(stats.grants("authorization_code"), 1, "{:?}", stats.raw);
    assert_eq!(stats.grants("refresh_token"), 0, "{:?}", stats.raw);

    for refreshes in 1..=2 {
        tokio::time::sleep(ttl + Duration::from_millis(1500)).await;
        assert_whoami(app, "alice").await;

        let stats = idp.stats().await;
        assert_eq!(stats.grants("refresh_token"), refreshes, "{:?}", stats.raw);
        assert_eq!(stats.grant_errors("refresh_token"), 0, "{:?}", stats.raw);
    }
}

async fn create_connector(
    app: &TestApp,
    idp: &OidcProvider,
    client_secret: &str,
    callback_url: &str,
) {
    let body = connector_body(idp, client_secret);
    let (status, connector) = app.post("/v1/connectors", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{connector}");
    assert_eq!(connector["id"], "idp");
    assert_eq!(connector["type"], "oauth2");
    assert_eq!(connector["callback_url"], callback_url, "{connector}");
    assert_eq!(connector["config"]["client_id"], CLIENT_ID, "{connector}");
    assert_eq!(connector["config"]["token_url"], idp.token_url().as_str());
    assert!(
        connector["config"].get("client_secret").is_none(),
        "{connector}"
    );
    assert_eq!(connector["tags"], json!({}));
    for field in ["created_at", "updated_at", "version"] {
        assert!(!connector[field].is_null(), "no {field} in {connector}");
    }

    let reply = app.post("/v1/connectors", &body).await;
    assert_error(&reply, StatusCode::CONFLICT, &["conflict"]);
}

/// Creates a session for the tenant and returns its id and public URL.
async fn create_session(app: &TestApp) -> (String, String) {
    let body = json!({
        "tenant": TENANT,
        "tags": { "plan": "pro" },
        "redirect_url": REDIRECT_URL,
    });
    let path = format!("/v1/integrations/{INTEGRATION}/sessions");
    let (status, session) = app.post(&path, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");

    let id = str_field(&session, "id");
    assert!(id.starts_with("ses_"), "{session}");
    assert!(!session["expires_at"].is_null(), "{session}");
    (id.to_owned(), str_field(&session, "url").to_owned())
}

/// Runs a session through a fresh browser with consent and returns its id.
async fn connect(app: &TestApp, login: &str) -> String {
    let (id, url) = create_session(app).await;
    let done = Browser::new(REDIRECT_URL)
        .authorize(&url, login, Consent::Grant)
        .await;

    assert_eq!(done.path(), "/done", "{done}");
    assert_eq!(
        query_param(&done, "session").as_deref(),
        Some(id.as_str()),
        "{done}"
    );
    assert_eq!(query_param(&done, "error"), None, "{done}");
    id
}

/// Runs a session through a fresh browser that refuses consent and returns its id.
async fn refuse(app: &TestApp) -> String {
    let (id, url) = create_session(app).await;
    let done = Browser::new(REDIRECT_URL)
        .authorize(&url, "alice", Consent::Refuse)
        .await;

    assert_eq!(
        query_param(&done, "error").as_deref(),
        Some("access_denied"),
        "{done}"
    );
    assert!(query_param(&done, "error_description").is_some(), "{done}");
    id
}

async fn session_status(app: &TestApp, session: &str) -> String {
    let (status, body) = app.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    str_field(&body, "status").to_owned()
}

async fn commit(app: &TestApp, session: &str) -> Value {
    let (status, install) = app
        .post(&format!("/v1/sessions/{session}/commit"), &json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{install}");
    assert!(str_field(&install, "id").starts_with("ins_"), "{install}");
    assert_eq!(install["integration"], INTEGRATION, "{install}");
    assert_eq!(install["tenant"], TENANT, "{install}");
    assert_eq!(session_status(app, session).await, "committed");
    install
}

async fn list_installs(app: &TestApp, query: &str) -> Vec<Value> {
    let path = format!("/v1/integrations/{INTEGRATION}/installs?{query}");
    let (status, body) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    items(&body).clone()
}

async fn assert_single_identity(app: &TestApp, identity: &str) {
    let (status, body) = app.get("/v1/connectors/idp/identities?tenant=acme").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list = items(&body);
    assert_eq!(list.len(), 1, "{body}");

    let item = &list[0];
    assert_eq!(item["id"], identity, "{body}");
    assert_eq!(item["connector"], "idp");
    assert_eq!(item["tenant"], TENANT);
    assert_eq!(item["subject"], "alice");
    assert_eq!(item["status"], "healthy");
}

async fn assert_whoami(app: &TestApp, login: &str) {
    let path = format!("/v1/integrations/{INTEGRATION}/api/tenants/{TENANT}/me");
    let (status, body) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "me": { "sub": login } }));
}

async fn assert_token_endpoint(app: &TestApp, idp: &OidcProvider, identity: &str) {
    let path = format!("/v1/connectors/idp/identities/{identity}/token");
    let (status, body) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert!(!body["expires_at"].is_null(), "{body}");

    let token = str_field(&body, "access_token").to_owned();
    let issued = idp.stats().await.access_tokens();
    assert!(
        issued.contains(&token),
        "token endpoint returned an unknown access token"
    );
}

async fn assert_request_logs(app: &TestApp) {
    // Invocations are written in batches off the request path: wait for the last one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let body = loop {
        let (status, body) = app
            .get(&format!("/v1/integrations/{INTEGRATION}/logs"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if items(&body).len() >= 4 || tokio::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let list = items(&body);
    assert!(list.len() >= 4, "expected the four whoami calls: {body}");

    let newest = &list[0];
    assert_eq!(newest["method"], "GET", "{newest}");
    assert!(
        str_field(newest, "path").ends_with("/tenants/acme/me"),
        "{newest}"
    );
    assert_eq!(newest["status"], 200, "{newest}");
    assert!(newest["duration_ms"].is_number(), "{newest}");
    assert!(newest["logs"].is_array(), "{newest}");

    let times: Vec<&Value> = list.iter().map(|item| &item["at"]).collect();
    for pair in times.windows(2) {
        assert!(not_older(pair[0], pair[1]), "logs not newest first: {body}");
    }
}

/// Whether timestamp `a` is at least as recent as `b` (RFC 3339 strings or numbers).
fn not_older(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() >= b.as_f64(),
        (Value::String(a), Value::String(b)) => a >= b,
        _ => panic!("log timestamps of different kinds: {a} {b}"),
    }
}

/// No secret in the data folder's files, in Splice's output or in any API response other
/// than the identity token endpoint, whose job is to return one.
fn assert_no_leaks(app: &TestApp, secrets: &[(&str, String)]) {
    let files = read_tree(app.data_dir());
    assert!(
        files.iter().any(|(_, bytes)| !bytes.is_empty()),
        "data folder is empty"
    );
    let logs = app.log_bytes();
    assert!(!logs.is_empty(), "splice logged nothing at debug level");

    for (kind, secret) in secrets {
        let needle = secret.as_bytes();
        for (path, bytes) in &files {
            assert!(
                !contains_bytes(bytes, needle),
                "{kind} stored in {}",
                path.display()
            );
        }
        assert!(!contains_bytes(&logs, needle), "{kind} in splice's logs");

        for exchange in app.transcript() {
            if is_token_endpoint(&exchange.path) {
                continue;
            }
            let leaked = contains_bytes(exchange.body.as_bytes(), needle);
            assert!(
                !leaked,
                "{kind} in the response to {} {}",
                exchange.method, exchange.path
            );
        }
    }
}

fn is_token_endpoint(path: &str) -> bool {
    path.starts_with("/v1/connectors/") && path.contains("/identities/") && path.ends_with("/token")
}
