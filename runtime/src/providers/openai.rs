//! OpenAI Chat Completions (`POST {base}/chat/completions`, key in
//! `Authorization: Bearer`).
//!
//! Usage rules: `prompt_tokens` already includes
//! `prompt_tokens_details.cached_tokens`, and `completion_tokens` already
//! includes `completion_tokens_details.reasoning_tokens`, so neither detail
//! is added again. OpenAI reports no cache-write count.

use reqwest::header::{AUTHORIZATION, HeaderMap};
use serde_json::{Value, json};
use url::Url;

use super::types::count;
use super::{
    ChatRequest, Completion, FinishReason, Message, ProviderError, Role, ToolCall, Usage, endpoint,
    post_json, secret_header,
};
use crate::vault::ProviderSecret;

/// Sends `request` and parses the reply.
///
/// # Errors
///
/// As [`super::complete`].
pub async fn complete(
    http: &reqwest::Client,
    base_url: &Url,
    secret: &ProviderSecret,
    request: &ChatRequest,
) -> Result<Completion, ProviderError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        secret_header(&format!("Bearer {}", secret.expose()))?,
    );
    let url = endpoint(base_url, "chat/completions");
    let body = post_json(http, url, headers, &request_body(request), secret).await?;
    parse_response(&body)
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
    let finish_reason = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    };
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
