//! The writer thread: every write an `llm-call` makes (the admission that
//! reserves its worst case, then the usage and audit records that settle
//! it) goes through one thread and one connection, in batches of one
//! IMMEDIATE transaction each, committed without waiting for the disk. The
//! sync thread ([`super::durability`]) puts each commit on disk behind it.
//!
//! An admission waits for its batch to commit: it is decided inside the
//! transaction, which holds SQLite's write lock, so no writer of any
//! process decides in between, and the reservation is visible to every
//! process before the call is sent. A call's records are queued as it
//! returns and not waited for; its key's revocation fence travels with
//! them and is released only once they are committed, so a revocation
//! still returns only after the records of the calls it waited for exist.
//! Queue order is decision order: a call's next admission sees its last
//! call's actual usage, not its worst case.
//!
//! One writer per process means no two connections of this process ever
//! contend for the write lock (whose busy handler sleeps for
//! milliseconds), and a batch takes the lock once for every operation
//! queued while the previous batch was committing.
//!
//! When the writer is idle (nothing queued, nothing being applied) and the
//! connection free, an admission is decided on the caller's thread
//! instead, in the same kind of transaction: the decision is the same, and
//! the call skips two thread hand-offs. Nothing queued means every record
//! sent before it is committed, so queue order still holds.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError, Weak, mpsc};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::durability::Durability;
use super::{BUSY_TIMEOUT, add_to_totals, admission, insert_audit, insert_usage, lock};
use crate::db::{AuditRecord, DbError, Pending, UsageRecord};
use crate::metering::budgets::{Admission, Refusal};

/// Most operations committed in one transaction.
const MAX_BATCH: usize = 512;

/// Tries of a batch while another process holds the write lock, each
/// waiting up to [`BUSY_TIMEOUT`]; then its operations fail.
const BUSY_ATTEMPTS: usize = 3;

fn is_busy(e: &DbError) -> bool {
    matches!(e, DbError::Sqlite(e) if matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    ))
}

/// The handle of a process's writer thread: its queue, the runs that lost
/// a record, and the sync thread behind it.
pub(super) struct Writer {
    /// Taken on drop: the thread then commits what is queued and ends.
    queue: Option<mpsc::Sender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Operations sent and not yet answered: zero when the writer is idle.
    outstanding: Arc<AtomicUsize>,
    conn: Weak<Mutex<Connection>>,
    failed_runs: Arc<Mutex<HashSet<String>>>,
    durability: Option<Arc<Durability>>,
}

impl Writer {
    /// Starts the writer on `conn` and, for the database file at `path`,
    /// the sync thread.
    pub(super) fn start(conn: &Arc<Mutex<Connection>>, path: Option<&Path>) -> Arc<Self> {
        let (queue, rx) = mpsc::channel::<Op>();
        let durability = path.map(Durability::start);
        if durability.is_some() {
            // The sync thread checkpoints instead, off the writer's path.
            if let Err(e) = lock(conn).pragma_update(None, "wal_autocheckpoint", 0) {
                tracing::warn!(error = %e, "cannot hand checkpoints to the sync thread");
            }
        }
        let failed_runs = Arc::new(Mutex::new(HashSet::new()));
        let outstanding = Arc::new(AtomicUsize::new(0));
        let thread = Thread {
            conn: conn.clone(),
            queue: rx,
            outstanding: outstanding.clone(),
            failed_runs: failed_runs.clone(),
            durability: durability.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("clawrun-writer".into())
            .spawn(move || thread.run());
        if let Err(e) = &spawned {
            tracing::error!(error = %e, "cannot start the ledger writer");
        }
        Arc::new(Self {
            queue: Some(queue),
            thread: spawned.ok(),
            outstanding,
            conn: Arc::downgrade(conn),
            failed_runs,
            durability,
        })
    }

    /// Sends `op` to the writer thread.
    fn send(&self, op: Op) -> Result<(), DbError> {
        // Counted before it is sent: an admission that finds the count at
        // zero knows nothing is queued ahead of it.
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        let Some(queue) = &self.queue else {
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
            return Err(writer_stopped());
        };
        queue.send(op).map_err(|_| {
            self.outstanding.fetch_sub(1, Ordering::SeqCst);
            writer_stopped()
        })
    }

    /// Decides `call` and reserves its worst case if admitted; resolves
    /// once that is committed: here if the writer is idle, else in its
    /// next transaction.
    pub(super) fn admit(&self, call: Admission) -> Pending<Result<Option<i64>, Refusal>> {
        if let Some(decided) = self.admit_here(&call) {
            return Box::pin(std::future::ready(decided));
        }
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Op::Admit(Box::new(call), Reply::Async(tx)));
        Box::pin(async move {
            sent?;
            rx.await
                .map_err(|_| writer_stopped())?
                .map_err(DbError::Ledger)
        })
    }

    /// Decides `call` on this thread if the writer is idle and the
    /// connection free, without waiting for SQLite's write lock either;
    /// `None` sends it to the writer instead.
    fn admit_here(
        &self,
        call: &Admission,
    ) -> Option<Result<Result<Option<i64>, Refusal>, DbError>> {
        if self.outstanding.load(Ordering::SeqCst) != 0 {
            return None;
        }
        let conn = self.conn.upgrade()?;
        let mut conn = match conn.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        // Something may have been queued before the lock was taken.
        if self.outstanding.load(Ordering::SeqCst) != 0 {
            return None;
        }
        // Another process holding the write lock would block this thread
        // (a runtime worker): the writer thread waits for it instead.
        if let Err(e) = conn.busy_timeout(Duration::ZERO) {
            return Some(Err(e.into()));
        }
        let decided = in_transaction(&mut conn, |tx| {
            admission::release_stale(tx, call.now_ms)?;
            admission::reserve(tx, call)
        });
        if let Err(e) = conn.busy_timeout(BUSY_TIMEOUT) {
            return Some(Err(e.into()));
        }
        match decided {
            Err(DbError::Sqlite(e))
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
            {
                None
            }
            decided => Some(decided),
        }
    }

    /// Queues a call's records; the future resolves once they are
    /// committed, and may be dropped unawaited.
    pub(super) fn record(&self, records: CallRecords) -> Pending<()> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Op::Record(Box::new(records), Reply::Async(tx)));
        Box::pin(async move {
            sent?;
            rx.await
                .map_err(|_| writer_stopped())?
                .map_err(DbError::Ledger)
        })
    }

    /// Queues a call's records and blocks until they are committed.
    pub(super) fn record_blocking(&self, records: CallRecords) -> Result<(), DbError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Op::Record(Box::new(records), Reply::Blocking(tx)))?;
        rx.recv()
            .map_err(|_| writer_stopped())?
            .map_err(DbError::Ledger)
    }

    /// Resolves once everything queued before is committed and on disk.
    pub(super) fn sync(&self) -> Pending<()> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Op::Mark(Reply::Async(tx)));
        let durability = self.durability.clone();
        Box::pin(async move {
            sent?;
            let seq = rx
                .await
                .map_err(|_| writer_stopped())?
                .map_err(DbError::Ledger)?;
            match durability {
                Some(d) => d.wait(seq).await,
                None => Ok(()),
            }
        })
    }

    /// Whether the run `run_id` lost a record to a failed write; answers
    /// each run's failure once.
    pub(super) fn lost_records(&self, run_id: &str) -> bool {
        self.failed_runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run_id)
    }
}

impl Drop for Writer {
    /// Commits everything still queued and puts it on disk before the
    /// database goes: records queued by calls that returned (or were cut by
    /// Ctrl-C) are not lost with the process.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the ledger writer panicked");
        }
        if let Some(d) = &self.durability {
            d.stop();
        }
    }
}

fn writer_stopped() -> DbError {
    DbError::Ledger("the ledger writer has stopped".into())
}

/// Where an operation's result goes: an async caller, or a thread that
/// blocks (a call's record written from a destructor).
enum Reply<T> {
    Async(oneshot::Sender<Result<T, String>>),
    Blocking(mpsc::SyncSender<Result<T, String>>),
}

impl<T> Reply<T> {
    fn send(self, result: Result<T, String>) {
        // A caller that did not wait for the answer needs none; the write
        // stands (or its failure is logged).
        let _ = match self {
            Reply::Async(tx) => tx.send(result).map_err(drop),
            Reply::Blocking(tx) => tx.send(result).map_err(drop),
        };
    }
}

/// One call's usage and audit records, the reservation they settle, and
/// the revocation fence held until they are committed.
pub(super) struct CallRecords {
    pub(super) usage: UsageRecord,
    pub(super) audit: AuditRecord,
    pub(super) reservation: Option<i64>,
    pub(super) fence: Option<File>,
}

/// What the writer is asked to do.
enum Op {
    /// Decide a call's admission and write its reservation.
    Admit(Box<Admission>, Reply<Result<Option<i64>, Refusal>>),
    /// Write a call's records and release its reservation.
    Record(Box<CallRecords>, Reply<()>),
    /// Answer with the number of the latest commit, once every operation
    /// queued before this one is committed.
    Mark(Reply<u64>),
}

/// What applying one operation decided: an admission's answer.
type Decision = Option<Result<Option<i64>, Refusal>>;

/// Runs `f` in one IMMEDIATE transaction committed without waiting for
/// the disk.
fn in_transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, DbError>,
) -> Result<T, DbError> {
    // Durability comes from the sync thread; the connection is shared with
    // the administrative writes, which commit FULL.
    conn.prepare_cached("PRAGMA synchronous = NORMAL")?
        .execute([])?;
    let result = (|| {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let result = f(&tx)?;
        tx.commit()?;
        Ok(result)
    })();
    conn.prepare_cached("PRAGMA synchronous = FULL")?
        .execute([])?;
    result
}

/// Applies `ops` in one transaction, in queue order; returns each
/// admission's decision, valid once the transaction has committed.
fn apply(conn: &mut Connection, ops: &[Op]) -> Result<Vec<Decision>, DbError> {
    in_transaction(conn, |tx| {
        let now_ms = crate::metering::now_ms();
        let (mut released, mut recorded) = (false, false);
        let mut decisions = Vec::with_capacity(ops.len());
        for op in ops {
            decisions.push(match op {
                Op::Admit(call, _) => {
                    if !released {
                        admission::release_stale(tx, now_ms)?;
                        released = true;
                    }
                    Some(admission::reserve(tx, call)?)
                }
                Op::Record(w, _) => {
                    insert_usage(tx, &w.usage)?;
                    add_to_totals(tx, &w.usage)?;
                    insert_audit(tx, &w.audit)?;
                    if let Some(id) = w.reservation {
                        tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                            .execute([id])?;
                    }
                    recorded = true;
                    None
                }
                Op::Mark(_) => None,
            });
        }
        if recorded {
            // Rate limits look one minute back; two keep a margin.
            tx.prepare_cached("DELETE FROM usage_seconds WHERE second < ?1")?
                .execute([now_ms / 1000 - 120])?;
        }
        Ok(decisions)
    })
}

/// What the writer thread owns.
struct Thread {
    /// Kept until the queue is drained, even once the database is dropped.
    conn: Arc<Mutex<Connection>>,
    queue: mpsc::Receiver<Op>,
    outstanding: Arc<AtomicUsize>,
    failed_runs: Arc<Mutex<HashSet<String>>>,
    durability: Option<Arc<Durability>>,
}

impl Thread {
    /// The writer loop: takes every operation waiting in the queue, applies
    /// them in one transaction, notes the commit for the sync thread, then
    /// answers each: a record's fence is released, every caller answered.
    /// If a batch fails, its operations are applied one by one, so one bad
    /// record fails only itself.
    fn run(self) {
        let Self {
            conn,
            queue,
            outstanding,
            failed_runs,
            durability,
        } = self;
        super::background_thread();
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let writes = batch.iter().any(|op| !matches!(op, Op::Mark(_)));
            let results: Vec<Result<Decision, String>> = if !writes {
                batch.iter().map(|_| Ok(None)).collect()
            } else {
                // Bound first: the guard must be gone before the retries lock.
                let mut applied = apply(&mut lock(&conn), &batch);
                // Another process held the write lock past the busy
                // timeout: the batch is fine, so it is retried whole (each
                // of its operations alone would wait as long again).
                for _ in 1..BUSY_ATTEMPTS {
                    if !applied.as_ref().is_err_and(is_busy) {
                        break;
                    }
                    tracing::warn!(
                        "the database stayed locked by another process; retrying the ledger's batch"
                    );
                    applied = apply(&mut lock(&conn), &batch);
                }
                match applied {
                    Ok(decisions) => decisions.into_iter().map(Ok).collect(),
                    Err(e) if is_busy(&e) => batch
                        .iter()
                        .map(|_| {
                            Err(format!(
                                "the database stayed locked by another process: {e}"
                            ))
                        })
                        .collect(),
                    Err(_) => batch
                        .iter()
                        .map(|op| {
                            apply(&mut lock(&conn), std::slice::from_ref(op))
                                .map(|mut d| d.pop().flatten())
                                .map_err(|e| e.to_string())
                        })
                        .collect(),
                }
            };
            let seq = match &durability {
                Some(d) if writes => d.committed(),
                Some(d) => d.latest(),
                None => 0,
            };
            for (op, result) in batch.into_iter().zip(results) {
                match op {
                    Op::Admit(_, reply) => {
                        if let Err(e) = &result {
                            tracing::error!(error = %e, "could not decide a call's admission");
                        }
                        reply.send(result.and_then(|d| {
                            d.ok_or_else(|| "admission was not decided".to_string())
                        }));
                    }
                    Op::Record(records, reply) => {
                        if let Err(e) = &result {
                            tracing::error!(error = %e, run_id = %records.usage.run_id, "could not write a call's usage record");
                            failed_runs
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(records.usage.run_id.clone());
                        }
                        // The fence goes with the records: a revocation waiting
                        // on it returns only now.
                        drop(records.fence);
                        reply.send(result.map(drop));
                    }
                    Op::Mark(reply) => reply.send(result.map(|_| seq)),
                }
                outstanding.fetch_sub(1, Ordering::SeqCst);
            }
            if let Some(d) = &durability
                && d.take_restart_due()
            {
                finish_checkpoint(&conn);
            }
        }
    }
}

/// Checkpoints, on the writer's connection between two of its batches, the
/// frames committed since the sync thread's checkpoint (which copied the
/// bulk without blocking anyone). Nothing of this process commits
/// meanwhile (the connection is held), so unless a reader still uses the
/// WAL the next write transaction finds it wholly copied and starts it over
/// (`super::durability`).
fn finish_checkpoint(conn: &Mutex<Connection>) {
    let done = lock(conn).query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
    if let Err(e) = done {
        tracing::warn!(error = %e, "WAL checkpoint failed; the next one retries");
    }
}
