//! The policy of a streamed `llm-call`: the checks of
//! [`LlmService::call`](super::llm::LlmService::call), then a task that
//! drives the provider's stream and hands its pieces to the claw.
//!
//! The task, not the claw, reads the provider, so a stream stops on its
//! own terms whatever the claw is doing: when the key is revoked (the
//! revocation watch, within its 10 ms tick), when the reply passes its
//! `max-tokens` by more than a quarter (a provider ignoring the cap would
//! spend budget no reservation covers: the stream ends `budget-exceeded`),
//! when the claw drops the stream, or when the call's deadline passes. In
//! every case it closes the connection, writes the one usage record of the
//! call (reported when the provider sent final usage, otherwise estimated
//! from what was generated and marked so), releases the reservation, and
//! only then lets go of the key's revocation fence. The channel to the
//! claw holds a few pieces, so the provider is read about as fast as the
//! claw pulls.
//!
//! Streamed text passes through a [`StreamScrubber`]: a reply that echoes
//! the key, even split across pieces, reaches the claw with `[redacted]`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::llm::{CallError, GuestRequest, LlmService, Ready, db_failed};
use super::revocation;
use crate::cage::{RunContext, ToolInvocation};
use crate::db::{CallTarget, UsageRecord};
use crate::metering::{self, CallFacts};
use crate::providers::{
    self, FinishReason, ProviderError, ProviderKind, ProviderStream, StreamEvent, StreamScrubber,
    ToolCallDelta, Usage,
};
use crate::vault::ProviderSecret;

/// Pieces waiting for the claw; the provider is not read further ahead.
const BUFFERED_EVENTS: usize = 8;

/// A piece of a streamed reply, as the claw receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEvent {
    /// More reply text.
    Text(String),
    /// A piece of a tool call.
    ToolCall(ToolCallDelta),
    /// Why generation stopped; sent once, after the last piece.
    Finish(FinishReason),
    /// The usage recorded for the call; the last event.
    Usage(Usage),
}

/// The claw's end of a stream.
#[derive(Debug)]
pub struct LlmStream {
    events: mpsc::Receiver<GuestEvent>,
    failed: Arc<OnceLock<CallError>>,
}

impl LlmStream {
    /// The next piece, `None` after the last.
    ///
    /// # Errors
    ///
    /// The error that ended the stream, as soon as it ended, ahead of any
    /// pieces still buffered; then again on every later call.
    pub async fn next(&mut self) -> Result<Option<GuestEvent>, CallError> {
        if let Some(e) = self.failed.get() {
            return Err(e.clone());
        }
        let event = self.events.recv().await;
        match (self.failed.get(), event) {
            (Some(e), _) => Err(e.clone()),
            (None, event) => Ok(event),
        }
    }
}

/// The host's handle on a stream's task.
#[derive(Debug)]
pub struct StreamTask {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl StreamTask {
    /// Stops the stream if it is still running and waits until its usage
    /// record is written.
    pub async fn finish(self) {
        drop(self.stop);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "a stream task failed");
        }
    }
}

impl LlmService {
    /// Starts a streamed `llm-call` for the run `run`.
    ///
    /// # Errors
    ///
    /// As [`LlmService::call`], for everything that happens before the
    /// provider starts streaming; later failures come from
    /// [`LlmStream::next`].
    pub async fn stream(
        self: &Arc<Self>,
        run: &RunContext,
        tool: Option<&ToolInvocation>,
        request: GuestRequest,
    ) -> Result<(LlmStream, StreamTask), CallError> {
        let span = super::llm::call_span(run, tool, true);
        let ready = self.ready(run, request).instrument(span.clone()).await?;
        let Ready {
            target,
            turn,
            fence,
            endpoint,
            chat,
            secret,
            reservation,
        } = ready;
        let key_id = target.key.id.clone();
        let rx = self.watch.subscribe();
        let mut revoked = Box::pin(async move { revocation::revoked(rx, &key_id).await });
        let mut driver = Driver {
            service: self.clone(),
            run: run.clone(),
            tool: tool.cloned(),
            target,
            kind: endpoint.kind,
            chat,
            reservation,
            started: Instant::now(),
            provider: None,
            recorded: false,
            secret: ProviderSecret::new(secret.expose().to_owned()),
        };
        let opened = tokio::select! {
            opened = providers::stream(&self.http, &self.options, &endpoint, &secret, &driver.chat) => Some(opened),
            () = &mut revoked => None,
        };
        let provider = match opened {
            Some(Ok(provider)) => provider,
            failed => {
                let end = match failed {
                    Some(Err(e)) => End::Refused(e),
                    _ => End::Revoked,
                };
                let error = end.error(&driver.chat);
                drop(secret);
                driver.record(&end).instrument(span).await?;
                drop(fence);
                return Err(error.unwrap_or(CallError::KeyRevoked));
            }
        };
        driver.provider = Some(provider);
        let (events_tx, events) = mpsc::channel(BUFFERED_EVENTS);
        let (stop, stopped) = oneshot::channel();
        let failed = Arc::new(OnceLock::new());
        let task = tokio::spawn(
            drive(Drive {
                driver,
                secret,
                turn,
                fence,
                revoked,
                stopped,
                events: events_tx,
                failed: failed.clone(),
            })
            .instrument(span),
        );
        Ok((LlmStream { events, failed }, StreamTask { stop, task }))
    }
}

/// How a stream ended.
enum End {
    /// The reply is complete.
    Complete,
    /// The provider refused the request before streaming.
    Refused(ProviderError),
    /// The stream broke, or the provider sent an error in it.
    Failed(ProviderError),
    /// The key was revoked.
    Revoked,
    /// The reply passed its cap.
    Overrun,
    /// The claw dropped the stream, or its run ended.
    Dropped,
}

impl End {
    fn outcome(&self) -> String {
        match self {
            End::Complete => "ok".into(),
            End::Refused(e) | End::Failed(e) => metering::outcome_of(e),
            End::Revoked => "cancelled_revoked".into(),
            End::Overrun => "budget_exceeded".into(),
            End::Dropped => "dropped".into(),
        }
    }

    /// What the claw is told, `None` for endings it caused or expects.
    fn error(&self, chat: &providers::ChatRequest) -> Option<CallError> {
        match self {
            End::Complete | End::Dropped => None,
            End::Refused(e) | End::Failed(e) => Some(CallError::from_provider(e.clone())),
            End::Revoked => Some(CallError::KeyRevoked),
            End::Overrun => Some(CallError::BudgetExceeded(format!(
                "the reply passed its max-tokens of {} and the provider kept going, so the stream \
                 was stopped to stay within the budget reserved for it",
                chat.max_tokens
            ))),
        }
    }
}

/// The call's facts and the provider stream; writes the usage record if
/// dropped before it did (the task cancelled by a shutdown).
struct Driver {
    service: Arc<LlmService>,
    run: RunContext,
    tool: Option<ToolInvocation>,
    target: CallTarget,
    kind: ProviderKind,
    chat: providers::ChatRequest,
    reservation: Option<i64>,
    started: Instant,
    provider: Option<ProviderStream>,
    recorded: bool,
    /// A copy of the key, to scrub the reply's model and usage object
    /// before they are recorded.
    secret: ProviderSecret,
}

impl Driver {
    fn facts(&self) -> CallFacts<'_> {
        CallFacts {
            run: &self.run,
            tool: self.tool.as_ref(),
            target: &self.target,
            kind: self.kind,
            request: &self.chat,
        }
    }

    /// The call's usage record, with the key scrubbed from what the
    /// provider sent (its model name and usage object are stored and logged).
    fn usage_record(&self, end: &End) -> UsageRecord {
        let mut record = self.unscrubbed_usage_record(end);
        if let Some(model) = record.model_returned.as_mut() {
            providers::scrub(model, &self.secret);
        }
        if let Some(raw) = record.raw_usage.as_mut() {
            providers::scrub(raw, &self.secret);
        }
        record
    }

    fn unscrubbed_usage_record(&self, end: &End) -> UsageRecord {
        let prices = &self.service.prices;
        let latency = self.started.elapsed();
        let partial = self
            .provider
            .as_ref()
            .map(|p| p.partial().completion())
            .unwrap_or_else(|| providers::Partial::default().completion());
        match end {
            End::Complete => metering::record(
                prices,
                &self.run,
                self.tool.as_ref(),
                &self.target,
                self.kind,
                &self.chat,
                Some(&Ok(partial)),
                latency,
            ),
            End::Refused(e) => metering::record(
                prices,
                &self.run,
                self.tool.as_ref(),
                &self.target,
                self.kind,
                &self.chat,
                Some(&Err(e.clone())),
                latency,
            ),
            other => {
                metering::record_partial(prices, &self.facts(), &partial, &other.outcome(), latency)
            }
        }
    }

    /// Writes the call's usage and audit records, releasing its
    /// reservation.
    async fn record(&mut self, end: &End) -> Result<UsageRecord, CallError> {
        let record = self.usage_record(end);
        self.recorded = true;
        let span = tracing::Span::current();
        span.record("gen_ai.usage.input_tokens", record.input_tokens);
        span.record("gen_ai.usage.output_tokens", record.output_tokens);
        span.record("latency_ms", record.latency_ms);
        if let Some(model) = &record.model_returned {
            span.record("gen_ai.response.model", model.as_str());
        }
        tracing::info!(outcome = %record.outcome, source = %record.source, "llm stream finished");
        let audit = self
            .service
            .audit(&self.run, &self.target, "key.used", &record.outcome);
        self.service
            .db
            .record_call(record.clone(), audit, self.reservation, None)
            .await
            .map_err(db_failed)?;
        Ok(record)
    }

    /// Whether the reply has passed its cap by more than a quarter (the
    /// margin absorbs the difference between our tokenizer and the
    /// provider's).
    fn overrun(&self, checked_bytes: &mut usize) -> bool {
        let Some(provider) = &self.provider else {
            return false;
        };
        let partial = provider.partial();
        let cap = u64::from(self.chat.max_tokens);
        let limit = cap + cap / 4 + 16;
        let reported = partial.usage.as_ref().map_or(0, |(_, u)| u.output_tokens);
        if reported > limit {
            return true;
        }
        // Counting tokens costs a pass over the text: only once the text
        // could be over the limit, and then once per kilobyte.
        let bytes = partial.generated_bytes();
        if (bytes as u64) / 4 <= limit || bytes < *checked_bytes + 1024 {
            return false;
        }
        *checked_bytes = bytes;
        metering::output_tokens(&partial.completion().message) > limit
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if self.recorded {
            return;
        }
        let mut record = self.usage_record(&End::Dropped);
        record.outcome = "cancelled".into();
        let audit = self
            .service
            .audit(&self.run, &self.target, "key.used", "cancelled");
        if let Err(e) = self
            .service
            .db
            .record_call_blocking(record, audit, self.reservation)
        {
            tracing::error!(error = %e, "could not record a stream cut off before it finished");
        }
    }
}

/// The scrubbers of one streamed tool call's fields.
#[derive(Default)]
struct ToolFieldScrubbers {
    id: StreamScrubber,
    name: StreamScrubber,
    arguments: StreamScrubber,
}

/// What the stream's task owns.
struct Drive<R> {
    driver: Driver,
    secret: ProviderSecret,
    /// The call's turn among those in flight, until the stream has ended.
    turn: tokio::sync::OwnedSemaphorePermit,
    fence: Option<std::fs::File>,
    revoked: std::pin::Pin<Box<R>>,
    stopped: oneshot::Receiver<()>,
    events: mpsc::Sender<GuestEvent>,
    failed: Arc<OnceLock<CallError>>,
}

async fn drive<R: Future<Output = ()>>(d: Drive<R>) {
    let Drive {
        mut driver,
        secret,
        turn: _turn,
        fence,
        mut revoked,
        mut stopped,
        events,
        failed,
    } = d;
    let mut text = StreamScrubber::default();
    let mut tool_fields: HashMap<u32, ToolFieldScrubbers> = HashMap::new();
    let mut checked_bytes = 0;
    let end = 'read: loop {
        let Some(provider) = driver.provider.as_mut() else {
            break End::Complete;
        };
        let next = tokio::select! {
            biased;
            () = &mut revoked => break End::Revoked,
            _ = &mut stopped => break End::Dropped,
            next = provider.next() => next,
        };
        let event = match next {
            Ok(None) => break End::Complete,
            // An error event inside the stream quotes the provider: it may
            // quote the key.
            Err(e) => break End::Failed(e.sanitised(&secret)),
            Ok(Some(event)) => event,
        };
        if driver.overrun(&mut checked_bytes) {
            break End::Overrun;
        }
        let out = match event {
            StreamEvent::Text(delta) => Some(GuestEvent::Text(text.push(&delta, &secret)))
                .filter(|e| !matches!(e, GuestEvent::Text(t) if t.is_empty())),
            StreamEvent::ToolCall(mut delta) => {
                // Each field of each call is a text in pieces of its own: a
                // key split across two deltas' names is still a key.
                let scrubbers = tool_fields.entry(delta.index).or_default();
                delta.arguments = scrubbers.arguments.push(&delta.arguments, &secret);
                delta.name = delta.name.map(|n| scrubbers.name.push(&n, &secret));
                delta.id = delta.id.map(|i| scrubbers.id.push(&i, &secret));
                Some(GuestEvent::ToolCall(delta))
            }
        };
        if let Some(out) = out {
            tokio::select! {
                biased;
                () = &mut revoked => break 'read End::Revoked,
                _ = &mut stopped => break 'read End::Dropped,
                sent = events.send(out) => if sent.is_err() { break 'read End::Dropped },
            }
        }
    };
    // The claw hears of a failure at once, before the bookkeeping.
    if let Some(error) = end.error(&driver.chat) {
        let _ = failed.set(error);
    }
    let mut tail = Vec::new();
    if matches!(end, End::Complete) {
        let rest = text.flush(&secret);
        if !rest.is_empty() {
            tail.push(GuestEvent::Text(rest));
        }
        let mut indexes: Vec<u32> = tool_fields.keys().copied().collect();
        indexes.sort_unstable();
        for index in indexes {
            let Some(s) = tool_fields.get_mut(&index) else {
                continue;
            };
            let some = |text: String| (!text.is_empty()).then_some(text);
            let (id, name) = (some(s.id.flush(&secret)), some(s.name.flush(&secret)));
            let rest = s.arguments.flush(&secret);
            if id.is_some() || name.is_some() || !rest.is_empty() {
                tail.push(GuestEvent::ToolCall(ToolCallDelta {
                    index,
                    id,
                    name,
                    arguments: rest,
                }));
            }
        }
    }
    if let Some(provider) = driver.provider.as_mut() {
        provider.close();
    }
    drop(secret);
    let recorded = driver.record(&end).await;
    // Only now may a revocation waiting on the fence return: the
    // connection is closed and the record written.
    drop(fence);
    match recorded {
        Ok(record) if matches!(end, End::Complete) => {
            let done = driver
                .provider
                .as_ref()
                .map(|p| p.partial().completion().finish_reason)
                .unwrap_or(FinishReason::Other);
            tail.push(GuestEvent::Finish(done));
            tail.push(GuestEvent::Usage(Usage {
                input_tokens: record.input_tokens as u64,
                output_tokens: record.output_tokens as u64,
                cache_read_tokens: record.cache_read_tokens as u64,
                cache_write_tokens: record.cache_write_tokens as u64,
                reasoning_tokens: record.reasoning_tokens as u64,
            }));
            for event in tail {
                if events.send(event).await.is_err() {
                    break;
                }
            }
        }
        Ok(_) => {}
        Err(e) => {
            let _ = failed.set(e);
        }
    }
}
