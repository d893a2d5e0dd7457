-- Secrets a provider issues when a webhook is registered (Asana's X-Hook-Secret), one per
-- hook of a connector, sealed like every other secret.

CREATE TABLE hook_secrets (
    connector_id TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    hook         TEXT NOT NULL,
    secret       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (connector_id, hook)
);
