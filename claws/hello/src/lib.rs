//! `hello`: the smallest claw. One model call, answer returned as is.

use claw_sdk::{Chat, Claw};

struct Hello;

impl Claw for Hello {
    fn run(input: String, _conversation_id: String) -> Result<String, String> {
        let reply = Chat::new()
            .system("You are a friendly assistant. Answer in one short paragraph.")
            .user(input)
            .max_tokens(256)
            .send()
            .map_err(|e| e.message())?;
        Ok(reply.message.content)
    }
}

claw_sdk::export!(Hello);
