//! Metering: turning a provider call into a usage record.
//!
//! Counts follow the OpenTelemetry GenAI conventions: input includes cache
//! reads and writes, output includes reasoning, and the breakdowns are kept
//! apart. When a provider reports no usage (a reply without it, or a call
//! cut before it arrived), the counts are estimated with the `o200k_base`
//! tokenizer (tiktoken-rs; exact for current OpenAI models, close for
//! others) plus each message's framing, and the record says `estimated`.
//! Budget reservations use a cheaper bound of bytes over four, since they
//! run on every call.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod budgets;
mod prices;

pub use prices::{ModelPrice, PRICES_FILE, PriceTable, PriceTableError};

use crate::cage::{RunContext, ToolInvocation};
use crate::db::{CallTarget, UsageRecord};
use crate::providers::{
    ChatRequest, Completion, ProviderError, ProviderErrorKind, ProviderKind, Usage,
};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The usage record of one provider call, priced with `prices`.
#[allow(
    clippy::too_many_arguments,
    reason = "one record gathers every fact of a call"
)]
pub fn record(
    prices: &PriceTable,
    run: &RunContext,
    tool: Option<&ToolInvocation>,
    target: &CallTarget,
    kind: ProviderKind,
    request: &ChatRequest,
    result: Option<&Result<Completion, ProviderError>>,
    latency: Duration,
) -> UsageRecord {
    let (usage, source, raw, model_returned, outcome) = match result {
        // Cut in flight by a revocation: the provider may have read the
        // prompt already, so its input is charged as an estimate.
        None => input_only(request, "cancelled_revoked".to_owned()),
        Some(Ok(done)) if done.raw_usage.is_null() => (
            estimate(request, done),
            "estimated",
            None,
            Some(done.model.clone()),
            "ok".to_owned(),
        ),
        Some(Ok(done)) => (
            done.usage,
            "reported",
            Some(done.raw_usage.to_string()),
            Some(done.model.clone()),
            "ok".to_owned(),
        ),
        // The provider read the request but its answer was lost or
        // unreadable: it has likely billed the input, so charge the
        // estimate rather than nothing.
        Some(Err(e))
            if matches!(
                e.kind,
                ProviderErrorKind::BadResponse | ProviderErrorKind::Timeout
            ) =>
        {
            input_only(request, outcome_of(e))
        }
        // Refused with an error status: nothing was generated or billed.
        Some(Err(e)) => (Usage::default(), "none", None, None, outcome_of(e)),
    };
    let facts = CallFacts {
        run,
        tool,
        target,
        kind,
        request,
    };
    assemble(
        prices,
        &facts,
        usage,
        source,
        raw,
        model_returned,
        outcome,
        latency,
    )
}

/// Who made a call, with which key, for what.
#[derive(Clone, Copy)]
pub struct CallFacts<'a> {
    /// The run.
    pub run: &'a RunContext,
    /// The open tool invocation, if any.
    pub tool: Option<&'a ToolInvocation>,
    /// The key and model.
    pub target: &'a CallTarget,
    /// The key's wire format.
    pub kind: ProviderKind,
    /// The request as sent.
    pub request: &'a ChatRequest,
}

/// The usage record of a stream that ended before its reply was complete
/// (broken, cut by a revocation or a cap, dropped by the claw): what was
/// generated is charged, always marked `estimated`. Counts the provider
/// reported before the end are kept (Anthropic sends exact input counts
/// at the start); output is the larger of its report and the tokens of the
/// text and tool calls received.
pub fn record_partial(
    prices: &PriceTable,
    facts: &CallFacts<'_>,
    partial: &Completion,
    outcome: &str,
    latency: Duration,
) -> UsageRecord {
    let estimated = estimate(facts.request, partial);
    let (usage, raw) = if partial.raw_usage.is_null() {
        (estimated, None)
    } else {
        let mut usage = partial.usage;
        if usage.input_tokens == 0 {
            usage.input_tokens = estimated.input_tokens;
        }
        usage.output_tokens = usage.output_tokens.max(estimated.output_tokens);
        (usage, Some(partial.raw_usage.to_string()))
    };
    let model = Some(partial.model.clone()).filter(|m| !m.is_empty());
    assemble(
        prices,
        facts,
        usage,
        "estimated",
        raw,
        model,
        outcome.to_owned(),
        latency,
    )
}

/// Tokens of the text and tool calls of a (partial) reply.
pub fn output_tokens(message: &crate::providers::Message) -> u64 {
    tokens(&message.content)
        + message
            .tool_calls
            .iter()
            .map(|c| tokens(&c.name) + tokens(&c.arguments))
            .sum::<u64>()
}

#[allow(
    clippy::too_many_arguments,
    reason = "one record gathers every fact of a call"
)]
fn assemble(
    prices: &PriceTable,
    facts: &CallFacts<'_>,
    usage: Usage,
    source: &str,
    raw: Option<String>,
    model_returned: Option<String>,
    outcome: String,
    latency: Duration,
) -> UsageRecord {
    let CallFacts {
        run,
        tool,
        target,
        kind,
        request,
    } = *facts;
    UsageRecord {
        at_ms: now_ms(),
        org_id: run.org_id.clone(),
        claw_id: run.claw_id.clone(),
        run_id: run.run_id.clone(),
        conversation_id: run.conversation_id.clone(),
        tool_invocation_id: tool.map(|t| t.id.clone()),
        tool_name: tool.map(|t| t.name.clone()),
        tool_call_id: tool.and_then(|t| t.call_id.clone()),
        key_id: target.key.id.clone(),
        key_version: target.key.version,
        provider: kind.as_str().to_owned(),
        model_requested: request.model.clone(),
        // What the provider says answered is what it bills; a name the
        // table does not know falls back to the model asked for, so a
        // priced call is never counted as free.
        cost_micros: model_returned
            .as_deref()
            .filter(|m| !m.is_empty())
            .and_then(|m| prices.cost_micros(m, &usage))
            .or_else(|| prices.cost_micros(&request.model, &usage)),
        price_version: Some(prices.version.clone()),
        model_returned: model_returned.filter(|m| !m.is_empty()),
        input_tokens: usage.input_tokens as i64,
        output_tokens: usage.output_tokens as i64,
        cache_read_tokens: usage.cache_read_tokens as i64,
        cache_write_tokens: usage.cache_write_tokens as i64,
        reasoning_tokens: usage.reasoning_tokens as i64,
        raw_usage: raw,
        source: source.to_owned(),
        latency_ms: latency.as_millis() as i64,
        outcome,
    }
}

/// The record fields of a call charged only its estimated input.
fn input_only(
    request: &ChatRequest,
    outcome: String,
) -> (Usage, &'static str, Option<String>, Option<String>, String) {
    let usage = Usage {
        input_tokens: tokenize_input(request),
        ..Usage::default()
    };
    (usage, "estimated", None, None, outcome)
}

/// The outcome recorded for a call that failed with `e`.
pub fn outcome_of(e: &ProviderError) -> String {
    use crate::providers::ProviderErrorKind as K;
    match e.kind {
        K::Unauthorized => "unauthorized",
        K::Forbidden => "forbidden",
        K::NotFound => "not_found",
        K::BadRequest => "bad_request",
        K::RateLimited { .. } => "rate_limited",
        K::Overloaded => "overloaded",
        K::Server => "server_error",
        K::OtherStatus => "error",
        K::BadResponse => "bad_response",
        K::Timeout => "timeout",
        K::Connect => "connect_error",
    }
    .to_owned()
}

/// Estimated input tokens of a request, tools included, at four characters
/// a token: the input half of a call's worst case for budgets.
pub fn estimate_request_input(request: &ChatRequest) -> u64 {
    let tools: u64 = request
        .tools
        .iter()
        .map(|t| {
            ((t.name.len() + t.description.len() + t.parameters.to_string().len()) as u64)
                .div_ceil(4)
        })
        .sum();
    estimate_input(request) + tools
}

/// Tokens of `text` under `o200k_base`.
fn tokens(text: &str) -> u64 {
    tiktoken_rs::o200k_base_singleton()
        .encode_ordinary(text)
        .len() as u64
}

/// Tokens a provider reads for `request`: every message's text and tool
/// calls, plus the per-message framing (about four tokens, as OpenAI's
/// counting guide gives) and the tool definitions.
fn tokenize_input(request: &ChatRequest) -> u64 {
    let messages: u64 = request
        .messages
        .iter()
        .map(|m| {
            4 + tokens(&m.content)
                + m.tool_calls
                    .iter()
                    .map(|c| tokens(&c.name) + tokens(&c.arguments))
                    .sum::<u64>()
        })
        .sum();
    let tools: u64 = request
        .tools
        .iter()
        .map(|t| tokens(&t.name) + tokens(&t.description) + tokens(&t.parameters.to_string()))
        .sum();
    3 + messages + tools
}

fn estimate_input(request: &ChatRequest) -> u64 {
    request
        .messages
        .iter()
        .map(|m| (m.content.len() as u64).div_ceil(4) + 4)
        .sum()
}

/// Tokens of the request and reply, for calls whose provider reported no
/// usage.
fn estimate(request: &ChatRequest, done: &Completion) -> Usage {
    let input = tokenize_input(request);
    let output = output_tokens(&done.message);
    Usage {
        input_tokens: input,
        output_tokens: output,
        ..Usage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Message, Role};

    #[test]
    fn estimates_use_a_real_tokenizer() {
        // "Hello, world!" is 4 tokens in o200k_base: "Hello", ",", " world", "!".
        assert_eq!(tokens("Hello, world!"), 4);
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![Message {
                role: Role::User,
                content: "Hello, world!".into(),
                tool_calls: vec![],
                tool_call_id: None,
            }],
            tools: vec![],
            max_tokens: 10,
            temperature: None,
        };
        assert_eq!(tokenize_input(&request), 3 + 4 + 4);
    }
}
