//! Spins forever without calling the host: stopped by its fuel or its
//! deadline.

use claw_sdk::Claw;

struct Spin;

impl Claw for Spin {
    fn run(_input: String, _conversation_id: String) -> Result<String, String> {
        let mut turns: u64 = 0;
        loop {
            turns = std::hint::black_box(turns.wrapping_add(1));
        }
    }
}

claw_sdk::export!(Spin);
