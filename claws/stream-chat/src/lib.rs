//! `stream-chat`: streams the model's reply and returns it with a summary
//! of the stream.
//!
//! The input is the prompt, optionally preceded by options:
//! `max_tokens=N` caps the reply, `drop_after=K` stops reading (drops the
//! stream) after K text pieces, and `tool` offers a `lookup` tool, whose
//! calls are put together from their pieces and listed.
//!
//! The answer is the streamed text, then one line
//! `[stream: P pieces, finish F, input I, output O]`; a stream that ends in
//! an error fails the run, saying how many pieces came first.

use claw_sdk::{Chat, Claw, FinishReason, StreamEvent, ToolDefinition};

struct StreamChat;

impl Claw for StreamChat {
    fn run(input: String, _conversation_id: String) -> Result<String, String> {
        let mut chat = Chat::new().system("You answer briefly.");
        let mut drop_after = None;
        let mut prompt = input.trim();
        loop {
            let (word, rest) = prompt.split_once(' ').unwrap_or((prompt, ""));
            if let Some(n) = word.strip_prefix("max_tokens=") {
                let n = n
                    .parse()
                    .map_err(|_| format!("max_tokens needs a number, got `{n}`"))?;
                chat = chat.max_tokens(n);
            } else if let Some(k) = word.strip_prefix("drop_after=") {
                drop_after = Some(
                    k.parse::<usize>()
                        .map_err(|_| format!("drop_after needs a number, got `{k}`"))?,
                );
            } else if word == "tool" {
                chat = chat.tool(ToolDefinition::new(
                    "lookup",
                    "Looks a word up in the dictionary.",
                    r#"{"type":"object","properties":{"query":{"type":"string"}},"required":["query"]}"#,
                ));
            } else {
                break;
            }
            prompt = rest;
        }
        chat.push_user(prompt);

        let stream = chat.stream().map_err(|e| e.message())?;
        let (mut text, mut pieces, mut finish, mut usage) = (String::new(), 0, None, None);
        let mut calls: Vec<(String, String, String)> = Vec::new();
        for event in stream {
            let event = event.map_err(|e| {
                format!(
                    "stream stopped after {pieces} pieces ({} bytes): {}",
                    text.len(),
                    e.message()
                )
            })?;
            match event {
                StreamEvent::TextDelta(delta) => {
                    pieces += 1;
                    text.push_str(&delta);
                }
                StreamEvent::ToolCallDelta(delta) => {
                    pieces += 1;
                    let at = delta.index as usize;
                    if calls.len() <= at {
                        calls.resize(at + 1, Default::default());
                    }
                    let call = &mut calls[at];
                    if let Some(id) = delta.id {
                        call.0 = id;
                    }
                    if let Some(name) = delta.name {
                        call.1.push_str(&name);
                    }
                    call.2.push_str(&delta.arguments);
                }
                StreamEvent::Finish(reason) => finish = Some(reason),
                StreamEvent::Usage(u) => usage = Some(u),
            }
            if drop_after.is_some_and(|k| pieces >= k) {
                return Ok(format!("{text}\n[dropped after {pieces} pieces]"));
            }
        }
        for (id, name, arguments) in &calls {
            text.push_str(&format!("\ncall {id} {name} {arguments}"));
        }
        let finish = match finish {
            Some(FinishReason::Stop) => "stop",
            Some(FinishReason::Length) => "length",
            Some(FinishReason::ToolCalls) => "tool-calls",
            Some(FinishReason::ContentFilter) => "content-filter",
            Some(FinishReason::Other) => "other",
            None => "none",
        };
        let (input, output) = usage.map_or((0, 0), |u| (u.input_tokens, u.output_tokens));
        Ok(format!(
            "{text}\n[stream: {pieces} pieces, finish {finish}, input {input}, output {output}]"
        ))
    }
}

claw_sdk::export!(StreamChat);
