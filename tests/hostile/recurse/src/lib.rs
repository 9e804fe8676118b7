//! Recurses without end: stopped when it overflows the Wasm stack.

use claw_sdk::Claw;

struct Recurse;

/// Calls itself through a pointer the optimiser cannot see through, so the
/// recursion can be neither inlined nor turned into a loop.
fn deeper(depth: u64) -> u64 {
    let next: fn(u64) -> u64 = std::hint::black_box(deeper);
    next(depth + 1).wrapping_add(depth)
}

impl Claw for Recurse {
    fn run(_input: String, _conversation_id: String) -> Result<String, String> {
        Ok(deeper(0).to_string())
    }
}

claw_sdk::export!(Recurse);
