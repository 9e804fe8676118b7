-- Budgets cap what calls may consume, in tokens or in money (micro-USD),
-- per day, month or lifetime, for an organisation, a claw, or each
-- conversation (of one claw, or of any claw when claw_id is NULL).
CREATE TABLE budgets (
    id            INTEGER PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES orgs(id),
    scope         TEXT NOT NULL CHECK (scope IN ('org', 'claw', 'conversation')),
    claw_id       TEXT REFERENCES claws(id),
    unit          TEXT NOT NULL CHECK (unit IN ('tokens', 'micros')),
    period        TEXT NOT NULL CHECK (period IN ('day', 'month', 'lifetime')),
    amount        INTEGER NOT NULL CHECK (amount >= 0),
    created_at_ms INTEGER NOT NULL
);

-- Requests and tokens per minute, per claw or per provider key.
CREATE TABLE rate_limits (
    id        INTEGER PRIMARY KEY,
    org_id    TEXT NOT NULL REFERENCES orgs(id),
    scope     TEXT NOT NULL CHECK (scope IN ('claw', 'key')),
    target_id TEXT NOT NULL,
    rpm       INTEGER CHECK (rpm > 0),
    tpm       INTEGER CHECK (tpm > 0),
    UNIQUE (scope, target_id)
);

-- A call's worst case, held from admission until its usage record is
-- written, so concurrent calls cannot together pass a budget.
CREATE TABLE reservations (
    id              INTEGER PRIMARY KEY,
    org_id          TEXT NOT NULL,
    claw_id         TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    tokens          INTEGER NOT NULL,
    micros          INTEGER,
    at_ms           INTEGER NOT NULL
);
CREATE INDEX usage_by_key ON usage_records (key_id, at_ms);
