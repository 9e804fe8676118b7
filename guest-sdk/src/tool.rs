//! Attributing model calls to tool invocations.
//!
//! When the model asks for a tool call, run the tool's code inside
//! [`invoke`]: every [`call`](crate::call) made meanwhile is recorded against
//! that tool invocation, so an admin can read token usage per tool call.
//!
//! ```no_run
//! use claw_sdk::{ToolCall, tool};
//!
//! fn run_tool(call: &ToolCall) -> String {
//!     tool::invoke(&call.name, Some(&call.id), || {
//!         // Model calls in here are attributed to this invocation.
//!         claw_sdk::ask(format!("Explain briefly: {}", call.arguments))
//!             .unwrap_or_else(|e| format!("error: {}", e.message()))
//!     })
//! }
//! ```

use crate::bindings::clawrun::claw::llm::ToolInvocation;

/// Runs `body` as an invocation of the tool `name`, answering the model's
/// tool call `call_id` when there is one, and returns what `body` returns.
pub fn invoke<R>(name: &str, call_id: Option<&str>, body: impl FnOnce() -> R) -> R {
    let invocation = ToolInvocation::new(name, call_id);
    let result = body();
    drop(invocation);
    result
}

/// Opens a tool invocation that stays open until the returned guard is
/// dropped, for code that does not fit in a closure.
pub fn open(name: &str, call_id: Option<&str>) -> ToolInvocation {
    ToolInvocation::new(name, call_id)
}
