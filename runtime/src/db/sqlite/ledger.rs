//! The ledger writer: group commit of usage and audit records.

use std::sync::{Mutex, Weak, mpsc};

use rusqlite::Connection;

use super::{add_to_totals, insert_audit, insert_usage, lock};
use crate::db::{AuditRecord, DbError, UsageRecord};

/// Most calls' records committed in one transaction.
const MAX_LEDGER_BATCH: usize = 512;

/// One call's records on their way to the ledger writer, with the channel
/// its caller waits on.
pub(super) struct LedgerWrite {
    pub(super) usage: UsageRecord,
    pub(super) audit: AuditRecord,
    pub(super) reservation: Option<i64>,
    pub(super) done: mpsc::SyncSender<Result<(), String>>,
}

/// Group commit: takes every call's records waiting in the queue, writes them
/// in one transaction (one fsync), then tells each caller. A caller returns
/// only once its own records are on disk, so batching costs no durability.
/// If a batch fails, its calls are written one by one, so one bad record
/// fails only its own call.
pub(super) fn writer(conn: &Weak<Mutex<Connection>>, queue: &mpsc::Receiver<LedgerWrite>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_LEDGER_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let Some(conn) = conn.upgrade() else { return };
        let mut conn = lock(&conn);
        let write = |conn: &mut Connection, items: &[LedgerWrite]| -> Result<(), DbError> {
            // Usage is durable before its call returns, whatever mode an
            // admission left the connection in.
            conn.pragma_update(None, "synchronous", "FULL")?;
            let tx = conn.transaction()?;
            for w in items {
                insert_usage(&tx, &w.usage)?;
                add_to_totals(&tx, &w.usage)?;
                insert_audit(&tx, &w.audit)?;
                if let Some(id) = w.reservation {
                    tx.prepare_cached("DELETE FROM reservations WHERE id = ?1")?
                        .execute([id])?;
                }
            }
            // Rate limits look one minute back; two keep a margin.
            tx.prepare_cached("DELETE FROM usage_seconds WHERE second < ?1")?
                .execute([crate::metering::now_ms() / 1000 - 120])?;
            tx.commit()?;
            Ok(())
        };
        if write(&mut conn, &batch).is_ok() {
            for w in &batch {
                let _ = w.done.send(Ok(()));
            }
        } else {
            for w in &batch {
                let result = write(&mut conn, std::slice::from_ref(w)).map_err(|e| e.to_string());
                let _ = w.done.send(result);
            }
        }
    }
}
