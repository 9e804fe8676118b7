//! Persistence: organisations, provider keys, claws and usage records.
//!
//! The [`Db`] trait is what the rest of the host uses; [`SqliteDb`] is the
//! embedded default (one SQLite file in the data directory, WAL mode,
//! migrations embedded in the binary). A shared server backend is another
//! implementation of the same trait.

mod sqlite;

pub use sqlite::{DB_FILE, SqliteDb};

use crate::cage::LimitOverrides;
use crate::metering::budgets::{Admission, Budget, RateLimit, Refusal};

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The underlying database failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The ledger writer failed to write a call's records.
    #[error("ledger: {0}")]
    Ledger(String),
    /// A row with the same unique name exists.
    #[error("{0} already exists")]
    Conflict(String),
    /// The database was written by a newer clawrun.
    #[error(
        "the database schema is version {found}, newer than this clawrun knows ({known}): upgrade clawrun"
    )]
    TooNew {
        /// Version found.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
}

/// An organisation.
#[derive(Debug, Clone)]
pub struct OrgRow {
    /// Identifier (`org_…`).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Its data key, wrapped by the master key.
    pub wrapped_data_key: Vec<u8>,
    /// Creation time.
    pub created_at_ms: i64,
}

/// An API token of an organisation; only a hash of its secret is kept.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Identifier (`tok_…`), also the token's visible prefix.
    pub id: String,
    /// Owning organisation.
    pub org_id: String,
    /// What the token is for.
    pub name: String,
    /// SHA-256 of the token's secret part.
    pub secret_hash: Vec<u8>,
    /// When created.
    pub created_at_ms: i64,
    /// When revoked.
    pub revoked_at_ms: Option<i64>,
}

/// Whether a key may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Usable.
    Active,
    /// Revoked: no request may be sent with it.
    Revoked,
}

impl KeyState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Revoked => "revoked",
        }
    }
}

/// A provider key row. `ciphertext` is sealed by the vault.
#[derive(Debug, Clone)]
pub struct KeyRow {
    /// Identifier (`key_…`).
    pub id: String,
    /// Owning organisation.
    pub org_id: String,
    /// Name, unique in the organisation.
    pub name: String,
    /// Provider kind name.
    pub provider: String,
    /// Base URL, fixed when the key is added.
    pub base_url: String,
    /// The sealed key.
    pub ciphertext: Vec<u8>,
    /// Version, 1 on add, incremented by each rotation.
    pub version: i64,
    /// State.
    pub state: KeyState,
    /// HMAC fingerprint.
    pub fingerprint: String,
    /// Short hint like `sk-...3xQa`.
    pub hint: String,
    /// When added.
    pub created_at_ms: i64,
    /// When last rotated.
    pub rotated_at_ms: Option<i64>,
    /// When revoked.
    pub revoked_at_ms: Option<i64>,
    /// Length of the key in bytes, for the leak guard.
    pub scan_len: i64,
    /// Keyed rolling hash of the key, for the leak guard.
    pub scan_hash: i64,
    /// `openai-compatible`: path after the base URL (default
    /// `/chat/completions`).
    pub api_path: Option<String>,
    /// `openai-compatible`: header carrying the key (default
    /// `authorization`).
    pub auth_header: Option<String>,
    /// `openai-compatible`: word before the key (default `Bearer` in
    /// `authorization`, none elsewhere; `none` for the bare key).
    pub auth_scheme: Option<String>,
}

/// A deployed claw (its component bytes are read separately).
#[derive(Debug, Clone)]
pub struct ClawRow {
    /// Identifier (`claw_…`).
    pub id: String,
    /// Owning organisation.
    pub org_id: String,
    /// Name, unique in the organisation.
    pub name: String,
    /// SHA-256 of the component, hex.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: i64,
    /// Assigned key's name, if any.
    pub key_name: Option<String>,
    /// Assigned model, if any.
    pub model: Option<String>,
    /// First deployed.
    pub created_at_ms: i64,
    /// Last deployed or assigned.
    pub updated_at_ms: i64,
}

/// Everything one `llm-call` needs, read in one query at call time.
#[derive(Debug, Clone)]
pub struct CallTarget {
    /// The organisation's wrapped data key.
    pub wrapped_data_key: Vec<u8>,
    /// The assigned key as it is now.
    pub key: KeyRow,
    /// The assigned model.
    pub model: String,
}

/// One provider call's usage, as written to the ledger.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct UsageRecord {
    /// When the call ended.
    pub at_ms: i64,
    /// Organisation.
    pub org_id: String,
    /// Claw.
    pub claw_id: String,
    /// The run (one invocation of the claw's export).
    pub run_id: String,
    /// Conversation.
    pub conversation_id: String,
    /// Tool invocation the call was made in, if any.
    pub tool_invocation_id: Option<String>,
    /// Tool name of that invocation.
    pub tool_name: Option<String>,
    /// The model's tool call id that invocation answers.
    pub tool_call_id: Option<String>,
    /// Key used.
    pub key_id: String,
    /// Version of the key used.
    pub key_version: i64,
    /// Provider kind.
    pub provider: String,
    /// Model from the assignment.
    pub model_requested: String,
    /// Model the provider says answered.
    pub model_returned: Option<String>,
    /// `gen_ai.usage.input_tokens` (cache included).
    pub input_tokens: i64,
    /// `gen_ai.usage.output_tokens` (reasoning included).
    pub output_tokens: i64,
    /// `gen_ai.usage.cache_read.input_tokens`.
    pub cache_read_tokens: i64,
    /// `gen_ai.usage.cache_creation.input_tokens`.
    pub cache_write_tokens: i64,
    /// `gen_ai.usage.reasoning.output_tokens`.
    pub reasoning_tokens: i64,
    /// Provider usage object as received (JSON).
    pub raw_usage: Option<String>,
    /// `reported` by the provider, `estimated`, or `none` when the call
    /// failed before any usage could exist.
    pub source: String,
    /// Time spent waiting on the provider.
    pub latency_ms: i64,
    /// `ok`, or the error kind.
    pub outcome: String,
    /// Estimated cost in millionths of the price table's currency (USD by
    /// default); `None` when the model has no price.
    pub cost_micros: Option<i64>,
    /// Version of the price table the cost was computed with.
    pub price_version: Option<String>,
}

/// One audit record: who did what to which key or claw, never a payload.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct AuditRecord {
    /// When.
    pub at_ms: i64,
    /// Organisation, when the action concerns one.
    pub org_id: Option<String>,
    /// Who: `cli:USER`, or `claw:NAME` for key uses.
    pub actor: String,
    /// `key.added`, `key.rotated`, `key.revoked`, `master.rotated`,
    /// `exfiltration.refused` or `key.used`.
    pub action: String,
    /// The key concerned.
    pub key_id: Option<String>,
    /// Its version.
    pub key_version: Option<i64>,
    /// The claw concerned.
    pub claw_id: Option<String>,
    /// `ok`, or what went wrong.
    pub outcome: String,
    /// What else the record concerns (an API token's id, a claw's name).
    pub subject: Option<String>,
}

/// One organisation's data key, wrapped under the old and the new master key.
#[derive(Debug, Clone)]
pub struct Rewrap {
    /// Organisation.
    pub org_id: String,
    /// The wrapped key as read.
    pub old: Vec<u8>,
    /// The wrapped key under the new master key.
    pub new: Vec<u8>,
}

/// What the metrics need of one usage record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSample {
    /// Provider kind.
    pub provider: String,
    /// Model requested.
    pub model: String,
    /// Claw name.
    pub claw: String,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Time spent on the provider.
    pub latency_ms: i64,
    /// `ok` or the failure.
    pub outcome: String,
    /// `reported`, `estimated` or `none`.
    pub source: String,
}

/// Which usage records a query covers.
#[derive(Debug, Clone, Default)]
pub struct UsageFilter {
    /// Organisation (always required).
    pub org_id: String,
    /// Only this claw id.
    pub claw_id: Option<String>,
    /// Only this conversation.
    pub conversation_id: Option<String>,
    /// Only this run.
    pub run_id: Option<String>,
    /// Only records at or after this time (ms since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Only records before this time (ms since the Unix epoch).
    pub until_ms: Option<i64>,
}

/// How usage is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageGroup {
    /// Per claw.
    Claw,
    /// Per conversation.
    Conversation,
    /// Per tool invocation (calls outside tools are one group).
    Tool,
    /// Per provider key.
    Key,
    /// Per model returned.
    Model,
    /// Per hour (UTC).
    Hour,
    /// Per day (UTC).
    Day,
}

impl std::str::FromStr for UsageGroup {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "claw" => UsageGroup::Claw,
            "conversation" => UsageGroup::Conversation,
            "tool" => UsageGroup::Tool,
            "key" => UsageGroup::Key,
            "model" => UsageGroup::Model,
            "hour" => UsageGroup::Hour,
            "day" => UsageGroup::Day,
            other => {
                return Err(format!(
                    "cannot group usage by `{other}`: use claw, conversation, tool, key, model, hour or day"
                ));
            }
        })
    }
}

/// Token totals of one group.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct UsageTotals {
    /// The group's label (claw name, conversation id, `tool/invocation`, …).
    pub group: String,
    /// Provider calls.
    pub calls: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cache-read input tokens.
    pub cache_read_tokens: i64,
    /// Cache-write input tokens.
    pub cache_write_tokens: i64,
    /// Reasoning output tokens.
    pub reasoning_tokens: i64,
    /// Estimated cost in millionths of the currency, over the records that
    /// had a price (`None` when none had).
    pub cost_micros: Option<i64>,
}

/// A database operation carried out by another thread (the writer, and the
/// sync thread behind it); resolves with its result.
pub type Pending<T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, DbError>> + Send>>;

/// The operations the host needs from its persistence backend.
///
/// # Errors
///
/// Every method returns [`DbError`] when the backend fails.
pub trait Db: Send + Sync {
    /// Creates an organisation.
    fn org_create(&self, org: &OrgRow) -> Result<(), DbError>;
    /// Finds an organisation by name.
    fn org_by_name(&self, name: &str) -> Result<Option<OrgRow>, DbError>;
    /// Finds an organisation by id.
    fn org_by_id(&self, id: &str) -> Result<Option<OrgRow>, DbError>;
    /// Stores a new API token and its audit record, in one transaction.
    fn token_insert(&self, token: &TokenRow, audit: &AuditRecord) -> Result<(), DbError>;
    /// Finds an API token by id.
    fn token_by_id(&self, id: &str) -> Result<Option<TokenRow>, DbError>;
    /// An organisation's API tokens, oldest first.
    fn tokens(&self, org_id: &str) -> Result<Vec<TokenRow>, DbError>;
    /// Revokes an organisation's token and appends `audit`; false when it
    /// has no such active token.
    fn token_revoke(
        &self,
        org_id: &str,
        id: &str,
        at_ms: i64,
        audit: &AuditRecord,
    ) -> Result<bool, DbError>;
    /// Deletes a claw with its budgets and rate limits (its usage records
    /// stay); false when the organisation has no such claw.
    fn claw_delete(&self, org_id: &str, claw_id: &str) -> Result<bool, DbError>;
    /// Stores a new key and its audit record, in one transaction.
    fn key_insert(&self, key: &KeyRow, audit: &AuditRecord) -> Result<(), DbError>;
    /// Finds a key by name.
    fn key_by_name(&self, org_id: &str, name: &str) -> Result<Option<KeyRow>, DbError>;
    /// Lists an organisation's keys by name.
    fn keys(&self, org_id: &str) -> Result<Vec<KeyRow>, DbError>;
    /// Replaces a key's ciphertext with a new version's.
    /// and appends `audit`, in one transaction; false (and nothing written)
    /// when the key was revoked or rotated meanwhile. The old ciphertext is
    /// then overwritten in every file of the database.
    fn key_rotate(&self, rotated: &KeyRow, audit: &AuditRecord) -> Result<bool, DbError>;
    /// Marks a key revoked and appends `audit`, in one transaction; false
    /// (and no audit record) when it was already revoked.
    fn key_revoke(&self, key_id: &str, at_ms: i64, audit: &AuditRecord) -> Result<bool, DbError>;
    /// Stores a claw, replacing the component of an existing one of the same
    /// name (its assignment is kept).
    fn claw_deploy(&self, claw: &ClawRow, component: &[u8]) -> Result<(), DbError>;
    /// Finds a claw by name.
    fn claw_by_name(&self, org_id: &str, name: &str) -> Result<Option<ClawRow>, DbError>;
    /// A claw's component bytes.
    fn claw_component(&self, claw_id: &str) -> Result<Vec<u8>, DbError>;
    /// Lists an organisation's claws by name.
    fn claws(&self, org_id: &str) -> Result<Vec<ClawRow>, DbError>;
    /// Assigns a key and model to a claw.
    fn claw_assign(
        &self,
        claw_id: &str,
        key_id: &str,
        model: &str,
        at_ms: i64,
    ) -> Result<(), DbError>;
    /// A claw's own limits (empty when it has none).
    fn claw_limits(&self, claw_id: &str) -> Result<LimitOverrides, DbError>;
    /// Replaces a claw's own limits; empty overrides remove them.
    fn claw_limits_set(&self, claw_id: &str, limits: &LimitOverrides) -> Result<(), DbError>;
    /// The organisation's concurrency limit, when an admin set one.
    fn org_concurrent_runs(&self, org_id: &str) -> Result<Option<u32>, DbError>;
    /// Sets (or with `None` removes) the organisation's concurrency limit.
    fn org_concurrent_runs_set(&self, org_id: &str, limit: Option<u32>) -> Result<(), DbError>;
    /// Reads a claw's assignment and its key as they are now.
    fn call_target(&self, claw_id: &str) -> Result<Option<CallTarget>, DbError>;
    /// Queues a provider call's usage record and its audit record, to be
    /// written with the release of the call's budget reservation in one
    /// transaction; `fence` (the key's revocation lock) is released once
    /// they are committed. The future resolves then, and may be dropped
    /// unawaited: the write goes ahead. Committed records are on disk soon
    /// after, and at the latest when a [`Db::sync_ledger`] that follows
    /// resolves.
    fn record_call(
        &self,
        usage: UsageRecord,
        audit: AuditRecord,
        reservation: Option<i64>,
        fence: Option<std::fs::File>,
    ) -> Pending<()>;
    /// [`Db::record_call`], blocking the thread until committed (for a
    /// destructor).
    fn record_call_blocking(
        &self,
        usage: UsageRecord,
        audit: AuditRecord,
        reservation: Option<i64>,
    ) -> Result<(), DbError>;
    /// Resolves once every call record queued before it is committed and
    /// on disk.
    fn sync_ledger(&self) -> Pending<()>;
    /// Whether a record of the run `run_id` failed to be written (the
    /// cause is logged); answers each failure once.
    fn lost_records(&self, run_id: &str) -> bool;
    /// Checks a call against every budget and rate limit that applies and,
    /// when it fits, reserves its worst case; `Ok(Ok(None))` when nothing
    /// applies (no reservation needed). The decision and the reservation
    /// are one transaction no other writer, in any process, interleaves
    /// with; the future resolves once it is committed (not yet synced: a
    /// crash that loses a reservation ends the call holding it too).
    fn admit(&self, call: Admission) -> Pending<Result<Option<i64>, Refusal>>;
    /// Adds a budget; returns its id.
    fn budget_add(&self, org_id: &str, budget: &Budget, at_ms: i64) -> Result<i64, DbError>;
    /// An organisation's budgets.
    fn budgets(&self, org_id: &str) -> Result<Vec<Budget>, DbError>;
    /// Removes a budget; false when the organisation has none of that id.
    fn budget_remove(&self, org_id: &str, id: i64) -> Result<bool, DbError>;
    /// Sets the rate limit of a claw or key; a limit given as `None` keeps
    /// its current value.
    fn rate_limit_set(&self, org_id: &str, limit: &RateLimit) -> Result<(), DbError>;
    /// Removes the rate limit of a claw or key; false when it had none.
    fn rate_limit_remove(&self, org_id: &str, target_id: &str) -> Result<bool, DbError>;
    /// One sample per usage record of every organisation, for metrics.
    fn metric_samples(&self) -> Result<Vec<MetricSample>, DbError>;
    /// An organisation's rate limits.
    fn rate_limits(&self, org_id: &str) -> Result<Vec<RateLimit>, DbError>;
    /// Appends an audit record.
    fn audit_append(&self, record: &AuditRecord) -> Result<(), DbError>;
    /// An organisation's audit records and the host-wide ones (such as
    /// master key rotations), oldest first; all records when `org_id` is
    /// `None`.
    fn audit_records(&self, org_id: Option<&str>) -> Result<Vec<AuditRecord>, DbError>;
    /// Every organisation.
    fn orgs(&self) -> Result<Vec<OrgRow>, DbError>;
    /// Replaces every organisation's wrapped data key, and appends `audit`,
    /// in one transaction; fails with nothing changed if any wrapped key is
    /// no longer the `old` one read.
    fn rewrap_data_keys(&self, wrapped: &[Rewrap], audit: &AuditRecord) -> Result<(), DbError>;
    /// Ids of all revoked keys.
    fn revoked_keys(&self) -> Result<Vec<String>, DbError>;
    /// A number that changes whenever another connection commits, so a
    /// watcher can skip work when nothing changed.
    fn data_version(&self) -> Result<i64, DbError>;
    /// Usage records matching `filter`, oldest first.
    fn usage_records(&self, filter: &UsageFilter) -> Result<Vec<UsageRecord>, DbError>;
    /// Usage totals matching `filter`, grouped by `group`.
    fn usage_totals(
        &self,
        filter: &UsageFilter,
        group: UsageGroup,
    ) -> Result<Vec<UsageTotals>, DbError>;
}
