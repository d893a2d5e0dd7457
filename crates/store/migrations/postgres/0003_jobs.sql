-- The job queue: every piece of background work (webhook events, schedules, tasks, outbound
-- webhooks, sweeps), claimed with a lease so a job whose node died runs again.

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,          -- e.g. webhook.event, integration.task
    partition_key   TEXT,                   -- e.g. an integration id, for concurrency limits
    payload         TEXT NOT NULL,          -- JSON
    idempotency_key TEXT UNIQUE,            -- NULLs never conflict
    status          TEXT NOT NULL,          -- queued, running, succeeded, failed, cancelled
    attempts        BIGINT NOT NULL,        -- runs started, counted at claim
    max_attempts    BIGINT NOT NULL,
    run_at          BIGINT NOT NULL,        -- not before
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_error      TEXT,
    result          TEXT,                   -- JSON
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX jobs_due ON jobs (status, run_at);
CREATE INDEX jobs_by_partition ON jobs (partition_key, status);
CREATE INDEX jobs_finished ON jobs (finished_at);
