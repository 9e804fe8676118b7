-- A claw's component moves out of its `claws` row. Every llm-call reads that
-- row (its key and model), and SQLite reaches a column stored after a large
-- blob only by reading each of the blob's overflow pages: the cost of a call
-- grew with the size of the claw (about 12 page reads for a 47 KiB claw,
-- over a thousand for a 5 MiB one).
CREATE TABLE claw_components (
    claw_id   TEXT PRIMARY KEY REFERENCES claws(id) ON DELETE CASCADE,
    component BLOB NOT NULL
);

INSERT INTO claw_components (claw_id, component) SELECT id, component FROM claws;

ALTER TABLE claws ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE claws SET size = length(component);
ALTER TABLE claws DROP COLUMN component;
