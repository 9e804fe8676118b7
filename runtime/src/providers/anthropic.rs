//! Anthropic Messages (`POST {base}/v1/messages`, key in `x-api-key`).
//!
//! Usage rules: `input_tokens` excludes the prompt cache, so total input is
//! `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`.
//! Anthropic reports no separate reasoning count; thinking tokens are inside
//! `output_tokens`.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::sse::SseEvent;
use super::stream::{Partial, json as event_json};
use super::transport::{Prepared, secret_header};
use super::types::count;
use super::{
    ChatRequest, Completion, Endpoint, FinishReason, Message, ProviderError, ProviderErrorKind,
    Role, ToolCall, Usage,
};
use crate::vault::ProviderSecret;

/// The API version this adapter speaks.
pub const API_VERSION: &str = "2023-06-01";

/// The request for `request`, streamed or not.
///
/// # Errors
///
/// As [`request_body`], and when the key cannot be put in a header.
pub(super) fn prepare(
    endpoint: &Endpoint,
    secret: &ProviderSecret,
    request: &ChatRequest,
    stream: bool,
) -> Result<Prepared, ProviderError> {
    let mut body = request_body(request)?;
    if stream {
        body["stream"] = json!(true);
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("x-api-key"),
        secret_header(secret.expose())?,
    );
    headers.insert(
        HeaderName::from_static("anthropic-version"),
        HeaderValue::from_static(API_VERSION),
    );
    Ok(Prepared {
        url: super::endpoint(&endpoint.base_url, "v1/messages"),
        headers,
        body,
    })
}

/// The JSON body for `request`. System messages become the `system` field;
/// consecutive messages of one role are merged into one message, since
/// Anthropic wants user and assistant turns to alternate and all results of
/// one tool round in a single user message.
///
/// # Errors
///
/// `BadRequest` when an assistant tool call's arguments are not a JSON
/// object, which Anthropic requires.
pub fn request_body(request: &ChatRequest) -> Result<Value, ProviderError> {
    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in &request.messages {
        let (role, blocks) = match m.role {
            Role::System => {
                system.push(m.content.as_str());
                continue;
            }
            Role::User => ("user", vec![json!({"type": "text", "text": m.content})]),
            Role::Tool => (
                "user",
                vec![json!({
                    "type": "tool_result",
                    "tool_use_id": m.tool_call_id.as_deref().unwrap_or_default(),
                    "content": m.content,
                })],
            ),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": m.content}));
                }
                for call in &m.tool_calls {
                    let input: Value = serde_json::from_str(&call.arguments)
                        .ok()
                        .filter(Value::is_object)
                        .ok_or_else(|| {
                            ProviderError::new(
                                ProviderErrorKind::BadRequest,
                                0,
                                format!(
                                    "arguments of tool call `{}` must be a JSON object",
                                    call.id
                                ),
                            )
                        })?;
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}));
                }
                ("assistant", blocks)
            }
        };
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
    }
    Ok(body)
}

/// Parses a Messages response body.
///
/// # Errors
///
/// `BadResponse` when the body is not a message with a content list.
pub fn parse_response(body: &[u8]) -> Result<Completion, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(ProviderError::bad_response)?;
    let blocks = v
        .get("content")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::bad_response("no content list"))?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            Some("tool_use") => {
                let field = |k: &str| block.get(k).and_then(Value::as_str).map(str::to_owned);
                tool_calls.push(ToolCall {
                    id: field("id")
                        .ok_or_else(|| ProviderError::bad_response("tool_use without id"))?,
                    name: field("name")
                        .ok_or_else(|| ProviderError::bad_response("tool_use without name"))?,
                    arguments: block
                        .get("input")
                        .map(Value::to_string)
                        .unwrap_or_else(|| "{}".into()),
                });
            }
            // Thinking and other block types carry no reply text.
            _ => {}
        }
    }
    let finish_reason =
        stop_reason(v.get("stop_reason").and_then(Value::as_str)).unwrap_or(FinishReason::Other);
    let raw_usage = v.get("usage").cloned().unwrap_or(Value::Null);
    Ok(Completion {
        message: Message {
            role: Role::Assistant,
            content: text,
            tool_calls,
            tool_call_id: None,
        },
        finish_reason,
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        usage: usage(&raw_usage),
        raw_usage,
    })
}

fn stop_reason(reason: Option<&str>) -> Option<FinishReason> {
    Some(match reason? {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    })
}

/// Decodes a Messages stream. `message_start` carries the first usage
/// (input and cache counts, a small output count); each `message_delta`
/// carries usage whose fields are cumulative, so each field present
/// replaces the one held: deltas are never added up. Tool input arrives as
/// `input_json_delta` pieces of its content block. `message_stop` ends the
/// stream; an `error` event fails it.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    usage: serde_json::Map<String, Value>,
    /// Content block index to tool call index, for tool_use blocks.
    tool_blocks: Vec<(u64, u32)>,
}

impl StreamDecoder {
    pub(super) fn event(
        &mut self,
        event: &SseEvent,
        partial: &mut Partial,
    ) -> Result<bool, ProviderError> {
        let v = event_json(event)?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind {
            "message_start" => {
                partial.model(v.pointer("/message/model").and_then(Value::as_str));
                self.take_usage(v.pointer("/message/usage"), partial);
            }
            "content_block_start" => {
                let content = v.get("content_block").unwrap_or(&Value::Null);
                match content.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let index = self.tool_blocks.len() as u32;
                        self.tool_blocks.push((block, index));
                        partial.tool_call(
                            index,
                            content.get("id").and_then(Value::as_str),
                            content.get("name").and_then(Value::as_str),
                            "",
                        );
                    }
                    Some("text") => {
                        partial.text(
                            content
                                .get("text")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        );
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        partial.text(
                            delta
                                .get("text")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        );
                    }
                    Some("input_json_delta") => {
                        let piece = delta
                            .get("partial_json")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        if let Some(&(_, index)) =
                            self.tool_blocks.iter().find(|(b, _)| *b == block)
                            && !piece.is_empty()
                        {
                            partial.tool_call(index, None, None, piece);
                        }
                    }
                    // Thinking and signature deltas are not reply text.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) =
                    stop_reason(v.pointer("/delta/stop_reason").and_then(Value::as_str))
                {
                    partial.finish = Some(reason);
                }
                self.take_usage(v.get("usage"), partial);
            }
            "message_stop" => {
                // A tool call whose input never streamed has input `{}`.
                for (_, call) in &mut partial.tool_calls {
                    if call.arguments.is_empty() {
                        call.arguments = "{}".into();
                    }
                }
                return Ok(true);
            }
            "error" => {
                let kind = match v.pointer("/error/type").and_then(Value::as_str) {
                    Some("overloaded_error") => ProviderErrorKind::Overloaded,
                    Some("rate_limit_error") => {
                        ProviderErrorKind::RateLimited { retry_after: None }
                    }
                    Some("api_error") => ProviderErrorKind::Server,
                    _ => ProviderErrorKind::BadResponse,
                };
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("the provider sent an error");
                return Err(ProviderError::new(
                    kind,
                    0,
                    message
                        .chars()
                        .take(super::redact::MAX_ERROR_TEXT)
                        .collect::<String>(),
                ));
            }
            // `ping` and event types added later.
            _ => {}
        }
        Ok(false)
    }

    fn take_usage(&mut self, raw: Option<&Value>, partial: &mut Partial) {
        let Some(fields) = raw.and_then(Value::as_object) else {
            return;
        };
        for (name, value) in fields {
            if !value.is_null() {
                self.usage.insert(name.clone(), value.clone());
            }
        }
        let raw = Value::Object(self.usage.clone());
        partial.usage = Some((raw.clone(), usage(&raw)));
    }
}

/// Normalises an Anthropic `usage` object.
pub fn usage(raw: &Value) -> Usage {
    let cache_read = count(raw, "/cache_read_input_tokens");
    let cache_write = count(raw, "/cache_creation_input_tokens");
    Usage {
        input_tokens: count(raw, "/input_tokens")
            .saturating_add(cache_read)
            .saturating_add(cache_write),
        output_tokens: count(raw, "/output_tokens"),
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        reasoning_tokens: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProviderKind;
    use crate::providers::fixtures;
    use crate::providers::stream::ProviderStream;

    #[test]
    fn stream_usage_is_the_latest_of_each_field_never_a_sum() {
        let (_, partial, end) = ProviderStream::decode_all(
            ProviderKind::Anthropic,
            &[fixtures::ANTHROPIC_STREAM.as_bytes()],
        );
        end.expect("complete");
        let done = partial.completion();
        assert_eq!(done.message.content, "Hello!");
        assert_eq!(
            done.usage,
            Usage {
                input_tokens: 25 + 1024 + 2048,
                output_tokens: 15,
                cache_read_tokens: 2048,
                cache_write_tokens: 1024,
                reasoning_tokens: 0,
            }
        );
        assert_eq!(done.finish_reason, FinishReason::Stop);
        assert_eq!(done.model, "claude-sonnet-4-20250514");
    }

    #[test]
    fn streamed_tool_input_is_put_together() {
        let chunks: Vec<&[u8]> = fixtures::ANTHROPIC_TOOL_STREAM
            .as_bytes()
            .chunks(5)
            .collect();
        let (_, partial, end) = ProviderStream::decode_all(ProviderKind::Anthropic, &chunks);
        end.expect("complete");
        let done = partial.completion();
        assert_eq!(done.finish_reason, FinishReason::ToolCalls);
        assert_eq!(done.message.content, "Checking.");
        assert_eq!(
            done.message.tool_calls,
            vec![ToolCall {
                id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                name: "get_weather".into(),
                arguments: r#"{"location": "San Francisco, CA"}"#.into(),
            }]
        );
        assert_eq!(
            (done.usage.input_tokens, done.usage.output_tokens),
            (472, 89)
        );
    }

    #[test]
    fn an_error_event_mid_stream_fails_it_typed_keeping_what_came() {
        let (_, partial, end) = ProviderStream::decode_all(
            ProviderKind::Anthropic,
            &[fixtures::ANTHROPIC_ERROR_STREAM.as_bytes()],
        );
        let err = end.expect_err("error event");
        assert_eq!(err.kind, ProviderErrorKind::Overloaded);
        assert_eq!(err.message, "Overloaded");
        assert_eq!(partial.text, "Par");
        assert_eq!(
            partial.usage.as_ref().map(|(_, u)| u.input_tokens),
            Some(12)
        );
    }
    use crate::providers::ToolDefinition;

    /// Shaped after the Messages API reference's example, with prompt
    /// caching fields as the prompt-caching guide documents them.
    const REPLY: &str = r#"{
      "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
      "type": "message",
      "role": "assistant",
      "model": "claude-sonnet-4-20250514",
      "content": [{"type": "text", "text": "Hi! My name is Claude."}],
      "stop_reason": "end_turn",
      "stop_sequence": null,
      "usage": {"input_tokens": 21, "cache_creation_input_tokens": 188086,
                "cache_read_input_tokens": 0, "output_tokens": 393}
    }"#;

    #[test]
    fn input_is_the_sum_of_plain_and_cache_tokens() {
        let done = parse_response(REPLY.as_bytes()).expect("parses");
        assert_eq!(
            done.usage,
            Usage {
                input_tokens: 21 + 188_086,
                output_tokens: 393,
                cache_read_tokens: 0,
                cache_write_tokens: 188_086,
                reasoning_tokens: 0,
            }
        );
        let read = usage(
            &json!({"input_tokens": 10, "cache_read_input_tokens": 2048, "output_tokens": 5}),
        );
        assert_eq!(read.input_tokens, 2058);
        assert_eq!(read.cache_read_tokens, 2048);
        assert_eq!(done.finish_reason, FinishReason::Stop);
        assert_eq!(done.model, "claude-sonnet-4-20250514");
    }

    #[test]
    fn tool_use_blocks_become_tool_calls() {
        let body = r#"{"type":"message","model":"claude-x","stop_reason":"tool_use",
          "content":[{"type":"text","text":"Checking."},
                     {"type":"tool_use","id":"toolu_01A","name":"get_weather","input":{"location":"SF"}}],
          "usage":{"input_tokens":472,"output_tokens":89}}"#;
        let done = parse_response(body.as_bytes()).expect("parses");
        assert_eq!(done.finish_reason, FinishReason::ToolCalls);
        assert_eq!(done.message.content, "Checking.");
        assert_eq!(done.message.tool_calls[0].id, "toolu_01A");
        assert_eq!(done.message.tool_calls[0].arguments, r#"{"location":"SF"}"#);
    }

    #[test]
    fn request_moves_system_out_and_merges_tool_results() {
        let msg = |role, content: &str, tool_call_id: Option<&str>| Message {
            role,
            content: content.into(),
            tool_calls: vec![],
            tool_call_id: tool_call_id.map(Into::into),
        };
        let mut assistant = msg(Role::Assistant, "", None);
        assistant.tool_calls = vec![
            ToolCall {
                id: "a".into(),
                name: "f".into(),
                arguments: r#"{"x":1}"#.into(),
            },
            ToolCall {
                id: "b".into(),
                name: "g".into(),
                arguments: "{}".into(),
            },
        ];
        let request = ChatRequest {
            model: "claude-x".into(),
            messages: vec![
                msg(Role::System, "be brief", None),
                msg(Role::User, "hi", None),
                assistant,
                msg(Role::Tool, "1", Some("a")),
                msg(Role::Tool, "2", Some("b")),
            ],
            tools: vec![ToolDefinition {
                name: "f".into(),
                description: "d".into(),
                parameters: json!({"type":"object"}),
            }],
            max_tokens: 64,
            temperature: Some(0.5),
        };
        let body = request_body(&request).expect("builds");
        assert_eq!(body["system"], "be brief");
        assert_eq!(body["max_tokens"], 64);
        let messages = body["messages"].as_array().expect("list");
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1]["content"][0]["input"]["x"], 1);
        assert_eq!(messages[2]["role"], "user");
        assert_eq!(messages[2]["content"].as_array().expect("list").len(), 2);
        assert_eq!(messages[2]["content"][1]["tool_use_id"], "b");
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
    }

    #[test]
    fn tool_arguments_that_are_not_an_object_are_refused() {
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![Message {
                role: Role::Assistant,
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "a".into(),
                    name: "f".into(),
                    arguments: "[1".into(),
                }],
                tool_call_id: None,
            }],
            tools: vec![],
            max_tokens: 1,
            temperature: None,
        };
        let err = request_body(&request).expect_err("invalid arguments");
        assert_eq!(err.kind, ProviderErrorKind::BadRequest);
    }
}
