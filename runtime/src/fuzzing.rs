//! Fuzz targets: the host's handling of bytes a claw author or a guest
//! controls, as functions of raw bytes that must never panic.
//!
//! - [`deploy`]: validation of an uploaded component (`claws deploy`).
//! - [`llm_request`]: checking and converting a guest's `llm-call`
//!   request ([`validate_request`]), with properties checked on the result.
//!
//! `fuzz/` drives them with libFuzzer (`scripts/fuzz.sh`, needs a nightly
//! toolchain and cargo-fuzz); the tests below drive them on stable, in
//! `cargo test`, for a bounded number of generated and mutated inputs.

use std::sync::OnceLock;

use crate::cage::bindings::clawrun::claw::types as wit;
use crate::cage::{Cage, validate_request};

/// Validates `data` as a claw component; any answer but a panic is fine.
pub fn deploy(data: &[u8]) {
    static CAGE: OnceLock<Cage> = OnceLock::new();
    let cage = CAGE.get_or_init(|| Cage::new().expect("the engine starts"));
    let _ = cage.validate(data);
}

/// Builds a guest request and a value size limit from `data`, validates
/// the request, and checks what every answer must satisfy: an accepted
/// request keeps every text, and the whole, within the limit and has
/// well-formed tools; a refusal is a short sentence, however large the
/// guest's values.
pub fn llm_request(data: &[u8]) {
    let mut input = Input(data);
    let max = 16 + usize::from(input.byte()) * 8;
    let request = input.request();
    let texts: usize = request
        .messages
        .iter()
        .map(|m| {
            m.content.len()
                + m.tool_call_id.as_ref().map_or(0, String::len)
                + m.tool_calls
                    .iter()
                    .map(|c| c.id.len() + c.name.len() + c.arguments.len())
                    .sum::<usize>()
        })
        .sum::<usize>()
        + request
            .tools
            .iter()
            .map(|t| t.name.len() + t.description.len() + t.parameters.len())
            .sum::<usize>();
    match validate_request(request, max) {
        Ok(valid) => {
            assert!(texts <= max, "accepted {texts} bytes over a limit of {max}");
            assert!(!valid.messages.is_empty());
            for t in &valid.tools {
                assert!(t.parameters.is_object());
                assert!(!t.name.is_empty() && t.name.len() <= 64);
            }
        }
        Err(why) => assert!(
            !why.is_empty() && why.len() <= 1024,
            "a refusal of {} bytes",
            why.len()
        ),
    }
}

/// Reads structured values off fuzz bytes; past the end, zeros.
struct Input<'a>(&'a [u8]);

/// Texts that lead validation down its deeper paths.
const TEXTS: &[&str] = &[
    "",
    "{}",
    "{\"type\":\"object\"}",
    "[]",
    "null",
    "{\"a\":",
    "calculator",
    "ask_expert",
    "bad name!",
    "x\u{0}y",
    "\u{1b}[2J",
    "é",
];

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }

    fn text(&mut self) -> String {
        let pick = self.byte();
        if pick < 128 {
            return TEXTS[usize::from(pick) % TEXTS.len()].to_owned();
        }
        // A run of the input's own bytes, sometimes repeated far past the
        // size limits.
        let len = usize::from(self.byte() % 32).min(self.0.len());
        let (raw, rest) = self.0.split_at(len);
        self.0 = rest;
        let text = String::from_utf8_lossy(raw);
        let times = if pick > 240 {
            1 + usize::from(self.byte()) * 64
        } else {
            1
        };
        text.repeat(times)
    }

    fn count(&mut self) -> usize {
        usize::from(self.byte() % 5)
    }

    fn request(&mut self) -> wit::ChatRequest {
        let messages = (0..self.count())
            .map(|_| wit::Message {
                role: match self.byte() % 4 {
                    0 => wit::Role::System,
                    1 => wit::Role::User,
                    2 => wit::Role::Assistant,
                    _ => wit::Role::Tool,
                },
                content: self.text(),
                tool_calls: (0..self.count())
                    .map(|_| wit::ToolCall {
                        id: self.text(),
                        name: self.text(),
                        arguments: self.text(),
                    })
                    .collect(),
                tool_call_id: self.byte().is_multiple_of(2).then(|| self.text()),
            })
            .collect();
        let tools = (0..self.count())
            .map(|_| wit::ToolDefinition {
                name: self.text(),
                description: self.text(),
                parameters: self.text(),
            })
            .collect();
        wit::ChatRequest {
            messages,
            tools,
            max_tokens: self
                .byte()
                .is_multiple_of(2)
                .then(|| u32::from(self.byte()) * 100),
            temperature: self
                .byte()
                .is_multiple_of(2)
                .then(|| f32::from(self.byte()) / 100.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};

    use super::*;

    /// A minimal component of the claw world, to mutate.
    fn seed_component() -> Vec<u8> {
        wat::parse_str(
            r#"(component
              (core module $Main
                (memory (export "mem") 1)
                (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
                (func (export "run") (param i32 i32 i32 i32) (result i32) (i32.const 0)))
              (core instance $main (instantiate $Main))
              (type $res (result string (error string)))
              (func (export "run") (param "input" string) (param "conversation-id" string)
                (result $res)
                (canon lift (core func $main "run") (memory (core memory $main "mem"))
                  (realloc (core func $main "realloc")))))"#,
        )
        .expect("wat")
    }

    #[test]
    fn deploy_validation_survives_mutated_components() {
        let seed = seed_component();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..1500 {
            let mut bytes = seed.clone();
            match rng.random_range(0..4) {
                0 => bytes.truncate(rng.random_range(0..bytes.len())),
                1 => {
                    for _ in 0..rng.random_range(1..8) {
                        let at = rng.random_range(0..bytes.len());
                        bytes[at] ^= 1 << rng.random_range(0..8);
                    }
                }
                2 => {
                    let at = rng.random_range(0..bytes.len());
                    let mut noise = vec![0; rng.random_range(1..64)];
                    rng.fill_bytes(&mut noise);
                    bytes.splice(at..at, noise);
                }
                _ => {
                    bytes = vec![0; rng.random_range(0..256)];
                    rng.fill_bytes(&mut bytes);
                    if rng.random_bool(0.5) {
                        bytes.splice(0..0, *b"\0asm\x0d\0\x01\0");
                    }
                }
            }
            deploy(&bytes);
        }
        deploy(&seed);
    }

    #[test]
    fn llm_request_handling_survives_generated_requests() {
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..20_000 {
            let mut data = vec![0; rng.random_range(0..512)];
            rng.fill_bytes(&mut data);
            llm_request(&data);
        }
    }

    #[test]
    fn the_generator_reaches_accepted_and_oversized_requests() {
        // A user message "{}", under a limit of 16 bytes.
        let mut input = Input(&[1, 1, 1, 1, 0, 1]);
        let max = 16 + usize::from(input.byte()) * 8;
        assert!(validate_request(input.request(), max).is_ok());
        // One message whose text repeats past the limit.
        let mut input = Input(&[0, 1, 1, 250, 4, b'a', b'b', b'c', b'd', 200]);
        let max = 16 + usize::from(input.byte()) * 8;
        let err = validate_request(input.request(), max).expect_err("too large");
        assert!(err.starts_with("message 1 is 51204 bytes"), "{err}");
    }
}
