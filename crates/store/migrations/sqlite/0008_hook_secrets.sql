-- Hooks of a connector whose provider issues a secret per webhook at registration (Asana's
-- X-Hook-Secret). A hook is opened through the API first; the provider's handshake may then
-- set its secret once, before the hook expires. Secrets are sealed like every other.

CREATE TABLE hook_secrets (
    connector_id TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    hook         TEXT NOT NULL,
    secret       BLOB,                  -- NULL while the hook waits for its handshake
    expires_at   BIGINT NOT NULL,        -- the handshake must come before this
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (connector_id, hook)
);
