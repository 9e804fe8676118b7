//! Gemini generateContent (`POST {base}/v1beta/models/{model}:generateContent`,
//! streamed from `:streamGenerateContent?alt=sse`), key in the
//! `x-goog-api-key` header. The `?key=` form Google also accepts puts the
//! key in URLs, which end up in logs and error texts: it is never used.
//!
//! Usage rules: `promptTokenCount` already includes
//! `cachedContentTokenCount`; `thoughtsTokenCount` is not inside
//! `candidatesTokenCount`, so output is candidates plus thoughts;
//! `toolUsePromptTokenCount` (results of Google-side tools fed back to the
//! model) is input the model read, outside `promptTokenCount`. In a stream
//! every chunk carries running totals: the latest one is kept.
//!
//! Gemini has no tool call ids of its own in older models: a call without
//! one gets `call_{index}_{name}`, and a tool result is sent back under the
//! name of the call it answers.

use reqwest::header::{HeaderMap, HeaderName};
use serde_json::{Value, json};

use super::sse::SseEvent;
use super::stream::{Partial, json as event_json};
use super::transport::{Prepared, secret_header};
use super::types::count;
use super::{
    ChatRequest, Completion, Endpoint, FinishReason, ProviderError, ProviderErrorKind, Role, Usage,
};
use crate::vault::ProviderSecret;

/// The request for `request`, streamed or not.
///
/// # Errors
///
/// `BadRequest` when the model name cannot be put in a URL path, or a tool
/// call's arguments are not a JSON object.
pub(super) fn prepare(
    endpoint: &Endpoint,
    secret: &ProviderSecret,
    request: &ChatRequest,
    stream: bool,
) -> Result<Prepared, ProviderError> {
    let model = request
        .model
        .strip_prefix("models/")
        .unwrap_or(&request.model);
    // The model is spliced into the path: refuse anything that could change
    // which path (or query) the key is sent to.
    if model.is_empty()
        || !model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(ProviderError::new(
            ProviderErrorKind::BadRequest,
            0,
            format!("`{model}` is not a Gemini model name: assign one like `gemini-2.5-flash`"),
        ));
    }
    let method = if stream {
        "streamGenerateContent"
    } else {
        "generateContent"
    };
    let mut url = super::endpoint(
        &endpoint.base_url,
        &format!("v1beta/models/{model}:{method}"),
    );
    if stream {
        url.set_query(Some("alt=sse"));
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("x-goog-api-key"),
        secret_header(secret.expose())?,
    );
    Ok(Prepared {
        url,
        headers,
        body: request_body(request)?,
    })
}

/// The JSON body for `request`. System messages become
/// `systemInstruction`; assistant turns have role `model`; tool results
/// are `functionResponse` parts of a user turn; consecutive turns of one
/// role are merged.
///
/// # Errors
///
/// `BadRequest` when a tool call's arguments are not a JSON object.
pub fn request_body(request: &ChatRequest) -> Result<Value, ProviderError> {
    let mut system = Vec::new();
    let mut names = std::collections::HashMap::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in &request.messages {
        let (role, parts) = match m.role {
            Role::System => {
                system.push(json!({"text": m.content}));
                continue;
            }
            Role::User => ("user", vec![json!({"text": m.content})]),
            Role::Assistant => {
                let mut parts = Vec::new();
                if !m.content.is_empty() {
                    parts.push(json!({"text": m.content}));
                }
                for call in &m.tool_calls {
                    let args: Value = serde_json::from_str(&call.arguments)
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
                    names.insert(call.id.as_str(), call.name.as_str());
                    parts.push(json!({"functionCall": {"name": call.name, "args": args}}));
                }
                ("model", parts)
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let name = names.get(id).copied().unwrap_or(id);
                // A JSON object result is passed as is; any other text is
                // wrapped, since `response` must be an object.
                let response = serde_json::from_str::<Value>(&m.content)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({"result": m.content}));
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
        };
        match turns.last_mut() {
            Some((last, content)) if *last == role => content.extend(parts),
            _ => turns.push((role, parts)),
        }
    }
    let contents: Vec<Value> = turns
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    let mut config = json!({"maxOutputTokens": request.max_tokens});
    if let Some(t) = request.temperature {
        config["temperature"] = json!(t);
    }
    let mut body = json!({"contents": contents, "generationConfig": config});
    if !system.is_empty() {
        body["systemInstruction"] = json!({"parts": system});
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        body["tools"] = json!([{"functionDeclarations": declarations}]);
    }
    Ok(body)
}

/// Parses a generateContent response body.
///
/// # Errors
///
/// `BadResponse` when the body is not a response with a candidate; a
/// prompt blocked by the provider's policy is a completion with finish
/// reason `content-filter` and no text.
pub fn parse_response(body: &[u8]) -> Result<Completion, ProviderError> {
    let v: Value = serde_json::from_slice(body).map_err(ProviderError::bad_response)?;
    if !v.is_object() {
        return Err(ProviderError::bad_response("not a JSON object"));
    }
    let mut partial = Partial::default();
    chunk(&v, &mut partial)?;
    if partial.finish.is_none() && v.pointer("/candidates/0").is_none() {
        if v.pointer("/promptFeedback/blockReason").is_some() {
            partial.finish = Some(FinishReason::ContentFilter);
        } else {
            return Err(ProviderError::bad_response("no candidates"));
        }
    }
    let mut done = partial.completion();
    if partial.finish.is_none() {
        done.finish_reason = FinishReason::Other;
    }
    Ok(done)
}

/// Decodes one response object (the whole reply, or one chunk of a
/// stream) into `partial`.
fn chunk(v: &Value, partial: &mut Partial) -> Result<(), ProviderError> {
    if let Some(e) = v.get("error") {
        return Err(ProviderError::new(
            ProviderErrorKind::BadResponse,
            e.get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("the provider sent an error")
                .chars()
                .take(super::redact::MAX_ERROR_TEXT)
                .collect::<String>(),
        ));
    }
    partial.model(v.get("modelVersion").and_then(Value::as_str));
    if let Some(candidate) = v.pointer("/candidates/0") {
        for part in candidate
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // Thought summaries are not reply text.
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if let Some(text) = part.get("text").and_then(Value::as_str) {
                partial.text(text);
            }
            if let Some(call) = part.get("functionCall") {
                let index = partial.tool_calls.len() as u32;
                let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
                let id = call
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("call_{index}_{name}"));
                let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
                partial.tool_call(index, Some(&id), Some(name), &args.to_string());
            }
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            partial.finish = Some(match reason {
                "STOP" => FinishReason::Stop,
                "MAX_TOKENS" => FinishReason::Length,
                "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII"
                | "IMAGE_SAFETY" => FinishReason::ContentFilter,
                _ => FinishReason::Other,
            });
        }
    }
    if let Some(raw) = v.get("usageMetadata").filter(|u| u.is_object()) {
        partial.usage = Some((raw.clone(), usage(raw)));
    }
    Ok(())
}

/// Normalises a Gemini `usageMetadata` object.
pub fn usage(raw: &Value) -> Usage {
    let thoughts = count(raw, "/thoughtsTokenCount");
    Usage {
        input_tokens: count(raw, "/promptTokenCount")
            .saturating_add(count(raw, "/toolUsePromptTokenCount")),
        output_tokens: count(raw, "/candidatesTokenCount").saturating_add(thoughts),
        cache_read_tokens: count(raw, "/cachedContentTokenCount"),
        cache_write_tokens: 0,
        reasoning_tokens: thoughts,
    }
}

/// Decodes `streamGenerateContent?alt=sse`: each event's data is a whole
/// response object holding the new parts and the running usage. The stream
/// has no end marker; it is complete once a chunk gave a finish reason.
#[derive(Debug, Default)]
pub struct StreamDecoder;

impl StreamDecoder {
    pub(super) fn event(
        &mut self,
        event: &SseEvent,
        partial: &mut Partial,
    ) -> Result<bool, ProviderError> {
        chunk(&event_json(event)?, partial)?;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::fixtures;
    use crate::providers::stream::{ProviderStream, StreamEvent};
    use crate::providers::{Message, ProviderKind, ToolCall, ToolDefinition};

    #[test]
    fn thoughts_are_output_outside_candidates_and_cache_is_inside_the_prompt() {
        let done = parse_response(fixtures::GEMINI_REPLY.as_bytes()).expect("parses");
        assert_eq!(
            done.usage,
            Usage {
                input_tokens: 2130,
                output_tokens: 412 + 986,
                cache_read_tokens: 2048,
                cache_write_tokens: 0,
                reasoning_tokens: 986,
            }
        );
        // The documented total is the sum of what we count.
        assert_eq!(
            done.raw_usage["totalTokenCount"].as_u64(),
            Some(done.usage.input_tokens + done.usage.output_tokens)
        );
        assert_eq!(done.model, "gemini-2.5-pro");
        assert_eq!(done.finish_reason, FinishReason::Stop);
        assert!(done.message.content.starts_with("AI learns patterns"));
    }

    #[test]
    fn function_calls_round_trip() {
        let done = parse_response(fixtures::GEMINI_TOOL_REPLY.as_bytes()).expect("parses");
        assert_eq!(done.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            done.message.tool_calls,
            vec![ToolCall {
                id: "call_0_get_weather".into(),
                name: "get_weather".into(),
                arguments: r#"{"location":"Boston, MA"}"#.into(),
            }]
        );
        let request = ChatRequest {
            model: "gemini-2.5-flash".into(),
            messages: vec![
                Message {
                    role: Role::System,
                    content: "be brief".into(),
                    tool_calls: vec![],
                    tool_call_id: None,
                },
                Message {
                    role: Role::User,
                    content: "weather?".into(),
                    tool_calls: vec![],
                    tool_call_id: None,
                },
                done.message.clone(),
                Message {
                    role: Role::Tool,
                    content: "72F".into(),
                    tool_calls: vec![],
                    tool_call_id: Some("call_0_get_weather".into()),
                },
            ],
            tools: vec![ToolDefinition {
                name: "get_weather".into(),
                description: "d".into(),
                parameters: json!({"type": "object"}),
            }],
            max_tokens: 100,
            temperature: Some(0.2),
        };
        let body = request_body(&request).expect("builds");
        assert_eq!(body["systemInstruction"]["parts"][0]["text"], "be brief");
        assert_eq!(body["contents"][1]["role"], "model");
        assert_eq!(
            body["contents"][1]["parts"][0]["functionCall"]["args"]["location"],
            "Boston, MA"
        );
        assert_eq!(
            body["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "get_weather", "response": {"result": "72F"}})
        );
        assert_eq!(
            body["tools"][0]["functionDeclarations"][0]["name"],
            "get_weather"
        );
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 100);
    }

    #[test]
    fn the_stream_keeps_the_last_running_totals() {
        let (events, partial, end) =
            ProviderStream::decode_all(ProviderKind::Gemini, &[fixtures::GEMINI_STREAM.as_bytes()]);
        end.expect("complete");
        let text: String = events
            .iter()
            .map(|e| match e {
                StreamEvent::Text(t) => t.as_str(),
                StreamEvent::ToolCall(_) => "",
            })
            .collect();
        assert_eq!(text, "The quick brown fox jumps over the lazy dog.");
        let done = partial.completion();
        assert_eq!(
            done.usage,
            Usage {
                input_tokens: 8,
                output_tokens: 10 + 20,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
                reasoning_tokens: 20,
            }
        );
        assert_eq!(done.finish_reason, FinishReason::Stop);
    }

    #[test]
    fn a_stream_without_a_finish_reason_is_incomplete() {
        let cut = &fixtures::GEMINI_STREAM[..fixtures::GEMINI_STREAM.find("STOP").expect("has")];
        let (_, partial, end) = ProviderStream::decode_all(ProviderKind::Gemini, &[cut.as_bytes()]);
        assert_eq!(end.expect_err("cut").kind, ProviderErrorKind::BadResponse);
        assert!(!partial.text.is_empty());
    }

    #[test]
    fn the_key_goes_in_a_header_and_never_in_the_url() {
        let secret = ProviderSecret::new("AIzaSyTESTkey000000000000000000000000".into());
        let endpoint = Endpoint::new(
            ProviderKind::Gemini,
            super::super::validate_base_url("https://generativelanguage.googleapis.com")
                .expect("valid"),
        );
        let request = ChatRequest {
            model: "gemini-2.5-flash".into(),
            messages: vec![],
            tools: vec![],
            max_tokens: 1,
            temperature: None,
        };
        for stream in [false, true] {
            let p = prepare(&endpoint, &secret, &request, stream).expect("prepares");
            assert!(!p.url.as_str().contains(secret.expose()));
            assert_eq!(
                p.headers.get("x-goog-api-key").expect("header"),
                secret.expose()
            );
            assert!(p.headers["x-goog-api-key"].is_sensitive());
        }
        let p = prepare(&endpoint, &secret, &request, true).expect("prepares");
        assert_eq!(
            p.url.as_str(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let mut bad = request.clone();
        bad.model = "x/../../v1/files?key=".into();
        assert_eq!(
            prepare(&endpoint, &secret, &bad, false)
                .expect_err("refused")
                .kind,
            ProviderErrorKind::BadRequest
        );
    }

    #[test]
    fn a_blocked_prompt_is_a_content_filter_finish() {
        let done = parse_response(
            br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":7,"totalTokenCount":7}}"#,
        )
        .expect("parses");
        assert_eq!(done.finish_reason, FinishReason::ContentFilter);
        assert_eq!(done.usage.input_tokens, 7);
        for body in ["", "[]", "{}", r#"{"candidates":"x"}"#] {
            assert!(parse_response(body.as_bytes()).is_err(), "{body}");
        }
    }
}
