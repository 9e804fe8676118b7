//! Streamed replies: [`Chat::stream`](crate::Chat::stream) returns a
//! [`Stream`], an iterator over the reply's pieces as the model writes them.

use crate::bindings::clawrun::claw::llm::{self, CompletionStream};
use crate::{ChatRequest, LlmError, StreamEvent};

/// Starts a streamed reply to `request` from the model assigned to this
/// claw.
///
/// # Errors
///
/// As [`call`](crate::call), for errors found before anything is sent
/// (a revoked key, an exhausted budget, an invalid request).
pub fn stream(request: &ChatRequest) -> Result<Stream, LlmError> {
    llm::llm_stream(request).map(|inner| Stream { inner, done: false })
}

/// A reply being streamed: an iterator of [`StreamEvent`]s, ending after
/// [`StreamEvent::Finish`] and [`StreamEvent::Usage`], or after the first
/// error.
///
/// ```no_run
/// use claw_sdk::{Chat, StreamEvent};
///
/// let mut answer = String::new();
/// for event in Chat::new().user("Tell me a story.").stream()? {
///     match event? {
///         StreamEvent::TextDelta(text) => answer.push_str(&text),
///         StreamEvent::Usage(usage) => println!("{} tokens out", usage.output_tokens),
///         _ => {}
///     }
/// }
/// # Ok::<(), claw_sdk::LlmError>(())
/// ```
///
/// Dropping the stream before its end stops it; the host still records
/// the usage of what was generated.
#[derive(Debug)]
pub struct Stream {
    inner: CompletionStream,
    done: bool,
}

impl Stream {
    /// Reads the rest of the stream and returns its text.
    ///
    /// ```no_run
    /// let story = claw_sdk::Chat::new().user("Tell me a story.").stream()?.text()?;
    /// # Ok::<(), claw_sdk::LlmError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The error that ended the stream, such as [`LlmError::KeyRevoked`]
    /// when an admin revoked the key mid-stream.
    pub fn text(self) -> Result<String, LlmError> {
        let mut text = String::new();
        for event in self {
            if let StreamEvent::TextDelta(delta) = event? {
                text.push_str(&delta);
            }
        }
        Ok(text)
    }
}

impl Iterator for Stream {
    type Item = Result<StreamEvent, LlmError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.inner.next() {
            Ok(Some(event)) => Some(Ok(event)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
