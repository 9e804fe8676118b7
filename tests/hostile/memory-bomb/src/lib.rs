//! Allocates a mebibyte at a time, touching each, until memory runs out.

use claw_sdk::Claw;

struct MemoryBomb;

impl Claw for MemoryBomb {
    fn run(_input: String, _conversation_id: String) -> Result<String, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![0xAB; 1 << 20]));
            if hoard.len() == usize::MAX {
                return Ok(hoard.len().to_string());
            }
        }
    }
}

claw_sdk::export!(MemoryBomb);
