//! Schedules: every node looks once a second for schedule slots that are due and enqueues one
//! `integration.cron` job per slot (and per install, for per-install schedules). The job's
//! idempotency key names the slot, so however many nodes see it, it runs once; a slot missed
//! while every node was down runs once after restart, not once per missed tick.

use std::time::Duration;

use serde_json::json;
use splice_domain::{IntegrationId, Millis, now_millis, rfc3339};
use splice_schedule::{Schedule, firing_key};
use splice_store::{NewJob, StoreError};

use crate::AppState;
use crate::worker::CRON_JOB;

const TICK: Duration = Duration::from_secs(1);

pub fn spawn_scheduler(state: AppState) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Err(err) = tick(&state).await {
                tracing::warn!(error = %err, "schedule check failed");
            }
        }
    });
}

async fn tick(state: &AppState) -> Result<(), StoreError> {
    for (id, schedules, deployed_at) in state.store.scheduled_integrations().await? {
        for spec in &schedules {
            let parsed = Schedule::parse(
                &spec.name,
                &spec.cron,
                spec.time_zone.as_deref(),
                spec.per_install,
            );
            let schedule = match parsed {
                Ok(schedule) => schedule,
                Err(err) => {
                    tracing::warn!(integration.id = %id, error = %err, "invalid schedule");
                    continue;
                }
            };
            let installs = if schedule.per_install() {
                let all = state.store.list_installs(&id, None, &[]).await?;
                all.into_iter().map(|i| i.id.to_string()).collect()
            } else {
                vec![String::new()]
            };
            for install in installs {
                fire_if_due(state, &id, deployed_at, &schedule, &install).await?;
            }
        }
    }
    Ok(())
}

async fn fire_if_due(
    state: &AppState,
    integration: &IntegrationId,
    deployed_at: Millis,
    schedule: &Schedule,
    install: &str,
) -> Result<(), StoreError> {
    let now = now_millis();
    // Never fired: count from the deploy, so nothing fires retroactively.
    let last = state
        .store
        .schedule_slot(integration, schedule.name(), install)
        .await?;
    let since = last.unwrap_or(deployed_at);
    let Some(slot) = schedule.due(Some(since), now).fire_at else {
        return Ok(());
    };

    let target = (!install.is_empty()).then_some(install);
    let payload = json!({
        "integration": integration,
        "schedule": schedule.name(),
        "install": target,
        "slot": rfc3339(slot),
    });
    let mut job = NewJob::new(CRON_JOB, payload, now);
    job.partition = Some(integration.to_string());
    job.idempotency_key = Some(firing_key(
        integration.as_str(),
        schedule.name(),
        target,
        slot,
    ));
    let (_, created) = state.store.enqueue_job(&job, now).await?;
    state
        .store
        .advance_schedule(integration, schedule.name(), install, slot)
        .await?;
    if created {
        state.jobs_enqueued();
        tracing::debug!(integration.id = %integration, schedule = schedule.name(), slot, "schedule fired");
    }
    Ok(())
}
