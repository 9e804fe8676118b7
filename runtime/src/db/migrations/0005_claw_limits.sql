-- A claw's own run limits; a NULL column keeps the host default. The
-- ceilings are checked by the host before a row is written.
CREATE TABLE claw_limits (
    claw_id        TEXT PRIMARY KEY REFERENCES claws(id),
    deadline_ms    INTEGER CHECK (deadline_ms > 0),
    fuel           INTEGER CHECK (fuel > 0),
    memory_mib     INTEGER CHECK (memory_mib > 0),
    table_elements INTEGER CHECK (table_elements > 0),
    instances      INTEGER CHECK (instances > 0),
    llm_calls      INTEGER CHECK (llm_calls > 0),
    max_value_kib  INTEGER CHECK (max_value_kib > 0)
);

-- Runs an organisation may have in progress at once; NULL keeps the default.
ALTER TABLE orgs ADD COLUMN concurrent_runs INTEGER CHECK (concurrent_runs > 0);
