-- API tokens of an organisation. Only the SHA-256 of the token's secret part
-- is stored; the token itself is shown once, when it is created.
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs(id),
    name          TEXT NOT NULL,
    secret_hash   BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
);
CREATE INDEX api_tokens_by_org ON api_tokens (org_id);

-- What an audit record concerns when it is neither a key nor a claw (an API
-- token's id, say).
ALTER TABLE audit_records ADD COLUMN subject TEXT;
