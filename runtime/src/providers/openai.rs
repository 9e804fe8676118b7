//! OpenAI Chat Completions (`POST {base}/chat/completions`, key in
//! `Authorization: Bearer`).
//!
//! Usage rules: `prompt_tokens` already includes
//! `prompt_tokens_details.cached_tokens`, and `completion_tokens` already
//! includes `completion_tokens_details.reasoning_tokens`, so neither detail
//! is added again. OpenAI reports no cache-write count.

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName};
use serde_json::{Value, json};

use super::sse::SseEvent;
use super::stream::{Partial, json as event_json};
use super::transport::{Prepared, secret_header};
use super::types::count;
use super::{
    ChatRequest, Completion, Endpoint, FinishReason, Message, ProviderError, ProviderErrorKind,
    ProviderKind, Role, ToolCall, Usage,
};
use crate::vault::ProviderSecret;

/// The request for `request`, streamed or not. For `openai-compatible`
/// keys the path and the key's header come from the key's configuration,
/// and the reply cap is sent as `max_tokens`, the name every compatible
/// server knows (OpenAI itself now wants `max_completion_tokens`).
///
/// # Errors
///
/// When the key cannot be put in a header.
pub(super) fn prepare(
    endpoint: &Endpoint,
    secret: &ProviderSecret,
    request: &ChatRequest,
    stream: bool,
) -> Result<Prepared, ProviderError> {
    let mut headers = HeaderMap::new();
    let mut body = request_body(request);
    let url = if endpoint.kind == ProviderKind::OpenAiCompatible {
        let auth = endpoint.compatible.auth_header();
        let name = HeaderName::from_bytes(auth.as_bytes()).map_err(|_| {
            ProviderError::new(
                ProviderErrorKind::BadRequest,
                0,
                format!("the key's auth header `{auth}` is not a valid header name"),
            )
        })?;
        let value = match endpoint.compatible.auth_scheme() {
            Some(scheme) => format!("{scheme} {}", secret.expose()),
            None => secret.expose().to_owned(),
        };
        headers.insert(name, secret_header(&value)?);
        if let Some(cap) = body
            .as_object_mut()
            .and_then(|b| b.remove("max_completion_tokens"))
        {
            body["max_tokens"] = cap;
        }
        endpoint.compatible.url(&endpoint.base_url)
    } else {
        headers.insert(
            AUTHORIZATION,
            secret_header(&format!("Bearer {}", secret.expose()))?,
        );
        super::endpoint(&endpoint.base_url, "chat/completions")
    };
    if stream {
        body["stream"] = json!(true);
        // Without it OpenAI sends no usage in a stream at all.
        body["stream_options"] = json!({"include_usage": true});
    }
    Ok(Prepared { url, headers, body })
}

/// The JSON body for `request`.
pub fn request_body(request: &ChatRequest) -> Value {
    let messages: Vec<Value> = request.messages.iter().map(message_json).collect();
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "max_completion_tokens": request.max_tokens,
    });
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    }
                })
            })
            .collect();
    }
    body
}

fn message_json(m: &Message) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut out = json!({ "role": role, "content": m.content });
    if !m.tool_calls.is_empty() {
        if m.content.is_empty() {
            out["content"] = Value::Null;
        }
        out["tool_calls"] = m
            .tool_calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": { "name": c.name, "arguments": c.arguments },
                })
            })
            .collect();
    }
    if let Some(id) = &m.tool_call_id {
        out["tool_call_id"] = json!(id);
    }
    out
}

/// Parses a Chat Completions response body.
///
/// # Errors
///
/// [`ProviderError`] of kind `BadResponse` when the body is not a
/// completion with at least one choice.
pub fn parse_response(body: &[u8]) -> Result<Completion, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(ProviderError::bad_response)?;
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| ProviderError::bad_response("no choices"))?;
    let msg = choice
        .get("message")
        .ok_or_else(|| ProviderError::bad_response("choice has no message"))?;
    let mut tool_calls = Vec::new();
    for call in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = |p: &str| call.pointer(p).and_then(Value::as_str).map(str::to_owned);
        tool_calls.push(ToolCall {
            id: text("/id").ok_or_else(|| ProviderError::bad_response("tool call without id"))?,
            name: text("/function/name")
                .ok_or_else(|| ProviderError::bad_response("tool call without name"))?,
            arguments: text("/function/arguments").unwrap_or_default(),
        });
    }
    let finish_reason = finish_reason(choice.get("finish_reason").and_then(Value::as_str))
        .unwrap_or(FinishReason::Other);
    let raw_usage = v.get("usage").cloned().unwrap_or(Value::Null);
    Ok(Completion {
        message: Message {
            role: Role::Assistant,
            content: msg
                .get("content")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
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

fn finish_reason(reason: Option<&str>) -> Option<FinishReason> {
    Some(match reason? {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    })
}

/// Decodes a Chat Completions stream: `data:` chunks whose first choice
/// carries a `delta`, ended by `data: [DONE]`. Usage comes on a chunk of
/// its own (with `choices` empty, null or absent) or, from some compatible
/// servers, on the chunk with the finish reason: any chunk's non-null
/// `usage` is taken.
#[derive(Debug, Default)]
pub struct StreamDecoder;

impl StreamDecoder {
    pub(super) fn event(
        &mut self,
        event: &SseEvent,
        partial: &mut Partial,
    ) -> Result<bool, ProviderError> {
        if event.data.trim() == "[DONE]" {
            return Ok(true);
        }
        let v = event_json(event)?;
        if let Some(e) = v.get("error") {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the provider sent an error");
            return Err(ProviderError::new(
                ProviderErrorKind::BadResponse,
                0,
                message
                    .chars()
                    .take(super::redact::MAX_ERROR_TEXT)
                    .collect::<String>(),
            ));
        }
        partial.model(v.get("model").and_then(Value::as_str));
        if let Some(choice) = v.pointer("/choices/0") {
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                partial.text(text);
            }
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let index = call
                    .get("index")
                    .and_then(Value::as_u64)
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(0);
                partial.tool_call(
                    index,
                    call.get("id").and_then(Value::as_str),
                    call.pointer("/function/name").and_then(Value::as_str),
                    call.pointer("/function/arguments")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
            }
            if let Some(reason) = finish_reason(choice.get("finish_reason").and_then(Value::as_str))
            {
                partial.finish = Some(reason);
            }
        }
        if let Some(raw) = v.get("usage").filter(|u| u.is_object()) {
            partial.usage = Some((raw.clone(), usage(raw)));
        }
        Ok(false)
    }
}

/// Normalises an OpenAI `usage` object.
pub fn usage(raw: &Value) -> Usage {
    Usage {
        input_tokens: count(raw, "/prompt_tokens"),
        output_tokens: count(raw, "/completion_tokens"),
        cache_read_tokens: count(raw, "/prompt_tokens_details/cached_tokens"),
        cache_write_tokens: 0,
        reasoning_tokens: count(raw, "/completion_tokens_details/reasoning_tokens"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::fixtures;
    use crate::providers::stream::{ProviderStream, StreamEvent};

    /// Shaped after the response example in OpenAI's API reference, with the
    /// cached and reasoning details a reasoning model reports.
    const REPLY: &str = r#"{
      "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
      "object": "chat.completion",
      "created": 1741570283,
      "model": "o3-mini-2025-01-31",
      "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": "Hello there.", "refusal": null},
        "logprobs": null,
        "finish_reason": "stop"
      }],
      "usage": {
        "prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
        "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 32, "audio_tokens": 0,
          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
      }
    }"#;

    #[test]
    fn cached_and_reasoning_tokens_are_inside_the_totals() {
        let done = parse_response(REPLY.as_bytes()).expect("parses");
        assert_eq!(
            done.usage,
            Usage {
                input_tokens: 1117,
                output_tokens: 46,
                cache_read_tokens: 1024,
                cache_write_tokens: 0,
                reasoning_tokens: 32,
            }
        );
        assert_eq!(done.model, "o3-mini-2025-01-31");
        assert_eq!(done.message.content, "Hello there.");
        assert_eq!(done.finish_reason, FinishReason::Stop);
        assert_eq!(done.raw_usage["total_tokens"], 1163);
    }

    #[test]
    fn tool_calls_are_parsed() {
        let body = r#"{"model":"gpt-4o","choices":[{"index":0,"finish_reason":"tool_calls",
          "message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc","type":"function",
          "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}}],
          "usage":{"prompt_tokens":82,"completion_tokens":17,"total_tokens":99}}"#;
        let done = parse_response(body.as_bytes()).expect("parses");
        assert_eq!(done.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            done.message.tool_calls,
            vec![ToolCall {
                id: "call_abc".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            }]
        );
        assert_eq!(done.message.content, "");
        assert_eq!(done.usage.input_tokens, 82);
    }

    fn text_of(events: &[StreamEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Text(t) => Some(t.as_str()),
                StreamEvent::ToolCall(_) => None,
            })
            .collect()
    }

    #[test]
    fn the_stream_takes_usage_from_the_chunk_with_empty_choices() {
        let (events, partial, end) =
            ProviderStream::decode_all(ProviderKind::OpenAi, &[fixtures::OPENAI_STREAM.as_bytes()]);
        end.expect("complete");
        assert_eq!(text_of(&events), "Hello there.");
        let done = partial.completion();
        assert_eq!(
            done.usage,
            Usage {
                input_tokens: 1117,
                output_tokens: 46,
                cache_read_tokens: 1024,
                cache_write_tokens: 0,
                reasoning_tokens: 32,
            }
        );
        assert_eq!(done.finish_reason, FinishReason::Stop);
        assert_eq!(done.model, "o3-mini-2025-01-31");
    }

    #[test]
    fn a_compatible_stream_with_usage_beside_choices_crlf_and_no_done_is_complete() {
        let (events, partial, end) = ProviderStream::decode_all(
            ProviderKind::OpenAiCompatible,
            &[fixtures::OPENAI_COMPATIBLE_STREAM.as_bytes()],
        );
        end.expect("complete without [DONE]");
        assert_eq!(text_of(&events), "Hi!");
        let done = partial.completion();
        assert_eq!((done.usage.input_tokens, done.usage.output_tokens), (26, 3));
        assert_eq!(done.model, "llama3.1:8b");
    }

    #[test]
    fn streamed_tool_calls_are_put_together_by_index() {
        let bytes = fixtures::OPENAI_TOOL_STREAM.as_bytes();
        // Cut into 7-byte pieces, as a slow network might deliver it.
        let chunks: Vec<&[u8]> = bytes.chunks(7).collect();
        let (events, partial, end) = ProviderStream::decode_all(ProviderKind::OpenAi, &chunks);
        end.expect("complete");
        let done = partial.completion();
        assert_eq!(done.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            done.message.tool_calls,
            vec![
                ToolCall {
                    id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
                    name: "get_weather".into(),
                    arguments: r#"{"location":"Paris"}"#.into(),
                },
                ToolCall {
                    id: "call_2".into(),
                    name: "get_time".into(),
                    arguments: "{}".into(),
                },
            ]
        );
        assert_eq!(events.len(), 4);
        assert_eq!(done.usage.input_tokens, 82);
    }

    #[test]
    fn a_stream_cut_before_its_finish_is_a_bad_response_with_what_came() {
        let full = fixtures::OPENAI_STREAM;
        let cut = &full[..full.find("finish_reason\":\"stop").expect("has a finish")];
        let (_, partial, end) = ProviderStream::decode_all(ProviderKind::OpenAi, &[cut.as_bytes()]);
        assert_eq!(end.expect_err("cut").kind, ProviderErrorKind::BadResponse);
        assert_eq!(partial.text, "Hello there.");
        assert!(partial.usage.is_none());
        let (_, _, end) = ProviderStream::decode_all(
            ProviderKind::OpenAi,
            &[b"data: {\"error\":{\"message\":\"server overloaded\"}}\n\n"],
        );
        assert_eq!(end.expect_err("error event").message, "server overloaded");
    }

    #[test]
    fn compatible_endpoints_use_their_path_header_and_max_tokens() {
        use crate::providers::{CompatibleConfig, validate_base_url};
        let secret = ProviderSecret::new("azure-key-0123456789".into());
        let mut endpoint = Endpoint::new(
            ProviderKind::OpenAiCompatible,
            validate_base_url("https://res.openai.azure.com/openai/deployments/gpt4o")
                .expect("valid"),
        );
        endpoint.compatible = CompatibleConfig {
            path: Some("/chat/completions?api-version=2024-10-21".into()),
            auth_header: Some("api-key".into()),
            auth_scheme: None,
        };
        let request = ChatRequest {
            model: "gpt-4o".into(),
            messages: vec![],
            tools: vec![],
            max_tokens: 7,
            temperature: None,
        };
        let p = prepare(&endpoint, &secret, &request, true).expect("prepares");
        assert_eq!(
            p.url.as_str(),
            "https://res.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(p.headers["api-key"], "azure-key-0123456789");
        assert!(p.headers.get("authorization").is_none());
        assert_eq!(p.body["max_tokens"], 7);
        assert!(p.body.get("max_completion_tokens").is_none());
        assert_eq!(p.body["stream_options"]["include_usage"], true);

        endpoint.compatible = CompatibleConfig::default();
        let p = prepare(&endpoint, &secret, &request, false).expect("prepares");
        assert_eq!(p.headers["authorization"], "Bearer azure-key-0123456789");
        assert!(p.url.as_str().ends_with("/gpt4o/chat/completions"));
        assert!(p.body.get("stream").is_none());
    }

    #[test]
    fn garbage_is_a_bad_response_not_a_panic() {
        for body in [
            "",
            "not json",
            "{}",
            r#"{"choices":[]}"#,
            r#"{"choices":[{}]}"#,
            "[1,2]",
        ] {
            let err = parse_response(body.as_bytes()).expect_err(body);
            assert_eq!(err.kind, super::super::ProviderErrorKind::BadResponse);
        }
    }

    #[test]
    fn request_carries_tools_and_tool_results() {
        let request = ChatRequest {
            model: "gpt-4o-mini".into(),
            messages: vec![
                Message {
                    role: Role::User,
                    content: "hi".into(),
                    tool_calls: vec![],
                    tool_call_id: None,
                },
                Message {
                    role: Role::Assistant,
                    content: String::new(),
                    tool_calls: vec![ToolCall {
                        id: "c1".into(),
                        name: "f".into(),
                        arguments: "{}".into(),
                    }],
                    tool_call_id: None,
                },
                Message {
                    role: Role::Tool,
                    content: "42".into(),
                    tool_calls: vec![],
                    tool_call_id: Some("c1".into()),
                },
            ],
            tools: vec![super::super::ToolDefinition {
                name: "f".into(),
                description: "d".into(),
                parameters: json!({"type": "object"}),
            }],
            max_tokens: 100,
            temperature: None,
        };
        let body = request_body(&request);
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["max_completion_tokens"], 100);
        assert_eq!(body["messages"][1]["content"], Value::Null);
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert_eq!(body["messages"][2]["tool_call_id"], "c1");
        assert_eq!(body["tools"][0]["function"]["parameters"]["type"], "object");
        assert!(body.get("temperature").is_none());
    }
}
