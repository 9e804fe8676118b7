//! `claw-sdk`: write a clawrun claw in a few lines of Rust.
//!
//! A claw is an agent compiled to a WebAssembly component for the
//! `wasm32-wasip2` target. The clawrun host runs it in a cage whose only path
//! to a language model is [`call`]: the host picks the provider and model the
//! organisation assigned to the claw, holds the API key, and meters every
//! token. Your code never sees a key, a provider name or a URL.
//!
//! ```no_run
//! use claw_sdk::{Chat, Claw};
//!
//! struct Hello;
//!
//! impl Claw for Hello {
//!     fn run(input: String, _conversation_id: String) -> Result<String, String> {
//!         let reply = Chat::new()
//!             .system("You greet people warmly.")
//!             .user(input)
//!             .send()
//!             .map_err(|e| e.message())?;
//!         Ok(reply.message.content)
//!     }
//! }
//!
//! claw_sdk::export!(Hello);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`, then deploy
//! the `.wasm` file with `clawrun claws deploy`.
//!
//! [`Chat::stream`] streams the reply instead: a [`Stream`] yields text
//! and tool-call deltas as the model writes them.
//!
//! The module [`tool`] attributes the model calls that a tool's code makes to
//! that tool invocation, so usage can be read per tool call.

pub mod tool;

mod chat;
mod stream;

#[doc(hidden)]
pub mod bindings {
    //! Bindings generated from the clawrun WIT world (`wit/claw.wit`).
    #![allow(
        missing_docs,
        reason = "generated code; the WIT file documents every item"
    )]
    #![allow(unsafe_code, reason = "generated canonical ABI glue")]

    wit_bindgen::generate!({
        path: "../wit",
        world: "claw",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "claw_sdk::bindings",
    });
}

pub use bindings::Guest as Claw;
pub use bindings::clawrun::claw::types::{
    ChatRequest, Completion, FinishReason, LlmError, Message, ProviderError, Role, StreamEvent,
    ToolCall, ToolCallDelta, ToolDefinition, Usage,
};
pub use chat::{Chat, ask, call};
pub use stream::{Stream, stream};

/// Exports a type implementing [`Claw`] as the claw's entry point.
///
/// Use it once per claw crate: `claw_sdk::export!(MyClaw);`.
pub use bindings::export;
