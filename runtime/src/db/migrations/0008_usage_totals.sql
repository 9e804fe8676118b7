-- Running totals of the ledger, written in the same transaction as each
-- usage record, so that admitting a call reads a few rows instead of every
-- record of a budget's period or of a rate limit's minute.

-- Tokens and cost per claw per UTC day: every budget period (day, month,
-- lifetime) starts at a midnight, so organisation and claw budgets sum
-- whole days exactly.
CREATE TABLE usage_days (
    org_id TEXT NOT NULL,
    claw_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    micros INTEGER NOT NULL,
    PRIMARY KEY (org_id, claw_id, day)
) WITHOUT ROWID;

INSERT INTO usage_days (org_id, claw_id, day, tokens, micros)
SELECT org_id, claw_id, at_ms / 86400000, SUM(input_tokens + output_tokens),
       SUM(COALESCE(cost_micros, 0))
FROM usage_records GROUP BY 1, 2, 3;

-- Calls and tokens per claw and per key per second, for the per-minute
-- rate limits; rows older than two minutes are pruned by the ledger writer.
CREATE TABLE usage_seconds (
    target_id TEXT NOT NULL,
    second INTEGER NOT NULL,
    calls INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    first_at_ms INTEGER NOT NULL,
    PRIMARY KEY (target_id, second)
) WITHOUT ROWID;

INSERT INTO usage_seconds (target_id, second, calls, tokens, first_at_ms)
SELECT target_id, at_ms / 1000, COUNT(*), SUM(t), MIN(at_ms) FROM (
    SELECT claw_id AS target_id, at_ms, input_tokens + output_tokens AS t FROM usage_records
    UNION ALL
    SELECT key_id, at_ms, input_tokens + output_tokens FROM usage_records)
WHERE at_ms >= CAST(strftime('%s', 'now') AS INTEGER) * 1000 - 120000
GROUP BY 1, 2;
