//! The plaintext key is nowhere but in the provider's request: not in any
//! file of the data directory, not in TRACE logs, not in CLI output.

use std::path::Path;

use crate::support::{ANTHROPIC_KEY, DevProvider, Env, OPENAI_KEY};

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reads dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn keys_appear_in_no_file_log_or_output() {
    let dev = DevProvider::start();
    let env = Env::with_log_level("trace");
    env.wire(&dev, "openai", "tool-agent", "gpt-4o-mini");
    env.wire(&dev, "anthropic", "hello", "claude-x");
    env.run_claw("tool-agent", "c1", "What is 2+2?");
    env.run_claw("hello", "c2", "hi");
    // A failing provider call at TRACE level too.
    dev.fault(serde_json::json!({"status": 401}));
    env.fails(&["run", "hello", "--input", "x"], "");
    env.ok_with_stdin(
        &["keys", "rotate", "openai-key"],
        "sk-proj-SECONDkey-aaaabbbbccccddddeeeeffff0000",
    );
    env.run_claw("tool-agent", "c3", "What is 3+3?");
    env.ok(&["keys", "revoke", "anthropic-key"]);
    env.fails(&["run", "hello", "--input", "x"], "");
    env.ok(&["keys", "list"]);
    env.ok(&["usage", "--by", "key"]);

    let secrets = [
        OPENAI_KEY,
        ANTHROPIC_KEY,
        "sk-proj-SECONDkey-aaaabbbbccccddddeeeeffff0000",
    ];
    // The provider did receive them: the scan below is not vacuous.
    let seen = format!("{:?}", dev.requests());
    for s in &secrets {
        assert!(seen.contains(s), "the provider never received {s}");
    }

    let data_files = files(env.path());
    assert!(data_files.iter().any(|p| p.ends_with("clawrun.db")));
    for file in data_files {
        let bytes = std::fs::read(&file).expect("reads");
        for s in &secrets {
            assert!(
                !contains(&bytes, s.as_bytes()),
                "{} holds a plaintext key",
                file.display()
            );
        }
    }
    let transcript = env.transcript.borrow();
    assert!(
        contains(&transcript, b"TRACE"),
        "logs were captured at TRACE level"
    );
    for s in &secrets {
        assert!(
            !contains(&transcript, s.as_bytes()),
            "a command's output or log holds a plaintext key"
        );
    }
}
