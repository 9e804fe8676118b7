//! Input `BYTES`: asks the model a question BYTES long.

use claw_sdk::Claw;

struct BigPrompt;

impl Claw for BigPrompt {
    fn run(input: String, _conversation_id: String) -> Result<String, String> {
        let bytes: usize = input
            .trim()
            .parse()
            .map_err(|_| "input must be a byte count".to_string())?;
        claw_sdk::ask("why? ".repeat(bytes / 5)).map_err(|e| e.message())
    }
}

claw_sdk::export!(BigPrompt);
