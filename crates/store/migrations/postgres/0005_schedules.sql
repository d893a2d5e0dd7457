-- Schedules declared at deploy, and the last slot each one fired (per install, or '' for the
-- integration), so a firing runs once and one missed while every node was down runs once.

ALTER TABLE integrations ADD COLUMN schedules TEXT NOT NULL DEFAULT '[]';

CREATE TABLE schedule_runs (
    integration_id TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    schedule       TEXT NOT NULL,
    install_id     TEXT NOT NULL,
    last_slot      BIGINT NOT NULL,
    PRIMARY KEY (integration_id, schedule, install_id)
);
