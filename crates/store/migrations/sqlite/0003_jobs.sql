-- The job queue: every piece of background work (webhook events, schedules, tasks, outbound
-- webhooks, sweeps), claimed with a lease so a job whose node died runs again.

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,          -- e.g. webhook.event, integration.task
    partition_key   TEXT,                   -- e.g. an integration id, for concurrency limits
    payload         TEXT NOT NULL,          -- JSON
    idempotency_key TEXT UNIQUE,            -- NULLs never conflict
    status          TEXT NOT NULL,          -- queued, running, succeeded, failed, cancelled
    attempts        INTEGER NOT NULL,       -- runs started, counted at claim
    max_attempts    INTEGER NOT NULL,
    run_at          INTEGER NOT NULL,       -- not before
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_error      TEXT,
    result          TEXT,                   -- JSON
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX jobs_due ON jobs (status, run_at);
CREATE INDEX jobs_by_partition ON jobs (partition_key, status);
CREATE INDEX jobs_finished ON jobs (finished_at);
