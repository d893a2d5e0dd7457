//! Schedules declared at deploy run their `cron` handler once per firing (per install when
//! declared so); see `cluster.rs` for two nodes sharing one schedule.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::api::{items, str_field};
use crate::support::app::TestApp;

pub const CRON_JS: &str = r#"import { Integration } from "splice";
const integration = new Integration();
integration.cron.on("tick", async (ctx) => { console.log("tick", ctx.slot, ctx.install); });
integration.cron.on("each", async (ctx) => { console.log("each", ctx.slot, ctx.install); });
export default integration;
"#;

/// Deploys `CRON_JS` with the given schedules.
pub async fn deploy_schedules(app: &TestApp, id: &str, schedules: Value) -> (StatusCode, Value) {
    let body = json!({"files": {"integration.js": CRON_JS}, "schedules": schedules});
    app.put(&format!("/v1/integrations/{id}"), &body).await
}

/// The `CRON` runs in an integration's log: (schedule path, slot, install).
pub async fn cron_runs(app: &TestApp, id: &str) -> Vec<(String, String, Value)> {
    let (_, logs) = app
        .get(&format!("/v1/integrations/{id}/logs?limit=500"))
        .await;
    items(&logs)
        .iter()
        .filter(|l| l["method"] == "CRON")
        .map(|l| {
            let line = l["logs"][0]["message"].as_str().unwrap_or_default();
            let slot = line.split(' ').nth(1).unwrap_or_default().to_owned();
            (str_field(l, "path").to_owned(), slot, l["install"].clone())
        })
        .collect()
}

#[tokio::test]
async fn schedules_fire_once_per_slot_and_per_install() {
    let app = TestApp::start().await;

    // Bad schedules are refused at deploy, naming the field.
    let (status, body) =
        deploy_schedules(&app, "bad", json!([{"name": "x", "cron": "0 25 * * *"}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("hour"), "{body}");
    let zone = json!([{"name": "x", "cron": "* * * * *", "time_zone": "Mars/Olympus"}]);
    let (status, body) = deploy_schedules(&app, "bad", zone).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let schedules = json!([
        {"name": "tick", "cron": "*/2 * * * * *"},
        {"name": "each", "cron": "*/2 * * * * *", "per_install": true},
    ]);
    let (status, body) = deploy_schedules(&app, "clock", schedules).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["schedules"][1]["per_install"], true, "{body}");

    // Two installs (the integration has no connectors, so sessions complete at once).
    let mut installs = BTreeSet::new();
    for tenant in ["acme", "globex"] {
        let session = json!({"tenant": tenant, "redirect_url": "https://app.example/done"});
        let (_, created) = app.post("/v1/integrations/clock/sessions", &session).await;
        assert_eq!(created["status"], "completed", "{created}");
        let id = str_field(&created, "id");
        let (status, install) = app
            .post(&format!("/v1/sessions/{id}/commit"), &json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{install}");
        installs.insert(str_field(&install, "id").to_owned());
    }

    tokio::time::sleep(Duration::from_secs(7)).await;
    let runs = cron_runs(&app, "clock").await;

    let ticks: Vec<_> = runs.iter().filter(|(path, _, _)| path == "/tick").collect();
    let tick_slots: BTreeSet<_> = ticks.iter().map(|(_, slot, _)| slot.clone()).collect();
    assert_eq!(tick_slots.len(), ticks.len(), "a slot ran twice: {ticks:?}");
    assert!((2..=5).contains(&ticks.len()), "{ticks:?}");
    assert!(
        ticks.iter().all(|(_, _, install)| install.is_null()),
        "{ticks:?}"
    );

    for install in &installs {
        let mine: Vec<_> = runs
            .iter()
            .filter(|(path, _, i)| path == "/each" && i == install.as_str())
            .collect();
        let slots: BTreeSet<_> = mine.iter().map(|(_, slot, _)| slot.clone()).collect();
        assert_eq!(
            slots.len(),
            mine.len(),
            "a slot ran twice for {install}: {mine:?}"
        );
        assert!(!mine.is_empty(), "no run for {install}: {runs:?}");
    }
}
