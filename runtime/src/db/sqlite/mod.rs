//! The embedded SQLite backend.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rusqlite::{Connection, OptionalExtension, params};

use crate::cage::LimitOverrides;
use crate::metering::budgets::{Admission, Budget, RateLimit, Refusal};

mod admission;
mod durability;
mod ledger;
mod rows;

use rows::{
    CLAW_COLUMNS, KEY_COLUMNS, USAGE_COLUMNS, add_to_totals, claw_row, insert_audit, insert_usage,
    key_row, usage_row, usage_where,
};

use super::{
    AuditRecord, CallTarget, ClawRow, Db, DbError, KeyRow, MetricSample, OrgRow, Pending, Rewrap,
    TokenRow, UsageFilter, UsageGroup, UsageRecord, UsageTotals,
};
use ledger::{CallRecords, Writer};

/// File name of the database in the data directory.
pub const DB_FILE: &str = "clawrun.db";

/// Migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_custody.sql"),
    include_str!("../migrations/0003_cost.sql"),
    include_str!("../migrations/0004_budgets.sql"),
    include_str!("../migrations/0005_claw_limits.sql"),
    include_str!("../migrations/0006_compatible.sql"),
    include_str!("../migrations/0007_tenancy.sql"),
    include_str!("../migrations/0008_usage_totals.sql"),
    include_str!("../migrations/0009_claw_components.sql"),
    include_str!("../migrations/0010_reservation_indexes.sql"),
];

/// SQLite in the data directory, in WAL mode.
///
/// One connection per process for writes, behind a mutex: every statement
/// is short, and SQLite serialises writers anyway. The writes of
/// `llm-call`s go through one writer thread on that connection, batched
/// (see [`ledger`]). Other processes sharing the data directory (a
/// `clawrun serve` and the CLI) see each committed write on their next
/// read, which is what makes revocation immediate everywhere.
pub struct SqliteDb {
    conn: Arc<Mutex<Connection>>,
    /// A second connection for the reads every `llm-call` makes (its
    /// assignment and key state, the organisation's keys): in WAL mode a
    /// reader does not wait for a writer. Absent for an in-memory
    /// database, which one connection owns.
    reader: Option<Mutex<Connection>>,
    /// The database file; `None` in memory.
    path: Option<PathBuf>,
    /// The writer thread and, for a file, the sync thread behind it; both
    /// start on first use.
    writer: OnceLock<Arc<Writer>>,
}

impl SqliteDb {
    /// Opens (creating if needed) the database in `data_dir` and applies
    /// pending migrations.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened, or was written by a newer clawrun.
    pub fn open(data_dir: &Path) -> Result<Self, DbError> {
        let path = data_dir.join(DB_FILE);
        // Create the file owner-only before SQLite does, so that it, and the
        // WAL and shared-memory files SQLite gives the same mode, are 0600.
        #[cfg(unix)]
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path);
        }
        let conn = Connection::open(&path)?;
        let mut db = Self::configure(conn)?;
        let reader = Connection::open(&path)?;
        reader.busy_timeout(BUSY_TIMEOUT)?;
        reader.execute_batch("PRAGMA foreign_keys = ON;")?;
        db.reader = Some(Mutex::new(reader));
        db.path = Some(path);
        Ok(db)
    }

    /// An in-memory database, for tests and benchmarks.
    ///
    /// # Errors
    ///
    /// As [`SqliteDb::open`].
    pub fn in_memory() -> Result<Self, DbError> {
        Self::configure(Connection::open_in_memory()?)
    }

    fn configure(mut conn: Connection) -> Result<Self, DbError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // FULL synchronous: an administrative write (a key, an assignment,
        // a revocation) is on disk when it returns; the ledger writer
        // commits NORMAL and syncs behind (see `ledger`). secure_delete: a
        // rotated key's old ciphertext is zeroed.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA secure_delete = ON;",
        )?;
        // SQLite reuses a checkpointed WAL from its start without shrinking
        // the file, so its length would stay past the sync thread's
        // checkpoint threshold for good and every sync would checkpoint.
        // With this limit the first commit after the restart truncates it,
        // and the length again says how much the WAL holds.
        conn.pragma_update(None, "journal_size_limit", durability::CHECKPOINT_BYTES)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(DbError::TooNew {
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
            tx.commit()?;
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            reader: None,
            path: None,
            writer: OnceLock::new(),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        lock(&self.conn)
    }

    /// The connection for the per-call reads.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.reader.as_ref().map_or_else(|| self.conn(), lock)
    }

    /// The writer thread, started on first use.
    fn writer(&self) -> &Arc<Writer> {
        self.writer
            .get_or_init(|| Writer::start(&self.conn, self.path.as_deref()))
    }
}

const TOKEN_COLUMNS: &str = "id, org_id, name, secret_hash, created_at_ms, revoked_at_ms";

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        org_id: r.get(1)?,
        name: r.get(2)?,
        secret_hash: r.get(3)?,
        created_at_ms: r.get(4)?,
        revoked_at_ms: r.get(5)?,
    })
}

fn org_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OrgRow> {
    Ok(OrgRow {
        id: r.get(0)?,
        name: r.get(1)?,
        wrapped_data_key: r.get(2)?,
        created_at_ms: r.get(3)?,
    })
}

/// How long a statement waits for another connection's lock.
pub(super) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Marks the calling thread (the writer or the sync thread) as batch work
/// for the scheduler (Linux `SCHED_BATCH`, its niceness kept): waking it
/// never preempts the thread that woke it. Without this, a runtime worker
/// that queues a call's records hands its core to the writer, and the call
/// returns only after the writer's whole commit (about 90 µs of a 180 µs
/// overhead at 1,000 calls/s on 2 cores; BENCHMARKS.md). Returns whether
/// the system allowed it; the ledger works the same either way.
fn background_thread() -> bool {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{
            NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityOsValue,
            ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
        };
        // The library sets a niceness with the policy; put back the
        // thread's own (a host started with `nice` stays niced).
        let nice = rustix::process::getpriority_process(None);
        let set = set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Os(ThreadPriorityOsValue::default()),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
        );
        if let Ok(nice) = nice
            && rustix::process::getpriority_process(None).ok() != Some(nice)
            && let Err(e) = rustix::process::setpriority_process(None, nice)
        {
            tracing::debug!(error = %e, "cannot restore a ledger thread's niceness");
        }
        match set {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = ?e, "cannot mark a ledger thread as batch work");
                false
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    false
}

pub(super) fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic mid-statement leaves SQLite itself consistent (the
    // statement's transaction rolls back), so the connection stays usable.
    conn.lock().unwrap_or_else(|e| e.into_inner())
}

fn conflict(e: rusqlite::Error, what: impl FnOnce() -> String) -> DbError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            DbError::Conflict(what())
        }
        other => DbError::Sqlite(other),
    }
}

/// Copies the WAL into the database file and truncates it, so that bytes a
/// change overwrote (with `secure_delete`, zeroed) are gone from the files,
/// not only superseded. Waits up to the busy timeout for readers in other
/// processes; if they still hold it back, the next checkpoint finishes.
fn checkpoint(conn: &Connection) {
    let result: rusqlite::Result<i64> =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0));
    match result {
        Ok(0) => {}
        Ok(_) => tracing::warn!(
            "WAL checkpoint held back by another process's reader; old ciphertext stays in the WAL until the next one"
        ),
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
    }
}

impl Db for SqliteDb {
    fn org_create(&self, org: &OrgRow) -> Result<(), DbError> {
        self.conn()
            .execute(
                "INSERT INTO orgs (id, name, wrapped_data_key, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![org.id, org.name, org.wrapped_data_key, org.created_at_ms],
            )
            .map_err(|e| conflict(e, || format!("an organisation named `{}`", org.name)))?;
        Ok(())
    }

    fn org_by_name(&self, name: &str) -> Result<Option<OrgRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, wrapped_data_key, created_at_ms FROM orgs WHERE name = ?1",
                [name],
                org_row,
            )
            .optional()?)
    }

    fn org_by_id(&self, id: &str) -> Result<Option<OrgRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT id, name, wrapped_data_key, created_at_ms FROM orgs WHERE id = ?1",
                [id],
                org_row,
            )
            .optional()?)
    }

    fn token_insert(&self, token: &TokenRow, audit: &AuditRecord) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO api_tokens (id, org_id, name, secret_hash, created_at_ms, revoked_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, NULL)",
            params![
                token.id,
                token.org_id,
                token.name,
                token.secret_hash,
                token.created_at_ms
            ],
        )?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    fn token_by_id(&self, id: &str) -> Result<Option<TokenRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"),
                [id],
                token_row,
            )
            .optional()?)
    }

    fn tokens(&self, org_id: &str) -> Result<Vec<TokenRow>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE org_id = ?1 ORDER BY created_at_ms, id"
        ))?;
        let rows = stmt.query_map([org_id], token_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn token_revoke(
        &self,
        org_id: &str,
        id: &str,
        at_ms: i64,
        audit: &AuditRecord,
    ) -> Result<bool, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE api_tokens SET revoked_at_ms = ?3
             WHERE id = ?1 AND org_id = ?2 AND revoked_at_ms IS NULL",
            params![id, org_id, at_ms],
        )?;
        if changed == 1 {
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    fn claw_delete(&self, org_id: &str, claw_id: &str) -> Result<bool, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM budgets WHERE org_id = ?1 AND claw_id = ?2",
            [org_id, claw_id],
        )?;
        tx.execute(
            "DELETE FROM rate_limits WHERE org_id = ?1 AND scope = 'claw' AND target_id = ?2",
            [org_id, claw_id],
        )?;
        tx.execute(
            "DELETE FROM claw_limits
             WHERE claw_id IN (SELECT id FROM claws WHERE org_id = ?1 AND id = ?2)",
            [org_id, claw_id],
        )?;
        let changed = tx.execute(
            "DELETE FROM claws WHERE org_id = ?1 AND id = ?2",
            [org_id, claw_id],
        )?;
        tx.commit()?;
        Ok(changed == 1)
    }

    fn key_insert(&self, k: &KeyRow, audit: &AuditRecord) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            &format!("INSERT INTO provider_keys ({KEY_COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)"),
            params![
                k.id, k.org_id, k.name, k.provider, k.base_url, k.ciphertext, k.version,
                k.state.as_str(), k.fingerprint, k.hint, k.created_at_ms, k.rotated_at_ms,
                k.revoked_at_ms, k.scan_len, k.scan_hash, k.api_path, k.auth_header,
                k.auth_scheme
            ],
        )
        .map_err(|e| conflict(e, || format!("a key named `{}`", k.name)))?;
        insert_audit(&tx, audit)?;
        tx.commit()?;
        Ok(())
    }

    fn key_by_name(&self, org_id: &str, name: &str) -> Result<Option<KeyRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {KEY_COLUMNS} FROM provider_keys WHERE org_id = ?1 AND name = ?2"),
                [org_id, name],
                |r| key_row(r, 0),
            )
            .optional()?)
    }

    fn keys(&self, org_id: &str) -> Result<Vec<KeyRow>, DbError> {
        let conn = self.reader();
        // Cached: the leak guard reads them on every call.
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM provider_keys WHERE org_id = ?1 ORDER BY name"
        ))?;
        let rows = stmt.query_map([org_id], |r| key_row(r, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn key_rotate(&self, k: &KeyRow, audit: &AuditRecord) -> Result<bool, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // Only an active key at the version read rotates: a concurrent
        // revoke or rotation wins, and this one changes nothing.
        let changed = tx.execute(
            "UPDATE provider_keys SET ciphertext = ?2, version = ?3, fingerprint = ?4, hint = ?5,
             rotated_at_ms = ?6, scan_len = ?7, scan_hash = ?8
             WHERE id = ?1 AND state = 'active' AND version = ?3 - 1",
            params![
                k.id,
                k.ciphertext,
                k.version,
                k.fingerprint,
                k.hint,
                k.rotated_at_ms,
                k.scan_len,
                k.scan_hash
            ],
        )?;
        if changed == 1 {
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        checkpoint(&conn);
        Ok(changed == 1)
    }

    fn key_revoke(&self, key_id: &str, at_ms: i64, audit: &AuditRecord) -> Result<bool, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE provider_keys SET state = 'revoked', revoked_at_ms = ?2
             WHERE id = ?1 AND state = 'active'",
            params![key_id, at_ms],
        )?;
        if changed == 1 {
            insert_audit(&tx, audit)?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    fn claw_deploy(&self, c: &ClawRow, component: &[u8]) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        // A redeploy keeps the claw's id, its assignment and its limits.
        let id: String = tx.query_row(
            "INSERT INTO claws (id, org_id, name, size, digest, created_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (org_id, name) DO UPDATE SET
                size = excluded.size, digest = excluded.digest,
                updated_at_ms = excluded.updated_at_ms
             RETURNING id",
            params![
                c.id,
                c.org_id,
                c.name,
                component.len() as i64,
                c.digest,
                c.updated_at_ms
            ],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO claw_components (claw_id, component) VALUES (?1, ?2)
             ON CONFLICT (claw_id) DO UPDATE SET component = excluded.component",
            params![id, component],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn claw_by_name(&self, org_id: &str, name: &str) -> Result<Option<ClawRow>, DbError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {CLAW_COLUMNS} WHERE c.org_id = ?1 AND c.name = ?2"),
                [org_id, name],
                claw_row,
            )
            .optional()?)
    }

    fn claw_component(&self, claw_id: &str) -> Result<Vec<u8>, DbError> {
        Ok(self.conn().query_row(
            "SELECT component FROM claw_components WHERE claw_id = ?1",
            [claw_id],
            |r| r.get(0),
        )?)
    }

    fn claws(&self, org_id: &str) -> Result<Vec<ClawRow>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {CLAW_COLUMNS} WHERE c.org_id = ?1 ORDER BY c.name"
        ))?;
        let rows = stmt.query_map([org_id], claw_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn claw_assign(
        &self,
        claw_id: &str,
        key_id: &str,
        model: &str,
        at_ms: i64,
    ) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE claws SET key_id = ?2, model = ?3, updated_at_ms = ?4 WHERE id = ?1",
            params![claw_id, key_id, model, at_ms],
        )?;
        Ok(())
    }

    fn claw_limits(&self, claw_id: &str) -> Result<LimitOverrides, DbError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT deadline_ms, fuel, memory_mib, table_elements, instances, llm_calls,
                        max_value_kib
                 FROM claw_limits WHERE claw_id = ?1",
                [claw_id],
                |r| {
                    // Read as i64 (SQLite's integer), shown as u64; the
                    // CHECKs keep them positive.
                    let get = |i: usize| -> rusqlite::Result<Option<u64>> {
                        Ok(r.get::<_, Option<i64>>(i)?.map(|v| v.max(1) as u64))
                    };
                    Ok(LimitOverrides {
                        deadline_ms: get(0)?,
                        fuel: get(1)?,
                        memory_mib: get(2)?,
                        table_elements: get(3)?,
                        instances: get(4)?,
                        llm_calls: get(5)?,
                        max_value_kib: get(6)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    fn claw_limits_set(&self, claw_id: &str, limits: &LimitOverrides) -> Result<(), DbError> {
        let v = |x: Option<u64>| x.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let conn = self.conn();
        if limits.is_empty() {
            conn.execute("DELETE FROM claw_limits WHERE claw_id = ?1", [claw_id])?;
            return Ok(());
        }
        conn.execute(
            "INSERT OR REPLACE INTO claw_limits (claw_id, deadline_ms, fuel, memory_mib,
                 table_elements, instances, llm_calls, max_value_kib)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                claw_id,
                v(limits.deadline_ms),
                v(limits.fuel),
                v(limits.memory_mib),
                v(limits.table_elements),
                v(limits.instances),
                v(limits.llm_calls),
                v(limits.max_value_kib)
            ],
        )?;
        Ok(())
    }

    fn org_concurrent_runs(&self, org_id: &str) -> Result<Option<u32>, DbError> {
        let limit: Option<i64> = self.conn().query_row(
            "SELECT concurrent_runs FROM orgs WHERE id = ?1",
            [org_id],
            |r| r.get(0),
        )?;
        Ok(limit.map(|l| u32::try_from(l).unwrap_or(u32::MAX)))
    }

    fn org_concurrent_runs_set(&self, org_id: &str, limit: Option<u32>) -> Result<(), DbError> {
        self.conn().execute(
            "UPDATE orgs SET concurrent_runs = ?2 WHERE id = ?1",
            params![org_id, limit],
        )?;
        Ok(())
    }

    fn call_target(&self, claw_id: &str) -> Result<Option<CallTarget>, DbError> {
        let key_columns = KEY_COLUMNS
            .split(", ")
            .map(|c| format!("k.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        // A cached statement: read on every call, the join's parsing and
        // planning cost more than the lookup itself.
        Ok(self
            .reader()
            .prepare_cached(&format!(
                "SELECT o.wrapped_data_key, c.model, {key_columns}
                 FROM claws c
                 JOIN provider_keys k ON k.id = c.key_id
                 JOIN orgs o ON o.id = c.org_id
                 WHERE c.id = ?1 AND c.model IS NOT NULL"
            ))?
            .query_row([claw_id], |r| {
                Ok(CallTarget {
                    wrapped_data_key: r.get(0)?,
                    model: r.get(1)?,
                    key: key_row(r, 2)?,
                })
            })
            .optional()?)
    }

    fn record_call(
        &self,
        usage: UsageRecord,
        audit: AuditRecord,
        reservation: Option<i64>,
        fence: Option<std::fs::File>,
    ) -> Pending<()> {
        self.writer().record(CallRecords {
            usage,
            audit,
            reservation,
            fence,
        })
    }

    fn record_call_blocking(
        &self,
        usage: UsageRecord,
        audit: AuditRecord,
        reservation: Option<i64>,
    ) -> Result<(), DbError> {
        self.writer().record_blocking(CallRecords {
            usage,
            audit,
            reservation,
            fence: None,
        })
    }

    fn sync_ledger(&self) -> Pending<()> {
        self.writer().sync()
    }

    fn lost_records(&self, run_id: &str) -> bool {
        self.writer.get().is_some_and(|w| w.lost_records(run_id))
    }

    fn admit(&self, call: Admission) -> Pending<Result<Option<i64>, Refusal>> {
        // Cheap read first, on the reader: most organisations set no budget
        // or limit, and their calls need neither a reservation nor the
        // writer.
        let applies = self
            .reader()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM budgets WHERE org_id = ?1)
                     OR EXISTS (SELECT 1 FROM rate_limits WHERE target_id IN (?2, ?3))",
            )
            .and_then(|mut s| {
                s.query_row(params![call.org_id, call.claw_id, call.key_id], |r| {
                    r.get::<_, bool>(0)
                })
            });
        match applies {
            Ok(false) => Box::pin(std::future::ready(Ok(Ok(None)))),
            Ok(true) => self.writer().admit(call),
            Err(e) => Box::pin(std::future::ready(Err(e.into()))),
        }
    }

    fn budget_add(&self, org_id: &str, b: &Budget, at_ms: i64) -> Result<i64, DbError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO budgets (org_id, scope, claw_id, unit, period, amount, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                org_id,
                b.scope.as_str(),
                b.claw_id,
                b.unit.as_str(),
                b.period.as_str(),
                b.amount,
                at_ms
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    fn budgets(&self, org_id: &str) -> Result<Vec<Budget>, DbError> {
        admission::budgets(&self.conn(), org_id, None)
    }

    fn budget_remove(&self, org_id: &str, id: i64) -> Result<bool, DbError> {
        let changed = self.conn().execute(
            "DELETE FROM budgets WHERE org_id = ?1 AND id = ?2",
            params![org_id, id],
        )?;
        Ok(changed == 1)
    }

    fn rate_limit_set(&self, org_id: &str, l: &RateLimit) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO rate_limits (org_id, scope, target_id, rpm, tpm) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (scope, target_id) DO UPDATE SET
                rpm = COALESCE(excluded.rpm, rpm), tpm = COALESCE(excluded.tpm, tpm)",
            params![org_id, l.scope, l.target_id, l.rpm, l.tpm],
        )?;
        Ok(())
    }

    fn rate_limit_remove(&self, org_id: &str, target_id: &str) -> Result<bool, DbError> {
        let changed = self.conn().execute(
            "DELETE FROM rate_limits WHERE org_id = ?1 AND target_id = ?2",
            params![org_id, target_id],
        )?;
        Ok(changed == 1)
    }

    fn metric_samples(&self) -> Result<Vec<MetricSample>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT u.provider, u.model_requested, COALESCE(c.name, u.claw_id), u.input_tokens,
                    u.output_tokens, u.latency_ms, u.outcome, u.source
             FROM usage_records u LEFT JOIN claws c ON c.id = u.claw_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(MetricSample {
                provider: r.get(0)?,
                model: r.get(1)?,
                claw: r.get(2)?,
                input_tokens: r.get(3)?,
                output_tokens: r.get(4)?,
                latency_ms: r.get(5)?,
                outcome: r.get(6)?,
                source: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn rate_limits(&self, org_id: &str) -> Result<Vec<RateLimit>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT scope, target_id, rpm, tpm FROM rate_limits WHERE org_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([org_id], |r| {
            Ok(RateLimit {
                scope: r.get(0)?,
                target_id: r.get(1)?,
                rpm: r.get(2)?,
                tpm: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn audit_append(&self, record: &AuditRecord) -> Result<(), DbError> {
        insert_audit(&self.conn(), record)
    }

    fn audit_records(&self, org_id: Option<&str>) -> Result<Vec<AuditRecord>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT at_ms, org_id, actor, action, key_id, key_version, claw_id, outcome, subject
             FROM audit_records WHERE ?1 IS NULL OR org_id = ?1 OR org_id IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([org_id], |r| {
            Ok(AuditRecord {
                at_ms: r.get(0)?,
                org_id: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                key_id: r.get(4)?,
                key_version: r.get(5)?,
                claw_id: r.get(6)?,
                outcome: r.get(7)?,
                subject: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn orgs(&self) -> Result<Vec<OrgRow>, DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT id, name, wrapped_data_key, created_at_ms FROM orgs ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(OrgRow {
                id: r.get(0)?,
                name: r.get(1)?,
                wrapped_data_key: r.get(2)?,
                created_at_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn rewrap_data_keys(&self, wrapped: &[Rewrap], audit: &AuditRecord) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for w in wrapped {
            let changed = tx.execute(
                "UPDATE orgs SET wrapped_data_key = ?3 WHERE id = ?1 AND wrapped_data_key = ?2",
                params![w.org_id, w.old, w.new],
            )?;
            if changed != 1 {
                // Dropping the transaction rolls every change back.
                return Err(DbError::Conflict(
                    "a master key rotation by another process".into(),
                ));
            }
        }
        insert_audit(&tx, audit)?;
        tx.commit()?;
        checkpoint(&conn);
        Ok(())
    }

    fn revoked_keys(&self) -> Result<Vec<String>, DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT id FROM provider_keys WHERE state = 'revoked'")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn data_version(&self) -> Result<i64, DbError> {
        Ok(self
            .conn()
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }

    fn usage_records(&self, filter: &UsageFilter) -> Result<Vec<UsageRecord>, DbError> {
        let (clause, args) = usage_where(filter);
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {USAGE_COLUMNS} FROM usage_records u WHERE {clause} ORDER BY u.id"
        ))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), usage_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn usage_totals(
        &self,
        filter: &UsageFilter,
        group: UsageGroup,
    ) -> Result<Vec<UsageTotals>, DbError> {
        let label = match group {
            UsageGroup::Claw => "COALESCE(c.name, u.claw_id)",
            UsageGroup::Conversation => "u.conversation_id",
            UsageGroup::Tool => {
                "COALESCE(u.tool_name || '/' || u.tool_invocation_id, '(outside tools)')"
            }
            UsageGroup::Key => "COALESCE(k.name, u.key_id) || ' v' || u.key_version",
            UsageGroup::Model => "COALESCE(u.model_returned, u.model_requested)",
            UsageGroup::Hour => "strftime('%Y-%m-%dT%H:00Z', u.at_ms / 1000, 'unixepoch')",
            UsageGroup::Day => "strftime('%Y-%m-%d', u.at_ms / 1000, 'unixepoch')",
        };
        let (clause, args) = usage_where(filter);
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {label} AS grp, COUNT(*), SUM(u.input_tokens), SUM(u.output_tokens),
                    SUM(u.cache_read_tokens), SUM(u.cache_write_tokens), SUM(u.reasoning_tokens),
                    CAST(SUM(u.cost_micros * 1.0) AS INTEGER)
             FROM usage_records u
             LEFT JOIN claws c ON c.id = u.claw_id
             LEFT JOIN provider_keys k ON k.id = u.key_id
             WHERE {clause}
             GROUP BY grp ORDER BY MIN(u.id)"
        ))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(UsageTotals {
                group: r.get(0)?,
                calls: r.get(1)?,
                input_tokens: r.get(2)?,
                output_tokens: r.get(3)?,
                cache_read_tokens: r.get(4)?,
                cache_write_tokens: r.get(5)?,
                reasoning_tokens: r.get(6)?,
                cost_micros: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests;
