//! Provider-neutral chat types: what the host sends and receives, whatever
//! the wire format.

use serde_json::Value;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Framing instructions.
    System,
    /// Input from the user.
    User,
    /// The model.
    Assistant,
    /// A tool result.
    Tool,
}

/// A request from the model to run a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The model's id for the call.
    pub id: String,
    /// Tool name.
    pub name: String,
    /// Arguments as JSON text (possibly invalid; it is the model's).
    pub arguments: String,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Tool calls of an assistant message.
    pub tool_calls: Vec<ToolCall>,
    /// The call a tool message answers.
    pub tool_call_id: Option<String>,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDefinition {
    /// Name.
    pub name: String,
    /// Description for the model.
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// A chat request with the model resolved by the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Model name, from the claw's assignment.
    pub model: String,
    /// Conversation, oldest first.
    pub messages: Vec<Message>,
    /// Tools offered.
    pub tools: Vec<ToolDefinition>,
    /// Reply token cap (always set: the host imposes a default).
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: Option<f32>,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// Natural end or stop sequence.
    Stop,
    /// Token cap reached.
    Length,
    /// The model asks for tool calls.
    ToolCalls,
    /// Withheld by the provider's policy.
    ContentFilter,
    /// Anything else.
    Other,
}

/// Normalised token counts: input includes cache reads and writes, output
/// includes reasoning (the OpenTelemetry GenAI definitions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `gen_ai.usage.input_tokens`.
    pub input_tokens: u64,
    /// `gen_ai.usage.output_tokens`.
    pub output_tokens: u64,
    /// `gen_ai.usage.cache_read.input_tokens`.
    pub cache_read_tokens: u64,
    /// `gen_ai.usage.cache_creation.input_tokens`.
    pub cache_write_tokens: u64,
    /// `gen_ai.usage.reasoning.output_tokens`.
    pub reasoning_tokens: u64,
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The reply (role assistant).
    pub message: Message,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// The model that answered, as the provider names it.
    pub model: String,
    /// Normalised usage.
    pub usage: Usage,
    /// The provider's usage object as received.
    pub raw_usage: Value,
}

/// Largest token count believed for one call. A provider that reports more
/// is answering garbage; clamping keeps sums in the ledger from overflowing.
pub const MAX_TOKENS_PER_CALL: u64 = 1_000_000_000_000;

/// Reads a non-negative integer field, treating absent or null as zero and
/// clamping to [`MAX_TOKENS_PER_CALL`].
pub(crate) fn count(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(MAX_TOKENS_PER_CALL)
}
