//! `summarize`: summarises a long text in chunks, then combines the chunk
//! summaries into one.
//!
//! The text is split on paragraph boundaries into chunks of at most
//! [`CHUNK_CHARS`] characters, so each call stays well inside any model's
//! context window whatever the input's length.

use claw_sdk::{Chat, Claw};

/// Largest chunk sent in one call, in characters (roughly 1,000 tokens).
const CHUNK_CHARS: usize = 4_000;

struct Summarize;

impl Claw for Summarize {
    fn run(input: String, _conversation_id: String) -> Result<String, String> {
        if input.trim().is_empty() {
            return Err("nothing to summarise: give the text as input".into());
        }
        let chunks = chunk(&input, CHUNK_CHARS);
        let mut summaries = Vec::with_capacity(chunks.len());
        for (i, part) in chunks.iter().enumerate() {
            let summary = Chat::new()
                .system("Summarise the text you are given in two or three sentences.")
                .user(format!("Part {} of {}:\n\n{part}", i + 1, chunks.len()))
                .max_tokens(200)
                .send()
                .map_err(|e| format!("summarising part {}: {}", i + 1, e.message()))?;
            summaries.push(summary.message.content);
        }
        if summaries.len() == 1 {
            return Ok(summaries.remove(0));
        }
        let combined = Chat::new()
            .system("Combine these partial summaries into one coherent summary.")
            .user(summaries.join("\n\n"))
            .max_tokens(400)
            .send()
            .map_err(|e| format!("combining summaries: {}", e.message()))?;
        Ok(combined.message.content)
    }
}

/// Splits `text` into chunks of at most `max` bytes, preferring paragraph
/// breaks, then line breaks, and never splitting inside a UTF-8 character.
fn chunk(text: &str, max: usize) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut rest = text.trim();
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let window = &rest[..cut];
        let at = window
            .rfind("\n\n")
            .or_else(|| window.rfind('\n'))
            .filter(|&at| at > 0)
            .unwrap_or(cut);
        chunks.push(rest[..at].trim());
        rest = rest[at..].trim_start();
    }
    if !rest.is_empty() {
        chunks.push(rest);
    }
    chunks
}

claw_sdk::export!(Summarize);
