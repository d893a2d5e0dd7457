//! A node killed with `kill -9` in the middle of a stream of provider webhooks loses nothing:
//! every event it acknowledged is handled after the restart, by exactly one job, and a run cut
//! short by the crash is repeated under the same job id, so its effects can be deduplicated.
//! On SQLite, and on PostgreSQL when `SPLICE_TEST_DATABASE_URL` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::api::{deploy, items};
use crate::support::app::{Node, TestApp};
use crate::support::receiver::Receiver;
use crate::support::{free_port, fresh_postgres_database, random_hex};

const EVENTS: usize = 2_000;
const SENDERS: usize = 8;
/// Acknowledged events after which the node is killed.
const KILL_AFTER: usize = 600;
const SIGNING_SECRET: &str = "e0f2a3d4c5b6a7980112233445566778";
const QUEUE_WORKERS: usize = 4;

fn handler_js(sink: &str) -> String {
    format!(
        r#"import {{ Integration }} from "splice";
const integration = new Integration();
integration.event.unmatched("slack:*", async (ctx) => {{
  const body = JSON.stringify({{ event: ctx.event.event_id, job: ctx.job.id, attempt: ctx.job.attempt }});
  const res = await fetch("{sink}", {{ method: "POST", body }});
  if (!res.ok) throw new Error(`sink answered ${{res.status}}`);
  // Work after the effect: a kill in this window repeats the run, effect included.
  await new Promise((resolve) => setTimeout(resolve, 20));
}});
export default integration;
"#
    )
}

fn event_body(n: usize) -> String {
    json!({
        "type": "event_callback", "team_id": "T-NOBODY", "event_id": format!("Ev{n:05}"),
        "event": {"type": "message", "text": format!("message {n}")},
    })
    .to_string()
}

fn slack_headers(body: &str) -> [(&'static str, String); 2] {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        .to_string();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(SIGNING_SECRET.as_bytes()).expect("any key length");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    [
        ("x-slack-request-timestamp", timestamp),
        ("x-slack-signature", signature),
    ]
}

/// Posts every event until it is acknowledged, as a provider retrying deliveries would;
/// returns how many answers were 200.
async fn send_all(url: String, next: Arc<AtomicUsize>, acked: Arc<AtomicUsize>) -> usize {
    let http = reqwest::Client::new();
    let mut answered = 0;
    loop {
        let n = next.fetch_add(1, Ordering::SeqCst);
        if n >= EVENTS {
            return answered;
        }
        let body = event_body(n);
        for attempt in 0.. {
            assert!(attempt < 600, "event {n} was never acknowledged");
            let mut request = http.post(&url).body(body.clone());
            for (name, value) in slack_headers(&body) {
                request = request.header(name, value);
            }
            match request.send().await {
                Ok(answer) if answer.status() == StatusCode::OK => {
                    answered += 1;
                    acked.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                // Refused while the node is down, or cut off by the kill: deliver again.
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

async fn queue_is_drained(app: &TestApp) -> bool {
    for status in ["queued", "running"] {
        let (code, jobs) = app.get(&format!("/v1/jobs?status={status}&limit=1")).await;
        assert_eq!(code, StatusCode::OK, "{jobs}");
        if !items(&jobs).is_empty() {
            return false;
        }
    }
    true
}

async fn webhooks_survive_a_killed_node(database_url: String) {
    let port = free_port();
    let node = Node {
        port,
        public_url: format!("http://127.0.0.1:{port}"),
        admin_key: format!("sk_test_{}", random_hex(40)),
        env: vec![
            ("SPLICE_DATABASE_URL".into(), database_url),
            (
                "SPLICE_MASTER_KEY".into(),
                crate::e2e::cluster::base64_key(),
            ),
            ("SPLICE_QUEUE_LEASE_SECS".into(), "3".into()),
            ("SPLICE_QUEUE_WORKERS".into(), QUEUE_WORKERS.to_string()),
            ("SPLICE_LOG".into(), "warn".into()),
        ],
    };
    let first = TestApp::start_node(node.clone()).await;
    let sink = Receiver::start(vec![200]).await;
    let connector = json!({
        "id": "slack", "provider": "slack",
        "config": {
            "client_id": "1111.2222", "client_secret": "slack-client-secret",
            "webhook": {"secret": SIGNING_SECRET},
        },
    });
    let (status, created) = first.post("/v1/connectors", &connector).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    deploy(
        &first,
        "relay",
        &handler_js(&sink.url),
        json!({"slack": "slack"}),
    )
    .await;

    let url = first.url("/v1/connectors/slack/webhook");
    let (next, acked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| tokio::spawn(send_all(url.clone(), next.clone(), acked.clone())))
        .collect();

    // Kill just after a handler's effect reached the sink, while that run is still going.
    let mut seen = 0;
    loop {
        let handled = sink.received().len();
        if acked.load(Ordering::SeqCst) >= KILL_AFTER && handled > seen && seen > 0 {
            break;
        }
        seen = handled;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    first.kill();
    let handled_before_kill = sink.received().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = TestApp::start_node(node).await;

    let mut answered = 0;
    for sender in senders {
        answered += sender.await.expect("a sender finished");
    }
    assert!(answered >= EVENTS, "{answered} acknowledgements");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !queue_is_drained(&second).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queue did not drain\n{}",
            second.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, failed) = second.get("/v1/jobs?status=failed").await;
    assert!(items(&failed).is_empty(), "dead letters: {failed}");

    // Every event was handled, each by exactly one job; only runs cut short by the crash
    // were repeated, under the same job id with a later attempt.
    let calls: Vec<Value> = sink
        .received()
        .iter()
        .map(|r| serde_json::from_str(&r.body).expect("a JSON call"))
        .collect();
    let mut jobs_by_event: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut attempts_by_job: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for call in &calls {
        let (event, job) = (call["event"].to_string(), call["job"].to_string());
        jobs_by_event.entry(event).or_default().insert(job.clone());
        attempts_by_job
            .entry(job)
            .or_default()
            .push(call["attempt"].as_i64().unwrap_or_default());
    }
    assert_eq!(jobs_by_event.len(), EVENTS, "events handled");
    let shared: Vec<_> = jobs_by_event.iter().filter(|(_, j)| j.len() > 1).collect();
    assert!(shared.is_empty(), "events handled by two jobs: {shared:?}");
    let repeated: Vec<_> = attempts_by_job
        .iter()
        .filter(|(_, attempts)| attempts.len() > 1)
        .collect();
    for (job, attempts) in &repeated {
        let distinct: BTreeSet<_> = attempts.iter().collect();
        assert_eq!(
            distinct.len(),
            attempts.len(),
            "{job} ran one attempt twice"
        );
    }
    assert!(!repeated.is_empty(), "the kill cut no run short");
    assert!(
        repeated.len() <= QUEUE_WORKERS,
        "more runs repeated than were running at the kill: {repeated:?}"
    );
    eprintln!(
        "{EVENTS} events, {handled_before_kill} handled before the kill, {} sink calls, {} runs \
         repeated after the crash",
        calls.len(),
        repeated.len()
    );
}

#[tokio::test]
async fn webhooks_survive_a_killed_node_on_sqlite() {
    let dir = tempfile::tempdir().expect("a database folder");
    let url = format!("sqlite://{}", dir.path().join("splice.db").display());
    webhooks_survive_a_killed_node(url).await;
}

#[tokio::test]
async fn webhooks_survive_a_killed_node_on_postgres() {
    let Some(url) = fresh_postgres_database().await else {
        return;
    };
    webhooks_survive_a_killed_node(url).await;
}
