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

use super::revocation::{self, KeyLocks, RevocationWatch};
use crate::cage::{RunContext, ToolInvocation};
use crate::db::{AuditRecord, CallTarget, Db, KeyState};
use crate::metering;
use crate::metering::budgets::{Admission, Refusal};
use crate::providers::{
    self, ChatRequest, CompatibleConfig, Completion, Endpoint, Message, ProviderError,
    ProviderErrorKind, ProviderKind, ProviderOptions, ToolDefinition,
};
use crate::vault::{self, KeyBinding, MasterKey, ProviderSecret};

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
    /// A budget would be exceeded; the text names it.
    #[error("budget exceeded: {0}")]
    BudgetExceeded(String),
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
    /// The request contains one of the organisation's stored keys.
    #[error("the request contains a stored API key")]
    SecretInRequest,
    /// The host cannot serve the call until an admin acts.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl CallError {
    /// The error a claw gets for a failed provider call.
    pub(super) fn from_provider(e: ProviderError) -> Self {
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
    }

    /// The outcome written to the audit log for a call refused this way.
    fn outcome(&self) -> &'static str {
        match self {
            CallError::KeyRevoked => "refused_revoked",
            CallError::NoKeyAssigned => "refused_unassigned",
            CallError::BudgetExceeded(_) => "refused_budget",
            CallError::RateLimited(_) => "rate_limited",
            CallError::Provider { .. } => "provider_error",
            CallError::InvalidRequest(_) => "invalid_request",
            CallError::Timeout => "timeout",
            CallError::SecretInRequest => "refused_secret_in_request",
            CallError::Unavailable(_) => "unavailable",
        }
    }
}

/// Serves `llm-call` for every cage of a host.
pub struct LlmService {
    pub(super) db: Arc<dyn Db>,
    master: MasterKey,
    pub(super) http: reqwest::Client,
    locks: Option<KeyLocks>,
    pub(super) watch: RevocationWatch,
    pub(super) prices: metering::PriceTable,
    pub(super) options: ProviderOptions,
    /// Turns to be past the budget check ([`ProviderOptions::max_calls_in_flight`]).
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// A call that passed every check, ready to go to the provider.
pub(super) struct Ready {
    pub target: CallTarget,
    /// The call's turn among those in flight; held to its end.
    pub turn: tokio::sync::OwnedSemaphorePermit,
    /// Held until the provider request has ended (see [`revocation`]).
    pub fence: Option<std::fs::File>,
    pub endpoint: Endpoint,
    pub chat: ChatRequest,
    pub secret: ProviderSecret,
    pub reservation: Option<i64>,
}

impl LlmService {
    /// A service over `db`, opening keys with `master`. `locks` fences
    /// revocation across processes sharing a data directory; without them
    /// (an in-memory database) revocation still applies to the next call.
    pub fn new(
        db: Arc<dyn Db>,
        master: MasterKey,
        http: reqwest::Client,
        locks: Option<KeyLocks>,
        prices: metering::PriceTable,
    ) -> Self {
        let watch = RevocationWatch::new(db.clone());
        let options = ProviderOptions::default();
        Self {
            db,
            master,
            http,
            locks,
            watch,
            prices,
            in_flight: Arc::new(tokio::sync::Semaphore::new(options.max_calls_in_flight)),
            options,
        }
    }

    /// Uses `options` for timeouts, retries and the response size cap.
    /// The HTTP client given to [`LlmService::new`] should come from
    /// [`ProviderOptions::client`] of the same options.
    pub fn with_provider_options(mut self, options: ProviderOptions) -> Self {
        self.in_flight = Arc::new(tokio::sync::Semaphore::new(options.max_calls_in_flight));
        self.options = options;
        self
    }

    /// Revokes a key for every process sharing the data directory: commits
    /// the new state, cuts this process's calls in flight with it, and
    /// waits until no call anywhere is between its state check and the end
    /// of its provider request.
    ///
    /// # Errors
    ///
    /// When the database or the lock file fails.
    pub fn revoke(
        &self,
        key_id: &str,
        at_ms: i64,
        audit: &AuditRecord,
    ) -> Result<bool, super::ServiceError> {
        let changed = self.db.key_revoke(key_id, at_ms, audit)?;
        self.watch.refresh();
        if let Some(locks) = &self.locks {
            locks.drain(key_id).map_err(|e| {
                super::ServiceError::Invalid(format!("cannot take the key's lock file: {e}"))
            })?;
        }
        Ok(changed)
    }

    /// Resolves once every usage record queued so far is on disk; a run's
    /// result waits for it before it leaves the host.
    ///
    /// # Errors
    ///
    /// When the ledger could not write or sync its records.
    pub async fn sync_ledger(&self) -> Result<(), crate::db::DbError> {
        self.db.sync_ledger().await
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
        self.call_inner(run, tool, request)
            .instrument(call_span(run, tool, false))
            .await
    }

    async fn call_inner(
        &self,
        run: &RunContext,
        tool: Option<&ToolInvocation>,
        request: GuestRequest,
    ) -> Result<Completion, CallError> {
        let span = tracing::Span::current();
        let Ready {
            target,
            turn: _turn,
            fence,
            endpoint,
            chat,
            secret,
            reservation,
        } = self.ready(run, request).await?;
        let kind = endpoint.kind;
        let revoked = revocation::revoked(self.watch.subscribe(), &target.key.id);
        // If this future is dropped mid-request (the run's deadline, Ctrl-C),
        // the guard still writes the call's record: the provider may bill
        // it. It builds the record only then, keeping the estimate off the
        // path of calls that finish.
        let guard = UnfinishedCall {
            service: self,
            run,
            tool,
            target: &target,
            kind,
            chat: &chat,
            reservation,
            armed: true,
        };
        let started = Instant::now();
        let result = tokio::select! {
            done = providers::complete(&self.http, &self.options, &endpoint, &secret, &chat) => Some(done),
            () = revoked => None,
        };
        guard.disarm();
        drop(secret);
        let latency = started.elapsed();
        super::waits::provider(latency);

        let record = metering::record(
            &self.prices,
            run,
            tool,
            &target,
            kind,
            &chat,
            result.as_ref(),
            latency,
        );
        span.record("gen_ai.usage.input_tokens", record.input_tokens);
        span.record("gen_ai.usage.output_tokens", record.output_tokens);
        span.record("latency_ms", record.latency_ms);
        if let Some(model) = &record.model_returned {
            span.record("gen_ai.response.model", model.as_str());
        }
        tracing::info!(outcome = %record.outcome, "llm call finished");
        let audit = self.audit(run, &target, "key.used", &record.outcome);
        // Queued, not awaited: the writer commits the records and only then
        // releases the fence, so a revocation that waited for this call
        // returns after they exist. The run's result waits for them to be
        // on disk (`Service::run`).
        let queueing = Instant::now();
        drop(self.db.record_call(record, audit, reservation, fence));
        super::waits::ledger(queueing.elapsed());

        let Some(result) = result else {
            tracing::info!("cancelled in flight: key revoked");
            return Err(CallError::KeyRevoked);
        };
        result.map_err(CallError::from_provider)
    }

    /// Everything before the provider request: the call's turn, the
    /// assignment and key state (under the key's fence), the leak guard,
    /// decryption, and admission with its reservation. Refusals are
    /// audited here.
    pub(super) async fn ready(
        &self,
        run: &RunContext,
        request: GuestRequest,
    ) -> Result<Ready, CallError> {
        let span = tracing::Span::current();
        // First, before the call takes a file, a connection or a
        // reservation: past the limit a host queues its calls instead of
        // failing them for want of file descriptors.
        let turn = self
            .in_flight
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| CallError::Unavailable("the host is shutting down".into()))?;
        let (target, fence) = self.resolve_fenced(run).await?;
        span.record("key_id", target.key.id.as_str());
        span.record("gen_ai.request.model", target.model.as_str());
        if target.key.state == KeyState::Revoked {
            // Out of the fence before writing anything: a revocation waits
            // for fence holders, and refusals must not keep it waiting.
            drop(fence);
            tracing::info!("refused: key revoked");
            let audit = self.audit(run, &target, "key.used", CallError::KeyRevoked.outcome());
            let db = self.db.clone();
            blocking(move || db.audit_append(&audit)).await?;
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
        let endpoint = Endpoint {
            kind,
            base_url,
            compatible: CompatibleConfig {
                path: target.key.api_path.clone(),
                auth_header: target.key.auth_header.clone(),
                auth_scheme: target.key.auth_scheme.clone(),
            },
        };

        let data_key = vault::open_data_key(&self.master, &run.org_id, &target.wrapped_data_key)
            .map_err(|e| CallError::Unavailable(e.to_string()))?;
        if let Some(leaked) = self.find_stored_key(run, &data_key, &request).await? {
            tracing::warn!(leaked_key_id = %leaked, "refused: the request contains a stored key");
            let mut audit = self.audit(run, &target, "exfiltration.refused", "refused");
            audit.key_id = Some(leaked);
            audit.key_version = None;
            let db = self.db.clone();
            blocking(move || db.audit_append(&audit)).await?;
            return Err(CallError::SecretInRequest);
        }

        let chat = ChatRequest {
            model: target.model.clone(),
            messages: request.messages,
            tools: request.tools,
            max_tokens: request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            temperature: request.temperature,
        };
        let secret = self.open_key(run, &data_key, &target)?;
        drop(data_key);
        let admitting = Instant::now();
        let reservation = self.admit(run, &target, &chat).await?;
        super::waits::admission(admitting.elapsed());
        Ok(Ready {
            target,
            turn,
            fence,
            endpoint,
            chat,
            secret,
            reservation,
        })
    }

    /// Checks budgets and rate limits and reserves the call's worst case.
    async fn admit(
        &self,
        run: &RunContext,
        target: &CallTarget,
        chat: &ChatRequest,
    ) -> Result<Option<i64>, CallError> {
        let input = metering::estimate_request_input(chat) as i64;
        let output = i64::from(chat.max_tokens);
        let micros = self
            .prices
            .price(&chat.model)
            .map(|p| (input as f64 * p.input + output as f64 * p.output).ceil() as i64);
        let call = Admission {
            org_id: run.org_id.clone(),
            claw_id: run.claw_id.clone(),
            key_id: target.key.id.clone(),
            conversation_id: run.conversation_id.clone(),
            tokens: input + output,
            micros,
            now_ms: metering::now_ms(),
        };
        match self.db.admit(call).await.map_err(db_failed)? {
            Ok(reservation) => Ok(reservation),
            Err(Refusal::Budget(why)) => {
                tracing::info!(%why, "refused: budget");
                Err(CallError::BudgetExceeded(why))
            }
            Err(Refusal::RateLimited(ms)) => {
                tracing::info!(retry_after_ms = ms, "refused: rate limit");
                Err(CallError::RateLimited(Duration::from_millis(ms as u64)))
            }
        }
    }

    /// Reads the claw's assignment under the fence of its key: the returned
    /// lock guard must live until the provider request has ended.
    async fn resolve_fenced(
        &self,
        run: &RunContext,
    ) -> Result<(CallTarget, Option<std::fs::File>), CallError> {
        if let Some(locks) = &self.locks {
            return super::fence::resolve(&self.db, locks, &run.claw_id).await;
        }
        let target = self
            .db
            .call_target(&run.claw_id)
            .map_err(db_failed)?
            .ok_or(CallError::NoKeyAssigned)?;
        Ok((target, None))
    }

    /// The id of a stored key of the organisation found in the request.
    async fn find_stored_key(
        &self,
        run: &RunContext,
        data_key: &vault::DataKey,
        request: &GuestRequest,
    ) -> Result<Option<String>, CallError> {
        // One indexed read by a cached statement, on the calling task (see
        // `fence`).
        let entries: Vec<vault::guard::ScanEntry> = self
            .db
            .keys(&run.org_id)
            .map_err(db_failed)?
            .into_iter()
            .map(|k| vault::guard::ScanEntry {
                key_id: k.id,
                len: k.scan_len as usize,
                hash: k.scan_hash as u64,
                fingerprint: k.fingerprint,
            })
            .collect();
        let owned = scan_texts(request);
        let texts: Vec<&str> = owned.iter().map(|t| t.as_ref()).collect();
        Ok(vault::guard::find_key(data_key, &entries, &texts).map(|e| e.key_id.clone()))
    }

    pub(super) fn audit(
        &self,
        run: &RunContext,
        target: &CallTarget,
        action: &str,
        outcome: &str,
    ) -> AuditRecord {
        AuditRecord {
            at_ms: metering::now_ms(),
            org_id: Some(run.org_id.clone()),
            actor: format!("claw:{}", run.claw_name),
            action: action.into(),
            key_id: Some(target.key.id.clone()),
            key_version: Some(target.key.version),
            claw_id: Some(run.claw_id.clone()),
            outcome: outcome.into(),
            subject: None,
        }
    }

    /// A fresh data key for the organisation `org_id`, wrapped by the
    /// master key.
    pub fn wrap_new_data_key(&self, org_id: &str) -> Vec<u8> {
        vault::wrap_data_key(&self.master, org_id, &vault::DataKey::generate())
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
        data_key: &vault::DataKey,
        target: &CallTarget,
    ) -> Result<vault::ProviderSecret, CallError> {
        let binding = KeyBinding {
            org_id: &run.org_id,
            key_id: &target.key.id,
            version: target.key.version,
        };
        vault::open_secret(data_key, binding, &target.key.ciphertext).map_err(|_| {
            tracing::warn!(key_id = %target.key.id, "stored key failed to decrypt");
            CallError::Unavailable(format!(
                "the stored key `{}` failed to decrypt; an admin must enter it again with \
                 `clawrun keys rotate {}`",
                target.key.name, target.key.name
            ))
        })
    }
}

/// Every text of a guest request that reaches the provider, for the leak
/// guard: message contents, tool calls (their arguments also parsed and
/// written out again, so `\u0073k-...` escapes are scanned decoded), tool
/// results and tool definitions.
fn scan_texts(request: &GuestRequest) -> Vec<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    let mut texts: Vec<Cow<'_, str>> = Vec::new();
    for m in &request.messages {
        texts.push(Cow::Borrowed(&m.content));
        for c in &m.tool_calls {
            texts.extend([&c.id, &c.name, &c.arguments].map(|t| Cow::Borrowed(t.as_str())));
            if let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&c.arguments) {
                texts.push(Cow::Owned(parsed.to_string()));
            }
        }
        texts.extend(m.tool_call_id.as_deref().map(Cow::Borrowed));
    }
    for t in &request.tools {
        texts.extend([
            Cow::Borrowed(t.name.as_str()),
            Cow::Borrowed(t.description.as_str()),
        ]);
        texts.push(Cow::Owned(t.parameters.to_string()));
    }
    texts
}

/// Writes an unfinished call's usage and audit records if dropped armed.
struct UnfinishedCall<'a> {
    service: &'a LlmService,
    run: &'a RunContext,
    tool: Option<&'a ToolInvocation>,
    target: &'a CallTarget,
    kind: ProviderKind,
    chat: &'a ChatRequest,
    reservation: Option<i64>,
    armed: bool,
}

impl UnfinishedCall<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for UnfinishedCall<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let s = self.service;
        let mut usage = metering::record(
            &s.prices,
            self.run,
            self.tool,
            self.target,
            self.kind,
            self.chat,
            None,
            Duration::ZERO,
        );
        usage.outcome = "cancelled".into();
        let audit = s.audit(self.run, self.target, "key.used", "cancelled");
        if let Err(e) = s.db.record_call_blocking(usage, audit, self.reservation) {
            tracing::error!(error = %e, "could not record a call cut off before it finished");
        }
    }
}

/// The `llm_call` span of one call or stream, with the GenAI attributes
/// known before it starts; the rest are recorded as they become known.
pub(super) fn call_span(
    run: &RunContext,
    tool: Option<&ToolInvocation>,
    stream: bool,
) -> tracing::Span {
    tracing::info_span!(
        "llm_call",
        claw = %run.claw_name,
        stream,
        "gen_ai.operation.name" = "chat",
        "gen_ai.agent.name" = %run.claw_name,
        "gen_ai.conversation.id" = %run.conversation_id,
        "gen_ai.tool.name" = tool.map(|t| t.name.as_str()),
        "gen_ai.tool.call.id" = tool.and_then(|t| t.call_id.as_deref()),
        "gen_ai.response.model" = tracing::field::Empty,
        key_id = tracing::field::Empty,
        "gen_ai.provider.name" = tracing::field::Empty,
        "gen_ai.request.model" = tracing::field::Empty,
        "gen_ai.usage.input_tokens" = tracing::field::Empty,
        "gen_ai.usage.output_tokens" = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    )
}

/// Runs a database operation off the async workers (SQLite writes fsync).
pub(super) async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, crate::db::DbError> + Send + 'static,
) -> Result<T, CallError> {
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|_| CallError::Unavailable("the host's database task failed".into()))?
        .map_err(db_failed)
}

/// The error a claw gets when the host's database fails; the cause goes to
/// the log.
pub(super) fn db_failed(e: crate::db::DbError) -> CallError {
    tracing::error!(error = %e, "database failed during llm-call");
    CallError::Unavailable("the host's database is unavailable; try again later".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Role, ToolCall};

    #[test]
    fn escaped_tool_arguments_are_scanned_decoded() {
        let request = GuestRequest {
            messages: vec![Message {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "f".into(),
                    arguments: r#"{"a":"\u0073\u006b-secret"}"#.into(),
                }],
                tool_call_id: None,
            }],
            tools: vec![],
            max_tokens: None,
            temperature: None,
        };
        let texts = scan_texts(&request);
        assert!(texts.iter().any(|t| t.contains("sk-secret")), "{texts:?}");
    }
}
