//! `tool-agent`: offers the model three tools, runs the calls it asks for as
//! attributed tool invocations, sends the results back, and returns the
//! model's final answer.
//!
//! - `calculator` evaluates an arithmetic expression in the claw itself;
//! - `word_count` counts the words of a text in the claw itself;
//! - `ask_expert` asks the model a focused question: its own model call is
//!   attributed to that tool invocation in the usage records.

mod calc;

use claw_sdk::{Chat, Claw, FinishReason, Message, ToolCall, ToolDefinition, tool};
use serde_json::Value;

/// Model turns before the agent gives up on reaching a final answer.
const MAX_TURNS: usize = 8;

struct ToolAgent;

impl Claw for ToolAgent {
    fn run(input: String, _conversation_id: String) -> Result<String, String> {
        let mut chat = Chat::new()
            .system("You solve the user's task. Use the tools when they help.")
            .tool(ToolDefinition::new(
                "calculator",
                "Evaluates an arithmetic expression with + - * / and parentheses.",
                r#"{"type":"object","properties":{"expression":{"type":"string"}},"required":["expression"]}"#,
            ))
            .tool(ToolDefinition::new(
                "word_count",
                "Counts the words in a text.",
                r#"{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}"#,
            ))
            .tool(ToolDefinition::new(
                "ask_expert",
                "Asks an expert a focused question and returns the answer.",
                r#"{"type":"object","properties":{"question":{"type":"string"}},"required":["question"]}"#,
            ))
            .user(input)
            .max_tokens(512);

        for _ in 0..MAX_TURNS {
            let reply = chat.send().map_err(|e| e.message())?;
            let calls = reply.message.tool_calls.clone();
            if reply.finish_reason != FinishReason::ToolCalls || calls.is_empty() {
                return Ok(reply.message.content);
            }
            chat.push(reply.message);
            for call in &calls {
                let output = tool::invoke(&call.name, Some(&call.id), || run_tool(call));
                chat.push(Message::tool_result(call, output));
            }
        }
        Err(format!("no final answer after {MAX_TURNS} model turns"))
    }
}

/// Runs one tool call and returns its result as text; mistakes in the
/// model's arguments become error texts the model can read and correct.
fn run_tool(call: &ToolCall) -> String {
    let args: Value = match serde_json::from_str(&call.arguments) {
        Ok(args) => args,
        Err(e) => return format!("error: arguments are not valid JSON: {e}"),
    };
    let text = |field: &str| args.get(field).and_then(Value::as_str).map(str::to_owned);
    match call.name.as_str() {
        "calculator" => match text("expression") {
            Some(expr) => match calc::evaluate_in(&expr) {
                Ok(value) => calc::format(value),
                Err(e) => format!("error: {e}"),
            },
            None => "error: missing string field `expression`".into(),
        },
        "word_count" => match text("text") {
            Some(t) => t.split_whitespace().count().to_string(),
            None => "error: missing string field `text`".into(),
        },
        "ask_expert" => match text("question") {
            Some(q) => claw_sdk::ask(format!("As an expert, answer briefly: {q}"))
                .unwrap_or_else(|e| format!("error: {}", e.message())),
            None => "error: missing string field `question`".into(),
        },
        other => format!("error: no tool named `{other}`"),
    }
}

claw_sdk::export!(ToolAgent);
