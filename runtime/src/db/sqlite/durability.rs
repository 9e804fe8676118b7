//! Group commit to disk: the writer thread commits without waiting for the
//! disk (`synchronous=NORMAL` in WAL mode), and this thread makes those
//! commits durable behind it, one `fdatasync` of the WAL covering every
//! commit made since the last one.
//!
//! A commit written to the WAL is already visible to every process and
//! survives a crash of this one (its pages are in the kernel's cache); the
//! sync makes it survive a crash of the machine too. Nothing here changes
//! what SQLite finds after a crash: the kernel may write the WAL's dirty
//! pages back at any moment on its own, and SQLite's recovery (frame
//! checksums, commit frames) already accepts any such state. Syncing early
//! only makes more of it durable.
//!
//! The thread also checkpoints the WAL into the database file once it
//! grows, so the writer (whose connection does not checkpoint on its own)
//! does not stall on the copy and its fsyncs. Under steady load that copy
//! never catches up with the writer, and SQLite starts a WAL over only
//! when a write finds it wholly copied: so the writer finishes each such
//! checkpoint between two batches, copying just the frames committed
//! since ([`Durability::take_restart_due`]), and its next commit writes the
//! WAL from its first frame again. Without that the WAL grows for as long
//! as the load lasts, and every commit appends to the file (an ext4
//! journal commit per sync, which stalls the writes behind it).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rusqlite::Connection;
use tokio::sync::watch;

use crate::db::DbError;

/// WAL size past which the syncer checkpoints it (SQLite's own default
/// trigger is 1,000 pages of 4 KiB).
pub(super) const CHECKPOINT_BYTES: i64 = 4 << 20;

/// How far commits are on disk.
#[derive(Debug, Clone, Default)]
struct Synced {
    /// Every commit numbered up to this one is durable.
    seq: u64,
    /// Why the latest sync failed; cleared by the next one that succeeds.
    error: Option<String>,
}

#[derive(Default)]
struct Progress {
    committed: u64,
    stop: bool,
}

/// The commits of one database file and how many of them are on disk.
pub(super) struct Durability {
    db: PathBuf,
    wal: PathBuf,
    progress: Mutex<Progress>,
    wake: Condvar,
    synced: watch::Sender<Synced>,
    /// Set after this thread's checkpoint: the writer finishes it.
    restart_due: AtomicBool,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Durability {
    /// Starts the sync thread for the database at `db`.
    pub(super) fn start(db: &Path) -> Arc<Self> {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let this = Arc::new(Self {
            db: db.to_owned(),
            wal: PathBuf::from(wal),
            progress: Mutex::default(),
            wake: Condvar::new(),
            synced: watch::Sender::new(Synced::default()),
            restart_due: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let thread = this.clone();
        let spawned = std::thread::Builder::new()
            .name("clawrun-sync".into())
            .spawn(move || thread.run());
        match spawned {
            Ok(handle) => {
                *this.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
            }
            Err(e) => {
                // Without the thread nothing would ever be reported durable;
                // say so on every wait instead of hanging.
                tracing::error!(error = %e, "cannot start the sync thread");
                this.synced.send_replace(Synced {
                    seq: 0,
                    error: Some(format!("cannot start the sync thread: {e}")),
                });
            }
        }
        this
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes one more commit (called once it has returned) and returns its
    /// number.
    pub(super) fn committed(&self) -> u64 {
        let mut p = self.progress();
        p.committed += 1;
        self.wake.notify_one();
        p.committed
    }

    /// The number of the latest commit.
    pub(super) fn latest(&self) -> u64 {
        self.progress().committed
    }

    /// Waits until commit `seq` and every one before it are on disk.
    pub(super) async fn wait(&self, seq: u64) -> Result<(), DbError> {
        let mut rx = self.synced.subscribe();
        let synced = rx
            .wait_for(|s| s.seq >= seq || s.error.is_some())
            .await
            .map_err(|_| DbError::Ledger("the sync thread has stopped".into()))?;
        match &synced.error {
            Some(e) if synced.seq < seq => Err(DbError::Ledger(format!(
                "usage records could not be written to disk: {e}"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether this thread has checkpointed since the last call: the writer
    /// then checkpoints what was committed meanwhile, so the WAL can start
    /// over.
    pub(super) fn take_restart_due(&self) -> bool {
        self.restart_due.swap(false, Ordering::AcqRel)
    }

    /// Stops the thread once every commit it was told of is on disk, and
    /// waits for it to have done so.
    pub(super) fn stop(&self) {
        self.progress().stop = true;
        self.wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the sync thread panicked");
        }
    }

    fn run(&self) {
        super::background_thread();
        let mut done = 0;
        let mut checkpointer: Option<Connection> = None;
        loop {
            let target = {
                let mut p = self.progress();
                while p.committed == done && !p.stop {
                    p = self.wake.wait(p).unwrap_or_else(|e| e.into_inner());
                }
                if p.committed == done {
                    return;
                }
                p.committed
            };
            match self.sync() {
                Ok(wal_len) => {
                    done = target;
                    self.synced.send_replace(Synced {
                        seq: target,
                        error: None,
                    });
                    if wal_len > CHECKPOINT_BYTES as u64 && self.checkpoint(&mut checkpointer) {
                        self.restart_due.store(true, Ordering::Release);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot sync the database to disk");
                    self.synced.send_modify(|s| s.error = Some(e.to_string()));
                    if self.progress().stop {
                        // Stopping: the waiters have their error, and
                        // nothing would retry after this thread.
                        return;
                    }
                    // Retry later rather than spin on a failing disk.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        }
    }

    /// `fdatasync` of the WAL, or of the database file when the WAL has
    /// been checkpointed away; returns the WAL's length.
    fn sync(&self) -> std::io::Result<u64> {
        match File::open(&self.wal) {
            Ok(wal) => {
                wal.sync_data()?;
                Ok(wal.metadata()?.len())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                File::open(&self.db)?.sync_data()?;
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// Copies the WAL into the database file without blocking readers or
    /// the writer (`PASSIVE`); with `synchronous=NORMAL` SQLite syncs both
    /// files around the copy. Returns whether it ran.
    fn checkpoint(&self, conn: &mut Option<Connection>) -> bool {
        if conn.is_none() {
            match Connection::open(&self.db) {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the database to checkpoint it");
                    return false;
                }
            }
        }
        let Some(c) = conn.as_ref() else {
            return false;
        };
        let result = c
            .pragma_update(None, "synchronous", "NORMAL")
            .and_then(|()| {
                c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0))
            });
        match result {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; the next one retries");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_is_reported_durable_only_once_its_file_is_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("ledger.db");
        std::fs::write(&db, b"x").expect("writes");
        let durability = Durability::start(&db);
        let seq = durability.committed();
        durability.wait(seq).await.expect("synced");
        assert_eq!(durability.synced.borrow().seq, seq);
        durability.stop();
    }

    #[tokio::test]
    async fn a_sync_that_fails_fails_the_wait_with_the_cause() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Neither the database nor its WAL exist: nothing can be synced.
        let durability = Durability::start(&dir.path().join("gone.db"));
        let seq = durability.committed();
        let err = durability.wait(seq).await.expect_err("not on disk");
        assert!(
            err.to_string().contains("could not be written to disk"),
            "{err}"
        );
        durability.stop();
    }
}
