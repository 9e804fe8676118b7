//! The policy of one `llm-call`: resolve the claw's assignment, check the
//! key, decrypt it, call the provider, and write the usage record.
//!
//! Nothing is cached between calls: the assignment and the key's state are
//! read from the database on every call, so a reassignment or a revocation
//! takes effect on the very next call, in every process sharing the data
//! directory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::cage::{RunContext, ToolInvocation};
use crate::db::{CallTarget, Db, KeyState};
use crate::metering;
use crate::providers::{
    self, ChatRequest, Completion, Message, ProviderErrorKind, ProviderKind, ToolDefinition,
};
use crate::vault::{self, KeyBinding, MasterKey};

/// Reply token cap applied when a claw gives none, so every call has a
/// bounded cost.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A chat request as a guest sends it: no model, key or URL.
#[derive(Debug, Clone)]
pub struct GuestRequest {
    /// Conversation.
    pub messages: Vec<Message>,
    /// Tools offered.
    pub tools: Vec<ToolDefinition>,
    /// Reply token cap.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
}

/// Why a call produced no completion; mirrors the WIT `llm-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The assigned key is revoked.
    #[error("the assigned key is revoked")]
    KeyRevoked,
    /// No key and model are assigned.
    #[error("no key and model are assigned to this claw")]
    NoKeyAssigned,
    /// Rate limited.
    #[error("rate limited; retry after {0:?}")]
    RateLimited(Duration),
    /// The provider failed.
    #[error("provider error {status}: {message}")]
    Provider {
        /// HTTP status or 0.
        status: u16,
        /// Sanitised text.
        message: String,
    },
    /// The request cannot be sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The provider did not answer in time.
    #[error("the provider did not answer in time")]
    Timeout,
    /// The host cannot serve the call until an admin acts.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Serves `llm-call` for every cage of a host.
pub struct LlmService {
    db: Arc<dyn Db>,
    master: MasterKey,
    http: reqwest::Client,
}

impl LlmService {
    /// A service over `db`, opening keys with `master`.
    pub fn new(db: Arc<dyn Db>, master: MasterKey, http: reqwest::Client) -> Self {
        Self { db, master, http }
    }

    /// Performs one `llm-call` for the run `run`, attributed to `tool` when
    /// the guest has a tool invocation open.
    ///
    /// # Errors
    ///
    /// A [`CallError`] the guest can act on.
    pub async fn call(
        &self,
        run: &RunContext,
        tool: Option<&ToolInvocation>,
        request: GuestRequest,
    ) -> Result<Completion, CallError> {
        let span = tracing::info_span!(
            "llm_call",
            claw = %run.claw_name,
            "gen_ai.conversation.id" = %run.conversation_id,
            "gen_ai.tool.name" = tool.map(|t| t.name.as_str()),
            key_id = tracing::field::Empty,
            "gen_ai.provider.name" = tracing::field::Empty,
            "gen_ai.request.model" = tracing::field::Empty,
            "gen_ai.usage.input_tokens" = tracing::field::Empty,
            "gen_ai.usage.output_tokens" = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        self.call_inner(run, tool, request).instrument(span).await
    }

    async fn call_inner(
        &self,
        run: &RunContext,
        tool: Option<&ToolInvocation>,
        request: GuestRequest,
    ) -> Result<Completion, CallError> {
        let span = tracing::Span::current();
        let db = self.db.clone();
        let claw_id = run.claw_id.clone();
        let target = blocking(move || db.call_target(&claw_id))
            .await?
            .ok_or(CallError::NoKeyAssigned)?;
        span.record("key_id", target.key.id.as_str());
        span.record("gen_ai.request.model", target.model.as_str());
        if target.key.state == KeyState::Revoked {
            tracing::info!("refused: key revoked");
            return Err(CallError::KeyRevoked);
        }
        let kind: ProviderKind = target
            .key
            .provider
            .parse()
            .map_err(|e: providers::UnknownProvider| CallError::Unavailable(e.to_string()))?;
        span.record("gen_ai.provider.name", kind.otel_name());
        let base_url = providers::validate_base_url(&target.key.base_url)
            .map_err(|e| CallError::Unavailable(format!("key `{}`: {e}", target.key.name)))?;
        let chat = ChatRequest {
            model: target.model.clone(),
            messages: request.messages,
            tools: request.tools,
            max_tokens: request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            temperature: request.temperature,
        };

        let secret = self.open_key(run, &target)?;
        let started = Instant::now();
        let result = providers::complete(&self.http, kind, &base_url, &secret, &chat).await;
        drop(secret);
        let latency = started.elapsed();

        let record = metering::record(run, tool, &target, kind, &chat, &result, latency);
        span.record("gen_ai.usage.input_tokens", record.input_tokens);
        span.record("gen_ai.usage.output_tokens", record.output_tokens);
        span.record("latency_ms", record.latency_ms);
        let db = self.db.clone();
        blocking(move || db.usage_insert(&record)).await?;

        result.map_err(|e| {
            tracing::info!(status = e.status, kind = ?e.kind, "provider call failed");
            match e.kind {
                ProviderErrorKind::RateLimited { retry_after } => {
                    CallError::RateLimited(retry_after.unwrap_or(Duration::from_secs(1)))
                }
                ProviderErrorKind::Timeout => CallError::Timeout,
                _ => CallError::Provider {
                    status: e.status,
                    message: e.message,
                },
            }
        })
    }

    /// Opens an organisation's data key with the master key.
    ///
    /// # Errors
    ///
    /// [`vault::VaultError::WrongMasterKey`] when the master key does not
    /// open it.
    pub fn open_data_key(
        &self,
        org: &crate::db::OrgRow,
    ) -> Result<vault::DataKey, vault::VaultError> {
        vault::open_data_key(&self.master, &org.id, &org.wrapped_data_key)
    }

    fn open_key(
        &self,
        run: &RunContext,
        target: &CallTarget,
    ) -> Result<vault::ProviderSecret, CallError> {
        let data_key = vault::open_data_key(&self.master, &run.org_id, &target.wrapped_data_key)
            .map_err(|e| CallError::Unavailable(e.to_string()))?;
        let binding = KeyBinding {
            org_id: &run.org_id,
            key_id: &target.key.id,
            version: target.key.version,
        };
        vault::open_secret(&data_key, binding, &target.key.ciphertext).map_err(|_| {
            tracing::warn!(key_id = %target.key.id, "stored key failed to decrypt");
            CallError::Unavailable(format!(
                "the stored key `{}` failed to decrypt; an admin must enter it again with \
                 `clawrun keys rotate {}`",
                target.key.name, target.key.name
            ))
        })
    }
}

/// Runs a database operation off the async workers (SQLite writes fsync).
async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, crate::db::DbError> + Send + 'static,
) -> Result<T, CallError> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|_| CallError::Unavailable("the host's database task failed".into()))?
        .map_err(|e| {
            tracing::error!(error = %e, "database failed during llm-call");
            CallError::Unavailable("the host's database is unavailable; try again later".into())
        })
}
