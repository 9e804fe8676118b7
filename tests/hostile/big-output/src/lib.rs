//! Input `OUTPUT PRINTED`: prints PRINTED bytes to stdout and to stderr,
//! then returns OUTPUT bytes.

use claw_sdk::Claw;

struct BigOutput;

impl Claw for BigOutput {
    fn run(input: String, _conversation_id: String) -> Result<String, String> {
        let mut numbers = input.split_whitespace().map(str::parse::<usize>);
        let (Some(Ok(output)), Some(Ok(printed))) = (numbers.next(), numbers.next()) else {
            return Err("input must be `OUTPUT PRINTED` (two byte counts)".into());
        };
        let line = "y".repeat(1023);
        for _ in 0..printed / 1024 {
            println!("{line}");
            eprintln!("{line}");
        }
        Ok("x".repeat(output))
    }
}

claw_sdk::export!(BigOutput);
