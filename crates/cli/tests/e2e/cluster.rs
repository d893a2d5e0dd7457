//! Two nodes over one PostgreSQL database behave as one platform: a session started on one
//! node completes on the other, a deploy on one is announced to and run by the other, concurrent
//! refreshes across nodes reach the provider once, and a killed node loses nothing.
//!
//! Skipped (with a note) when `SPLICE_TEST_DATABASE_URL` is not set; CI always sets it.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use url::Url;

use crate::support::api::{deploy, items, str_field};
use crate::support::app::{Node, TestApp};
use crate::support::browser::{Browser, Consent, query_param};
use crate::support::oidc::{OidcOptions, OidcProvider};
use crate::support::{free_port, fresh_postgres_database, random_hex};

const CLIENT_ID: &str = "splice-cluster";
const REDIRECT_URL: &str = "https://app.example/done";
const ROUTE: &str = "/v1/integrations/whoami/api/tenants/acme/me";

fn whoami_js(userinfo: &str, label: &str) -> String {
    format!(
        r#"import {{ Integration }} from "splice";
const integration = new Integration();
integration.router.get("/tenants/:tenant/me", async (ctx) => {{
  const idp = await integration.tenant.connector(ctx, "idp", ctx.params.tenant);
  const res = await idp.fetch("{userinfo}");
  ctx.body = {{ me: await res.json(), version: "{label}" }};
}});
export default integration;
"#
    )
}

/// Two nodes sharing a database, keys, and one public URL (node B's, standing in for a load
/// balancer), plus the provider registered with that URL's callback.
struct Cluster {
    a: TestApp,
    b: TestApp,
    idp: OidcProvider,
    token_ttl: Duration,
}

impl Cluster {
    async fn start() -> Option<Self> {
        Self::start_with(OidcOptions::default()).await
    }

    async fn start_with(options: OidcOptions) -> Option<Self> {
        let database = fresh_postgres_database().await?;
        let master_key = base64_key();
        let admin_key = format!("sk_test_{}", random_hex(40));
        let (port_a, port_b) = (free_port(), free_port());
        let public_url = format!("http://127.0.0.1:{port_b}");
        let env = vec![
            ("SPLICE_DATABASE_URL".to_string(), database),
            ("SPLICE_MASTER_KEY".to_string(), master_key),
        ];
        let node = |port| Node {
            port,
            public_url: public_url.clone(),
            admin_key: admin_key.clone(),
            env: env.clone(),
        };
        let a = TestApp::start_node(node(port_a)).await;
        let b = TestApp::start_node(node(port_b)).await;

        let secret = format!("cs-{}", random_hex(32));
        let callback = format!("{public_url}/v1/oauth/callback");
        let token_ttl = Duration::from_secs(options.access_token_ttl_secs);
        let idp = OidcProvider::start_with(&callback, CLIENT_ID, &secret, options).await;
        let connector = json!({
            "id": "idp", "type": "oauth2",
            "config": {
                "authorization_url": idp.authorization_url(), "token_url": idp.token_url(),
                "client_id": CLIENT_ID, "client_secret": secret,
                "scopes": ["openid", "offline_access"], "pkce": true,
                "authorize_params": {"prompt": "consent"}, "userinfo_url": idp.userinfo_url(),
            },
        });
        let (status, body) = a.post("/v1/connectors", &connector).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Some(Self {
            a,
            b,
            idp,
            token_ttl,
        })
    }

    /// Deploys on `on`, creates a session there, starts the browser on node A's copy of the
    /// session URL (the provider calls back to node B), commits on node A.
    async fn install(&self, on: &TestApp) -> Value {
        let code = whoami_js(&self.idp.userinfo_url(), "one");
        deploy(on, "whoami", &code, json!({"idp": "idp"})).await;

        let body = json!({"tenant": "acme", "redirect_url": REDIRECT_URL});
        let (status, session) = self.b.post("/v1/integrations/whoami/sessions", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{session}");
        let mut start = Url::parse(str_field(&session, "url")).expect("session URL");
        start
            .set_port(Url::parse(self.a.public_url()).expect("node URL").port())
            .expect("a port can be set on an http URL");

        let done = Browser::new(REDIRECT_URL)
            .authorize(start.as_str(), "alice", Consent::Grant)
            .await;
        let id = str_field(&session, "id");
        assert_eq!(query_param(&done, "session").as_deref(), Some(id), "{done}");

        let (status, install) = self
            .a
            .post(&format!("/v1/sessions/{id}/commit"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{install}");
        install
    }

    async fn wait_for_expiry(&self) {
        tokio::time::sleep(self.token_ttl + Duration::from_millis(1500)).await;
    }
}

pub fn base64_key() -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&random_hex(2), 16).unwrap_or(i))
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn call(app: &TestApp) -> (StatusCode, Value) {
    app.get(ROUTE).await
}

#[tokio::test]
async fn two_nodes_serve_one_flow_and_see_each_others_deploys() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let Cluster { a, b, idp, .. } = &cluster;
    cluster.install(b).await;

    // Route calls alternate between the nodes.
    for node in [a, b, a, b] {
        let (status, body) = call(node).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["me"]["sub"], "alice");
    }

    // After expiry, both nodes use the token; the provider sees one refresh.
    cluster.wait_for_expiry().await;
    for node in [b, a, b] {
        assert_eq!(call(node).await.0, StatusCode::OK);
    }
    assert_eq!(idp.stats().await.grants("refresh_token"), 1);

    // A deploy on node A is announced to node B, which runs it from then on (the
    // announcement travels through PostgreSQL, so give it a moment).
    deploy(
        a,
        "whoami",
        &whoami_js(&idp.userinfo_url(), "two"),
        json!({"idp": "idp"}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let body = loop {
        let (status, body) = call(b).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["version"] == "two" || tokio::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(body["version"], "two", "{body}");
    for node in [a, b] {
        assert_eq!(call(node).await.1["version"], "two");
    }

    // Readiness checks the shared database.
    let (status, body) = b.get("/ready").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// 500 concurrent calls over both nodes on an expired identity: one refresh grant, all
/// succeed, and the newest refresh token is the one stored (the next refresh works).
#[tokio::test]
async fn concurrent_calls_on_two_nodes_refresh_once() {
    // The refreshed token must outlive the burst by more than the refresh margin (1 s in
    // tests), or a second refresh is due, and right: a loaded machine takes seconds for it.
    let options = OidcOptions {
        access_token_ttl_secs: 10,
        ..OidcOptions::default()
    };
    let Some(cluster) = Cluster::start_with(options).await else {
        return;
    };
    let Cluster { a, b, idp, .. } = &cluster;
    cluster.install(a).await;
    cluster.wait_for_expiry().await;

    let calls = (0..500).map(|i| call(if i % 2 == 0 { a } else { b }));
    let results = join_all(calls).await;
    let failures: Vec<_> = results
        .iter()
        .filter(|(s, _)| *s != StatusCode::OK)
        .collect();
    assert!(
        failures.is_empty(),
        "{} calls failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );

    let stats = idp.stats().await;
    assert_eq!(stats.grants("refresh_token"), 1, "{:?}", stats.raw);
    assert_eq!(stats.grant_errors("refresh_token"), 0, "{:?}", stats.raw);

    cluster.wait_for_expiry().await;
    assert_eq!(call(b).await.0, StatusCode::OK);
    let stats = idp.stats().await;
    assert_eq!(stats.grants("refresh_token"), 2, "{:?}", stats.raw);
    assert_eq!(stats.grant_errors("refresh_token"), 0, "{:?}", stats.raw);
}

/// Node A is killed with SIGKILL while calls are in flight on both nodes: node B keeps
/// serving, and the identity keeps a working refresh token.
///
/// The token is renewed on node B before the kill. A node killed while its own refresh grant
/// is in flight loses the rotated token the provider issued (docs/deploy.md, "What a crash can
/// lose"); this test is about everything else a kill could break.
#[tokio::test]
async fn a_killed_node_leaves_the_other_serving_and_tokens_intact() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let Cluster { a, b, idp, .. } = &cluster;
    let install = cluster.install(a).await;
    cluster.wait_for_expiry().await;
    assert_eq!(call(b).await.0, StatusCode::OK);

    let on_b = join_all((0..100).map(|_| call(b)));
    let on_a = async {
        let calls = (0..100).map(|_| async {
            // Node A's answers do not matter: it dies mid-flight.
            let request = a
                .authed(reqwest::Method::GET, ROUTE)
                .timeout(Duration::from_secs(10));
            let _ = request.send().await;
        });
        let killer = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            a.kill();
        };
        tokio::join!(join_all(calls), killer);
    };
    let (results, ()) = tokio::join!(on_b, on_a);
    let failures = results.iter().filter(|(s, _)| *s != StatusCode::OK).count();
    assert_eq!(failures, 0, "node B failed calls while node A died");

    // The identity is healthy and its stored refresh token still works on node B.
    let identity = str_field(&install["identities"], "idp").to_owned();
    cluster.wait_for_expiry().await;
    assert_eq!(call(b).await.0, StatusCode::OK);
    let (_, body) = b
        .get(&format!("/v1/connectors/idp/identities/{identity}"))
        .await;
    assert_eq!(body["status"], "healthy", "{body}");
    let stats = idp.stats().await;
    assert_eq!(stats.grant_errors("refresh_token"), 0, "{:?}", stats.raw);
    assert!(stats.grants("refresh_token") >= 2, "{:?}", stats.raw);
    let (status, listed) = b.get("/v1/integrations/whoami/installs").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(items(&listed).len(), 1);
}

/// A schedule on two nodes runs once per firing: both nodes see each slot, one job runs it.
#[tokio::test]
async fn a_schedule_on_two_nodes_runs_once_per_firing() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let Cluster { a, b, .. } = &cluster;
    let schedules = serde_json::json!([{"name": "tick", "cron": "*/2 * * * * *"}]);
    let (status, body) = crate::e2e::schedules::deploy_schedules(a, "clock", schedules).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    tokio::time::sleep(Duration::from_secs(11)).await;
    let runs = crate::e2e::schedules::cron_runs(b, "clock").await;
    let slots: std::collections::BTreeSet<_> =
        runs.iter().map(|(_, slot, _)| slot.clone()).collect();
    assert_eq!(slots.len(), runs.len(), "a firing ran twice: {runs:?}");
    assert!((4..=6).contains(&runs.len()), "{runs:?}");
}

/// A job enqueued on a node that runs no workers starts at once on the other node: the
/// enqueue is announced to every node, and node B's fallback poll is a minute away.
#[tokio::test]
async fn a_job_enqueued_on_one_node_wakes_workers_on_the_other() {
    let Some(database) = fresh_postgres_database().await else {
        return;
    };
    let admin_key = format!("sk_test_{}", random_hex(40));
    let shared = vec![
        ("SPLICE_DATABASE_URL".to_string(), database),
        ("SPLICE_MASTER_KEY".to_string(), base64_key()),
    ];
    let node = |extra: (&str, &str)| {
        let port = free_port();
        let mut env = shared.clone();
        env.push((extra.0.to_string(), extra.1.to_string()));
        Node {
            port,
            public_url: format!("http://127.0.0.1:{port}"),
            admin_key: admin_key.clone(),
            env,
        }
    };
    let a = TestApp::start_node(node(("SPLICE_QUEUE_WORKERS", "0"))).await;
    let b = TestApp::start_node(node(("SPLICE_QUEUE_POLL_MS", "60000"))).await;
    let code = r#"import { Integration } from "splice";
const integration = new Integration();
integration.task.on("noop", async (ctx) => ({ n: ctx.payload.n }));
export default integration;
"#;
    deploy(&a, "jobs", code, json!({})).await;
    // Node B's workers have looked for work once and now sleep until woken.
    tokio::time::sleep(Duration::from_secs(1)).await;

    for n in 0..3 {
        let (status, task) = a
            .post(
                "/v1/integrations/jobs/tasks/noop",
                &json!({"payload": {"n": n}}),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{task}");
        let path = format!("/v1/tasks/{}", str_field(&task, "id"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let done = loop {
            let (_, task) = a.get(&path).await;
            if task["status"] == "succeeded" || tokio::time::Instant::now() > deadline {
                break task;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(done["status"], "succeeded", "{done}\n{}", b.logs());
        assert_eq!(done["result"], json!({"n": n}), "{done}");
    }
}
