-- Outbound webhooks: URLs the application registered for Splice's events.

CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    url        TEXT NOT NULL,
    events     TEXT NOT NULL,          -- JSON list of event types; empty means all
    secret     BLOB NOT NULL,            -- encrypted signing secret
    tags       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    version    INTEGER NOT NULL
);
