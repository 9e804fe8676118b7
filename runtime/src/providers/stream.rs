//! A provider's streamed reply, whatever its wire format: bytes from the
//! connection go through the [`SseParser`](super::sse::SseParser) into the
//! format's decoder, which turns each event into text and tool-call deltas
//! and keeps the latest usage the provider reported.
//!
//! The stream also keeps everything generated so far ([`Partial`]), so a
//! stream that breaks, or is stopped, can still be metered.

use std::collections::VecDeque;

use serde_json::Value;
use tokio::time::Instant;

use super::sse::{SseEvent, SseParser};
use super::{
    Completion, FinishReason, Message, ProviderError, ProviderOptions, Role, ToolCall, Usage,
    anthropic, gemini, openai,
};

/// A piece of a streamed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// More reply text.
    Text(String),
    /// A piece of a tool call: the first piece of a call carries its id and
    /// name, later ones more of its arguments.
    ToolCall(ToolCallDelta),
}

/// A piece of one tool call of a streamed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// Which tool call of the reply, from 0.
    pub index: u32,
    /// The call's id, on its first piece.
    pub id: Option<String>,
    /// The tool's name, on its first piece.
    pub name: Option<String>,
    /// More of the arguments' JSON text.
    pub arguments: String,
}

/// Everything a stream delivered so far.
#[derive(Debug, Clone, Default)]
pub struct Partial {
    /// Reply text.
    pub text: String,
    /// Tool calls, in the order they began.
    pub tool_calls: Vec<(u32, ToolCall)>,
    /// Why generation stopped, once the provider said.
    pub finish: Option<FinishReason>,
    /// The model that answers, once the provider said.
    pub model: String,
    /// The latest usage the provider reported, as received and normalised.
    pub usage: Option<(Value, Usage)>,
    events: VecDeque<StreamEvent>,
}

impl Partial {
    pub(super) fn text(&mut self, delta: &str) {
        if !delta.is_empty() {
            self.text.push_str(delta);
            self.events.push_back(StreamEvent::Text(delta.to_owned()));
        }
    }

    pub(super) fn tool_call(
        &mut self,
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: &str,
    ) {
        let at = match self.tool_calls.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                self.tool_calls.push((
                    index,
                    ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    },
                ));
                self.tool_calls.len() - 1
            }
        };
        let call = &mut self.tool_calls[at].1;
        if let Some(id) = id.filter(|id| !id.is_empty()) {
            call.id = id.to_owned();
        }
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            call.name.push_str(name);
        }
        call.arguments.push_str(arguments);
        self.events.push_back(StreamEvent::ToolCall(ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: arguments.to_owned(),
        }));
    }

    pub(super) fn model(&mut self, model: Option<&str>) {
        if let Some(m) = model.filter(|m| !m.is_empty()) {
            m.clone_into(&mut self.model);
        }
    }

    /// Bytes of text and tool calls generated so far.
    pub fn generated_bytes(&self) -> usize {
        self.text.len()
            + self
                .tool_calls
                .iter()
                .map(|(_, c)| c.name.len() + c.arguments.len())
                .sum::<usize>()
    }

    /// The reply so far as a completion; `raw_usage` is null when the
    /// provider reported no usage.
    pub fn completion(&self) -> Completion {
        let (raw_usage, usage) = self.usage.clone().unwrap_or_default();
        let tool_calls: Vec<ToolCall> = self.tool_calls.iter().map(|(_, c)| c.clone()).collect();
        let finish_reason = match self.finish {
            // Gemini says STOP for replies that call tools.
            Some(FinishReason::Stop) if !tool_calls.is_empty() => FinishReason::ToolCalls,
            Some(f) => f,
            None => FinishReason::Other,
        };
        Completion {
            message: Message {
                role: Role::Assistant,
                content: self.text.clone(),
                tool_calls,
                tool_call_id: None,
            },
            finish_reason,
            model: self.model.clone(),
            usage,
            raw_usage,
        }
    }
}

/// The wire format's decoder of stream events.
pub(super) enum Decoder {
    OpenAi(openai::StreamDecoder),
    Anthropic(anthropic::StreamDecoder),
    Gemini(gemini::StreamDecoder),
}

impl Decoder {
    /// Decodes one event into `partial`; `Ok(true)` when it ends the stream.
    fn event(&mut self, event: &SseEvent, partial: &mut Partial) -> Result<bool, ProviderError> {
        match self {
            Decoder::OpenAi(d) => d.event(event, partial),
            Decoder::Anthropic(d) => d.event(event, partial),
            Decoder::Gemini(d) => d.event(event, partial),
        }
    }

    /// Whether a stream that ended here is complete, though the format's
    /// own end marker may be missing: `[DONE]` and `message_stop` are often
    /// lost by proxies, and Gemini sends none; a finish reason means the
    /// reply itself was whole.
    fn complete_at_eof(&self, partial: &Partial) -> bool {
        partial.finish.is_some()
    }
}

/// A streamed reply being read.
pub struct ProviderStream {
    response: Option<reqwest::Response>,
    parser: SseParser,
    decoder: Decoder,
    partial: Partial,
    read: usize,
    max_bytes: usize,
    deadline: Instant,
}

impl std::fmt::Debug for ProviderStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderStream")
            .field("read", &self.read)
            .field("open", &self.response.is_some())
            .finish_non_exhaustive()
    }
}

impl ProviderStream {
    pub(super) fn new(
        response: reqwest::Response,
        decoder: Decoder,
        options: &ProviderOptions,
        deadline: Instant,
    ) -> Self {
        Self {
            response: Some(response),
            parser: SseParser::new(),
            decoder,
            partial: Partial::default(),
            read: 0,
            max_bytes: options.max_response_bytes,
            deadline,
        }
    }

    /// A stream over bytes already received, for tests and fuzzing of the
    /// decoders: feeds `chunks` and returns every event and the outcome.
    #[doc(hidden)]
    pub fn decode_all(
        kind: super::ProviderKind,
        chunks: &[&[u8]],
    ) -> (Vec<StreamEvent>, Partial, Result<(), ProviderError>) {
        let mut decoder = decoder_for(kind);
        let mut parser = SseParser::new();
        let mut partial = Partial::default();
        let mut events = Vec::new();
        for chunk in chunks {
            for e in parser.feed(chunk) {
                match decoder.event(&e, &mut partial) {
                    Ok(done) => {
                        events.extend(partial.events.drain(..));
                        if done {
                            return (events, partial, Ok(()));
                        }
                    }
                    Err(err) => return (events, partial, Err(err)),
                }
            }
        }
        let end = if decoder.complete_at_eof(&partial) {
            Ok(())
        } else {
            Err(ProviderError::bad_response(
                "the stream ended before the reply was complete",
            ))
        };
        (events, partial, end)
    }

    /// The next piece of the reply, `None` once it is complete.
    ///
    /// # Errors
    ///
    /// When the connection breaks, the stream ends before the reply is
    /// complete, an event does not decode, the provider sends an error
    /// event, the answer passes the size cap, or the deadline passes.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ProviderError> {
        loop {
            if let Some(event) = self.partial.events.pop_front() {
                return Ok(Some(event));
            }
            let Some(response) = self.response.as_mut() else {
                return Ok(None);
            };
            let chunk = tokio::time::timeout_at(self.deadline, response.chunk())
                .await
                .map_err(|_| ProviderError::timeout())?
                .map_err(|e| {
                    if e.is_timeout() {
                        ProviderError::timeout()
                    } else {
                        ProviderError::bad_response("the connection broke off mid-stream")
                    }
                })?;
            let Some(chunk) = chunk else {
                self.response = None;
                if self.decoder.complete_at_eof(&self.partial) {
                    return Ok(None);
                }
                return Err(ProviderError::bad_response(
                    "the stream ended before the reply was complete",
                ));
            };
            self.read += chunk.len();
            if self.read > self.max_bytes {
                self.response = None;
                return Err(ProviderError::too_large(self.max_bytes));
            }
            for event in self.parser.feed(&chunk) {
                if self.decoder.event(&event, &mut self.partial)? {
                    // The format's end marker: whatever follows is ignored
                    // and the connection released.
                    self.response = None;
                    break;
                }
            }
        }
    }

    /// Closes the connection: nothing more is read.
    pub fn close(&mut self) {
        self.response = None;
        self.partial.events.clear();
    }

    /// Everything delivered so far.
    pub fn partial(&self) -> &Partial {
        &self.partial
    }
}

pub(super) fn decoder_for(kind: super::ProviderKind) -> Decoder {
    use super::ProviderKind as K;
    match kind {
        K::OpenAi | K::OpenAiCompatible => Decoder::OpenAi(openai::StreamDecoder),
        K::Anthropic => Decoder::Anthropic(anthropic::StreamDecoder::default()),
        K::Gemini => Decoder::Gemini(gemini::StreamDecoder),
    }
}

/// Parses an event's data as JSON.
pub(super) fn json(event: &SseEvent) -> Result<Value, ProviderError> {
    serde_json::from_str(&event.data).map_err(ProviderError::bad_response)
}
