//! Opens a tool invocation, calls the model inside it, then panics halfway
//! through the tool's work.

use claw_sdk::{Claw, tool};

struct ToolTrap;

impl Claw for ToolTrap {
    fn run(input: String, _conversation_id: String) -> Result<String, String> {
        let _invocation = tool::open("explode", Some("call_explode_1"));
        let reply = claw_sdk::ask(input).map_err(|e| e.message())?;
        panic!(
            "the tool blew up halfway, after a reply of {} bytes",
            reply.len()
        );
    }
}

claw_sdk::export!(ToolTrap);
