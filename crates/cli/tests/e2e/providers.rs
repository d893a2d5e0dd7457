//! The provider catalog and what it brings: connectors built from a catalog entry, the client
//! credentials grant with no user involved, API keys and Basic credentials typed into Splice's
//! hosted form, the authenticated proxy, reconnecting a revoked grant into the same install,
//! the OAuth callback's `state` rules (case C31) and uninstall removing unused identities.
//!
//! Credentials are checked where they arrive: the fixture's `/__echo` endpoint answers with
//! the request Splice sent, and `/__stats` counts the grants the provider served.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use crate::support::api::{assert_error, deploy, error_code, error_message, items, str_field};
use crate::support::app::{ApiResponse, TestApp};
use crate::support::browser::{
    Browser, Consent, form_inputs, form_tag, query_param, tag_attribute,
};
use crate::support::oidc::{OidcOptions, OidcProvider};
use crate::support::{contains_bytes, random_hex, read_tree};

const REDIRECT_URL: &str = "https://app.example/done";
const TENANT: &str = "acme";
const CLIENT_ID: &str = "splice-providers";
const CC_CLIENT_ID: &str = "splice-machine";
/// Where the fixture's own test sends its authorization codes; never connected to.
const FIXTURE_REDIRECT_URI: &str = "http://127.0.0.1:9/callback";
/// Past an access token's expiry by more than Splice's refresh margin in tests (1 s).
const PAST_EXPIRY: Duration = Duration::from_millis(1500);

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

/// Returns the client credentials connector's current access token.
const MACHINE_JS: &str = r#"import { Integration } from "splice";

const integration = new Integration();

integration.router.get("/tenants/:tenant/token", async (ctx) => {
  const cc = await integration.tenant.connector(ctx, "cc", ctx.params.tenant);
  ctx.body = { token: await cc.token() };
});

export default integration;
"#;

/// Calls the echo endpoint through connector `NAME` with a URL relative to its base URL.
const ECHO_JS: &str = r#"import { Integration } from "splice";

const integration = new Integration();

integration.router.get("/echo", async (ctx) => {
  const k = await integration.tenant.connector(ctx, "NAME", "acme");
  const r = await k.fetch("/hello?x=1");
  ctx.body = await r.json();
});

export default integration;
"#;

// ---------------------------------------------------------------------------------------------
// The fixture's additions, checked without Splice.

#[tokio::test]
async fn fixture_serves_client_credentials_revocation_and_echo() {
    let secret = random_hex(32);
    let cc_secret = random_hex(32);
    let options = OidcOptions {
        client_credentials: Some((CC_CLIENT_ID.to_owned(), cc_secret.clone())),
        ..Default::default()
    };
    let idp = OidcProvider::start_with(FIXTURE_REDIRECT_URI, CLIENT_ID, &secret, options).await;

    // Client credentials: an opaque access token with the configured lifetime, listed in
    // /__stats like every other access token.
    let (status, tokens) = idp.client_credentials_grant(CC_CLIENT_ID, &cc_secret).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer", "{tokens}");
    assert_eq!(tokens["expires_in"], 4, "{tokens}");
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    let cc_token = str_field(&tokens, "access_token").to_owned();

    let (status, refused) = idp.client_credentials_grant(CC_CLIENT_ID, "wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert_eq!(refused["error"], "invalid_client", "{refused}");
    // The main client may not use the grant (oidc-provider says invalid_request).
    let (status, refused) = idp.client_credentials_grant(CLIENT_ID, &secret).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"], "invalid_request", "{refused}");

    let stats = idp.stats().await;
    assert_eq!(stats.grants("client_credentials"), 1, "{}", stats.raw);
    assert_eq!(
        stats.access_tokens(),
        vec![cc_token.clone()],
        "{}",
        stats.raw
    );

    // Revocation: a refresh token that worked stops working, with invalid_grant.
    let first_refresh = authorization_code_refresh_token(&idp, &secret, "erin").await;
    let (status, rotated) = idp.refresh(&first_refresh).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let newest = str_field(&rotated, "refresh_token").to_owned();
    assert_eq!(
        idp.stats().await.newest_refresh_token(),
        Some(newest.clone())
    );

    assert_eq!(idp.revoke(&newest).await, StatusCode::OK);
    let (status, revoked) = idp.refresh(&newest).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{revoked}");
    assert_eq!(revoked["error"], "invalid_grant", "{revoked}");
    let stats = idp.stats().await;
    assert_eq!(stats.grants("refresh_token"), 1, "{}", stats.raw);
    assert_eq!(stats.grant_errors("refresh_token"), 1, "{}", stats.raw);

    // Echo: the request as the endpoint saw it.
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{}/hello/there?x=1&x=2&y=3", idp.echo_url()))
        .header("X-Api-Key", "Key abc")
        .basic_auth("user", Some("pass"))
        .send()
        .await
        .expect("GET /__echo");
    assert_eq!(response.status(), StatusCode::OK);
    let echo: Value = response.json().await.expect("echo answers JSON");
    assert_eq!(echo["method"], "GET", "{echo}");
    assert_eq!(echo["path"], "/__echo/hello/there", "{echo}");
    assert_eq!(
        echo["query"],
        json!({ "x": ["1", "2"], "y": "3" }),
        "{echo}"
    );
    assert_eq!(echo["headers"]["x-api-key"], "Key abc", "{echo}");
    assert_eq!(
        echo["headers"]["authorization"], "Basic dXNlcjpwYXNz",
        "{echo}"
    );

    let response = http
        .post(format!("{}?status=418", idp.echo_url()))
        .form(&[("a", "b")])
        .send()
        .await
        .expect("POST /__echo");
    assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
    let echo: Value = response.json().await.expect("echo answers JSON");
    assert_eq!(echo["method"], "POST", "{echo}");
    assert_eq!(echo["path"], "/__echo", "{echo}");
    assert_eq!(echo["body"], "a=b", "{echo}");
    let content_type = &echo["headers"]["content-type"];
    assert_eq!(content_type, "application/x-www-form-urlencoded", "{echo}");
}

/// Runs a code flow for `login` without Splice and returns the first refresh token.
async fn authorization_code_refresh_token(idp: &OidcProvider, secret: &str, login: &str) -> String {
    let mut url = Url::parse(&idp.authorization_url()).expect("authorization URL");
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid offline_access")
        .append_pair("prompt", "consent")
        .append_pair("redirect_uri", FIXTURE_REDIRECT_URI)
        .append_pair("state", &random_hex(16));
    let done = Browser::new(FIXTURE_REDIRECT_URI)
        .authorize(url.as_str(), login, Consent::Grant)
        .await;
    let code = query_param(&done, "code").unwrap_or_else(|| panic!("no code in {done}"));

    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", FIXTURE_REDIRECT_URI),
        ("client_id", CLIENT_ID),
        ("client_secret", secret),
    ];
    let response = reqwest::Client::new()
        .post(idp.token_url())
        .form(&form)
        .send()
        .await
        .expect("POST /token");
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.expect("token response is JSON");
    str_field(&tokens, "refresh_token").to_owned()
}

// ---------------------------------------------------------------------------------------------
// 1. The catalog.

#[tokio::test]
async fn providers_list_the_catalog() {
    // Read the files first: the API must serve exactly what they declare.
    let files = catalog_files();
    let app = TestApp::start().await;

    let (status, body) = app.get("/v1/providers").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = items(&body);
    assert!(
        listed.len() >= 30,
        "only {} providers: {body}",
        listed.len()
    );
    assert_eq!(
        listed.len(),
        files.len(),
        "catalog files and API differ: {body}"
    );

    let names: Vec<&str> = listed.iter().map(|p| str_field(p, "name")).collect();
    let required = [
        "slack",
        "github",
        "google",
        "stripe",
        "oauth2",
        "oauth2_client_credentials",
        "api_key",
        "basic",
    ];
    for name in required {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }

    for provider in listed {
        let name = str_field(provider, "name");
        let expected = files
            .get(name)
            .unwrap_or_else(|| panic!("{name} is served but has no catalog file"));
        assert_eq!(contract_fields(provider), *expected, "provider {name}");
    }

    let (status, shopify) = app.get("/v1/providers/shopify").await;
    assert_eq!(status, StatusCode::OK, "{shopify}");
    assert_eq!(shopify["name"], "shopify");
    assert_eq!(shopify["display_name"], "Shopify");
    assert_eq!(shopify["auth_mode"], "oauth2");
    assert_eq!(shopify["default_scopes"], json!(["read_products"]));
    let shop = shopify["settings"]
        .as_array()
        .and_then(|settings| settings.iter().find(|s| s["name"] == "shop"))
        .unwrap_or_else(|| panic!("no shop setting: {shopify}"));
    assert_eq!(shop["source"], "identity", "{shopify}");
    assert_eq!(shop["required"], true, "{shopify}");
    assert_eq!(shop["example"], "acme-store", "{shopify}");

    let reply = app.get("/v1/providers/no-such-provider").await;
    assert_error(&reply, StatusCode::NOT_FOUND, &["not_found"]);
}

/// The fields the API promises for a provider and its settings; others may be added.
fn contract_fields(provider: &Value) -> Value {
    let pick = |value: &Value, keys: &[&str]| -> Value {
        keys.iter()
            .map(|key| {
                (
                    key.to_string(),
                    value.get(*key).cloned().unwrap_or(Value::Null),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let settings = provider["settings"]
        .as_array()
        .map_or_else(Vec::new, |settings| {
            let keys = ["name", "label", "source", "required", "default", "example"];
            settings.iter().map(|s| pick(s, &keys)).collect()
        });
    let mut picked = pick(
        provider,
        &[
            "name",
            "display_name",
            "auth_mode",
            "default_scopes",
            "docs_url",
        ],
    );
    picked["settings"] = Value::Array(settings);
    picked
}

/// Every `crates/catalog/providers/*.toml` as `GET /v1/providers` should show it, by name.
///
/// Reads only the simple `key = value` lines the summary needs: top-level fields, each
/// `[[settings]]` block and `default_scopes` under `[oauth2]`. A setting is required when it
/// has no default; its source is `connector` unless declared.
fn catalog_files() -> BTreeMap<String, Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../catalog/providers");
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("list {}: {err}", dir.display()));
    let mut providers = BTreeMap::new();
    for entry in entries {
        let path = entry.expect("read a directory entry").path();
        if path.extension().is_none_or(|ext| ext != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a provider file");
        let summary = provider_summary(&text, &path);
        let name = str_field(&summary, "name").to_owned();
        providers.insert(name, summary);
    }
    providers
}

fn provider_summary(text: &str, path: &Path) -> Value {
    let mut top = serde_json::Map::new();
    let mut settings: Vec<serde_json::Map<String, Value>> = Vec::new();
    let mut default_scopes = json!([]);
    let mut section = String::new();

    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_owned();
            if section == "[[settings]]" {
                settings.push(serde_json::Map::new());
            }
            continue;
        }
        let Some((key, raw)) = line.split_once(" = ") else {
            continue;
        };
        let wanted = match section.as_str() {
            "" => ["name", "display_name", "auth_mode", "docs_url"].contains(&key),
            "[[settings]]" => ["name", "label", "source", "default", "example"].contains(&key),
            "[oauth2]" => key == "default_scopes",
            _ => false,
        };
        if !wanted {
            continue;
        }
        // The values read here are TOML basic strings and string arrays, which are JSON too.
        let value: Value = serde_json::from_str(raw)
            .unwrap_or_else(|err| panic!("{}: {key} = {raw}: {err}", path.display()));
        match section.as_str() {
            "" => {
                top.insert(key.to_owned(), value);
            }
            "[[settings]]" => {
                let setting = settings.last_mut().expect("a setting block");
                setting.insert(key.to_owned(), value);
            }
            _ => default_scopes = value,
        }
    }

    let settings: Vec<Value> = settings
        .into_iter()
        .map(|s| {
            json!({
                "name": s["name"],
                "label": s["label"],
                "source": s.get("source").cloned().unwrap_or_else(|| json!("connector")),
                "required": s.get("default").is_none(),
                "default": s.get("default").cloned().unwrap_or(Value::Null),
                "example": s.get("example").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    json!({
        "name": top["name"],
        "display_name": top["display_name"],
        "auth_mode": top["auth_mode"],
        "settings": settings,
        "default_scopes": default_scopes,
        "docs_url": top["docs_url"],
    })
}

// ---------------------------------------------------------------------------------------------
// 2. Connectors from the catalog.

#[tokio::test]
async fn provider_connectors_validate_settings_and_hide_secrets() {
    let app = TestApp::start().await;
    let cc_secret = format!("ccs-{}", random_hex(40));
    let idp = start_provider(&app, Some(&cc_secret)).await;

    let body = cc_connector_body(&idp, &cc_secret);
    let connector = create_provider_connector(&app, &body, &cc_secret).await;
    assert_eq!(
        connector["config"]["client_id"], CC_CLIENT_ID,
        "{connector}"
    );
    let settings = &connector["config"]["settings"];
    assert_eq!(
        settings["token_url"],
        idp.token_url().as_str(),
        "{connector}"
    );
    assert_eq!(settings["base_url"], idp.issuer(), "{connector}");

    let (status, fetched) = app.get("/v1/connectors/cc").await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    assert_eq!(fetched["type"], "provider", "{fetched}");
    assert_eq!(
        fetched["provider"], "oauth2_client_credentials",
        "{fetched}"
    );
    assert!(
        fetched["config"].get("client_secret").is_none(),
        "{fetched}"
    );
    let (status, list) = app.get("/v1/connectors").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(
        items(&list)
            .iter()
            .any(|c| c["id"] == "cc" && c["provider"] == body["provider"])
    );

    // The same id again conflicts, as for any connector.
    let reply = app.post("/v1/connectors", &body).await;
    assert_error(&reply, StatusCode::CONFLICT, &["conflict"]);

    let mut unknown = body.clone();
    unknown["id"] = json!("unknown");
    unknown["provider"] = json!("no-such-provider");
    let reply = app.post("/v1/connectors", &unknown).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, &["invalid_request"]);

    let mut missing = body.clone();
    missing["id"] = json!("missing");
    let removed = missing["config"]["settings"]
        .as_object_mut()
        .expect("settings object")
        .remove("token_url");
    assert!(removed.is_some());
    let reply = app.post("/v1/connectors", &missing).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, &["invalid_request"]);
    let message = error_message(&reply.1);
    assert!(
        message.contains("token_url"),
        "message names no setting: {message}"
    );

    // A value that breaks the setting's declared pattern is refused the same way.
    let bad_header = json!({
        "id": "bad-header",
        "provider": "api_key",
        "config": { "settings": { "header_name": "X Api Key", "base_url": idp.echo_url() } },
    });
    let reply = app.post("/v1/connectors", &bad_header).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, &["invalid_request"]);
    assert!(
        error_message(&reply.1).contains("header_name"),
        "{}",
        reply.1
    );

    for id in ["unknown", "missing", "bad-header"] {
        let reply = app.get(&format!("/v1/connectors/{id}")).await;
        assert_error(&reply, StatusCode::NOT_FOUND, &["not_found"]);
    }
    assert_secrets_absent(&app, &[("client secret", cc_secret.as_str())], |_| false);
}

// ---------------------------------------------------------------------------------------------
// 3. Client credentials.

#[tokio::test]
async fn client_credentials_need_no_user_and_renew_on_expiry() {
    let app = TestApp::start().await;
    let cc_secret = format!("ccs-{}", random_hex(40));
    let idp = start_provider(&app, Some(&cc_secret)).await;
    let ttl = Duration::from_secs(OidcOptions::default().access_token_ttl_secs);

    create_provider_connector(&app, &cc_connector_body(&idp, &cc_secret), &cc_secret).await;
    deploy(&app, "machine", MACHINE_JS, json!({ "cc": "cc" })).await;

    // No browser step: the session is complete as soon as it exists.
    let (session, _) = create_session(&app, "machine", json!({})).await;
    assert_eq!(session["status"], "completed", "{session}");
    let session_id = str_field(&session, "id");
    let install = commit(&app, session_id, StatusCode::CREATED).await;
    assert_eq!(install["integration"], "machine", "{install}");
    assert_eq!(session_status(&app, session_id).await, "committed");

    // The token belongs to the connector, so any tenant gets the same one from one grant.
    let tenants = ["acme", "acme", "globex", "initech", "acme"];
    let first = machine_token(&app, tenants[0]).await;
    for tenant in &tenants[1..] {
        assert_eq!(machine_token(&app, tenant).await, first, "tenant {tenant}");
    }
    let stats = idp.stats().await;
    assert_eq!(stats.grants("client_credentials"), 1, "{}", stats.raw);
    assert!(stats.access_tokens().contains(&first), "{}", stats.raw);

    tokio::time::sleep(ttl + PAST_EXPIRY).await;
    let second = machine_token(&app, "acme").await;
    assert_ne!(second, first, "expired token served again");
    assert_eq!(machine_token(&app, "globex").await, second);
    let stats = idp.stats().await;
    assert_eq!(stats.grants("client_credentials"), 2, "{}", stats.raw);
    assert_eq!(stats.grant_errors("client_credentials"), 0, "{}", stats.raw);
    assert!(stats.access_tokens().contains(&second), "{}", stats.raw);
    assert_eq!(stats.grants("authorization_code"), 0, "{}", stats.raw);

    // The route returns tokens on purpose; nothing else may.
    let secrets = [
        ("client secret", cc_secret.as_str()),
        ("first token", first.as_str()),
        ("second token", second.as_str()),
    ];
    assert_secrets_absent(&app, &secrets, |path| path.contains("/api/"));
}

async fn machine_token(app: &TestApp, tenant: &str) -> String {
    let path = format!("/v1/integrations/machine/api/tenants/{tenant}/token");
    let (status, body) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = str_field(&body, "token");
    assert!(!token.is_empty(), "{body}");
    token.to_owned()
}

fn cc_connector_body(idp: &OidcProvider, cc_secret: &str) -> Value {
    json!({
        "id": "cc",
        "provider": "oauth2_client_credentials",
        "config": {
            "client_id": CC_CLIENT_ID,
            "client_secret": cc_secret,
            "scopes": [],
            "settings": { "token_url": idp.token_url(), "base_url": idp.issuer() },
        },
    })
}

// ---------------------------------------------------------------------------------------------
// 4. Keys and passwords in the hosted connect flow.

#[tokio::test]
async fn api_key_is_collected_in_the_hosted_form() {
    let app = TestApp::start().await;
    let idp = start_provider(&app, None).await;
    let key = format!("key-{}", random_hex(40));

    let (install, identity) = install_keyed(&app, &idp, &key).await;
    assert_eq!(install["identities"]["keyed"], *identity, "{install}");

    let (status, echo) = app.get("/v1/integrations/keyed/api/echo").await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["method"], "GET", "{echo}");
    assert_eq!(echo["path"], "/__echo/hello", "{echo}");
    assert_eq!(echo["query"]["x"], "1", "{echo}");
    assert_eq!(echo["headers"]["x-api-key"], format!("Key {key}"), "{echo}");
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");

    let (status, found) = app
        .get(&format!("/v1/connectors/keyed/identities/{identity}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["tenant"], TENANT, "{found}");
    assert_eq!(found["connector"], "keyed", "{found}");
    assert_eq!(found["status"], "healthy", "{found}");

    // Only the echo route may show the key, because the echo repeats what it was sent.
    assert_secrets_absent(&app, &[("api key", key.as_str())], |path| {
        path.contains("/api/")
    });
}

#[tokio::test]
async fn basic_credentials_are_collected_in_the_hosted_form() {
    let app = TestApp::start().await;
    let idp = start_provider(&app, None).await;
    let user = format!("user-{}", random_hex(8));
    let password = format!("pw-{}", random_hex(40));

    let body = json!({
        "id": "plain",
        "provider": "basic",
        "config": { "settings": { "base_url": idp.echo_url() } },
    });
    let connector = create_provider_connector(&app, &body, &password).await;
    assert_eq!(
        connector["config"]["settings"]["base_url"],
        idp.echo_url().as_str()
    );
    deploy(
        &app,
        "plain",
        &ECHO_JS.replace("NAME", "plain"),
        json!({ "plain": "plain" }),
    )
    .await;

    let (session, url) = create_session(&app, "plain", json!({})).await;
    let session_id = str_field(&session, "id");
    let fields = [("username", user.as_str()), ("password", password.as_str())];
    fill_hosted_form(&app, &url, session_id, &fields).await;
    assert_eq!(session_status(&app, session_id).await, "completed");
    let install = commit(&app, session_id, StatusCode::CREATED).await;
    let identity = str_field(&install["identities"], "plain");
    assert!(identity.starts_with("idn_"), "{install}");

    let (status, echo) = app.get("/v1/integrations/plain/api/echo").await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["path"], "/__echo/hello", "{echo}");
    assert_eq!(echo["query"]["x"], "1", "{echo}");
    let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
    assert_eq!(echo["headers"]["authorization"], expected, "{echo}");

    let encoded = STANDARD.encode(format!("{user}:{password}"));
    let secrets = [
        ("password", password.as_str()),
        ("encoded credentials", &encoded),
    ];
    assert_secrets_absent(&app, &secrets, |path| path.contains("/api/"));
}

/// Creates the `keyed` API key connector and integration, installs them for the tenant with
/// `key` typed into the hosted form, and returns the install and its identity id.
async fn install_keyed(app: &TestApp, idp: &OidcProvider, key: &str) -> (Value, String) {
    let body = json!({
        "id": "keyed",
        "provider": "api_key",
        "config": {
            "settings": { "header_name": "X-Api-Key", "prefix": "Key", "base_url": idp.echo_url() },
        },
    });
    let connector = create_provider_connector(app, &body, key).await;
    assert_eq!(connector["config"]["settings"]["header_name"], "X-Api-Key");
    deploy(
        app,
        "keyed",
        &ECHO_JS.replace("NAME", "keyed"),
        json!({ "keyed": "keyed" }),
    )
    .await;

    let (session, url) = create_session(app, "keyed", json!({})).await;
    assert_eq!(session["status"], "pending", "{session}");
    let session_id = str_field(&session, "id");

    // An empty key completes nothing.
    let path = local_path(app, &url);
    let empty = app
        .send(app.request(Method::POST, &path).form(&[("api_key", "")]))
        .await;
    let location = empty.headers.get(LOCATION).and_then(|l| l.to_str().ok());
    let left = location.is_some_and(|l| l.starts_with(REDIRECT_URL));
    assert!(!left, "empty key accepted: {} {location:?}", empty.status);
    assert_eq!(session_status(app, session_id).await, "pending");

    fill_hosted_form(app, &url, session_id, &[("api_key", key)]).await;
    let (status, done) = app.get(&format!("/v1/sessions/{session_id}")).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "completed", "{done}");

    let install = commit(app, session_id, StatusCode::CREATED).await;
    let identity = str_field(&install["identities"], "keyed").to_owned();
    assert!(identity.starts_with("idn_"), "{install}");
    (install, identity)
}

/// Opens the session's hosted page, checks that it is a POST form asking for each of
/// `fields`, submits them (with any hidden inputs, as a browser would) to the same URL and
/// checks the redirect back to the application.
async fn fill_hosted_form(app: &TestApp, url: &str, session_id: &str, fields: &[(&str, &str)]) {
    let path = local_path(app, url);
    let page = app.send(app.request(Method::GET, &path)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_html(&page);

    let tag = form_tag(&page.text).unwrap_or_else(|| panic!("no form: {}", page.text));
    let method = tag_attribute(tag, "method").unwrap_or_default();
    assert!(
        method.eq_ignore_ascii_case("post"),
        "not a POST form: {tag}"
    );
    let inputs = form_inputs(&page.text);
    for (name, _) in fields {
        let found = inputs.iter().any(|input| input.name == *name);
        assert!(found, "no input {name:?} in {inputs:?}");
    }

    let mut form: Vec<(String, String)> = inputs
        .iter()
        .filter(|input| input.kind == "hidden")
        .map(|input| (input.name.clone(), input.value.clone()))
        .collect();
    form.extend(fields.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let answer = app.send(app.request(Method::POST, &path).form(&form)).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);

    let location = answer
        .headers
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .unwrap_or_else(|| panic!("303 without a Location"));
    let done = Url::parse(location).unwrap_or_else(|err| panic!("{location}: {err}"));
    assert!(location.starts_with(REDIRECT_URL), "{location}");
    assert_eq!(
        query_param(&done, "session").as_deref(),
        Some(session_id),
        "{done}"
    );
    assert_eq!(query_param(&done, "error"), None, "{done}");
}

// ---------------------------------------------------------------------------------------------
// 5. The authenticated proxy.

#[tokio::test]
async fn proxy_calls_the_provider_with_the_identity_credentials() {
    let app = TestApp::start().await;
    let idp = start_provider(&app, None).await;
    let key = format!("key-{}", random_hex(40));
    let (_, identity) = install_keyed(&app, &idp, &key).await;

    let base = format!("/v1/connectors/keyed/identities/{identity}/proxy");
    let (status, echo) = app.get(&format!("{base}/hello?y=2")).await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(echo["method"], "GET", "{echo}");
    assert_eq!(echo["path"], "/__echo/hello", "{echo}");
    assert_eq!(echo["query"], json!({ "y": "2" }), "{echo}");
    assert_eq!(echo["headers"]["x-api-key"], format!("Key {key}"), "{echo}");
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");
    let forwarded = echo["headers"].to_string();
    assert!(
        !forwarded.contains(app.admin_key()),
        "admin key forwarded: {echo}"
    );

    // The provider's status comes through with its body.
    let (status, echo) = app.get(&format!("{base}/teapot?status=418")).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT, "{echo}");
    assert_eq!(echo["path"], "/__echo/teapot", "{echo}");
    assert_eq!(echo["headers"]["x-api-key"], format!("Key {key}"), "{echo}");

    // The proxy is an admin endpoint like the rest of the API.
    let anonymous = app
        .send(app.request(Method::GET, &format!("{base}/hello")))
        .await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        anonymous.text
    );

    let unknown = format!(
        "/v1/connectors/keyed/identities/idn_{}/proxy/hello",
        random_hex(32)
    );
    let (status, body) = app.get(&unknown).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(!error_code(&body).is_empty(), "{body}");

    assert_secrets_absent(&app, &[("api key", key.as_str())], |path| {
        path.contains("/api/") || path.contains("/proxy/")
    });
}

// ---------------------------------------------------------------------------------------------
// 6. A revoked grant, then reconnecting into the same install.

#[tokio::test]
async fn revoked_grant_needs_reauth_and_reconnects_into_the_same_install() {
    let (app, idp) = start_oauth(&[]).await;
    let ttl = Duration::from_secs(OidcOptions::default().access_token_ttl_secs);

    let (session, _) = connect(&app, json!({}), "alice").await;
    let install = commit(&app, &session, StatusCode::CREATED).await;
    let install_id = str_field(&install, "id").to_owned();
    let identity = str_field(&install["identities"], "idp").to_owned();
    assert_whoami(&app, "alice").await;

    // The user revokes Splice's access at the provider.
    let newest = idp
        .stats()
        .await
        .newest_refresh_token()
        .expect("a refresh token");
    assert_eq!(idp.revoke(&newest).await, StatusCode::OK);
    tokio::time::sleep(ttl + PAST_EXPIRY).await;

    let (status, body) = app.get(&whoami_path()).await;
    let failed = status.is_server_error() || status == StatusCode::CONFLICT;
    assert!(failed, "{status}: {body}");
    assert!(!error_code(&body).is_empty(), "no error code: {body}");
    let stats = idp.stats().await;
    assert!(stats.grant_errors("refresh_token") >= 1, "{}", stats.raw);

    let identity_path = format!("/v1/connectors/idp/identities/{identity}");
    let (status, found) = app.get(&identity_path).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["status"], "needs_reauth", "{found}");
    let reason = found["status_reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty(), "no status_reason: {found}");
    assert_event(&app, "identity.needs_reauth", &identity).await;

    // Reconnect into the existing install.
    let body = json!({ "install_id": install_id });
    let (session, _) = connect(&app, body, "alice").await;
    let reinstall = commit(&app, &session, StatusCode::OK).await;
    assert_eq!(reinstall["id"], *install_id, "{reinstall}");
    assert_event(&app, "install.created", &install_id).await;
    assert_event(&app, "install.reconnected", &install_id).await;
    assert_eq!(reinstall["identities"]["idp"], *identity, "{reinstall}");

    let (status, found) = app.get(&identity_path).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    assert_eq!(found["status"], "healthy", "{found}");
    assert_whoami(&app, "alice").await;

    let (status, list) = app
        .get("/v1/integrations/whoami/installs?tenant=acme")
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&Value> = items(&list).iter().map(|i| &i["id"]).collect();
    assert_eq!(ids, vec![&json!(install_id)], "{list}");
    assert_eq!(idp.stats().await.grants("authorization_code"), 2);
}

async fn assert_event(app: &TestApp, kind: &str, subject: &str) {
    // Events may be written just after the request that caused them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = app.get(&format!("/v1/events?type={kind}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let list = items(&body);
        if list
            .iter()
            .any(|e| e["subject"] == subject && e["type"] == kind)
        {
            return;
        }
        let others = list.iter().any(|e| e["type"] != kind);
        assert!(!others, "type filter ignored: {body}");
        if tokio::time::Instant::now() > deadline {
            panic!("no {kind} event for {subject}: {body}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 7. The callback's state (case C31).

#[tokio::test]
async fn callback_rejects_replayed_unknown_and_missing_state() {
    let (app, idp) = start_oauth(&[]).await;

    let (session, browser) = connect(&app, json!({}), "alice").await;
    let callback_prefix = format!("{}/v1/oauth/callback?", app.public_url());
    let trail = browser.trail();
    let callback = trail
        .iter()
        .filter_map(|line| line.strip_prefix("GET "))
        .find(|url| url.starts_with(&callback_prefix))
        .unwrap_or_else(|| panic!("no callback in the trail:\n{}", trail.join("\n")))
        .to_owned();
    let callback_url = Url::parse(&callback).expect("callback URL");
    assert!(query_param(&callback_url, "state").is_some(), "{callback}");
    assert_eq!(idp.stats().await.grants("authorization_code"), 1);

    // The same callback again: the state was used up, so no second exchange.
    let replay = app
        .send(app.request(Method::GET, &local_path(&app, &callback)))
        .await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST, "{}", replay.text);
    assert_html(&replay);

    let code = query_param(&callback_url, "code").expect("code in the callback");
    let unknown = format!("/v1/oauth/callback?code={code}&state={}", random_hex(43));
    let answer = app.send(app.request(Method::GET, &unknown)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert_html(&answer);

    let stateless = format!("/v1/oauth/callback?code={code}");
    let answer = app.send(app.request(Method::GET, &stateless)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert_html(&answer);

    // None of that reached the provider, and the first result stands.
    let stats = idp.stats().await;
    assert_eq!(stats.grants("authorization_code"), 1, "{}", stats.raw);
    assert_eq!(stats.grant_errors("authorization_code"), 0, "{}", stats.raw);
    assert_eq!(session_status(&app, &session).await, "completed");
    commit(&app, &session, StatusCode::CREATED).await;
    assert_whoami(&app, "alice").await;
}

#[tokio::test]
async fn callback_rejects_an_expired_state() {
    let (app, idp) = start_oauth(&[("SPLICE_SESSION_TTL_SECS", "2")]).await;

    let (session, url) = create_session(&app, "whoami", json!({})).await;
    let session_id = str_field(&session, "id").to_owned();
    let start = app
        .send(app.request(Method::GET, &local_path(&app, &url)))
        .await;
    assert!(
        start.status.is_redirection(),
        "{}: {}",
        start.status,
        start.text
    );
    let authorize = start
        .headers
        .get(LOCATION)
        .and_then(|l| l.to_str().ok())
        .expect("redirect to the provider")
        .to_owned();
    assert!(
        authorize.starts_with(&idp.authorization_url()),
        "{authorize}"
    );

    // The user takes longer than the session lives, then finishes at the provider.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let callback_prefix = format!("{}/v1/oauth/callback", app.public_url());
    let callback = Browser::new(&callback_prefix)
        .authorize(&authorize, "alice", Consent::Grant)
        .await;
    assert!(query_param(&callback, "code").is_some(), "{callback}");

    let answer = app
        .send(app.request(Method::GET, &local_path(&app, callback.as_str())))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert_html(&answer);

    let status = session_status(&app, &session_id).await;
    assert!(status != "completed" && status != "committed", "{status}");
    let reply = app
        .post(&format!("/v1/sessions/{session_id}/commit"), &json!({}))
        .await;
    assert_error(&reply, StatusCode::CONFLICT, &["conflict"]);
    let stats = idp.stats().await;
    assert_eq!(stats.grants("authorization_code"), 0, "{}", stats.raw);
    assert_eq!(stats.grant_errors("authorization_code"), 0, "{}", stats.raw);
}

// ---------------------------------------------------------------------------------------------
// 8. Uninstall removes identities nothing else uses.

#[tokio::test]
async fn uninstall_deletes_identities_no_other_install_uses() {
    let (app, _idp) = start_oauth(&[]).await;

    // The same account twice: two installs sharing one identity.
    let (first, _) = connect(&app, json!({}), "alice").await;
    let first = commit(&app, &first, StatusCode::CREATED).await;
    let (second, _) = connect(&app, json!({}), "alice").await;
    let second = commit(&app, &second, StatusCode::CREATED).await;
    let identity = str_field(&first["identities"], "idp").to_owned();
    assert_eq!(second["identities"]["idp"], *identity, "{second}");
    assert_ne!(first["id"], second["id"]);

    let identity_path = format!("/v1/connectors/idp/identities/{identity}");
    let first_path = format!(
        "/v1/integrations/whoami/installs/{}",
        str_field(&first, "id")
    );
    let (status, body) = app.delete(&first_path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, found) = app.get(&identity_path).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "identity still used by an install: {found}"
    );
    assert_whoami(&app, "alice").await;

    let second_path = format!(
        "/v1/integrations/whoami/installs/{}",
        str_field(&second, "id")
    );
    let (status, body) = app.delete(&second_path).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let reply = app.get(&identity_path).await;
    assert_error(&reply, StatusCode::NOT_FOUND, &["not_found"]);
    let (status, list) = app.get("/v1/connectors/idp/identities?tenant=acme").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(items(&list).is_empty(), "{list}");
}

// ---------------------------------------------------------------------------------------------
// Shared steps.

/// Starts the provider registered with Splice's callback; `cc_secret` adds the client
/// credentials client.
async fn start_provider(app: &TestApp, cc_secret: Option<&str>) -> OidcProvider {
    let callback_url = format!("{}/v1/oauth/callback", app.public_url());
    let options = OidcOptions {
        client_credentials: cc_secret.map(|s| (CC_CLIENT_ID.to_owned(), s.to_owned())),
        ..Default::default()
    };
    let secret = format!("cs-{}", random_hex(40));
    OidcProvider::start_with(&callback_url, CLIENT_ID, &secret, options).await
}

/// Splice with `env`, a provider, the generic `idp` OAuth connector and the `whoami`
/// integration, as in the connect test.
async fn start_oauth(env: &[(&str, &str)]) -> (TestApp, OidcProvider) {
    let app = TestApp::start_with_env(env).await;
    let callback_url = format!("{}/v1/oauth/callback", app.public_url());
    let secret = format!("cs-{}", random_hex(40));
    let idp =
        OidcProvider::start_with(&callback_url, CLIENT_ID, &secret, OidcOptions::default()).await;

    let body = json!({
        "id": "idp",
        "type": "oauth2",
        "config": {
            "authorization_url": idp.authorization_url(),
            "token_url": idp.token_url(),
            "client_id": CLIENT_ID,
            "client_secret": secret,
            "scopes": ["openid", "offline_access"],
            "pkce": true,
            "authorize_params": { "prompt": "consent" },
            "userinfo_url": idp.userinfo_url(),
        },
    });
    let (status, connector) = app.post("/v1/connectors", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{connector}");
    let code = WHOAMI_JS.replace("USERINFO_URL", &idp.userinfo_url());
    deploy(&app, "whoami", &code, json!({ "idp": "idp" })).await;
    (app, idp)
}

/// Posts a provider connector, checks the answer and returns it; `secret` must not appear in
/// it.
async fn create_provider_connector(app: &TestApp, body: &Value, secret: &str) -> Value {
    let response = app
        .send(app.authed(Method::POST, "/v1/connectors").json(body))
        .await;
    let connector = response.json();
    assert_eq!(response.status, StatusCode::CREATED, "{connector}");
    assert_eq!(connector["id"], body["id"], "{connector}");
    assert_eq!(connector["type"], "provider", "{connector}");
    assert_eq!(connector["provider"], body["provider"], "{connector}");
    assert!(
        connector["config"].get("client_secret").is_none(),
        "{connector}"
    );
    assert!(
        !response.text.contains(secret),
        "secret in the answer: {connector}"
    );
    connector
}

/// Creates a session on `integration` for the tenant (plus `extra` fields); returns the body
/// and its URL.
async fn create_session(app: &TestApp, integration: &str, extra: Value) -> (Value, String) {
    let mut body = json!({ "tenant": TENANT, "redirect_url": REDIRECT_URL });
    for (key, value) in extra.as_object().expect("extra fields").clone() {
        body[key] = value;
    }
    let path = format!("/v1/integrations/{integration}/sessions");
    let (status, session) = app.post(&path, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    assert!(str_field(&session, "id").starts_with("ses_"), "{session}");
    let url = str_field(&session, "url").to_owned();
    (session, url)
}

/// Runs a `whoami` session through a fresh browser as `login`; returns its id and the browser,
/// whose trail holds the callback URL.
async fn connect(app: &TestApp, extra: Value, login: &str) -> (String, Browser) {
    let (session, url) = create_session(app, "whoami", extra).await;
    let id = str_field(&session, "id").to_owned();
    let browser = Browser::new(REDIRECT_URL);
    let done = browser.authorize(&url, login, Consent::Grant).await;
    assert_eq!(
        query_param(&done, "session").as_deref(),
        Some(id.as_str()),
        "{done}"
    );
    assert_eq!(query_param(&done, "error"), None, "{done}");
    assert_eq!(session_status(app, &id).await, "completed");
    (id, browser)
}

async fn commit(app: &TestApp, session: &str, expected: StatusCode) -> Value {
    let path = format!("/v1/sessions/{session}/commit");
    let (status, install) = app.post(&path, &json!({})).await;
    assert_eq!(status, expected, "{install}");
    assert!(str_field(&install, "id").starts_with("ins_"), "{install}");
    assert_eq!(install["tenant"], TENANT, "{install}");
    install
}

async fn session_status(app: &TestApp, session: &str) -> String {
    let (status, body) = app.get(&format!("/v1/sessions/{session}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    str_field(&body, "status").to_owned()
}

fn whoami_path() -> String {
    format!("/v1/integrations/whoami/api/tenants/{TENANT}/me")
}

async fn assert_whoami(app: &TestApp, login: &str) {
    let (status, body) = app.get(&whoami_path()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "me": { "sub": login } }));
}

/// The path and query of a URL on this Splice.
#[track_caller]
fn local_path(app: &TestApp, url: &str) -> String {
    url.strip_prefix(app.public_url())
        .unwrap_or_else(|| panic!("{url} is not on {}", app.public_url()))
        .to_owned()
}

#[track_caller]
fn assert_html(response: &ApiResponse) {
    let content_type = response
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/html"),
        "{content_type}: {}",
        response.text
    );
}

/// No secret in the data folder's files, in Splice's output, or in any API answer except
/// those whose path `may_show` accepts.
fn assert_secrets_absent(app: &TestApp, secrets: &[(&str, &str)], may_show: impl Fn(&str) -> bool) {
    let files = read_tree(app.data_dir());
    assert!(
        files.iter().any(|(_, bytes)| !bytes.is_empty()),
        "data folder is empty"
    );
    let logs = app.log_bytes();
    assert!(!logs.is_empty(), "splice logged nothing at debug level");
    let transcript = app.transcript();

    for (kind, secret) in secrets {
        let needle = secret.as_bytes();
        for (path, bytes) in &files {
            let stored = contains_bytes(bytes, needle);
            assert!(!stored, "{kind} stored in {}", path.display());
        }
        assert!(!contains_bytes(&logs, needle), "{kind} in splice's logs");
        for exchange in transcript.iter().filter(|e| !may_show(&e.path)) {
            let leaked = contains_bytes(exchange.body.as_bytes(), needle);
            assert!(
                !leaked,
                "{kind} in the answer to {} {}",
                exchange.method, exchange.path
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entries from `providers_dir`, and API keys checked by the catalog's verification call.

/// An API-key provider whose verification call answers `status` (the echo's status knob).
fn verified_provider(name: &str, status: u16) -> String {
    format!(
        r#"name = "{name}"
display_name = "Checked keys"
docs_url = "https://example.com/docs"
auth_mode = "api_key"

[[settings]]
name = "base_url"
label = "API base URL"
pattern = "^https?://[^\\s{{}}]+$"

[api_key]
placement = "header"
name = "X-Api-Key"

[api]
base_url = "{{base_url}}"
verify_path = "/verify?status={status}"
"#
    )
}

#[tokio::test]
async fn api_keys_are_checked_by_the_providers_verification_call() {
    let dir = tempfile::tempdir().expect("a providers folder");
    std::fs::write(
        dir.path().join("checked.toml"),
        verified_provider("checked", 200),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("refusing.toml"),
        verified_provider("refusing", 401),
    )
    .unwrap();
    let folder = dir.path().to_string_lossy().into_owned();
    let app = TestApp::start_with_env(&[("SPLICE_PROVIDERS_DIR", folder.as_str())]).await;
    let idp = start_provider(&app, None).await;

    // The folder's entries join the catalog.
    let (status, entry) = app.get("/v1/providers/checked").await;
    assert_eq!(status, StatusCode::OK, "{entry}");
    assert_eq!(entry["auth_mode"], "api_key", "{entry}");

    for (id, provider) in [("good", "checked"), ("bad", "refusing")] {
        let body = json!({
            "id": id,
            "provider": provider,
            "config": { "settings": { "base_url": idp.echo_url() } },
        });
        let (status, created) = app.post("/v1/connectors", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        deploy(&app, id, &ECHO_JS.replace("NAME", id), json!({ id: id })).await;
    }

    // Accepted: the verification call answered 200, the session completes.
    let (session, url) = create_session(&app, "good", json!({})).await;
    let session_id = str_field(&session, "id");
    fill_hosted_form(&app, &url, session_id, &[("api_key", "key-accepted")]).await;
    assert_eq!(session_status(&app, session_id).await, "completed");

    // Refused: the provider answered 401, so no identity is stored and the session waits.
    let (session, url) = create_session(&app, "bad", json!({})).await;
    let session_id = str_field(&session, "id");
    let path = local_path(&app, &url);
    let form = [("api_key", "key-refused")];
    let answer = app.send(app.request(Method::POST, &path).form(&form)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);
    assert!(answer.text.contains("did not accept"), "{}", answer.text);
    assert_eq!(session_status(&app, session_id).await, "pending");
    let (_, identities) = app.get("/v1/connectors/bad/identities").await;
    assert_eq!(identities["items"], json!([]), "{identities}");
}

// ---------------------------------------------------------------------------------------------
// Identity-level settings collected in the connect form and templated into the provider's URLs.

const ORG_PROVIDER: &str = r#"name = "orgidp"
display_name = "An identity provider per organisation"
docs_url = "https://example.com/docs"
auth_mode = "oauth2"

[[settings]]
name = "issuer"
label = "Issuer URL"
pattern = "^https?://[^\\s{}]+$"

[[settings]]
name = "org"
label = "Your organisation"
source = "identity"

[oauth2]
authorization_url = "{issuer}/auth?org={org}"
token_url = "{issuer}/token"
pkce = true
default_scopes = ["openid", "offline_access"]
authorize_params = { prompt = "consent" }

[account]
userinfo_url = "{issuer}/me"
id_path = "/sub"

[api]
base_url = "{issuer}"
"#;

const ORG_JS: &str = r#"import { Integration } from "splice";
const integration = new Integration();
integration.router.get("/me", async (ctx) => {
  const idp = await integration.tenant.connector(ctx, "org", "acme");
  ctx.body = await (await idp.fetch("/me")).json();
});
export default integration;
"#;

#[tokio::test]
async fn identity_settings_are_asked_for_and_shape_the_provider_urls() {
    let dir = tempfile::tempdir().expect("a providers folder");
    std::fs::write(dir.path().join("orgidp.toml"), ORG_PROVIDER).unwrap();
    let folder = dir.path().to_string_lossy().into_owned();
    let app = TestApp::start_with_env(&[("SPLICE_PROVIDERS_DIR", folder.as_str())]).await;
    let callback_url = format!("{}/v1/oauth/callback", app.public_url());
    let secret = format!("cs-{}", random_hex(40));
    let idp =
        OidcProvider::start_with(&callback_url, CLIENT_ID, &secret, OidcOptions::default()).await;

    let body = json!({
        "id": "org",
        "provider": "orgidp",
        "config": {
            "client_id": CLIENT_ID,
            "client_secret": secret,
            "settings": { "issuer": idp.issuer() },
        },
    });
    create_provider_connector(&app, &body, &secret).await;
    deploy(&app, "orgs", ORG_JS, json!({ "org": "org" })).await;

    // The connect page asks for the organisation first.
    let (session, url) = create_session(&app, "orgs", json!({})).await;
    let session_id = str_field(&session, "id").to_owned();
    let path = local_path(&app, &url);
    let page = app.send(app.request(Method::GET, &path)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let inputs = form_inputs(&page.text);
    assert!(inputs.iter().any(|i| i.name == "org"), "{inputs:?}");
    let answer = app
        .send(
            app.request(Method::POST, &path)
                .form(&[("org", "acme-corp")]),
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);

    // Then the consent page, on a URL built with it.
    let browser = Browser::new(REDIRECT_URL);
    let done = browser.authorize(&url, "alice", Consent::Grant).await;
    assert_eq!(
        query_param(&done, "session").as_deref(),
        Some(session_id.as_str()),
        "{done}"
    );
    let consent_page = format!("GET {}", idp.authorization_url());
    let to_provider = browser
        .trail()
        .into_iter()
        .find(|u| u.starts_with(&consent_page));
    let to_provider = to_provider.expect("the browser visited the consent page");
    assert!(to_provider.contains("org=acme-corp"), "{to_provider}");

    let install = commit(&app, &session_id, StatusCode::CREATED).await;
    let identity = str_field(&install["identities"], "org");
    let (_, found) = app
        .get(&format!("/v1/connectors/org/identities/{identity}"))
        .await;
    assert_eq!(found["subject"], "alice", "{found}");
    assert_eq!(found["values"]["org"], "acme-corp", "{found}");

    // Relative calls resolve against the provider's API base URL.
    let (status, me) = app.get("/v1/integrations/orgs/api/me").await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["sub"], "alice", "{me}");
}

/// Tokens handed to integration code are answered from memory, and a reconnect on this node
/// is what code gets on its very next call.
#[tokio::test]
async fn a_reconnected_credential_is_what_code_gets_next() {
    let app = TestApp::start().await;
    let idp = start_provider(&app, None).await;
    let (install, _) = install_keyed(&app, &idp, "key-one").await;
    let code = r#"import { Integration } from "splice";
const integration = new Integration();
integration.router.get("/token", async (ctx) => {
  const k = await integration.tenant.connector(ctx, "keyed", "acme");
  ctx.body = { token: await k.token(), again: await k.token() };
});
export default integration;
"#;
    deploy(&app, "keyed", code, json!({ "keyed": "keyed" })).await;
    let (status, first) = app.get("/v1/integrations/keyed/api/token").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first, json!({"token": "key-one", "again": "key-one"}));

    let install_id = str_field(&install, "id");
    let (session, url) = create_session(&app, "keyed", json!({"install_id": install_id})).await;
    let session_id = str_field(&session, "id");
    fill_hosted_form(&app, &url, session_id, &[("api_key", "key-two")]).await;
    commit(&app, session_id, StatusCode::OK).await;

    let (_, next) = app.get("/v1/integrations/keyed/api/token").await;
    assert_eq!(next, json!({"token": "key-two", "again": "key-two"}));
}
