//! Provider replies for the adapters' tests, written after the examples in
//! each provider's API reference (OpenAI Chat Completions and its streaming
//! chunks, Anthropic Messages streaming, Gemini generateContent and
//! streamGenerateContent), with the cache, reasoning and thoughts counts
//! those references document.

pub const OPENAI_STREAM: &str = include_str!("fixtures/openai_stream.sse");
pub const OPENAI_TOOL_STREAM: &str = include_str!("fixtures/openai_tool_stream.sse");
pub const OPENAI_COMPATIBLE_STREAM: &str = include_str!("fixtures/openai_compatible_stream.sse");
pub const ANTHROPIC_STREAM: &str = include_str!("fixtures/anthropic_stream.sse");
pub const ANTHROPIC_TOOL_STREAM: &str = include_str!("fixtures/anthropic_tool_stream.sse");
pub const ANTHROPIC_ERROR_STREAM: &str = include_str!("fixtures/anthropic_error_stream.sse");
pub const GEMINI_REPLY: &str = include_str!("fixtures/gemini_reply.json");
pub const GEMINI_TOOL_REPLY: &str = include_str!("fixtures/gemini_tool_reply.json");
pub const GEMINI_STREAM: &str = include_str!("fixtures/gemini_stream.sse");
