//! The revocation fence of one `llm-call`: the claw's assignment read under
//! a shared lock on its key's lock file (see [`super::revocation`]).
//!
//! The lock must be taken before the read that decides the call, and which
//! lock depends on that read. Each call starts from the key the claw was
//! last fenced on, takes its lock and reads the assignment under it; the
//! read confirms the guess, or names the key to fence instead. A claw whose
//! assignment has not changed pays one lock and one read per call.
//!
//! Both run on the calling task: the lock is tried without blocking (it is
//! free unless a revocation of that very key is draining, and then the wait
//! moves to a blocking thread), and the read is one indexed lookup by a
//! cached statement on the reader connection, which in WAL mode waits for
//! no writer.

use std::fs::File;
use std::sync::Arc;

use super::llm::CallError;
use super::revocation::KeyLocks;
use crate::db::{CallTarget, Db, KeyState};

/// Tries before giving up on a claw whose assignment keeps moving between
/// keys; a first call, or one after a reassignment, takes two.
const TRIES: usize = 4;

/// The claw's call target and, when its key is active, the key's lock held
/// shared: it must live until the provider request has ended. A revoked key
/// is returned without its lock, so a refused call never holds up the
/// revocation.
///
/// # Errors
///
/// [`CallError::NoKeyAssigned`], or [`CallError::Unavailable`] when the
/// database or the lock file fails or the assignment keeps changing.
pub(super) async fn resolve(
    db: &Arc<dyn Db>,
    locks: &KeyLocks,
    claw_id: &str,
) -> Result<(CallTarget, Option<File>), CallError> {
    let mut guess = locks.last_key(claw_id);
    for _ in 0..TRIES {
        let fence = match guess.as_deref() {
            Some(id) => Some(shared(locks, id).await?),
            None => None,
        };
        let target = db
            .call_target(claw_id)
            .map_err(super::llm::db_failed)?
            .ok_or(CallError::NoKeyAssigned)?;
        if target.key.state != KeyState::Active {
            return Ok((target, None));
        }
        if let Some(fence) = fence.filter(|_| guess.as_deref() == Some(target.key.id.as_str())) {
            locks.remember(claw_id, &target.key.id);
            return Ok((target, Some(fence)));
        }
        guess = Some(target.key.id);
    }
    Err(CallError::Unavailable(
        "the claw's assignment keeps changing; try again".into(),
    ))
}

/// The key's lock taken shared: at once when it is free, else on a blocking
/// thread (a revocation of the key holds it while its calls drain).
async fn shared(locks: &KeyLocks, key_id: &str) -> Result<File, CallError> {
    let failed =
        |e: std::io::Error| CallError::Unavailable(format!("cannot take the key's lock file: {e}"));
    if let Some(file) = locks.try_shared(key_id).map_err(failed)? {
        return Ok(file);
    }
    let (locks, key_id) = (locks.clone(), key_id.to_owned());
    tokio::task::spawn_blocking(move || locks.shared(&key_id))
        .await
        .map_err(|_| CallError::Unavailable("the host's lock task failed".into()))?
        .map_err(failed)
}
