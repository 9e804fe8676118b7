//! Loading the master key, and rotating it.
//!
//! A rotation writes the new key to `master.key.next` first, re-wraps every
//! data key in one database transaction, then renames the file over
//! `master.key`. A crash between the commit and the rename leaves a
//! database that only the `.next` key opens: [`load_or_recover`] notices
//! and finishes the rename, so no interruption loses the keys.

use std::path::Path;

use super::{ServiceError, actor, llm::LlmService};
use crate::db::{AuditRecord, Db, OrgRow, Rewrap};
use crate::metering::now_ms;
use crate::vault::{self, MASTER_KEY_FILE, MASTER_KEY_NEXT_FILE, MasterKey, VaultError};

/// What a master key rotation did.
#[derive(Debug)]
pub struct Rotated {
    /// Organisations whose data key was re-wrapped.
    pub orgs: usize,
    /// Whether `master.key` was replaced (false when the key comes from
    /// `CLAWRUN_MASTER_KEY`, which the operator must now change).
    pub replaced_file: bool,
}

/// Loads the master key and checks it opens `org`'s data key, finishing an
/// interrupted rotation if that is why it does not.
///
/// # Errors
///
/// [`VaultError::WrongMasterKey`] when neither the key nor a pending
/// `.next` key opens the data directory.
pub fn load_or_recover(
    data_dir: &Path,
    db: &dyn Db,
    org_name: &str,
) -> Result<MasterKey, ServiceError> {
    let read_org = || -> Result<OrgRow, ServiceError> {
        db.org_by_name(org_name)?
            .ok_or_else(|| ServiceError::NotInitialised(data_dir.to_owned()))
    };
    let org = read_org()?;
    let master = MasterKey::load(data_dir)?;
    if vault::open_data_key(&master, &org.id, &org.wrapped_data_key).is_ok() {
        return Ok(master);
    }
    // A rotation may be under way in another process: wait for it, then
    // look again before deciding anything.
    let _lock = lock(data_dir)?;
    let org = read_org()?;
    let master = MasterKey::load(data_dir)?;
    if vault::open_data_key(&master, &org.id, &org.wrapped_data_key).is_ok() {
        return Ok(master);
    }
    let next_path = data_dir.join(MASTER_KEY_NEXT_FILE);
    if !MasterKey::from_env() && next_path.exists() {
        let next = MasterKey::load_file(&next_path)?;
        if vault::open_data_key(&next, &org.id, &org.wrapped_data_key).is_ok() {
            tracing::warn!("finishing an interrupted master key rotation");
            replace_file(data_dir)?;
            return Ok(next);
        }
    }
    Err(VaultError::WrongMasterKey.into())
}

/// Holds the data directory's master key lock: one rotation (or recovery)
/// at a time, across processes.
fn lock(data_dir: &Path) -> Result<std::fs::File, ServiceError> {
    let io =
        |e: std::io::Error| ServiceError::Invalid(format!("cannot take the master key lock: {e}"));
    let dir = data_dir.join("locks");
    std::fs::create_dir_all(&dir).map_err(io)?;
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("master.lock"))
        .map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}

fn replace_file(data_dir: &Path) -> Result<(), ServiceError> {
    let io =
        |e: std::io::Error| ServiceError::Invalid(format!("cannot replace {MASTER_KEY_FILE}: {e}"));
    std::fs::rename(
        data_dir.join(MASTER_KEY_NEXT_FILE),
        data_dir.join(MASTER_KEY_FILE),
    )
    .map_err(io)?;
    std::fs::File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// Re-wraps every data key under a new master key.
pub(super) fn rotate(
    data_dir: &Path,
    db: &dyn Db,
    llm: &LlmService,
    new_key: Option<MasterKey>,
) -> Result<Rotated, ServiceError> {
    let from_env = MasterKey::from_env();
    let new = match (from_env, new_key) {
        (_, Some(key)) => key,
        (false, None) => MasterKey::generate(),
        (true, None) => {
            return Err(ServiceError::Invalid(
                "CLAWRUN_MASTER_KEY is set, so clawrun cannot store the new master key: give it \
                 (base64 of 32 bytes) on stdin, then set CLAWRUN_MASTER_KEY to it"
                    .into(),
            ));
        }
    };
    let _lock = lock(data_dir)?;
    let orgs = db.orgs()?;
    let mut wrapped = Vec::with_capacity(orgs.len());
    for org in &orgs {
        // Fails if another rotation finished while this process was
        // starting: its master key is then the old one.
        let data_key = llm.open_data_key(org)?;
        wrapped.push(Rewrap {
            org_id: org.id.clone(),
            old: org.wrapped_data_key.clone(),
            new: vault::wrap_data_key(&new, &org.id, &data_key),
        });
    }
    let next_path = data_dir.join(MASTER_KEY_NEXT_FILE);
    if !from_env {
        // A `.next` file here is from a rotation that failed before its
        // commit (a committed one was finished when the service opened).
        match std::fs::remove_file(&next_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ServiceError::Invalid(format!(
                    "cannot remove {}: {e}",
                    next_path.display()
                )));
            }
            _ => {}
        }
        new.write_new(&next_path)?;
    }
    let audit = AuditRecord {
        at_ms: now_ms(),
        org_id: None,
        actor: actor(),
        action: "master.rotated".into(),
        outcome: "ok".into(),
        ..AuditRecord::default()
    };
    if let Err(e) = db.rewrap_data_keys(&wrapped, &audit) {
        let _ = std::fs::remove_file(&next_path);
        return Err(e.into());
    }
    if !from_env {
        replace_file(data_dir)?;
    }
    Ok(Rotated {
        orgs: orgs.len(),
        replaced_file: !from_env,
    })
}
