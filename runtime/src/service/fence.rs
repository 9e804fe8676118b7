//! The revocation fence of one `llm-call`: the claw's assignment read under
//! a shared lock on its key's lock file (see [`super::revocation`]).
//!
//! The lock must be taken before the read that decides the call, and which
//! lock depends on that read. Each call starts from the key the claw was
//! last fenced on, takes its lock and reads the assignment under it, in one
//! trip to a blocking thread; the read confirms the guess, or names the key
//! to fence instead. A claw whose assignment has not changed pays one lock
//! and one read per call.

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
        let (db, fenced, claw) = (db.clone(), locks.clone(), claw_id.to_owned());
        let key = guess.clone();
        let (fence, target) = tokio::task::spawn_blocking(move || {
            let fence = key
                .as_deref()
                .map(|id| fenced.shared(id))
                .transpose()
                .map_err(|e| {
                    CallError::Unavailable(format!("cannot take the key's lock file: {e}"))
                })?;
            let target = db.call_target(&claw).map_err(|e| {
                tracing::error!(error = %e, "database failed during llm-call");
                CallError::Unavailable("the host's database is unavailable; try again later".into())
            })?;
            Ok::<_, CallError>((fence, target))
        })
        .await
        .map_err(|_| CallError::Unavailable("the host's lock task failed".into()))??;
        let target = target.ok_or(CallError::NoKeyAssigned)?;
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
