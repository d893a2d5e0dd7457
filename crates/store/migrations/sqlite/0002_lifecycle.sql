-- Token lifecycle: refresh bookkeeping on identities, health on connectors, and events.

ALTER TABLE identities ADD COLUMN has_refresh_token INTEGER NOT NULL DEFAULT 0;
ALTER TABLE identities ADD COLUMN refreshed_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE identities ADD COLUMN failure_days INTEGER NOT NULL DEFAULT 0;
ALTER TABLE identities ADD COLUMN last_failure_day INTEGER;
ALTER TABLE identities ADD COLUMN next_attempt_at INTEGER;
CREATE INDEX identities_due ON identities (status, expires_at);

ALTER TABLE connectors ADD COLUMN status TEXT NOT NULL DEFAULT 'ok';
ALTER TABLE connectors ADD COLUMN status_reason TEXT;

CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    id      TEXT NOT NULL UNIQUE,
    type    TEXT NOT NULL,
    at      INTEGER NOT NULL,
    tenant  TEXT,
    subject TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX events_by_type ON events (type, seq);

ALTER TABLE sessions ADD COLUMN reconnect INTEGER NOT NULL DEFAULT 0;
