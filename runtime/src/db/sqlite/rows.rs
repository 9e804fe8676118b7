//! Row mapping: the column lists, row readers and inserts every query of
//! the SQLite backend shares.

use rusqlite::{Connection, Row, params};

use crate::db::{AuditRecord, ClawRow, DbError, KeyRow, KeyState, UsageFilter, UsageRecord};

pub(super) const KEY_COLUMNS: &str = "id, org_id, name, provider, base_url, ciphertext, version, state, \
     fingerprint, hint, created_at_ms, rotated_at_ms, revoked_at_ms, scan_len, scan_hash, \
     api_path, auth_header, auth_scheme";

pub(super) fn key_row(r: &Row<'_>, at: usize) -> rusqlite::Result<KeyRow> {
    let state: String = r.get(at + 7)?;
    Ok(KeyRow {
        id: r.get(at)?,
        org_id: r.get(at + 1)?,
        name: r.get(at + 2)?,
        provider: r.get(at + 3)?,
        base_url: r.get(at + 4)?,
        // Read whatever is stored: a ciphertext altered into another type
        // must fail to open (for that key only), not fail the query.
        ciphertext: r
            .get_ref(at + 5)?
            .as_bytes()
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        version: r.get(at + 6)?,
        state: if state == "active" {
            KeyState::Active
        } else {
            KeyState::Revoked
        },
        fingerprint: r.get(at + 8)?,
        hint: r.get(at + 9)?,
        created_at_ms: r.get(at + 10)?,
        rotated_at_ms: r.get(at + 11)?,
        revoked_at_ms: r.get(at + 12)?,
        scan_len: r.get(at + 13)?,
        scan_hash: r.get(at + 14)?,
        api_path: r.get(at + 15)?,
        auth_header: r.get(at + 16)?,
        auth_scheme: r.get(at + 17)?,
    })
}

pub(super) const CLAW_COLUMNS: &str = "c.id, c.org_id, c.name, c.digest, c.size, k.name, c.model, \
     c.created_at_ms, c.updated_at_ms FROM claws c LEFT JOIN provider_keys k ON k.id = c.key_id";

pub(super) fn claw_row(r: &Row<'_>) -> rusqlite::Result<ClawRow> {
    Ok(ClawRow {
        id: r.get(0)?,
        org_id: r.get(1)?,
        name: r.get(2)?,
        digest: r.get(3)?,
        size: r.get(4)?,
        key_name: r.get(5)?,
        model: r.get(6)?,
        created_at_ms: r.get(7)?,
        updated_at_ms: r.get(8)?,
    })
}

pub(super) const USAGE_COLUMNS: &str = "at_ms, org_id, claw_id, run_id, conversation_id, tool_invocation_id, \
     tool_name, tool_call_id, key_id, key_version, provider, model_requested, model_returned, \
     input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, \
     raw_usage, source, latency_ms, outcome, cost_micros, price_version";

pub(super) fn usage_row(r: &Row<'_>) -> rusqlite::Result<UsageRecord> {
    Ok(UsageRecord {
        at_ms: r.get(0)?,
        org_id: r.get(1)?,
        claw_id: r.get(2)?,
        run_id: r.get(3)?,
        conversation_id: r.get(4)?,
        tool_invocation_id: r.get(5)?,
        tool_name: r.get(6)?,
        tool_call_id: r.get(7)?,
        key_id: r.get(8)?,
        key_version: r.get(9)?,
        provider: r.get(10)?,
        model_requested: r.get(11)?,
        model_returned: r.get(12)?,
        input_tokens: r.get(13)?,
        output_tokens: r.get(14)?,
        cache_read_tokens: r.get(15)?,
        cache_write_tokens: r.get(16)?,
        reasoning_tokens: r.get(17)?,
        raw_usage: r.get(18)?,
        source: r.get(19)?,
        latency_ms: r.get(20)?,
        outcome: r.get(21)?,
        cost_micros: r.get(22)?,
        price_version: r.get(23)?,
    })
}

/// The WHERE clause and parameters of a usage filter.
pub(super) fn usage_where(filter: &UsageFilter) -> (String, Vec<String>) {
    let mut clause = String::from("u.org_id = ?1");
    let mut args = vec![filter.org_id.clone()];
    for (column, value) in [
        ("u.claw_id", &filter.claw_id),
        ("u.conversation_id", &filter.conversation_id),
        ("u.run_id", &filter.run_id),
    ] {
        if let Some(v) = value {
            args.push(v.clone());
            clause.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    }
    // Integers are written into the statement: they cannot carry SQL.
    if let Some(since) = filter.since_ms {
        clause.push_str(&format!(" AND u.at_ms >= {since}"));
    }
    if let Some(until) = filter.until_ms {
        clause.push_str(&format!(" AND u.at_ms < {until}"));
    }
    (clause, args)
}

pub(super) fn insert_usage(conn: &Connection, u: &UsageRecord) -> Result<(), DbError> {
    conn.prepare_cached(&format!(
        "INSERT INTO usage_records ({USAGE_COLUMNS})
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24)"
    ))?
    .execute(params![
        u.at_ms,
        u.org_id,
        u.claw_id,
        u.run_id,
        u.conversation_id,
        u.tool_invocation_id,
        u.tool_name,
        u.tool_call_id,
        u.key_id,
        u.key_version,
        u.provider,
        u.model_requested,
        u.model_returned,
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.reasoning_tokens,
        u.raw_usage,
        u.source,
        u.latency_ms,
        u.outcome,
        u.cost_micros,
        u.price_version
    ])?;
    Ok(())
}

/// Adds a usage record to the running totals admission reads (migration
/// 0008), in the caller's transaction.
pub(super) fn add_to_totals(conn: &Connection, u: &UsageRecord) -> Result<(), DbError> {
    let tokens = u.input_tokens + u.output_tokens;
    conn.prepare_cached(
        "INSERT INTO usage_days (org_id, claw_id, day, tokens, micros) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (org_id, claw_id, day)
         DO UPDATE SET tokens = tokens + excluded.tokens, micros = micros + excluded.micros",
    )?
    .execute(params![
        u.org_id,
        u.claw_id,
        u.at_ms.div_euclid(86_400_000),
        tokens,
        u.cost_micros.unwrap_or(0)
    ])?;
    let mut per_second = conn.prepare_cached(
        "INSERT INTO usage_seconds (target_id, second, calls, tokens, first_at_ms)
         VALUES (?1, ?2, 1, ?3, ?4)
         ON CONFLICT (target_id, second) DO UPDATE SET calls = calls + 1,
             tokens = tokens + excluded.tokens, first_at_ms = MIN(first_at_ms, excluded.first_at_ms)",
    )?;
    for target in [&u.claw_id, &u.key_id] {
        per_second.execute(params![target, u.at_ms.div_euclid(1000), tokens, u.at_ms])?;
    }
    Ok(())
}

pub(super) fn insert_audit(conn: &Connection, a: &AuditRecord) -> Result<(), DbError> {
    conn.prepare_cached(
        "INSERT INTO audit_records (at_ms, org_id, actor, action, key_id, key_version, claw_id, outcome, subject)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![a.at_ms, a.org_id, a.actor, a.action, a.key_id, a.key_version, a.claw_id, a.outcome, a.subject])?;
    Ok(())
}
