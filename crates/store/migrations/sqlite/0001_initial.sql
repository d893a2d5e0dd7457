-- Splice schema, version 1. Times are Unix milliseconds; secrets are AES-256-GCM ciphertexts.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE connectors (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    config        TEXT NOT NULL,          -- JSON, without the client secret
    client_secret BLOB NOT NULL,          -- encrypted
    tags          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    version       INTEGER NOT NULL
);

CREATE TABLE integrations (
    id         TEXT PRIMARY KEY,
    files      TEXT NOT NULL,             -- JSON: file name to source
    bytecode   BLOB NOT NULL,
    connectors TEXT NOT NULL,             -- JSON: name in code to connector id
    runtime    TEXT NOT NULL,             -- JSON: limits and isolation
    tags       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    version    INTEGER NOT NULL
);

CREATE TABLE identities (
    id            TEXT PRIMARY KEY,
    connector_id  TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    tenant        TEXT NOT NULL,
    subject       TEXT,
    status        TEXT NOT NULL,
    status_reason TEXT,
    status_at     INTEGER NOT NULL,
    tokens        BLOB NOT NULL,          -- encrypted JSON token set
    expires_at    INTEGER,                -- access token expiry, for the refresh sweep
    tags          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    version       INTEGER NOT NULL
);
CREATE INDEX identities_by_tenant ON identities (connector_id, tenant);
CREATE UNIQUE INDEX identities_by_subject ON identities (connector_id, tenant, subject)
    WHERE subject IS NOT NULL;

CREATE TABLE installs (
    id             TEXT PRIMARY KEY,
    integration_id TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    tenant         TEXT NOT NULL,
    tags           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    version        INTEGER NOT NULL
);
CREATE INDEX installs_by_tenant ON installs (integration_id, tenant);

CREATE TABLE install_identities (
    install_id  TEXT NOT NULL REFERENCES installs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    identity_id TEXT NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    PRIMARY KEY (install_id, name)
);
CREATE INDEX install_identities_by_identity ON install_identities (identity_id);

-- Tags of searchable entities, one row per tag, written with the entity.
CREATE TABLE entity_tags (
    kind      TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (kind, entity_id, key)
);
CREATE INDEX entity_tags_by_value ON entity_tags (kind, key, value);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    integration_id TEXT NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    tenant         TEXT NOT NULL,
    redirect_url   TEXT NOT NULL,
    status         TEXT NOT NULL,
    steps          TEXT NOT NULL,         -- JSON
    error          TEXT,                  -- JSON
    install_id     TEXT,
    expires_at     INTEGER NOT NULL,
    tags           TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    version        INTEGER NOT NULL
);

-- Pending authorization requests, keyed by the SHA-256 of their state. Single use.
CREATE TABLE auth_states (
    state_hash    TEXT PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    step          INTEGER NOT NULL,
    connector_id  TEXT NOT NULL,
    pkce_verifier BLOB,                   -- encrypted
    expires_at    INTEGER NOT NULL
);

CREATE TABLE invocations (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    integration_id TEXT NOT NULL,
    install_id     TEXT,
    at             INTEGER NOT NULL,
    method         TEXT NOT NULL,
    path           TEXT NOT NULL,
    status         INTEGER NOT NULL,
    duration_us    INTEGER NOT NULL,
    error          TEXT,
    logs           TEXT NOT NULL
);
CREATE INDEX invocations_by_integration ON invocations (integration_id, at);
