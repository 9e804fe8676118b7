//! The concurrency limit per organisation: how many runs it may have in
//! progress at once, across every process sharing the data directory.
//!
//! Each organisation has numbered lock files under `runs/ORG_ID/`; a run
//! holds one exclusively for its whole duration. The operating system
//! releases a lock when its process ends, however it ends, so a crashed
//! host never leaks a slot. A run that finds every slot taken waits up to
//! [`SLOT_WAIT`] for one, then fails with [`Busy`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Runs an organisation may have in progress at once unless an admin set
/// another number.
pub const DEFAULT_CONCURRENT_RUNS: u32 = 64;

/// Highest concurrency limit an organisation may be given: what one host
/// process can hold ([`crate::cage::POOL_CAGES`]).
pub const MAX_CONCURRENT_RUNS: u32 = crate::cage::POOL_CAGES;

/// How long a run waits for a free slot before it is refused.
pub const SLOT_WAIT: Duration = Duration::from_secs(5);

/// How often a waiting run tries the slots again.
const RETRY: Duration = Duration::from_millis(50);

/// Every slot was taken for the whole wait.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "organisation `{org}` already has {limit} run(s) in progress, its limit, and none ended \
     within {} s: try again later, or raise the limit with `clawrun org limits \
     --concurrent-runs N`",
    SLOT_WAIT.as_secs()
)]
pub struct Busy {
    /// Organisation name.
    pub org: String,
    /// Its limit.
    pub limit: u32,
}

/// A taken slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code, reason = "held for its lock")] File);

/// The run slots of one organisation.
#[derive(Debug, Clone)]
pub struct RunSlots {
    dir: PathBuf,
}

impl RunSlots {
    /// The slots of `org_id` under `data_dir/runs`.
    pub fn new(data_dir: &Path, org_id: &str) -> Self {
        // Organisation ids are `org_` and hex digits, safe as file names.
        Self {
            dir: data_dir.join("runs").join(org_id),
        }
    }

    /// Takes a free slot of the first `limit`, waiting up to [`SLOT_WAIT`].
    ///
    /// # Errors
    ///
    /// [`Busy`] when none came free; an I/O error when the lock files
    /// cannot be made.
    pub async fn take(&self, org: &str, limit: u32) -> Result<Result<Slot, Busy>, std::io::Error> {
        let waited_until = Instant::now() + SLOT_WAIT;
        loop {
            let slots = self.clone();
            let taken = tokio::task::spawn_blocking(move || slots.try_take(limit))
                .await
                .map_err(std::io::Error::other)??;
            if let Some(slot) = taken {
                return Ok(Ok(slot));
            }
            if Instant::now() >= waited_until {
                return Ok(Err(Busy {
                    org: org.to_owned(),
                    limit,
                }));
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// One pass over the slots, starting at a random one so concurrent
    /// runs rarely contend for the same file.
    fn try_take(&self, limit: u32) -> std::io::Result<Option<Slot>> {
        std::fs::create_dir_all(&self.dir)?;
        let start = rand::random_range(0..limit.max(1));
        for i in 0..limit {
            let n = (start + i) % limit;
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.dir.join(format!("{n}.lock")))?;
            match file.try_lock() {
                Ok(()) => return Ok(Some(Slot(file))),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_freed_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = RunSlots::new(dir.path(), "org_1");
        let a = slots.try_take(2).expect("io").expect("first slot");
        let b = slots.try_take(2).expect("io").expect("second slot");
        assert!(slots.try_take(2).expect("io").is_none(), "both taken");
        drop(a);
        let c = slots.try_take(2).expect("io");
        assert!(c.is_some(), "a dropped slot is free again");
        drop((b, c));
        let other = RunSlots::new(dir.path(), "org_2");
        let _held = slots.try_take(1).expect("io").expect("slot");
        assert!(
            other.try_take(1).expect("io").is_some(),
            "organisations do not share slots"
        );
    }
}
