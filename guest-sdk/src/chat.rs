//! Building chat requests and calling the model.

use std::fmt;

use crate::bindings::clawrun::claw::llm;
use crate::{ChatRequest, Completion, LlmError, Message, Role, ToolCall, ToolDefinition};

/// Sends `request` to the model assigned to this claw.
///
/// # Errors
///
/// Returns the host's [`LlmError`]: for example [`LlmError::KeyRevoked`]
/// when an admin revoked the claw's key, or [`LlmError::Provider`] when the
/// provider refused the request.
pub fn call(request: &ChatRequest) -> Result<Completion, LlmError> {
    llm::llm_call(request)
}

/// Asks the model one question and returns the text of its answer.
///
/// # Errors
///
/// As [`call`].
pub fn ask(prompt: impl Into<String>) -> Result<String, LlmError> {
    Chat::new()
        .user(prompt)
        .send()
        .map(|done| done.message.content)
}

/// A conversation being built, sent with [`Chat::send`].
///
/// ```no_run
/// use claw_sdk::Chat;
///
/// let mut chat = Chat::new().system("Answer in one word.").max_tokens(16);
/// chat.push_user("Colour of the sky?");
/// let answer = chat.send()?;
/// println!("{} ({} tokens)", answer.message.content, answer.usage.output_tokens);
/// # Ok::<(), claw_sdk::LlmError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Chat {
    request: ChatRequest,
}

impl Default for Chat {
    fn default() -> Self {
        Self::new()
    }
}

impl Chat {
    /// An empty conversation with no tools and the host's default token cap.
    pub fn new() -> Self {
        Self {
            request: ChatRequest {
                messages: Vec::new(),
                tools: Vec::new(),
                max_tokens: None,
                temperature: None,
            },
        }
    }

    /// Adds a system message.
    pub fn system(mut self, text: impl Into<String>) -> Self {
        self.request.messages.push(Message::system(text));
        self
    }

    /// Adds a user message.
    pub fn user(mut self, text: impl Into<String>) -> Self {
        self.push_user(text);
        self
    }

    /// Offers a tool to the model.
    pub fn tool(mut self, tool: ToolDefinition) -> Self {
        self.request.tools.push(tool);
        self
    }

    /// Caps the tokens of each reply.
    pub fn max_tokens(mut self, max: u32) -> Self {
        self.request.max_tokens = Some(max);
        self
    }

    /// Sets the sampling temperature.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.request.temperature = Some(temperature);
        self
    }

    /// Appends a user message in place.
    pub fn push_user(&mut self, text: impl Into<String>) {
        self.request.messages.push(Message::user(text));
    }

    /// Appends any message in place, such as the model's previous reply or a
    /// tool result.
    pub fn push(&mut self, message: Message) {
        self.request.messages.push(message);
    }

    /// The request as it would be sent.
    pub fn request(&self) -> &ChatRequest {
        &self.request
    }

    /// Sends the conversation to the model. The reply is not appended; push
    /// it with [`Chat::push`] to continue the conversation.
    ///
    /// # Errors
    ///
    /// As [`call`].
    pub fn send(&self) -> Result<Completion, LlmError> {
        call(&self.request)
    }

    /// Sends the conversation and streams the reply, as
    /// [`stream`](crate::stream()) does.
    ///
    /// ```no_run
    /// use claw_sdk::{Chat, StreamEvent};
    ///
    /// for event in Chat::new().user("Count to ten.").stream()? {
    ///     if let StreamEvent::TextDelta(text) = event? {
    ///         print!("{text}");
    ///     }
    /// }
    /// # Ok::<(), claw_sdk::LlmError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`call`], for errors found before the reply starts; later ones
    /// come from the stream.
    pub fn stream(&self) -> Result<crate::Stream, LlmError> {
        crate::stream(&self.request)
    }
}

impl Message {
    fn text(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }

    /// An assistant message with text only.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::text(Role::Assistant, content)
    }

    /// The result of the tool call `call`, to send back to the model.
    pub fn tool_result(call: &ToolCall, content: impl Into<String>) -> Self {
        Message {
            tool_call_id: Some(call.id.clone()),
            ..Self::text(Role::Tool, content)
        }
    }
}

impl ToolDefinition {
    /// A tool named `name`, described for the model, whose arguments follow
    /// the JSON Schema `parameters` (JSON text).
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: impl Into<String>,
    ) -> Self {
        ToolDefinition {
            name: name.into(),
            description: description.into(),
            parameters: parameters.into(),
        }
    }
}

impl LlmError {
    /// A sentence describing the error, fit to show a person. (The generated
    /// `Display` implementation prints the raw variant instead.)
    pub fn message(&self) -> String {
        let mut out = String::new();
        let _ = self.describe(&mut out);
        out
    }

    fn describe(&self, f: &mut impl fmt::Write) -> fmt::Result {
        match self {
            LlmError::KeyRevoked => {
                f.write_str("the provider key assigned to this claw was revoked")
            }
            LlmError::NoKeyAssigned => {
                f.write_str("no provider key and model are assigned to this claw")
            }
            LlmError::BudgetExceeded(budget) => write!(f, "budget exceeded: {budget}"),
            LlmError::RateLimited(ms) => write!(f, "rate limited; retry after {ms} ms"),
            LlmError::Provider(e) => write!(f, "provider error {}: {}", e.status, e.message),
            LlmError::InvalidRequest(why) => write!(f, "invalid request: {why}"),
            LlmError::Timeout => f.write_str("the provider did not answer in time"),
            LlmError::SecretInRequest => f.write_str(
                "the request contains a stored API key; it was not sent and the attempt was recorded",
            ),
            LlmError::Unavailable(why) => write!(f, "the host cannot call the model: {why}"),
        }
    }
}
