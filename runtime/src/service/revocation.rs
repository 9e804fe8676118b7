//! Revocation that bites on every call, across processes.
//!
//! Two mechanisms, both keyed by provider key id:
//!
//! - A fence of file locks in the data directory (`locks/KEY_ID.lock`). A
//!   call holds the key's lock shared from its state check until its
//!   provider request has ended; `keys revoke` commits the new state, then
//!   takes the lock exclusively, which waits for every call that passed its
//!   check before the commit to finish or be cancelled. So once `keys
//!   revoke` returns, no request with the key can start in any process that
//!   shares the data directory: a later call's check sees the revoked state.
//! - A watcher thread per process that notices commits from other processes
//!   (`PRAGMA data_version`, every [`WATCH_INTERVAL`]) and publishes the set
//!   of revoked keys, so calls in flight are cancelled with the revoked error
//!   instead of holding the fence until the provider answers.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::db::Db;

/// How often the watcher looks for commits by other processes.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// The per-key lock files of one data directory, and the key each claw
/// was last fenced on.
#[derive(Debug, Clone)]
pub struct KeyLocks {
    dir: PathBuf,
    last: Arc<Mutex<HashMap<String, String>>>,
}

impl KeyLocks {
    /// Lock files under `data_dir/locks`.
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            dir: data_dir.join("locks"),
            last: Arc::default(),
        }
    }

    /// The key `claw_id` was last fenced on: a guess at which lock its
    /// next call needs, which that call confirms by reading the claw's
    /// assignment under the lock.
    pub fn last_key(&self, claw_id: &str) -> Option<String> {
        self.lock_last().get(claw_id).cloned()
    }

    /// Remembers the key `claw_id` was fenced on.
    pub fn remember(&self, claw_id: &str, key_id: &str) {
        let mut last = self.lock_last();
        if last.get(claw_id).is_none_or(|k| k != key_id) {
            last.insert(claw_id.to_owned(), key_id.to_owned());
        }
    }

    fn lock_last(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self, key_id: &str) -> std::io::Result<File> {
        // Key ids are `key_` and hex digits, safe as file names.
        let path = self.dir.join(format!("{key_id}.lock"));
        let open = || {
            File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        };
        match open() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.dir)?;
                open()
            }
            opened => opened,
        }
    }

    /// Holds the key's lock shared until the returned file is dropped.
    /// Blocks only while a revocation holds it exclusively.
    pub fn shared(&self, key_id: &str) -> std::io::Result<File> {
        let file = self.open(key_id)?;
        file.lock_shared()?;
        Ok(file)
    }

    /// [`KeyLocks::shared`] without waiting: `None` when a revocation holds
    /// the lock.
    pub fn try_shared(&self, key_id: &str) -> std::io::Result<Option<File>> {
        let file = self.open(key_id)?;
        match file.try_lock_shared() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Waits until no call holds the key's lock, then releases it.
    pub fn drain(&self, key_id: &str) -> std::io::Result<()> {
        let file = self.open(key_id)?;
        file.lock()?;
        file.unlock()
    }
}

/// The set of revoked key ids as this process last saw it.
pub struct RevocationWatch {
    db: Arc<dyn Db>,
    tx: watch::Sender<Arc<HashSet<String>>>,
    started: OnceLock<()>,
    stop: Arc<AtomicBool>,
}

impl RevocationWatch {
    /// A watch over `db`; the thread starts with the first subscription.
    pub fn new(db: Arc<dyn Db>) -> Self {
        let (tx, _) = watch::channel(Arc::new(HashSet::new()));
        Self {
            db,
            tx,
            started: OnceLock::new(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A receiver of the revoked set, starting the watcher if needed.
    pub fn subscribe(&self) -> watch::Receiver<Arc<HashSet<String>>> {
        self.started.get_or_init(|| self.spawn());
        self.tx.subscribe()
    }

    /// Re-reads the revoked set now (after a revocation in this process).
    pub fn refresh(&self) {
        publish(&*self.db, &self.tx);
    }

    fn spawn(&self) {
        let (db, tx, stop) = (self.db.clone(), self.tx.clone(), self.stop.clone());
        publish(&*db, &tx);
        let spawned = std::thread::Builder::new()
            .name("clawrun-revocation-watch".into())
            .spawn(move || {
                let mut seen = db.data_version().ok();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(WATCH_INTERVAL);
                    let now = db.data_version().ok();
                    if now != seen {
                        seen = now;
                        publish(&*db, &tx);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the revocation watcher; in-flight calls will not be cut on revocation");
        }
    }
}

impl Drop for RevocationWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn publish(db: &dyn Db, tx: &watch::Sender<Arc<HashSet<String>>>) {
    match db.revoked_keys() {
        Ok(ids) => {
            let set: HashSet<String> = ids.into_iter().collect();
            tx.send_if_modified(|current| {
                if **current == set {
                    false
                } else {
                    *current = Arc::new(set);
                    true
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "revocation watcher could not read key states"),
    }
}

/// Resolves when `key_id` appears in the revoked set.
pub async fn revoked(mut rx: watch::Receiver<Arc<HashSet<String>>>, key_id: &str) {
    if rx.wait_for(|set| set.contains(key_id)).await.is_err() {
        // The watch was dropped with its service: nothing will ever cut
        // this call, so never resolve.
        std::future::pending::<()>().await;
    }
}
