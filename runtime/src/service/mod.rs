//! The operations both the CLI and the HTTP API call: keys, claws, runs and
//! usage, for one organisation of one data directory.

mod budgets;
mod fence;
mod host;
mod keys;
pub mod llm;
mod master;
pub mod revocation;
pub mod slots;
pub mod stream;
mod tokens;
pub mod waits;

pub use host::Host;
pub use tokens::NewToken;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use crate::cage::{Cage, CageLimits, DeployError, LimitOverrides, RunContext, RunError, RunOutput};
use crate::db::{
    AuditRecord, ClawRow, Db, DbError, KeyRow, KeyState, OrgRow, SqliteDb, UsageFilter, UsageGroup,
    UsageRecord, UsageTotals,
};
use crate::metering::budgets::{Budget, BudgetPeriod, BudgetScope, BudgetUnit, RateLimit};
use crate::metering::now_ms;
use crate::providers::{self, CompatibleConfig, ProviderKind};
use crate::vault::{self, DataKey, KeyBinding, MasterKey, ProviderSecret, VaultError};
use llm::LlmService;
use revocation::KeyLocks;

/// Name of the organisation used by the local CLI.
pub const DEFAULT_ORG: &str = "default";

/// A fresh identifier: `prefix_` and 16 random hex digits.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    rand::fill(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// Errors of the operations; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The data directory was never initialised.
    #[error("no clawrun data directory at {0}: run `clawrun init` (or pass --data-dir)")]
    NotInitialised(PathBuf),
    /// A vault failure (master key missing, wrong or malformed).
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// A database failure.
    #[error(transparent)]
    Db(#[from] DbError),
    /// No claw of that name.
    #[error("no claw named `{0}`: deploy it with `clawrun claws deploy FILE.wasm --name {0}`")]
    UnknownClaw(String),
    /// Nothing of that kind to change or remove; the text says what.
    #[error("{0}")]
    NotFound(String),
    /// No organisation of that name.
    #[error("no organisation named `{0}`: create it with `clawrun orgs create {0}`")]
    UnknownOrg(String),
    /// No API token of that id in the organisation.
    #[error("no active API token `{0}`: see `clawrun tokens list`")]
    UnknownToken(String),
    /// No key of that name.
    #[error("no key named `{0}`: add it with `clawrun keys add {0} --provider KIND`")]
    UnknownKey(String),
    /// The key is revoked and cannot be changed or assigned.
    #[error("key `{0}` is revoked: add a new key instead")]
    KeyRevoked(String),
    /// The upload is not a claw.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// The run did not complete.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The organisation has as many runs in progress as it may.
    #[error(transparent)]
    Busy(#[from] slots::Busy),
    /// Bad input from the user.
    #[error("{0}")]
    Invalid(String),
    /// The WebAssembly engine could not start.
    #[error("the WebAssembly engine failed to start: {0}")]
    Engine(String),
}

/// What `clawrun init` did.
#[derive(Debug)]
pub struct InitReport {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Whether a master key file was written.
    pub wrote_master_key: bool,
    /// Whether the directory was already initialised.
    pub already: bool,
}

/// Creates the data directory, the master key file (unless
/// `CLAWRUN_MASTER_KEY` is set), the database and the default organisation.
/// Running it again on an initialised directory changes nothing.
///
/// # Errors
///
/// When the directory cannot be created, or an existing master key does not
/// open the existing database.
pub fn init(data_dir: &Path) -> Result<InitReport, ServiceError> {
    create_private_dir(data_dir)
        .map_err(|e| ServiceError::Invalid(format!("cannot create {}: {e}", data_dir.display())))?;
    let db = SqliteDb::open(data_dir)?;
    let existing = db.org_by_name(DEFAULT_ORG)?;
    let mut wrote_master_key = false;
    let master = match MasterKey::load(data_dir) {
        Ok(master) => master,
        // A new master key only for a new data directory: one that already
        // holds keys needs the master key that sealed them.
        Err(VaultError::MissingMasterKey) if existing.is_none() => {
            let master = MasterKey::generate();
            master.write_new_file(data_dir)?;
            wrote_master_key = true;
            master
        }
        Err(e) => return Err(e.into()),
    };
    let already = match existing {
        Some(org) => {
            vault::open_data_key(&master, &org.id, &org.wrapped_data_key)?;
            true
        }
        None => {
            let id = new_id("org");
            db.org_create(&OrgRow {
                wrapped_data_key: vault::wrap_data_key(&master, &id, &DataKey::generate()),
                id,
                name: DEFAULT_ORG.into(),
                created_at_ms: now_ms(),
            })?;
            false
        }
    };
    Ok(InitReport {
        data_dir: data_dir.to_owned(),
        wrote_master_key,
        already,
    })
}

/// Creates the data directory owner-only, and makes an existing one so:
/// usage, key names and hints are nobody else's business.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// One organisation's view of the host, acting for one actor (the local
/// user, or an API token).
pub struct Service {
    host: Arc<Host>,
    db: Arc<dyn Db>,
    org: OrgRow,
    llm: Arc<LlmService>,
    actor: String,
    limits: CageLimits,
    slots: slots::RunSlots,
}

/// Which usage a query covers; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct UsageScope<'a> {
    /// Only this claw (by name).
    pub claw: Option<&'a str>,
    /// Only this conversation.
    pub conversation: Option<&'a str>,
    /// Only records at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only records before this time (ms since the Unix epoch).
    pub until_ms: Option<i64>,
}

/// A completed run with the usage it recorded.
#[derive(Debug)]
pub struct RunReport {
    /// The run's id.
    pub run_id: String,
    /// The conversation it belonged to.
    pub conversation_id: String,
    /// What the claw returned and printed.
    pub output: RunOutput,
    /// One record per provider call of the run.
    pub usage: Vec<UsageRecord>,
}

impl Service {
    /// Opens `data_dir` for the default organisation, checking that the
    /// master key opens it before anything else happens.
    ///
    /// # Errors
    ///
    /// When the directory is not initialised or the master key is missing
    /// or wrong.
    pub fn open(data_dir: &Path) -> Result<Self, ServiceError> {
        Host::open(data_dir)?.org(DEFAULT_ORG)
    }

    /// Replaces the default limits of runs, which claws' own limits
    /// override.
    pub fn with_limits(mut self, limits: CageLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The organisation this service acts in.
    pub fn org(&self) -> &OrgRow {
        &self.org
    }

    /// Who this service acts as, for the audit log.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    fn cage(&self) -> Result<&Cage, ServiceError> {
        self.host.cage()
    }

    fn data_key(&self) -> Result<DataKey, ServiceError> {
        // The master key lives in the LLM service; opening here keeps one
        // copy of it in memory.
        Ok(self.llm.open_data_key(&self.org)?)
    }

    fn key(&self, name: &str) -> Result<KeyRow, ServiceError> {
        self.db
            .key_by_name(&self.org.id, name)?
            .ok_or_else(|| ServiceError::UnknownKey(name.into()))
    }

    fn claw(&self, name: &str) -> Result<ClawRow, ServiceError> {
        self.db
            .claw_by_name(&self.org.id, name)?
            .ok_or_else(|| ServiceError::UnknownClaw(name.into()))
    }

    /// The organisation's audit records, oldest first.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub fn audit_records(&self) -> Result<Vec<AuditRecord>, ServiceError> {
        Ok(self.db.audit_records(Some(&self.org.id))?)
    }

    /// Re-wraps every organisation's data key under a new master key in one
    /// transaction. With a master key file, the new key is generated and
    /// replaces the file; with `CLAWRUN_MASTER_KEY`, `new_key` must be given
    /// and the operator sets the variable to it afterwards.
    ///
    /// # Errors
    ///
    /// When a data key does not open, or the files cannot be written; the
    /// database is then unchanged.
    pub fn rotate_master(
        &self,
        new_key: Option<MasterKey>,
    ) -> Result<master::Rotated, ServiceError> {
        master::rotate(&self.host.data_dir, &*self.db, &self.llm, new_key)
    }

    /// Validates and stores a claw component under `name`, replacing the
    /// component of an existing claw of that name (its assignment stays).
    ///
    /// # Errors
    ///
    /// A [`DeployError`] when the file is not a claw component.
    pub fn claws_deploy(&self, name: &str, component: &[u8]) -> Result<ClawRow, ServiceError> {
        check_name("claw", name)?;
        self.cage()?.validate(component)?;
        let now = now_ms();
        let row = ClawRow {
            id: new_id("claw"),
            org_id: self.org.id.clone(),
            name: name.into(),
            digest: hex::encode(Sha256::digest(component)),
            size: component.len() as i64,
            key_name: None,
            model: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        self.db.claw_deploy(&row, component)?;
        tracing::info!(claw = %name, digest = %row.digest, "claw deployed");
        self.claw(name)
    }

    /// Assigns a key and model to a claw; its next call uses them.
    ///
    /// # Errors
    ///
    /// When the claw or key does not exist, the key is revoked, or the model
    /// name is empty.
    pub fn claws_assign(
        &self,
        claw: &str,
        key: &str,
        model: &str,
    ) -> Result<ClawRow, ServiceError> {
        let claw_row = self.claw(claw)?;
        let key_row = self.key(key)?;
        if key_row.state == KeyState::Revoked {
            return Err(ServiceError::KeyRevoked(key.into()));
        }
        let model = model.trim();
        if model.is_empty() || model.len() > 200 || model.chars().any(char::is_control) {
            return Err(ServiceError::Invalid(
                "the model name must be 1 to 200 printable characters".into(),
            ));
        }
        self.db
            .claw_assign(&claw_row.id, &key_row.id, model, now_ms())?;
        self.claw(claw)
    }

    /// Deletes a claw, with its budgets and rate limits; its usage records
    /// stay.
    ///
    /// # Errors
    ///
    /// When the claw does not exist.
    pub fn claws_delete(&self, name: &str) -> Result<(), ServiceError> {
        let row = self.claw(name)?;
        if !self.db.claw_delete(&self.org.id, &row.id)? {
            return Err(ServiceError::UnknownClaw(name.into()));
        }
        tracing::info!(claw = %name, "claw deleted");
        Ok(())
    }

    /// The organisation's claws as listed, each with its run limits.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub fn claws_list_with_limits(&self) -> Result<Vec<crate::api::views::ClawView>, ServiceError> {
        use crate::api::views::{ClawView, limit_views};
        self.claws_list()?
            .iter()
            .map(|row| {
                let own = self.db.claw_limits(&row.id)?;
                let limits = own.apply(&self.limits);
                let mut view = ClawView::from(row);
                view.limits = limit_views(&own, &limits);
                Ok(view)
            })
            .collect()
    }

    /// The organisation's claws.
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub fn claws_list(&self) -> Result<Vec<ClawRow>, ServiceError> {
        Ok(self.db.claws(&self.org.id)?)
    }

    /// A claw's own limits and the limits its runs get (the host defaults
    /// with its own applied).
    ///
    /// # Errors
    ///
    /// When the claw does not exist.
    pub fn claw_limits(&self, claw: &str) -> Result<(LimitOverrides, CageLimits), ServiceError> {
        let row = self.claw(claw)?;
        let own = self.db.claw_limits(&row.id)?;
        let limits = own.apply(&self.limits);
        Ok((own, limits))
    }

    /// Sets a claw's own limits: each value given replaces the claw's,
    /// the others keep theirs; with `reset`, the claw's own limits are
    /// removed first. Applies from the claw's next run.
    ///
    /// # Errors
    ///
    /// When the claw does not exist, or a value is outside what the host
    /// allows (the message names the flag and its range).
    pub fn claws_set_limits(
        &self,
        claw: &str,
        changes: &LimitOverrides,
        reset: bool,
    ) -> Result<(LimitOverrides, CageLimits), ServiceError> {
        changes.check().map_err(ServiceError::Invalid)?;
        let row = self.claw(claw)?;
        let own = if reset {
            changes.clone()
        } else {
            self.db.claw_limits(&row.id)?.merged(changes)
        };
        self.db.claw_limits_set(&row.id, &own)?;
        tracing::info!(claw = %claw, limits = ?own, "claw limits set");
        Ok((own.clone(), own.apply(&self.limits)))
    }

    /// The organisation's concurrency limit (runs in progress at once).
    ///
    /// # Errors
    ///
    /// When the database fails.
    pub fn concurrent_runs(&self) -> Result<u32, ServiceError> {
        Ok(self
            .db
            .org_concurrent_runs(&self.org.id)?
            .unwrap_or(slots::DEFAULT_CONCURRENT_RUNS)
            .min(slots::MAX_CONCURRENT_RUNS))
    }

    /// Sets the organisation's concurrency limit; `None` restores the
    /// default.
    ///
    /// # Errors
    ///
    /// When the value is 0 or above what one host can hold.
    pub fn set_concurrent_runs(&self, limit: Option<u32>) -> Result<u32, ServiceError> {
        if let Some(l) = limit
            && (l == 0 || l > slots::MAX_CONCURRENT_RUNS)
        {
            return Err(ServiceError::Invalid(format!(
                "--concurrent-runs must be between 1 and {}, the runs one host can hold; got {l}",
                slots::MAX_CONCURRENT_RUNS
            )));
        }
        self.db.org_concurrent_runs_set(&self.org.id, limit)?;
        self.concurrent_runs()
    }

    /// Runs a claw on `input` within `conversation_id` and returns its output
    /// with the usage it recorded. The run takes one of the organisation's
    /// concurrency slots, waiting up to [`slots::SLOT_WAIT`] for one.
    ///
    /// # Errors
    ///
    /// When the claw does not exist, traps or hits a limit, or the
    /// organisation has as many runs in progress as it may.
    pub async fn run(
        &self,
        claw: &str,
        conversation_id: &str,
        input: &str,
    ) -> Result<RunReport, ServiceError> {
        let row = self.claw(claw)?;
        let limits = self.db.claw_limits(&row.id)?.apply(&self.limits);
        let limit = self.concurrent_runs()?;
        let _slot = self
            .slots
            .take(&self.org.name, limit)
            .await
            .map_err(|e| ServiceError::Invalid(format!("cannot take a run slot: {e}")))??;
        let db = self.db.clone();
        let claw_id = row.id.clone();
        let component = tokio::task::spawn_blocking(move || db.claw_component(&claw_id))
            .await
            .map_err(|e| ServiceError::Engine(e.to_string()))??;
        let cage = self.cage()?;
        let pre = tokio::task::block_in_place(|| cage.prepare(&row.digest, &component))?;
        let context = self.run_context(&row, conversation_id);
        let run_id = context.run_id.clone();
        let output = cage
            .run(&pre, context, self.llm.clone(), input, &limits)
            .await;
        // The run's usage records are on disk before its result, success or
        // failure, leaves the host.
        self.db.sync_ledger().await?;
        if self.db.lost_records(&run_id) {
            return Err(ServiceError::Db(crate::db::DbError::Ledger(
                "a usage record of this run could not be written (the host's log says why); \
                 check the data directory's disk"
                    .into(),
            )));
        }
        let output = output?;
        let usage = self.run_usage(&run_id)?;
        Ok(RunReport {
            run_id,
            conversation_id: conversation_id.to_owned(),
            output,
            usage,
        })
    }

    fn run_context(&self, claw: &ClawRow, conversation_id: &str) -> RunContext {
        RunContext {
            org_id: self.org.id.clone(),
            claw_id: claw.id.clone(),
            claw_name: claw.name.clone(),
            run_id: new_id("run"),
            conversation_id: conversation_id.to_owned(),
        }
    }

    /// The usage records of one run.
    fn run_usage(&self, run_id: &str) -> Result<Vec<UsageRecord>, ServiceError> {
        Ok(self.db.usage_records(&UsageFilter {
            org_id: self.org.id.clone(),
            run_id: Some(run_id.to_owned()),
            ..UsageFilter::default()
        })?)
    }

    /// The host's `llm-call` service, for the benchmarks that drive calls
    /// without a cage.
    #[doc(hidden)]
    pub fn llm(&self) -> &Arc<LlmService> {
        &self.llm
    }

    /// Resolves once every usage record queued so far is on disk, for the
    /// benchmarks that drive calls without a run.
    #[doc(hidden)]
    pub async fn sync_ledger(&self) -> Result<(), ServiceError> {
        Ok(self.db.sync_ledger().await?)
    }

    /// Runs a claw in a fresh inspectable cage and returns the report with
    /// a copy of the guest's linear memories, for the tests that prove no
    /// key reaches the guest.
    ///
    /// # Errors
    ///
    /// As [`Service::run`].
    #[doc(hidden)]
    pub async fn run_and_dump_memory(
        &self,
        claw: &str,
        conversation_id: &str,
        input: &str,
    ) -> Result<(RunReport, Vec<Vec<u8>>), ServiceError> {
        let row = self.claw(claw)?;
        let limits = self.db.claw_limits(&row.id)?.apply(&self.limits);
        let component = self.db.claw_component(&row.id)?;
        let cage = Cage::new_inspectable().map_err(|e| ServiceError::Engine(format!("{e:#}")))?;
        let pre = cage.prepare(&row.digest, &component)?;
        let context = self.run_context(&row, conversation_id);
        let run_id = context.run_id.clone();
        let (output, memories) = cage
            .run_and_dump_memory(&pre, context, self.llm.clone(), input, &limits)
            .await?;
        self.db.sync_ledger().await?;
        let usage = self.run_usage(&run_id)?;
        let report = RunReport {
            run_id,
            conversation_id: conversation_id.to_owned(),
            output,
            usage,
        };
        Ok((report, memories))
    }

    /// The newest `limit` usage records within `scope` (and of one run,
    /// when given), oldest first.
    ///
    /// # Errors
    ///
    /// When the claw does not exist or the database fails.
    pub fn usage_records(
        &self,
        scope: &UsageScope<'_>,
        run: Option<&str>,
        limit: usize,
    ) -> Result<Vec<UsageRecord>, ServiceError> {
        let mut filter = self.usage_filter(scope)?;
        filter.run_id = run.map(str::to_owned);
        let mut records = self.db.usage_records(&filter)?;
        let skip = records.len().saturating_sub(limit);
        records.drain(..skip);
        Ok(records)
    }

    fn usage_filter(&self, scope: &UsageScope<'_>) -> Result<UsageFilter, ServiceError> {
        let claw_id = scope
            .claw
            .map(|name| self.claw(name).map(|c| c.id))
            .transpose()?;
        Ok(UsageFilter {
            org_id: self.org.id.clone(),
            claw_id,
            conversation_id: scope.conversation.map(str::to_owned),
            run_id: None,
            since_ms: scope.since_ms,
            until_ms: scope.until_ms,
        })
    }

    /// Usage totals grouped by `group`, within `scope`.
    ///
    /// # Errors
    ///
    /// When the claw does not exist or the database fails.
    pub fn usage(
        &self,
        group: UsageGroup,
        scope: &UsageScope<'_>,
    ) -> Result<Vec<UsageTotals>, ServiceError> {
        Ok(self.db.usage_totals(&self.usage_filter(scope)?, group)?)
    }
}

/// Who is acting, for the audit log: the local user running the CLI.
pub(crate) fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Longest provider key accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 1024;

/// Provider keys are tokens of visible ASCII; anything else (a line break,
/// `NAME=value`, a pasted paragraph) is a paste mistake best caught now
/// rather than at the first call.
fn check_secret(secret: &ProviderSecret) -> Result<(), ServiceError> {
    let key = secret.expose();
    if key.is_empty() {
        return Err(ServiceError::Invalid(
            "the key is empty: paste it on stdin or at the prompt".into(),
        ));
    }
    // `OPENAI_API_KEY=sk-...` pasted from a shell file.
    let assignment = key.split_once('=').is_some_and(|(name, _)| {
        name.len() >= 2
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
    });
    if key.len() > MAX_SECRET_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) || assignment {
        return Err(ServiceError::Invalid(format!(
            "that does not look like an API key: paste only the key itself, at most \
             {MAX_SECRET_BYTES} visible ASCII characters with no spaces or line breaks"
        )));
    }
    Ok(())
}

/// Names of keys and claws: 1 to 64 of letters, digits, `-`, `_` and `.`,
/// so they are safe in URLs, file names and tables.
fn check_name(what: &str, name: &str) -> Result<(), ServiceError> {
    // A provider key pasted into a name field would be stored and listed in
    // the clear: refuse it, without quoting it back.
    const KEY_PREFIXES: &[&str] = &[
        "sk-", "sk_", "AIza", "gsk_", "xai-", "pplx-", "hf_", "r8_", "nvapi-",
    ];
    if name.len() >= 24 && KEY_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(ServiceError::Invalid(format!(
            "that {what} name looks like an API key: choose a plain name; a key goes only \
             where it is asked for (stdin, the prompt, or the `secret` field)"
        )));
    }
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!(
            "invalid {what} name `{name}`: use 1 to 64 letters, digits, `-`, `_` or `.`, \
             not starting with `.`"
        )))
    }
}
