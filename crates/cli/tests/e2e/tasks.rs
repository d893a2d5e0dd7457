//! Background tasks on the durable queue: started through the API, run by a worker with the
//! payload, retried, dead-lettered, replayed, and delayed with `not_before`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::api::{deploy, items, str_field};
use crate::support::app::TestApp;

const TASKS_JS: &str = r#"import { Integration } from "splice";
const integration = new Integration();
let runs = 0;
integration.task.on("double", async (ctx) => {
  console.log("doubling", ctx.payload.n);
  return { twice: ctx.payload.n * 2, at: Date.now() };
});
integration.task.on("flaky", async (ctx) => {
  runs += 1;
  throw new Error(`failure number ${runs}`);
});
export default integration;
"#;

/// Polls a task until it leaves `queued`/`running` (or the deadline passes).
async fn settled(app: &TestApp, status_url: &str) -> Value {
    let path = status_url
        .strip_prefix(app.public_url())
        .expect("status URL on this node");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, task) = app.get(path).await;
        assert_eq!(status, StatusCode::OK, "{task}");
        let state = str_field(&task, "status");
        if (state != "queued" && state != "running") || tokio::time::Instant::now() > deadline {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tasks_run_retry_dead_letter_and_replay() {
    let app = TestApp::start().await;
    deploy(&app, "jobs", TASKS_JS, json!({})).await;

    // A task runs with its payload; the result is kept on the status URL.
    let (status, started) = app
        .post(
            "/v1/integrations/jobs/tasks/double",
            &json!({"payload": {"n": 21}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert!(str_field(&started, "id").starts_with("job_"), "{started}");
    let done = settled(&app, str_field(&started, "status_url")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["twice"], 42, "{done}");
    assert_eq!(done["attempts"], 1, "{done}");

    // A failing task is retried up to max_attempts, then dead-lettered with its last error.
    let body = json!({"payload": {}, "max_attempts": 2});
    let (_, flaky) = app.post("/v1/integrations/jobs/tasks/flaky", &body).await;
    let id = str_field(&flaky, "id").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
        if job["status"] == "failed" || tokio::time::Instant::now() > deadline {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["attempts"], 2, "{failed}");
    assert!(
        str_field(&failed, "error").contains("failure number"),
        "{failed}"
    );
    let (_, dead) = app.get("/v1/jobs?status=failed").await;
    assert_eq!(items(&dead).len(), 1, "{dead}");
    let (_, events) = app.get("/v1/events?type=task.failed").await;
    assert_eq!(items(&events)[0]["subject"], id.as_str(), "{events}");

    // Replaying a dead letter runs it again from scratch.
    let (status, replayed) = app.post(&format!("/v1/jobs/{id}/replay"), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["status"], "queued", "{replayed}");
    assert_eq!(replayed["attempts"], 0, "{replayed}");
    let (status, again) = app
        .post(
            &format!(
                "/v1/jobs/{}/replay",
                done["id"].as_str().unwrap_or_default()
            ),
            &json!({}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a succeeded job is not replayed: {again}"
    );

    // not_before delays the start.
    let later = time_from_now(1_500);
    let body = json!({"payload": {"n": 1}, "not_before": later.0});
    let (_, delayed) = app.post("/v1/integrations/jobs/tasks/double", &body).await;
    assert_eq!(delayed["status"], "queued", "{delayed}");
    let done = settled(&app, str_field(&delayed, "status_url")).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let ran_at = done["result"]["at"].as_i64().unwrap_or_default();
    assert!(
        ran_at >= later.1,
        "ran at {ran_at}, before not_before {}",
        later.1
    );

    // Unknown integrations and bad bodies.
    let (status, _) = app
        .post("/v1/integrations/nope/tasks/double", &json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .post(
            "/v1/integrations/jobs/tasks/double",
            &json!({"max_attempts": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Task runs are in the invocation log, with their console lines.
    let (_, logs) = app.get("/v1/integrations/jobs/logs").await;
    let task_run = items(&logs)
        .iter()
        .find(|l| l["method"] == "TASK" && l["path"] == "/double");
    let task_run = task_run.expect("a task run in the log");
    assert!(
        task_run["logs"].to_string().contains("doubling"),
        "{task_run}"
    );
}

/// An RFC 3339 time `ms` from now, and the same instant in Unix milliseconds.
fn time_from_now(ms: i64) -> (String, i64) {
    let at = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(ms);
    let text = at
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format a time");
    (text, (at.unix_timestamp_nanos() / 1_000_000) as i64)
}

const STARTER_JS: &str = r#"import { Integration } from "splice";
const integration = new Integration();
integration.router.post("/imports", async (ctx) => {
  const options = { idempotencyKey: ctx.query.key, delayMs: Number(ctx.query.delay ?? 0) };
  const started = await integration.task.start("import", ctx.request.body, options);
  ctx.status = 202;
  ctx.body = { task: started.id, at: Date.now() };
});
integration.router.post("/bad", async (ctx) => {
  const errors = [];
  for (const [name, options] of [["", {}], ["import", { retries: 3 }], ["import", { maxAttempts: 11 }], ["import", null]]) {
    try {
      await integration.task.start(name, {}, options);
    } catch (e) {
      errors.push(String(e.message));
    }
  }
  ctx.body = { errors };
});
integration.router.post("/patient", async (ctx) => {
  ctx.body = await integration.task.start("import", { rows: 1 }, { maxAttempts: 5 });
});
integration.task.on("import", async (ctx) => ({ rows: ctx.payload.rows * 10, at: Date.now() }));
export default integration;
"#;

/// A route hands work to a task from code: the task runs with the payload, once per
/// idempotency key, not before its delay.
#[tokio::test]
async fn routes_start_tasks_from_code() {
    let app = TestApp::start().await;
    deploy(&app, "starter", STARTER_JS, json!({})).await;

    let route = "/v1/integrations/starter/api/imports";
    let (status, answer) = app
        .post(&format!("{route}?key=a"), &json!({"rows": 4}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = str_field(&answer, "task").to_owned();
    assert!(id.starts_with("job_"), "{answer}");
    let done = settled(&app, &app.url(&format!("/v1/tasks/{id}"))).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["task"], "import", "{done}");
    assert_eq!(done["result"]["rows"], 40, "{done}");

    // The same key queues the same task once.
    let (_, again) = app
        .post(&format!("{route}?key=a"), &json!({"rows": 5}))
        .await;
    assert_eq!(str_field(&again, "task"), id, "{again}");

    // A delay holds the start back.
    let (_, delayed) = app
        .post(&format!("{route}?delay=1200"), &json!({"rows": 1}))
        .await;
    let started_at = delayed["at"].as_i64().unwrap_or_default();
    let path = format!("/v1/tasks/{}", str_field(&delayed, "task"));
    let done = settled(&app, &app.url(&path)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let ran_at = done["result"]["at"].as_i64().unwrap_or_default();
    assert!(
        ran_at >= started_at + 1200,
        "ran at {ran_at}, started at {started_at}"
    );

    // Bad arguments throw in the integration's code.
    let (_, bad) = app
        .post("/v1/integrations/starter/api/bad", &json!({}))
        .await;
    let errors = bad["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 4, "{bad}");
    assert_eq!(errors[0], "task name must be a non-empty string", "{bad}");
    assert!(
        errors[1]
            .to_string()
            .contains("unknown task option retries"),
        "{bad}"
    );
    assert!(errors[2].to_string().contains("maxAttempts"), "{bad}");
    assert_eq!(errors[3], "task options must be an object", "{bad}");

    let (_, patient) = app
        .post("/v1/integrations/starter/api/patient", &json!({}))
        .await;
    let (_, job) = app
        .get(&format!("/v1/tasks/{}", str_field(&patient, "id")))
        .await;
    assert_eq!(job["max_attempts"], 5, "{job}");
}

const SLOW_JS: &str = r#"import { Integration } from "splice";
const integration = new Integration();
integration.task.on("slow", async () => {
  const start = Date.now();
  await new Promise((resolve) => setTimeout(resolve, 300));
  return { start, end: Date.now() };
});
export default integration;
"#;

/// With a limit of one running job per integration, one integration's tasks run one after
/// another while another integration's task still gets a worker.
#[tokio::test]
async fn the_per_integration_limit_keeps_one_integration_from_taking_every_worker() {
    let app = TestApp::start_with_env(&[("SPLICE_QUEUE_MAX_RUNNING_PER_INTEGRATION", "1")]).await;
    deploy(&app, "busy", SLOW_JS, json!({})).await;
    deploy(&app, "quiet", SLOW_JS, json!({})).await;

    let mut urls = Vec::new();
    for integration in ["busy", "busy", "busy", "busy", "quiet"] {
        let path = format!("/v1/integrations/{integration}/tasks/slow");
        let (status, task) = app.post(&path, &json!({})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{task}");
        urls.push(str_field(&task, "status_url").to_owned());
    }
    let mut spans = Vec::new();
    for url in &urls {
        let done = settled(&app, url).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let span = (
            done["result"]["start"].as_i64(),
            done["result"]["end"].as_i64(),
        );
        spans.push((span.0.unwrap_or_default(), span.1.unwrap_or_default()));
    }
    let (quiet, mut busy) = (spans[4], spans[..4].to_vec());
    busy.sort_unstable();
    for pair in busy.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "busy runs overlapped: {busy:?}");
    }
    let last = busy.last().map(|s| s.1).unwrap_or_default();
    assert!(
        quiet.1 < last,
        "quiet waited for busy: {quiet:?} vs {busy:?}"
    );
}
