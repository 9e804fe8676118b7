-- The audit log: payload-free and append-only. Triggers refuse any UPDATE or
-- DELETE, so rows can only be added.
CREATE TABLE audit_records (
    id           INTEGER PRIMARY KEY,
    at_ms        INTEGER NOT NULL,
    org_id       TEXT,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    key_id       TEXT,
    key_version  INTEGER,
    claw_id      TEXT,
    outcome      TEXT NOT NULL
);
CREATE INDEX audit_by_org ON audit_records (org_id, id);
CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

-- What the leak guard needs to find a stored key inside a prompt without
-- holding any plaintext: the key's length in bytes and a rolling hash of it
-- under a base derived from the organisation's data key.
ALTER TABLE provider_keys ADD COLUMN scan_len INTEGER NOT NULL DEFAULT 0;
ALTER TABLE provider_keys ADD COLUMN scan_hash INTEGER NOT NULL DEFAULT 0;
