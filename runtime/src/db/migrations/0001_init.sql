-- Organisations own keys, claws and usage. Their data key, which seals their
-- provider keys, is stored wrapped by the master key.
CREATE TABLE orgs (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL UNIQUE,
    wrapped_data_key BLOB NOT NULL,
    created_at_ms    INTEGER NOT NULL
);

-- Provider keys. Only the current version's ciphertext is kept: rotation
-- overwrites it (with secure_delete on, the old bytes are zeroed).
CREATE TABLE provider_keys (
    id             TEXT PRIMARY KEY,
    org_id         TEXT NOT NULL REFERENCES orgs(id),
    name           TEXT NOT NULL,
    provider       TEXT NOT NULL,
    base_url       TEXT NOT NULL,
    ciphertext     BLOB NOT NULL,
    version        INTEGER NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
    fingerprint    TEXT NOT NULL,
    hint           TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    rotated_at_ms  INTEGER,
    revoked_at_ms  INTEGER,
    UNIQUE (org_id, name)
);

-- Claws and their assignment. The assignment is read on every llm-call, so
-- changing it takes effect on the next call without a redeploy.
CREATE TABLE claws (
    id             TEXT PRIMARY KEY,
    org_id         TEXT NOT NULL REFERENCES orgs(id),
    name           TEXT NOT NULL,
    component      BLOB NOT NULL,
    digest         TEXT NOT NULL,
    key_id         TEXT REFERENCES provider_keys(id),
    model          TEXT,
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    UNIQUE (org_id, name)
);

-- One row per provider call, written once the provider answered (or failed).
CREATE TABLE usage_records (
    id                 INTEGER PRIMARY KEY,
    at_ms              INTEGER NOT NULL,
    org_id             TEXT NOT NULL,
    claw_id            TEXT NOT NULL,
    run_id             TEXT NOT NULL,
    conversation_id    TEXT NOT NULL,
    tool_invocation_id TEXT,
    tool_name          TEXT,
    tool_call_id       TEXT,
    key_id             TEXT NOT NULL,
    key_version        INTEGER NOT NULL,
    provider           TEXT NOT NULL,
    model_requested    TEXT NOT NULL,
    model_returned     TEXT,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens   INTEGER NOT NULL,
    raw_usage          TEXT,
    source             TEXT NOT NULL CHECK (source IN ('reported', 'estimated', 'none')),
    latency_ms         INTEGER NOT NULL,
    outcome            TEXT NOT NULL
);
CREATE INDEX usage_by_claw ON usage_records (org_id, claw_id, at_ms);
CREATE INDEX usage_by_conversation ON usage_records (org_id, conversation_id);
CREATE INDEX usage_by_run ON usage_records (run_id);
