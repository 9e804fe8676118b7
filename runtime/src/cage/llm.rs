//! `clawrun:claw/llm`: the guest's only path to a model.
//!
//! This file converts between the WIT types and the host's own, checks
//! what the guest sent ([`validate_request`], a pure function the fuzz
//! targets drive), counts the run's calls, and keeps the run's open tool
//! invocations and streams; the policy of a call
//! (assignment, revocation check, decryption, provider request, ledger) is
//! [`LlmService::call`](crate::service::llm::LlmService::call), and of a
//! stream [`LlmService::stream`](crate::service::llm::LlmService::stream).

use wasmtime::component::Resource;

use super::bindings::clawrun::claw::llm::{Host, HostCompletionStream, HostToolInvocation};
use super::bindings::clawrun::claw::types as wit;
use super::limits::{LimitHit, check_value};
use super::{CageState, ToolInvocation};
use crate::providers;
use crate::service::llm::{CallError, GuestRequest};
use crate::service::stream::{GuestEvent, LlmStream};

impl wit::Host for CageState {}

impl CageState {
    /// Counts a call against the run's limit, and finds the tool invocation
    /// it belongs to.
    fn start_call(&mut self) -> wasmtime::Result<Option<ToolInvocation>> {
        // A trap, not an error the guest could ignore and retry forever.
        if self.llm_calls_made >= self.limits.llm_calls {
            return Err(wasmtime::Error::new(LimitHit::LlmCalls(
                self.limits.llm_calls,
            )));
        }
        self.llm_calls_made += 1;
        Ok(self
            .open_tools
            .last()
            .and_then(|rep| {
                self.table
                    .get(&Resource::<ToolInvocation>::new_borrow(*rep))
                    .ok()
            })
            .cloned())
    }
}

impl Host for CageState {
    async fn llm_call(
        &mut self,
        request: wit::ChatRequest,
    ) -> wasmtime::Result<Result<wit::Completion, wit::LlmError>> {
        let tool = self.start_call()?;
        let request = match validate_request(request, self.limits.max_value_bytes) {
            Ok(r) => r,
            Err(why) => return Ok(Err(wit::LlmError::InvalidRequest(why))),
        };
        let result = self.llm.call(&self.run, tool.as_ref(), request).await;
        Ok(result.map(completion_to_wit).map_err(error_to_wit))
    }

    async fn llm_stream(
        &mut self,
        request: wit::ChatRequest,
    ) -> wasmtime::Result<Result<Resource<LlmStream>, wit::LlmError>> {
        let tool = self.start_call()?;
        let request = match validate_request(request, self.limits.max_value_bytes) {
            Ok(r) => r,
            Err(why) => return Ok(Err(wit::LlmError::InvalidRequest(why))),
        };
        match self.llm.stream(&self.run, tool.as_ref(), request).await {
            Ok((stream, task)) => {
                let resource = self.table.push(stream)?;
                self.streams.insert(resource.rep(), task);
                Ok(Ok(resource))
            }
            Err(e) => Ok(Err(error_to_wit(e))),
        }
    }
}

impl HostCompletionStream for CageState {
    async fn next(
        &mut self,
        this: Resource<LlmStream>,
    ) -> wasmtime::Result<Result<Option<wit::StreamEvent>, wit::LlmError>> {
        let stream = self.table.get_mut(&this)?;
        Ok(stream
            .next()
            .await
            .map(|event| event.map(event_to_wit))
            .map_err(error_to_wit))
    }

    async fn drop(&mut self, this: Resource<LlmStream>) -> wasmtime::Result<()> {
        let rep = this.rep();
        self.table.delete(this)?;
        if let Some(task) = self.streams.remove(&rep) {
            task.finish().await;
        }
        Ok(())
    }
}

fn event_to_wit(event: GuestEvent) -> wit::StreamEvent {
    match event {
        GuestEvent::Text(text) => wit::StreamEvent::TextDelta(text),
        GuestEvent::ToolCall(d) => wit::StreamEvent::ToolCallDelta(wit::ToolCallDelta {
            index: d.index,
            id: d.id,
            name: d.name,
            arguments: d.arguments,
        }),
        GuestEvent::Finish(reason) => wit::StreamEvent::Finish(finish_to_wit(reason)),
        GuestEvent::Usage(u) => wit::StreamEvent::Usage(usage_to_wit(u)),
    }
}

fn finish_to_wit(reason: providers::FinishReason) -> wit::FinishReason {
    match reason {
        providers::FinishReason::Stop => wit::FinishReason::Stop,
        providers::FinishReason::Length => wit::FinishReason::Length,
        providers::FinishReason::ToolCalls => wit::FinishReason::ToolCalls,
        providers::FinishReason::ContentFilter => wit::FinishReason::ContentFilter,
        providers::FinishReason::Other => wit::FinishReason::Other,
    }
}

fn usage_to_wit(u: providers::Usage) -> wit::Usage {
    wit::Usage {
        input_tokens: u.input_tokens,
        output_tokens: u.output_tokens,
        cache_read_tokens: u.cache_read_tokens,
        cache_write_tokens: u.cache_write_tokens,
        reasoning_tokens: u.reasoning_tokens,
    }
}

impl HostToolInvocation for CageState {
    async fn new(
        &mut self,
        name: String,
        call_id: Option<String>,
    ) -> wasmtime::Result<Resource<ToolInvocation>> {
        // A constructor cannot return an error: an oversized name ends the
        // run, like any other limit.
        let max = self.limits.max_value_bytes;
        check_value("a tool invocation's name", name.len(), max)?;
        check_value(
            "a tool invocation's call id",
            call_id.as_ref().map_or(0, String::len),
            max,
        )?;
        let invocation = ToolInvocation {
            id: crate::service::new_id("ti"),
            name,
            call_id,
        };
        tracing::debug!(claw = %self.run.claw_name, tool = %invocation.name, invocation = %invocation.id, "tool invocation opened");
        let resource = self.table.push(invocation)?;
        self.open_tools.push(resource.rep());
        Ok(resource)
    }

    async fn id(&mut self, this: Resource<ToolInvocation>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.id.clone())
    }

    async fn drop(&mut self, this: Resource<ToolInvocation>) -> wasmtime::Result<()> {
        let rep = this.rep();
        self.open_tools.retain(|open| *open != rep);
        self.table.delete(this)?;
        Ok(())
    }
}

/// Checks a guest's `llm-call` request and converts it to the host's
/// type: every text at most `max_value_bytes`, and the whole request too;
/// tool names as the WIT documents them; tool parameters a JSON Schema
/// object; tool call arguments a JSON object; at least one message.
///
/// # Errors
///
/// A sentence for the guest saying what to change (the guest receives it
/// as `invalid-request`).
pub fn validate_request(
    r: wit::ChatRequest,
    max_value_bytes: usize,
) -> Result<GuestRequest, String> {
    if let Err(LimitHit::Value { what, size, limit }) = check_sizes(&r, max_value_bytes) {
        return Err(format!(
            "{what} is {size} bytes, over this claw's limit of {limit} bytes per value: send \
             less, or ask an admin to raise the limit with `clawrun claws limits CLAW \
             --max-value-kib N`"
        ));
    }
    let mut tools = Vec::with_capacity(r.tools.len());
    for t in r.tools {
        check_tool_name(&t.name)?;
        let parameters: serde_json::Value = serde_json::from_str(&t.parameters).map_err(|e| {
            format!(
                "the parameters of tool `{}` are not valid JSON: {e}",
                t.name
            )
        })?;
        if !parameters.is_object() {
            return Err(format!(
                "the parameters of tool `{}` must be a JSON Schema object",
                t.name
            ));
        }
        tools.push(providers::ToolDefinition {
            name: t.name,
            description: t.description,
            parameters,
        });
    }
    if r.messages.is_empty() {
        return Err("the request has no messages: add at least one user message".into());
    }
    for call in r.messages.iter().flat_map(|m| &m.tool_calls) {
        check_tool_name(&call.name)?;
        let is_object =
            serde_json::from_str::<serde_json::Value>(&call.arguments).is_ok_and(|v| v.is_object());
        if !is_object {
            return Err(format!(
                "the arguments of tool call `{}` must be a JSON object: send the model's arguments \
                 back as they came, or `{{}}`",
                printable(&call.id)
            ));
        }
    }
    Ok(GuestRequest {
        messages: r.messages.into_iter().map(message_from_wit).collect(),
        tools,
        max_tokens: r.max_tokens,
        temperature: r.temperature,
    })
}

/// Every text of the request, and their sum, within `max`.
fn check_sizes(r: &wit::ChatRequest, max: usize) -> Result<(), LimitHit> {
    let mut total = 0usize;
    let mut check = |what: &dyn Fn() -> String, len: usize| {
        total = total.saturating_add(len);
        check_value(what(), len, max)
    };
    for (i, m) in r.messages.iter().enumerate() {
        let n = i + 1;
        check(&|| format!("message {n}"), m.content.len())?;
        for c in &m.tool_calls {
            check(&|| format!("a tool call id in message {n}"), c.id.len())?;
            check(&|| format!("a tool call name in message {n}"), c.name.len())?;
            check(
                &|| format!("the arguments of tool call `{}`", printable(&c.id)),
                c.arguments.len(),
            )?;
        }
        let id = m.tool_call_id.as_ref().map_or(0, String::len);
        check(&|| format!("the tool call id of message {n}"), id)?;
    }
    for t in &r.tools {
        let name = || "the name of a tool".to_owned();
        check(&name, t.name.len())?;
        let described = || format!("the description of tool `{}`", printable(&t.name));
        check(&described, t.description.len())?;
        let schema = || format!("the parameters of tool `{}`", printable(&t.name));
        check(&schema, t.parameters.len())?;
    }
    check_value("the whole request", total, max)
}

/// A guest-chosen name, short and with control characters escaped, for an
/// error message.
fn printable(name: &str) -> String {
    name.chars().take(64).flat_map(char::escape_debug).collect()
}

/// Tool names as the WIT documents them: 1 to 64 letters, digits, `_` and
/// `-`, which every provider accepts.
fn check_tool_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tool name \"{}\": use 1 to 64 letters, digits, `_` or `-`",
            printable(name)
        ))
    }
}

fn message_from_wit(m: wit::Message) -> providers::Message {
    providers::Message {
        role: match m.role {
            wit::Role::System => providers::Role::System,
            wit::Role::User => providers::Role::User,
            wit::Role::Assistant => providers::Role::Assistant,
            wit::Role::Tool => providers::Role::Tool,
        },
        content: m.content,
        tool_calls: m
            .tool_calls
            .into_iter()
            .map(|c| providers::ToolCall {
                id: c.id,
                name: c.name,
                arguments: c.arguments,
            })
            .collect(),
        tool_call_id: m.tool_call_id,
    }
}

fn completion_to_wit(c: providers::Completion) -> wit::Completion {
    wit::Completion {
        message: wit::Message {
            role: wit::Role::Assistant,
            content: c.message.content,
            tool_calls: c
                .message
                .tool_calls
                .into_iter()
                .map(|t| wit::ToolCall {
                    id: t.id,
                    name: t.name,
                    arguments: t.arguments,
                })
                .collect(),
            tool_call_id: None,
        },
        finish_reason: finish_to_wit(c.finish_reason),
        model: c.model,
        usage: usage_to_wit(c.usage),
    }
}

fn error_to_wit(e: CallError) -> wit::LlmError {
    match e {
        CallError::KeyRevoked => wit::LlmError::KeyRevoked,
        CallError::NoKeyAssigned => wit::LlmError::NoKeyAssigned,
        CallError::BudgetExceeded(why) => wit::LlmError::BudgetExceeded(why),
        CallError::RateLimited(after) => wit::LlmError::RateLimited(after.as_millis() as u64),
        CallError::Provider { status, message } => {
            wit::LlmError::Provider(wit::ProviderError { status, message })
        }
        CallError::InvalidRequest(why) => wit::LlmError::InvalidRequest(why),
        CallError::Timeout => wit::LlmError::Timeout,
        CallError::SecretInRequest => wit::LlmError::SecretInRequest,
        CallError::Unavailable(why) => wit::LlmError::Unavailable(why),
    }
}
