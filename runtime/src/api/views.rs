//! What the API answers and accepts. The CLI prints the same views, whether
//! it reads them from a local data directory or from a remote host.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::cage::{CageLimits, LimitOverrides};
use crate::db::{ClawRow, KeyRow, OrgRow, TokenRow, UsageGroup, UsageRecord};
use crate::metering::budgets::{BudgetPeriod, BudgetScope};

/// A timestamp as RFC 3339 (UTC, seconds).
pub fn time(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// A provider key as listed: everything but the secret and its ciphertext.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Name, unique in the organisation.
    pub name: String,
    /// Identifier.
    pub id: String,
    /// Provider kind.
    pub provider: String,
    /// Base URL requests go to.
    pub base_url: String,
    /// Path after the base URL (`openai-compatible` keys).
    #[serde(default)]
    pub path: Option<String>,
    /// Header carrying the key (`openai-compatible` keys).
    #[serde(default)]
    pub auth_header: Option<String>,
    /// Word before the key in that header (`openai-compatible` keys).
    #[serde(default)]
    pub auth_scheme: Option<String>,
    /// Prefix and last four characters, to recognise the key.
    pub hint: String,
    /// Keyed fingerprint: equal for equal keys of this organisation.
    pub fingerprint: String,
    /// Version: 1 when added, one more per rotation.
    pub version: i64,
    /// `active` or `revoked`.
    pub state: String,
    /// When added (RFC 3339).
    pub created_at: String,
    /// When last rotated.
    pub rotated_at: Option<String>,
    /// When revoked.
    pub revoked_at: Option<String>,
}

impl From<&KeyRow> for KeyView {
    fn from(k: &KeyRow) -> Self {
        Self {
            name: k.name.clone(),
            id: k.id.clone(),
            provider: k.provider.clone(),
            base_url: k.base_url.clone(),
            path: k.api_path.clone(),
            auth_header: k.auth_header.clone(),
            auth_scheme: k.auth_scheme.clone(),
            hint: k.hint.clone(),
            fingerprint: k.fingerprint.clone(),
            version: k.version,
            state: k.state.as_str().into(),
            created_at: time(k.created_at_ms),
            rotated_at: k.rotated_at_ms.map(time),
            revoked_at: k.revoked_at_ms.map(time),
        }
    }
}

/// A deployed claw.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClawView {
    /// Name, unique in the organisation.
    pub name: String,
    /// Identifier.
    pub id: String,
    /// SHA-256 of the component, hex.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: i64,
    /// Assigned key's name.
    pub key: Option<String>,
    /// Assigned model.
    pub model: Option<String>,
    /// First deployed (RFC 3339).
    pub created_at: String,
    /// Last deployed or assigned.
    pub updated_at: String,
    /// Its run limits (listed claws only).
    #[serde(default)]
    pub limits: Vec<LimitView>,
}

impl From<&ClawRow> for ClawView {
    fn from(c: &ClawRow) -> Self {
        Self {
            name: c.name.clone(),
            id: c.id.clone(),
            digest: c.digest.clone(),
            size: c.size,
            key: c.key_name.clone(),
            model: c.model.clone(),
            created_at: time(c.created_at_ms),
            updated_at: time(c.updated_at_ms),
            limits: Vec::new(),
        }
    }
}

/// An API token (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// Identifier, also the token's visible prefix.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// When created (RFC 3339).
    pub created_at: String,
    /// When revoked.
    pub revoked_at: Option<String>,
}

impl From<&TokenRow> for TokenView {
    fn from(t: &TokenRow) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            created_at: time(t.created_at_ms),
            revoked_at: t.revoked_at_ms.map(time),
        }
    }
}

/// A token just created; `token` is shown this once and never again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewTokenView {
    /// The token's row.
    #[serde(flatten)]
    pub view: TokenView,
    /// The whole token, for `Authorization: Bearer`.
    pub token: String,
}

/// The organisation a token belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrgView {
    /// Name.
    pub name: String,
    /// Identifier.
    pub id: String,
    /// When created (RFC 3339).
    pub created_at: String,
}

impl From<&OrgRow> for OrgView {
    fn from(o: &OrgRow) -> Self {
        Self {
            name: o.name.clone(),
            id: o.id.clone(),
            created_at: time(o.created_at_ms),
        }
    }
}

/// A finished run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    /// The run's id.
    pub run_id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// What the claw returned, when it succeeded.
    pub output: Option<String>,
    /// The error the claw returned, when it failed.
    pub error: Option<String>,
    /// CPU fuel the run burnt.
    #[serde(default)]
    pub fuel_used: u64,
    /// One record per provider call the run made.
    pub usage: Vec<UsageRecord>,
}

/// Adds a provider key. The secret is only ever accepted here and in
/// rotation, and never returned.
#[derive(Deserialize, ToSchema)]
pub struct AddKey {
    /// Name in the organisation: 1 to 64 of letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// Provider kind: `openai`, `anthropic`, `gemini` or `openai-compatible`.
    pub provider: String,
    /// Base URL as the provider's SDK takes it; the provider's own when
    /// absent (required for `openai-compatible`).
    #[serde(default)]
    pub base_url: Option<String>,
    /// `openai-compatible` only: path after the base URL, with an optional
    /// query (default `/chat/completions`).
    #[serde(default)]
    pub path: Option<String>,
    /// `openai-compatible` only: header carrying the key (default
    /// `authorization`).
    #[serde(default)]
    pub auth_header: Option<String>,
    /// `openai-compatible` only: word before the key in that header
    /// (`none` for the bare key).
    #[serde(default)]
    pub auth_scheme: Option<String>,
    /// The API key.
    #[schema(value_type = String, format = Password)]
    pub secret: secrecy::SecretString,
}

/// A new version of a key.
#[derive(Deserialize, ToSchema)]
pub struct RotateKey {
    /// The new API key.
    #[schema(value_type = String, format = Password)]
    pub secret: secrecy::SecretString,
}

/// Assigns a key and model to a claw.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Assign {
    /// Name of the key.
    pub key: String,
    /// Model, as the provider spells it.
    pub model: String,
}

/// Runs a claw on one input.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunRequest {
    /// The input text.
    pub input: String,
    /// Conversation id; a new one is made when absent.
    #[serde(default)]
    pub conversation_id: Option<String>,
}

/// Adds a budget.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BudgetRequest {
    /// What it caps.
    pub scope: BudgetScope,
    /// The claw, by name (claw budgets; optional for conversation ones).
    #[serde(default)]
    pub claw: Option<String>,
    /// Cap in tokens (give this or `usd`).
    #[serde(default)]
    pub tokens: Option<i64>,
    /// Cap in US dollars of estimated cost.
    #[serde(default)]
    pub usd: Option<f64>,
    /// Counting window (UTC).
    pub per: BudgetPeriod,
}

/// Sets the per-minute limits of one claw or one key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RateLimitRequest {
    /// The claw, by name (give this or `key`).
    #[serde(default)]
    pub claw: Option<String>,
    /// The key, by name.
    #[serde(default)]
    pub key: Option<String>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<i64>,
    /// Tokens per minute.
    #[serde(default)]
    pub tpm: Option<i64>,
}

/// Which claw or key a rate limit removal concerns.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitTarget {
    /// The claw, by name.
    pub claw: Option<String>,
    /// The key, by name.
    pub key: Option<String>,
}

/// Creates an API token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateToken {
    /// What the token is for.
    pub name: String,
}

/// Which usage to total, and how to group it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Group by claw (default), conversation, tool, key, model, hour or day.
    #[param(value_type = Option<String>)]
    pub by: Option<UsageGroupName>,
    /// Only this claw (by name).
    pub claw: Option<String>,
    /// Only this conversation.
    pub conversation: Option<String>,
    /// Only usage at or after this time, in ms since the Unix epoch.
    pub since_ms: Option<i64>,
    /// Only usage before this time, in ms since the Unix epoch.
    pub until_ms: Option<i64>,
}

/// A usage grouping, by its name in a query string.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UsageGroupName(pub UsageGroup);

impl TryFrom<String> for UsageGroupName {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse().map(Self)
    }
}

impl From<UsageGroupName> for String {
    fn from(g: UsageGroupName) -> String {
        match g.0 {
            UsageGroup::Claw => "claw",
            UsageGroup::Conversation => "conversation",
            UsageGroup::Tool => "tool",
            UsageGroup::Key => "key",
            UsageGroup::Model => "model",
            UsageGroup::Hour => "hour",
            UsageGroup::Day => "day",
        }
        .into()
    }
}

/// Which usage records to list.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecordsQuery {
    /// Only this claw (by name).
    pub claw: Option<String>,
    /// Only this conversation.
    pub conversation: Option<String>,
    /// Only this run.
    pub run: Option<String>,
    /// Only records at or after this time, in ms since the Unix epoch.
    pub since_ms: Option<i64>,
    /// Only records before this time, in ms since the Unix epoch.
    pub until_ms: Option<i64>,
    /// The newest this many records (default 200, at most 1000).
    pub limit: Option<u32>,
}

/// One run limit of a claw: the value its runs get, and whether the claw
/// sets it (`claw`) or takes the host default (`default`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LimitView {
    /// The limit, named as its CLI flag (`fuel`, `memory-mib`, ...).
    pub name: String,
    /// The value a run gets.
    pub value: u64,
    /// `claw` or `default`.
    pub from: String,
}

/// A claw's run limits, as its runs get them.
pub fn limit_views(own: &LimitOverrides, limits: &CageLimits) -> Vec<LimitView> {
    limit_rows(own, limits)
        .into_iter()
        .map(|(name, value, set)| LimitView {
            name: name.into(),
            value,
            from: if set { "claw" } else { "default" }.into(),
        })
        .collect()
}

/// Sets a claw's own run limits: each value given replaces the claw's, the
/// others keep theirs; `reset` first removes all of the claw's own.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct LimitsRequest {
    /// Wall-clock time a run may take, in milliseconds.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// CPU fuel a run may burn.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Linear memory, summed over every memory, in MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// Table elements, summed over every table.
    #[serde(default)]
    pub table_elements: Option<u64>,
    /// Core instances a run may create.
    #[serde(default)]
    pub instances: Option<u64>,
    /// llm-calls per run.
    #[serde(default)]
    pub llm_calls: Option<u64>,
    /// Largest value crossing the boundary, in KiB.
    #[serde(default)]
    pub max_value_kib: Option<u64>,
    /// Remove the claw's own limits before applying these.
    #[serde(default)]
    pub reset: bool,
}

impl LimitsRequest {
    /// The overrides it asks for.
    pub fn overrides(&self) -> LimitOverrides {
        LimitOverrides {
            deadline_ms: self.deadline_ms,
            fuel: self.fuel,
            memory_mib: self.memory_mib,
            table_elements: self.table_elements,
            instances: self.instances,
            llm_calls: self.llm_calls,
            max_value_kib: self.max_value_kib,
        }
    }
}

/// Each limit: its flag name, the value a run gets, and whether the claw
/// sets it itself.
fn limit_rows(own: &LimitOverrides, limits: &CageLimits) -> Vec<(&'static str, u64, bool)> {
    vec![
        (
            "deadline-ms",
            limits.run_deadline.as_millis() as u64,
            own.deadline_ms.is_some(),
        ),
        ("fuel", limits.fuel, own.fuel.is_some()),
        (
            "memory-mib",
            (limits.memory_bytes >> 20) as u64,
            own.memory_mib.is_some(),
        ),
        (
            "table-elements",
            limits.table_elements as u64,
            own.table_elements.is_some(),
        ),
        (
            "instances",
            limits.instances as u64,
            own.instances.is_some(),
        ),
        (
            "llm-calls",
            u64::from(limits.llm_calls),
            own.llm_calls.is_some(),
        ),
        (
            "max-value-kib",
            (limits.max_value_bytes >> 10) as u64,
            own.max_value_kib.is_some(),
        ),
    ]
}
