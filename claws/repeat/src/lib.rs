//! `repeat`: asks the model the same question again and again, for load and
//! revocation tests. The input is `COUNT PROMPT`; the claw makes up to COUNT
//! calls and stops at the first error, saying how far it got.

use claw_sdk::Claw;

struct Repeat;

impl Claw for Repeat {
    fn run(input: String, _conversation_id: String) -> Result<String, String> {
        let (count, prompt) = input
            .trim()
            .split_once(' ')
            .unwrap_or((input.trim(), "ping"));
        let count: u32 = count
            .parse()
            .map_err(|_| format!("input must be `COUNT PROMPT`, got `{count}` as COUNT"))?;
        for done in 0..count {
            if let Err(e) = claw_sdk::ask(prompt) {
                return Err(format!("stopped after {done} calls: {}", e.message()));
            }
        }
        Ok(format!("{count} calls"))
    }
}

claw_sdk::export!(Repeat);
