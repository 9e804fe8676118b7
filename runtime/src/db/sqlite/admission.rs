//! The SQL of budget and rate-limit admission, run inside the ledger
//! writer's IMMEDIATE transaction (see [`crate::metering::budgets`] and
//! [`super::ledger`]).

use rusqlite::{Connection, params};

use crate::db::DbError;
use crate::metering::budgets::{Admission, Budget, BudgetScope, BudgetUnit, Refusal, period_start};

/// Reservations older than this belong to a process that died mid-call;
/// they stop counting. Longer than any run's deadline.
const STALE_RESERVATION_MS: i64 = 15 * 60 * 1000;

const MINUTE_MS: i64 = 60_000;

/// Checks a call against its budgets and limits and, if admitted, records
/// its reservation; `tx` is an IMMEDIATE transaction, so no other writer,
/// in any process, decides in between.
pub(super) fn reserve(
    tx: &Connection,
    call: &Admission,
) -> Result<Result<Option<i64>, Refusal>, DbError> {
    if let Some(refusal) = check(tx, call)? {
        return Ok(Err(refusal));
    }
    tx.prepare_cached(
        "INSERT INTO reservations (org_id, claw_id, key_id, conversation_id, tokens, micros, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        call.org_id,
        call.claw_id,
        call.key_id,
        call.conversation_id,
        call.tokens,
        call.micros,
        call.now_ms
    ])?;
    Ok(Ok(Some(tx.last_insert_rowid())))
}

pub(super) fn release_stale(conn: &Connection, now_ms: i64) -> Result<(), DbError> {
    conn.prepare_cached("DELETE FROM reservations WHERE at_ms < ?1")?
        .execute([now_ms - STALE_RESERVATION_MS])?;
    Ok(())
}

/// The organisation's budgets, or only those that apply to `claw_id`.
pub(super) fn budgets(
    conn: &Connection,
    org_id: &str,
    claw_id: Option<&str>,
) -> Result<Vec<Budget>, DbError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, scope, claw_id, unit, period, amount FROM budgets
         WHERE org_id = ?1 AND (?2 IS NULL OR scope = 'org' OR claw_id IS NULL OR claw_id = ?2)
         ORDER BY id",
    )?;
    let rows = stmt.query_map(params![org_id, claw_id], |r| {
        let text = |i: usize| -> rusqlite::Result<String> { r.get(i) };
        let parse = |i: usize, e: String| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
        };
        Ok(Budget {
            id: r.get(0)?,
            scope: text(1)?.parse().map_err(|e| parse(1, e))?,
            claw_id: r.get(2)?,
            unit: text(3)?.parse().map_err(|e| parse(3, e))?,
            period: text(4)?.parse().map_err(|e| parse(4, e))?,
            amount: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The first budget or limit the call would break, if any.
pub(super) fn check(conn: &Connection, call: &Admission) -> Result<Option<Refusal>, DbError> {
    for budget in budgets(conn, &call.org_id, Some(&call.claw_id))? {
        let need = match budget.unit {
            BudgetUnit::Tokens => call.tokens,
            BudgetUnit::Micros => match call.micros {
                Some(m) => m,
                None => {
                    return Ok(Some(Refusal::Budget(format!(
                        "{budget} cannot be checked: the assigned model has no price; add it to prices.json"
                    ))));
                }
            },
        };
        let (measure, reserved) = match (budget.unit, budget.scope) {
            // Organisation and claw budgets read the daily totals
            // (migration 0008): periods start at midnight, so whole days sum
            // exactly. A conversation's records are few and indexed.
            (BudgetUnit::Tokens, BudgetScope::Org | BudgetScope::Claw) => ("tokens", "tokens"),
            (BudgetUnit::Micros, BudgetScope::Org | BudgetScope::Claw) => {
                ("micros", "COALESCE(micros, 0)")
            }
            (BudgetUnit::Tokens, BudgetScope::Conversation) => {
                ("input_tokens + output_tokens", "tokens")
            }
            (BudgetUnit::Micros, BudgetScope::Conversation) => {
                ("COALESCE(cost_micros, 0)", "COALESCE(micros, 0)")
            }
        };
        let (ledger, since) = match budget.scope {
            BudgetScope::Org | BudgetScope::Claw => ("usage_days", "day >= ?2 / 86400000"),
            BudgetScope::Conversation => ("usage_records", "at_ms >= ?2"),
        };
        let (scope, claw, conversation) = match budget.scope {
            // Every form names ?3 and ?4, so one parameter list fits all.
            BudgetScope::Org => ("?3 IS NULL AND ?4 IS NULL", None, None),
            BudgetScope::Claw => (
                "claw_id = ?3 AND ?4 IS NULL",
                Some(call.claw_id.as_str()),
                None,
            ),
            BudgetScope::Conversation => (
                "conversation_id = ?4 AND (?3 IS NULL OR claw_id = ?3)",
                budget.claw_id.as_deref(),
                Some(call.conversation_id.as_str()),
            ),
        };
        let start = period_start(budget.period, call.now_ms);
        let used: i64 = conn
            .prepare_cached(&format!(
                "SELECT (SELECT CAST(TOTAL({measure}) AS INTEGER) FROM {ledger}
                         WHERE org_id = ?1 AND {since} AND {scope})
                      + (SELECT CAST(TOTAL({reserved}) AS INTEGER) FROM reservations
                         WHERE org_id = ?1 AND {scope})"
            ))?
            .query_row(params![call.org_id, start, claw, conversation], |r| {
                r.get(0)
            })?;
        if used.saturating_add(need) > budget.amount {
            let shown = |v: i64| match budget.unit {
                BudgetUnit::Tokens => format!("{v} tokens"),
                BudgetUnit::Micros => format!("${:.6}", v as f64 / 1e6),
            };
            return Ok(Some(Refusal::Budget(format!(
                "{budget}: {} used or reserved, this call may need up to {}",
                shown(used),
                shown(need)
            ))));
        }
    }
    let mut stmt = conn.prepare_cached(
        "SELECT scope, target_id, rpm, tpm FROM rate_limits WHERE target_id IN (?1, ?2)",
    )?;
    let limits = stmt
        .query_map(params![call.claw_id, call.key_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let since = call.now_ms - MINUTE_MS;
    for (scope, target, rpm, tpm) in limits {
        let column = if scope == "key" { "key_id" } else { "claw_id" };
        // The minute is counted in whole seconds of the per-second totals
        // (migration 0008): calls of the second the minute starts in count
        // whole, so the window is at most a second longer, never shorter.
        let (calls, tokens, oldest): (i64, i64, Option<i64>) = conn
            .prepare_cached(&format!(
                "SELECT COALESCE(SUM(c), 0), COALESCE(SUM(t), 0), MIN(at) FROM (
                     SELECT calls AS c, tokens AS t, first_at_ms AS at FROM usage_seconds
                     WHERE target_id = ?1 AND second >= ?2 / 1000
                     UNION ALL
                     SELECT 1, tokens, at_ms FROM reservations WHERE {column} = ?1 AND at_ms >= ?2)"
            ))?
            .query_row(params![target, since], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let over_rpm = rpm.is_some_and(|rpm| calls >= rpm);
        let over_tpm = tpm.is_some_and(|tpm| tokens.saturating_add(call.tokens) > tpm && calls > 0);
        if over_rpm || over_tpm {
            let retry = oldest
                .map_or(MINUTE_MS, |at| at + MINUTE_MS - call.now_ms)
                .max(1);
            return Ok(Some(Refusal::RateLimited(retry)));
        }
    }
    Ok(None)
}
