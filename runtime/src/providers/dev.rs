//! `clawrun dev-provider`: an emulator of the provider wire formats, for
//! claw authors working offline and for the tests.
//!
//! It answers OpenAI Chat Completions at `/v1/chat/completions` (base URL
//! `http://ADDR/v1`), and at any other path ending in `/chat/completions`
//! for `openai-compatible` keys (the key in `authorization: Bearer` or
//! `api-key`); Anthropic Messages at `/v1/messages` (base URL
//! `http://ADDR`); Gemini at `/v1beta/models/MODEL:generateContent` and
//! `:streamGenerateContent?alt=sse` (base URL `http://ADDR`). Each streams
//! its reply in its provider's event format when asked (`"stream": true`,
//! or Gemini's stream method), one word a chunk, with usage where that
//! provider puts it (OpenAI's only with `stream_options.include_usage`).
//! Replies are deterministic and depend on the request:
//!
//! - when tools are offered and the conversation holds no tool result yet,
//!   the reply calls every offered tool once, filling each string argument
//!   with the last user message;
//! - after tool results, the reply lists them;
//! - otherwise the reply names the model and quotes the start of the last
//!   user message.
//!
//! Token counts are estimated at four characters a token, with prompt-cache
//! counts for prompts of 1,024 tokens or more and reasoning tokens for
//! reasoning models (names starting `o1`, `o3`, `o4` or containing
//! `reason`), reported in each provider's own usage shape.
//!
//! Control endpoints for tests:
//! - `POST /_dev/faults` queues a fault: `{"status": 500}`, `{"status": 200,
//!   "body": "not json"}`, `{"delay_ms": 2000}`, `{"status": 429,
//!   "retry_after": 3}`, `{"status": 307, "body": "", "location": URL}`,
//!   and for streams `{"chunk_delay_ms": 50}` (a pause before each chunk),
//!   `{"cut_after": 3}` (the connection is dropped after 3 chunks),
//!   `{"no_usage": true}` (no usage in the stream) and
//!   `{"reply_words": 500}` (a reply of that many words, whatever the
//!   request's token cap), each applied to the next `times` requests
//!   (default 1);
//! - `GET /_dev/requests` lists every request received, in arrival order,
//!   as soon as it arrives (headers that carry keys included: this is the
//!   provider's side of the wire), with the status and usage of its answer
//!   (status 0 while in flight, or if the client went away first) and, for
//!   streams, the chunks sent so far and whether the stream was sent whole;
//!   `DELETE /_dev/requests` clears the list.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A fault to inject into the next requests.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Fault {
    /// Status to answer with (200 by default).
    #[serde(default)]
    pub status: Option<u16>,
    /// Raw body to send instead of the normal one.
    #[serde(default)]
    pub body: Option<String>,
    /// Delay before answering, in milliseconds.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// `retry-after` header value, in seconds.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// `location` header value, for redirect statuses.
    #[serde(default)]
    pub location: Option<String>,
    /// Pause before each chunk of a stream, in milliseconds.
    #[serde(default)]
    pub chunk_delay_ms: Option<u64>,
    /// Drop the connection after this many chunks of a stream.
    #[serde(default)]
    pub cut_after: Option<u64>,
    /// Send no usage in a stream.
    #[serde(default)]
    pub no_usage: Option<bool>,
    /// Reply with this many words, whatever the token cap.
    #[serde(default)]
    pub reply_words: Option<u64>,
    /// How many requests it applies to (1 by default).
    #[serde(default)]
    pub times: Option<u32>,
}

/// One request as the emulator saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedRequest {
    /// `openai`, `anthropic` or `gemini`.
    pub format: String,
    /// Request path, with its query when it had one.
    pub path: String,
    /// The headers a key travels in (`authorization`, `x-api-key`,
    /// `api-key`, `x-goog-api-key`) and `anthropic-version`, as received.
    pub headers: HashMap<String, String>,
    /// The model asked for.
    pub model: String,
    /// The JSON body received.
    pub body: Value,
    /// Arrival order, from 1.
    pub id: u64,
    /// Status answered; 0 while the request is in flight, and for good when
    /// the client went away before the answer.
    pub status: u16,
    /// Usage object reported in the reply, if any.
    pub usage: Option<Value>,
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// Whether the reply was streamed.
    #[serde(default)]
    pub stream: bool,
    /// Chunks of the stream sent so far.
    #[serde(default)]
    pub chunks_sent: u64,
    /// Whether every chunk of the stream was sent.
    #[serde(default)]
    pub stream_complete: bool,
}

#[derive(Default)]
struct Inner {
    faults: VecDeque<Fault>,
    log: Vec<LoggedRequest>,
    received: u64,
}

type Shared = Arc<Mutex<Inner>>;

/// The emulator's routes.
pub fn router() -> Router {
    let state: Shared = Arc::default();
    Router::new()
        .route("/_dev/faults", post(add_fault))
        .route("/_dev/requests", get(list_requests).delete(clear_requests))
        .fallback(provider)
        .with_state(state)
}

/// Serves the emulator on `listener` until the process ends.
///
/// # Errors
///
/// When accepting connections fails.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router()).await
}

async fn add_fault(State(state): State<Shared>, Json(fault): Json<Fault>) -> StatusCode {
    lock(&state).faults.push_back(fault);
    StatusCode::NO_CONTENT
}

async fn list_requests(State(state): State<Shared>) -> Json<Vec<LoggedRequest>> {
    Json(lock(&state).log.clone())
}

async fn clear_requests(State(state): State<Shared>) -> StatusCode {
    lock(&state).log.clear();
    StatusCode::NO_CONTENT
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    // A panic while holding the lock cannot leave the log half-written in a
    // way that matters to an emulator, so a poisoned lock is used as is.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn next_fault(state: &Shared) -> Option<Fault> {
    let mut inner = lock(state);
    let front = inner.faults.front_mut()?;
    let times = front.times.unwrap_or(1);
    let fault = front.clone();
    if times <= 1 {
        inner.faults.pop_front();
    } else {
        front.times = Some(times - 1);
    }
    Some(fault)
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
        }
    }
}

/// What a provider path asks for: the format, and for Gemini the model and
/// whether it streams.
fn route(path: &str) -> Option<(Format, Option<(String, bool)>)> {
    if path == "/v1/messages" {
        return Some((Format::Anthropic, None));
    }
    if path.ends_with("/chat/completions") {
        return Some((Format::OpenAi, None));
    }
    let (model, method) = path.strip_prefix("/v1beta/models/")?.split_once(':')?;
    let stream = match method {
        "generateContent" => false,
        "streamGenerateContent" => true,
        _ => return None,
    };
    Some((Format::Gemini, Some((model.to_owned(), stream))))
}

async fn provider(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match route(uri.path()) {
        Some((format, gemini)) if method == Method::POST => {
            handle(state, format, gemini, &uri, headers, body).await
        }
        _ => (StatusCode::NOT_FOUND, "no such route").into_response(),
    }
}

async fn handle(
    state: Shared,
    format: Format,
    gemini: Option<(String, bool)>,
    uri: &Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let mut request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let (Some((model, _)), Some(obj)) = (&gemini, request.as_object_mut()) {
        obj.insert("model".into(), json!(model));
    }
    let stream = match &gemini {
        Some((_, stream)) => *stream,
        None => request.get("stream").and_then(Value::as_bool) == Some(true),
    };
    let mut entry = LoggedRequest {
        format: format.name().into(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: [
            "authorization",
            "x-api-key",
            "api-key",
            "x-goog-api-key",
            "anthropic-version",
        ]
        .iter()
        .filter_map(|h| Some((h.to_string(), headers.get(*h)?.to_str().ok()?.to_owned())))
        .collect(),
        model: request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        body: request.clone(),
        id: 0,
        status: 0,
        usage: None,
        received_at_ms,
        stream,
        chunks_sent: 0,
        stream_complete: false,
    };
    // Logged on arrival, so tests see requests in flight.
    let id = {
        let mut inner = lock(&state);
        inner.received += 1;
        entry.id = inner.received;
        inner.log.push(entry);
        inner.received
    };
    let mut usage = None;

    let fault = next_fault(&state);
    if let Some(ms) = fault.as_ref().and_then(|f| f.delay_ms) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let answered = match fault.as_ref() {
        Some(Fault {
            status: Some(s),
            body: None,
            ..
        }) if *s != 200 => Err((*s, error_body(format, *s, "injected fault"))),
        _ => answer(format, &headers, &request, fault.as_ref()),
    };
    let mut response = match (fault.as_ref().and_then(|f| f.body.clone()), answered) {
        (Some(raw), _) => {
            let s = fault.as_ref().and_then(|f| f.status).unwrap_or(200);
            (StatusCode::from_u16(s).unwrap_or(StatusCode::OK), raw).into_response()
        }
        (None, Err((status, body))) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(body),
        )
            .into_response(),
        (None, Ok(reply)) if stream => {
            let include_usage = (format != Format::OpenAi
                || request
                    .pointer("/stream_options/include_usage")
                    .and_then(Value::as_bool)
                    == Some(true))
                && fault.as_ref().and_then(|f| f.no_usage) != Some(true);
            let (frames, streamed) = reply.frames(format, include_usage);
            usage = streamed;
            stream_response(state.clone(), id, frames, fault.as_ref())
        }
        (None, Ok(reply)) => {
            let body = reply.whole(format);
            usage = body
                .get("usage")
                .or_else(|| body.get("usageMetadata"))
                .cloned();
            Json(body).into_response()
        }
    };
    if let Some(Ok(value)) = fault
        .as_ref()
        .and_then(|f| f.location.as_deref())
        .map(str::parse)
    {
        response.headers_mut().insert("location", value);
    }
    if let Some(secs) = fault.as_ref().and_then(|f| f.retry_after) {
        response.headers_mut().insert("retry-after", secs.into());
    }
    if let Some(entry) = lock(&state).log.iter_mut().find(|e| e.id == id) {
        entry.status = response.status().as_u16();
        entry.usage = usage;
    }
    response
}

/// A streamed answer: each frame is sent as one chunk, after the fault's
/// pause, counted in the request log; a `cut_after` fault drops the
/// connection instead of sending the rest.
fn stream_response(state: Shared, id: u64, frames: Vec<String>, fault: Option<&Fault>) -> Response {
    let delay = Duration::from_millis(fault.and_then(|f| f.chunk_delay_ms).unwrap_or(0));
    let cut_after = fault.and_then(|f| f.cut_after);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        for (n, frame) in frames.into_iter().enumerate() {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if cut_after.is_some_and(|c| n as u64 >= c) {
                let _ = tx
                    .send(Err(std::io::Error::other("dev-provider cut the stream")))
                    .await;
                return;
            }
            if tx.send(Ok(Bytes::from(frame))).await.is_err() {
                return;
            }
            if let Some(entry) = lock(&state).log.iter_mut().find(|e| e.id == id) {
                entry.chunks_sent += 1;
            }
        }
        if let Some(entry) = lock(&state).log.iter_mut().find(|e| e.id == id) {
            entry.stream_complete = true;
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = axum::body::Body::from_stream(body).into_response();
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// Checks the request the way the real provider would, then builds the reply.
fn answer(
    format: Format,
    headers: &HeaderMap,
    request: &Value,
    fault: Option<&Fault>,
) -> Result<Reply, (u16, Value)> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    let key_present = match format {
        Format::OpenAi => {
            header("authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|k| !k.is_empty())
                || header("api-key").is_some()
        }
        Format::Anthropic => header("x-api-key").is_some(),
        Format::Gemini => header("x-goog-api-key").is_some(),
    };
    if !key_present {
        let status = if format == Format::Gemini { 403 } else { 401 };
        return Err((status, error_body(format, status, "missing API key")));
    }
    if format == Format::Anthropic && headers.get("anthropic-version").is_none() {
        return Err((
            400,
            error_body(format, 400, "anthropic-version header is required"),
        ));
    }
    if request.is_null() {
        return Err((400, error_body(format, 400, "body is not valid JSON")));
    }
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return Err((400, error_body(format, 400, "model is required")));
    };
    let conv = match format {
        Format::OpenAi => Conversation::from_openai(request),
        Format::Anthropic => {
            if request.get("max_tokens").and_then(Value::as_u64).is_none() {
                return Err((400, error_body(format, 400, "max_tokens is required")));
            }
            Conversation::from_anthropic(request)
        }
        Format::Gemini => Conversation::from_gemini(request),
    };
    let max_tokens = request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .or_else(|| request.pointer("/generationConfig/maxOutputTokens"))
        .and_then(Value::as_u64)
        .unwrap_or(4096);
    let mut reply = conv.reply(model, max_tokens);
    if let Some(words) = fault.and_then(|f| f.reply_words) {
        reply.text = (1..=words)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        reply.output = tokens(reply.text.len());
        reply.calls.clear();
        reply.finish = "stop";
    }
    Ok(reply)
}

fn error_body(format: Format, status: u16, message: &str) -> Value {
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    match format {
        Format::OpenAi => json!({"error": {"message": message, "type": kind, "code": null}}),
        Format::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
        Format::Gemini => {
            let grpc = match status {
                400 => "INVALID_ARGUMENT",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                _ => "INTERNAL",
            };
            json!({"error": {"code": status, "message": message, "status": grpc}})
        }
    }
}

/// The parts of a request the replies depend on, read from either format.
#[derive(Default)]
struct Conversation {
    prompt_chars: Vec<usize>,
    last_user: String,
    tools: Vec<(String, Value)>,
    tool_names_by_call: HashMap<String, String>,
    tool_results: Vec<(String, String)>,
}

impl Conversation {
    fn from_openai(req: &Value) -> Self {
        let mut conv = Conversation::default();
        for m in req
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = content_text(m.get("content"));
            conv.prompt_chars.push(text.len());
            match m.get("role").and_then(Value::as_str) {
                Some("user") => conv.last_user = text,
                Some("tool") => {
                    let id = m
                        .get("tool_call_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    conv.tool_results.push((id.to_owned(), text));
                }
                _ => {}
            }
            for call in m
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
                let name = call
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                conv.tool_names_by_call.insert(id.into(), name.into());
            }
        }
        for t in req
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = t
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let schema = t
                .pointer("/function/parameters")
                .cloned()
                .unwrap_or(Value::Null);
            conv.prompt_chars.push(t.to_string().len());
            conv.tools.push((name.into(), schema));
        }
        conv
    }

    fn from_anthropic(req: &Value) -> Self {
        let mut conv = Conversation::default();
        conv.prompt_chars
            .push(content_text(req.get("system")).len());
        for m in req
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let user = m.get("role").and_then(Value::as_str) == Some("user");
            let blocks: Vec<Value> = match m.get("content") {
                Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
                Some(Value::Array(a)) => a.clone(),
                _ => vec![],
            };
            for b in &blocks {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = b.get("text").and_then(Value::as_str).unwrap_or_default();
                        conv.prompt_chars.push(text.len());
                        if user {
                            conv.last_user = text.to_owned();
                        }
                    }
                    Some("tool_use") => {
                        let id = b.get("id").and_then(Value::as_str).unwrap_or_default();
                        let name = b.get("name").and_then(Value::as_str).unwrap_or_default();
                        conv.prompt_chars.push(b.to_string().len());
                        conv.tool_names_by_call.insert(id.into(), name.into());
                    }
                    Some("tool_result") => {
                        let id = b
                            .get("tool_use_id")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        let text = content_text(b.get("content"));
                        conv.prompt_chars.push(text.len());
                        conv.tool_results.push((id.into(), text));
                    }
                    _ => {}
                }
            }
        }
        for t in req
            .get("tools")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
            conv.prompt_chars.push(t.to_string().len());
            conv.tools.push((
                name.into(),
                t.get("input_schema").cloned().unwrap_or(Value::Null),
            ));
        }
        conv
    }

    fn from_gemini(req: &Value) -> Self {
        let mut conv = Conversation::default();
        for part in req
            .pointer("/systemInstruction/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            conv.prompt_chars.push(
                part.get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .len(),
            );
        }
        for m in req
            .get("contents")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let user = m.get("role").and_then(Value::as_str) != Some("model");
            for part in m
                .get("parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(text) = part.get("text").and_then(Value::as_str) {
                    conv.prompt_chars.push(text.len());
                    if user {
                        conv.last_user = text.to_owned();
                    }
                }
                if let Some(call) = part.get("functionCall") {
                    let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
                    conv.prompt_chars.push(call.to_string().len());
                    conv.tool_names_by_call.insert(name.into(), name.into());
                }
                if let Some(response) = part.get("functionResponse") {
                    let name = response
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let out = match response.pointer("/response/result") {
                        Some(Value::String(s)) => s.clone(),
                        _ => response
                            .get("response")
                            .map(Value::to_string)
                            .unwrap_or_default(),
                    };
                    conv.prompt_chars.push(out.len());
                    conv.tool_results.push((name.into(), out));
                }
            }
        }
        for t in req
            .pointer("/tools/0/functionDeclarations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = t.get("name").and_then(Value::as_str).unwrap_or_default();
            conv.prompt_chars.push(t.to_string().len());
            conv.tools.push((
                name.into(),
                t.get("parameters").cloned().unwrap_or(Value::Null),
            ));
        }
        conv
    }

    fn prompt_tokens(&self) -> u64 {
        3 + self
            .prompt_chars
            .iter()
            .map(|&c| tokens(c) + 4)
            .sum::<u64>()
    }

    fn reply(&self, model: &str, max_tokens: u64) -> Reply {
        let prompt = self.prompt_tokens();
        if !self.tools.is_empty() && self.tool_results.is_empty() {
            let calls: Vec<(String, String, Value)> = self
                .tools
                .iter()
                .enumerate()
                .map(|(i, (name, schema))| {
                    let id = format!("call_{i}_{:08x}", fnv(self.last_user.as_bytes()) as u32);
                    (id, name.clone(), arguments_for(schema, &self.last_user))
                })
                .collect();
            let chars: usize = calls
                .iter()
                .map(|(_, n, a)| n.len() + a.to_string().len())
                .sum();
            return Reply::new(
                model,
                prompt,
                String::new(),
                calls,
                tokens(chars),
                "tool_calls",
            );
        }
        let mut text = if self.tool_results.is_empty() {
            let words: Vec<&str> = self.last_user.split_whitespace().collect();
            let head = words.iter().take(12).copied().collect::<Vec<_>>().join(" ");
            format!(
                "[{model}] Read {} words, beginning: \"{head}{}\"",
                words.len(),
                if words.len() > 12 { "…" } else { "" }
            )
        } else {
            let results: Vec<String> = self
                .tool_results
                .iter()
                .map(|(id, out)| {
                    let name = self
                        .tool_names_by_call
                        .get(id)
                        .map(String::as_str)
                        .unwrap_or("tool");
                    format!("{name} = {out}")
                })
                .collect();
            format!("[{model}] Tool results: {}", results.join("; "))
        };
        let mut finish = "stop";
        if tokens(text.len()) > max_tokens {
            text = text.chars().take(max_tokens as usize * 4).collect();
            finish = "length";
        }
        let output = tokens(text.len());
        Reply::new(model, prompt, text, vec![], output, finish)
    }
}

fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Arguments for a tool call: every string property gets `text`, numbers its
/// length, booleans `true`.
fn arguments_for(schema: &Value, text: &str) -> Value {
    let mut args = serde_json::Map::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let value = match prop.get("type").and_then(Value::as_str) {
                Some("integer" | "number") => json!(text.len()),
                Some("boolean") => json!(true),
                _ => json!(text),
            };
            args.insert(name.clone(), value);
        }
    }
    Value::Object(args)
}

fn tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

struct Reply {
    model: String,
    text: String,
    calls: Vec<(String, String, Value)>,
    finish: &'static str,
    prompt: u64,
    output: u64,
    reasoning: u64,
    cached: u64,
    cache_write: u64,
}

impl Reply {
    fn new(
        model: &str,
        prompt: u64,
        text: String,
        calls: Vec<(String, String, Value)>,
        output: u64,
        finish: &'static str,
    ) -> Self {
        let reasoning_model =
            ["o1", "o3", "o4"].iter().any(|p| model.starts_with(p)) || model.contains("reason");
        let cached = if prompt >= 1024 {
            prompt / 2 / 128 * 128
        } else {
            0
        };
        Reply {
            model: model.to_owned(),
            text,
            calls,
            finish,
            prompt,
            output,
            reasoning: if reasoning_model { output * 2 } else { 0 },
            cached,
            cache_write: if prompt >= 1024 { prompt / 8 } else { 0 },
        }
    }

    fn openai(&self, model: &str) -> Value {
        let mut message = json!({"role": "assistant", "content": self.text, "refusal": null});
        if !self.calls.is_empty() {
            message["content"] = Value::Null;
            message["tool_calls"] = self
                .calls
                .iter()
                .map(|(id, name, args)| {
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}})
                })
                .collect();
        }
        json!({
            "id": format!("chatcmpl-dev{:016x}", fnv(self.text.as_bytes())),
            "object": "chat.completion",
            "created": 1_764_000_000,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": self.finish}],
            "usage": self.openai_usage(),
        })
    }

    fn anthropic(&self, model: &str) -> Value {
        let mut content = Vec::new();
        if !self.text.is_empty() {
            content.push(json!({"type": "text", "text": self.text}));
        }
        for (id, name, args) in &self.calls {
            content.push(json!({"type": "tool_use", "id": id.replace("call_", "toolu_"), "name": name, "input": args}));
        }
        let stop_reason = match self.finish {
            "tool_calls" => "tool_use",
            "length" => "max_tokens",
            _ => "end_turn",
        };
        json!({
            "id": format!("msg_dev{:016x}", fnv(self.text.as_bytes())),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": self.anthropic_usage(self.output + self.reasoning),
        })
    }

    fn openai_usage(&self) -> Value {
        let completion = self.output + self.reasoning;
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": completion,
            "total_tokens": self.prompt + completion,
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        })
    }

    fn anthropic_usage(&self, output: u64) -> Value {
        json!({
            "input_tokens": self.prompt - self.cached - self.cache_write,
            "cache_creation_input_tokens": self.cache_write,
            "cache_read_input_tokens": self.cached,
            "output_tokens": output,
        })
    }

    /// Gemini's running totals after `candidates` output tokens; thoughts
    /// are counted apart from candidates, cached content inside the prompt.
    fn gemini_usage(&self, candidates: u64) -> Value {
        json!({
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": candidates,
            "thoughtsTokenCount": self.reasoning,
            "cachedContentTokenCount": self.cached,
            "totalTokenCount": self.prompt + candidates + self.reasoning,
        })
    }

    fn gemini_finish(&self) -> &'static str {
        if self.finish == "length" {
            "MAX_TOKENS"
        } else {
            "STOP"
        }
    }

    fn gemini(&self) -> Value {
        let mut parts = Vec::new();
        if !self.text.is_empty() {
            parts.push(json!({"text": self.text}));
        }
        for (_, name, args) in &self.calls {
            parts.push(json!({"functionCall": {"name": name, "args": args}}));
        }
        json!({
            "candidates": [{"content": {"role": "model", "parts": parts},
                            "finishReason": self.gemini_finish(), "index": 0}],
            "usageMetadata": self.gemini_usage(self.output),
            "modelVersion": self.model,
            "responseId": format!("dev{:016x}", fnv(self.text.as_bytes())),
        })
    }

    /// The whole reply in `format`.
    fn whole(&self, format: Format) -> Value {
        match format {
            Format::OpenAi => self.openai(&self.model),
            Format::Anthropic => self.anthropic(&self.model),
            Format::Gemini => self.gemini(),
        }
    }

    /// The reply as the SSE frames of `format`'s stream, one word of text
    /// a frame, and the usage it reports (none when `include_usage` is
    /// false).
    fn frames(&self, format: Format, include_usage: bool) -> (Vec<String>, Option<Value>) {
        let words: Vec<&str> = self.text.split_inclusive(' ').collect();
        let data = |v: Value| format!("data: {v}\n\n");
        let event = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
        let mut frames = Vec::new();
        let usage;
        match format {
            Format::OpenAi => {
                let chunk = |delta: Value, finish: Value| {
                    data(
                        json!({"id": "chatcmpl-dev", "object": "chat.completion.chunk",
                        "created": 1_764_000_000, "model": self.model,
                        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                        "usage": null}),
                    )
                };
                frames.push(chunk(
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                ));
                for w in &words {
                    frames.push(chunk(json!({"content": w}), Value::Null));
                }
                for (i, (id, name, args)) in self.calls.iter().enumerate() {
                    let args = args.to_string();
                    let (a, b) = args.split_at(args.len() / 2);
                    frames.push(chunk(
                        json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                        "function": {"name": name, "arguments": a}}]}),
                        Value::Null,
                    ));
                    frames.push(chunk(
                        json!({"tool_calls": [{"index": i, "function": {"arguments": b}}]}),
                        Value::Null,
                    ));
                }
                frames.push(chunk(json!({}), json!(self.finish)));
                usage = include_usage.then(|| self.openai_usage());
                if let Some(u) = &usage {
                    frames.push(data(
                        json!({"id": "chatcmpl-dev", "object": "chat.completion.chunk",
                        "created": 1_764_000_000, "model": self.model, "choices": [], "usage": u}),
                    ));
                }
                frames.push("data: [DONE]\n\n".into());
            }
            Format::Anthropic => {
                let output = self.output + self.reasoning;
                frames.push(event(
                    "message_start",
                    json!({"type": "message_start", "message": {
                    "id": "msg_dev", "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": self.anthropic_usage(1)}}),
                ));
                frames.push(event("ping", json!({"type": "ping"})));
                let mut block = 0;
                if !self.text.is_empty() {
                    frames.push(event(
                        "content_block_start",
                        json!({"type": "content_block_start",
                        "index": 0, "content_block": {"type": "text", "text": ""}}),
                    ));
                    for w in &words {
                        frames.push(event(
                            "content_block_delta",
                            json!({"type": "content_block_delta",
                            "index": 0, "delta": {"type": "text_delta", "text": w}}),
                        ));
                    }
                    frames.push(event(
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": 0}),
                    ));
                    block = 1;
                }
                for (i, (id, name, args)) in self.calls.iter().enumerate() {
                    let index = block + i;
                    let args = args.to_string();
                    let (a, b) = args.split_at(args.len() / 2);
                    frames.push(event(
                        "content_block_start",
                        json!({"type": "content_block_start",
                        "index": index, "content_block": {"type": "tool_use",
                        "id": id.replace("call_", "toolu_"), "name": name, "input": {}}}),
                    ));
                    for piece in [a, b] {
                        frames.push(event("content_block_delta", json!({"type": "content_block_delta",
                            "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}})));
                    }
                    frames.push(event(
                        "content_block_stop",
                        json!({"type": "content_block_stop", "index": index}),
                    ));
                }
                let stop = match self.finish {
                    "tool_calls" => "tool_use",
                    "length" => "max_tokens",
                    _ => "end_turn",
                };
                // Two message_delta events, each with cumulative counts: a
                // client that adds them up counts the output twice.
                frames.push(event(
                    "message_delta",
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": null, "stop_sequence": null},
                    "usage": {"output_tokens": output / 2}}),
                ));
                frames.push(event(
                    "message_delta",
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": null},
                    "usage": self.anthropic_usage(output)}),
                ));
                frames.push(event("message_stop", json!({"type": "message_stop"})));
                usage = Some(self.anthropic_usage(output));
            }
            Format::Gemini => {
                let mut sent = 0;
                let n = words.len().max(1);
                for (i, w) in words.iter().enumerate() {
                    sent = self.output * (i as u64 + 1) / n as u64;
                    let last = i + 1 == words.len() && self.calls.is_empty();
                    let mut candidate =
                        json!({"content": {"role": "model", "parts": [{"text": w}]}, "index": 0});
                    if last {
                        candidate["finishReason"] = json!(self.gemini_finish());
                    }
                    frames.push(data(json!({"candidates": [candidate],
                        "usageMetadata": self.gemini_usage(sent), "modelVersion": self.model})));
                }
                if !self.calls.is_empty() || words.is_empty() {
                    let parts: Vec<Value> = self
                        .calls
                        .iter()
                        .map(
                            |(_, name, args)| json!({"functionCall": {"name": name, "args": args}}),
                        )
                        .collect();
                    sent = self.output;
                    frames.push(data(
                        json!({"candidates": [{"content": {"role": "model", "parts": parts},
                        "finishReason": self.gemini_finish(), "index": 0}],
                        "usageMetadata": self.gemini_usage(sent), "modelVersion": self.model}),
                    ));
                }
                usage = Some(self.gemini_usage(sent));
            }
        }
        (frames, usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_tools_are_called_once_each_with_the_user_text() {
        let req = json!({"model": "m", "messages": [{"role": "user", "content": "2+2"}],
            "tools": [{"type": "function", "function": {"name": "calc",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}]});
        let reply = Conversation::from_openai(&req).reply("m", 100);
        assert_eq!(reply.calls.len(), 1);
        assert_eq!(reply.calls[0].2, json!({"expression": "2+2"}));
        assert_eq!(reply.finish, "tool_calls");
    }

    #[test]
    fn anthropic_input_tokens_exclude_cache() {
        let long = "word ".repeat(2000);
        let req = json!({"model": "claude", "max_tokens": 50, "messages": [{"role": "user", "content": long}]});
        let conv = Conversation::from_anthropic(&req);
        let body = conv.reply("claude", 50).anthropic("claude");
        let u = &body["usage"];
        let total = u["input_tokens"].as_u64().unwrap_or(0)
            + u["cache_creation_input_tokens"].as_u64().unwrap_or(0)
            + u["cache_read_input_tokens"].as_u64().unwrap_or(0);
        assert_eq!(total, conv.prompt_tokens());
        assert!(u["cache_read_input_tokens"].as_u64().unwrap_or(0) > 0);
    }
}
