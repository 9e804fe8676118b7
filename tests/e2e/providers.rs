//! Gemini and openai-compatible keys end to end.

use serde_json::json;

use crate::support::{COMPATIBLE_KEY, DevProvider, Env, GEMINI_KEY};

/// Gemini: the key travels in `x-goog-api-key`, the model in the path,
/// and the record counts thoughts as output beside the candidates.
#[test]
fn gemini_calls_send_the_key_in_its_header_and_count_thoughts() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "gemini", "hello", "gemini-2.5-pro-reasoning");
    let report = env.run_claw("hello", "c", "Good morning");
    let req = &dev.requests()[0];
    assert_eq!(
        req["path"],
        "/v1beta/models/gemini-2.5-pro-reasoning:generateContent"
    );
    assert_eq!(req["headers"]["x-goog-api-key"], GEMINI_KEY);
    let u = &req["usage"];
    let record = &report["usage"][0];
    let thoughts = u["thoughtsTokenCount"].as_i64().expect("thoughts");
    assert!(thoughts > 0);
    assert_eq!(record["input_tokens"], u["promptTokenCount"]);
    assert_eq!(
        record["output_tokens"].as_i64(),
        Some(u["candidatesTokenCount"].as_i64().expect("candidates") + thoughts)
    );
    assert_eq!(record["reasoning_tokens"].as_i64(), Some(thoughts));
    assert_eq!(record["provider"], "gemini");
    assert_eq!(record["source"], "reported");
}

/// No request URL, log line (at trace level), error or output carries a
/// Gemini key, through whole and streamed calls, a retried one, and a
/// provider error that quotes the key.
#[test]
fn no_gemini_url_log_line_or_error_contains_the_key() {
    let dev = DevProvider::start();
    let env = Env::with_log_level("trace");
    env.wire(&dev, "gemini", "hello", "gemini-2.5-flash");
    env.wire(&dev, "gemini", "stream-chat", "gemini-2.5-flash");
    env.run_claw("hello", "c", "hi");
    env.run_claw("stream-chat", "c", "hi");
    dev.fault(json!({"status": 503}));
    env.run_claw("stream-chat", "c", "hi");
    let quoted = json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
        "message": format!("API key not valid: {GEMINI_KEY}")}});
    dev.fault(json!({"status": 400, "body": quoted.to_string(), "times": 2}));
    let err = env.fails(&["run", "hello", "--input", "hi"], "");
    assert!(err.contains("[redacted]"), "{err}");
    let err = env.fails(&["run", "stream-chat", "--input", "hi"], "");
    assert!(err.contains("[redacted]"), "{err}");

    let requests = dev.requests();
    assert_eq!(requests.len(), 6);
    for r in &requests {
        let path = r["path"].as_str().expect("path");
        assert!(
            !path.contains(GEMINI_KEY) && !path.contains("key="),
            "{path}"
        );
        assert_eq!(r["headers"]["x-goog-api-key"], GEMINI_KEY);
    }
    let transcript = env.transcript.borrow();
    let text = String::from_utf8_lossy(&transcript);
    assert!(
        text.contains("TRACE") || text.contains("trace"),
        "logs were captured"
    );
    let eight = &GEMINI_KEY[GEMINI_KEY.len() - 8..];
    assert!(!text.contains(GEMINI_KEY) && !text.contains(eight));
    for record in env.usage_records() {
        assert!(!record.to_string().contains(eight));
    }
}

/// An Azure-style deployment: the path carries the api-version query and
/// the key goes in `api-key` with no scheme; the reply cap is sent as
/// `max_tokens`.
#[test]
fn openai_compatible_keys_use_their_path_and_auth_header() {
    let dev = DevProvider::start();
    let env = Env::new();
    let base = format!("http://{}/openai/deployments/gpt4o", dev.addr);
    env.ok_with_stdin(
        &[
            "keys",
            "add",
            "azure",
            "--provider",
            "openai-compatible",
            "--base-url",
            &base,
            "--path",
            "/chat/completions?api-version=2024-10-21",
            "--auth-header",
            "api-key",
        ],
        &format!("{COMPATIBLE_KEY}\n"),
    );
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["keys", "list", "--json"])).expect("json");
    assert_eq!(listed[0]["auth_header"], "api-key");
    let wasm = crate::support::claw("hello");
    env.ok(&[
        "claws",
        "deploy",
        wasm.to_str().expect("utf-8"),
        "--name",
        "hello",
    ]);
    env.ok(&[
        "claws", "assign", "hello", "--key", "azure", "--model", "gpt-4o",
    ]);
    let report = env.run_claw("hello", "c", "hi");
    let req = &dev.requests()[0];
    assert_eq!(
        req["path"],
        "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(req["headers"]["api-key"], COMPATIBLE_KEY);
    assert!(req["headers"].get("authorization").is_none());
    assert!(req["body"]["max_tokens"].is_u64(), "{req}");
    assert!(req["body"].get("max_completion_tokens").is_none());
    assert_eq!(report["usage"][0]["provider"], "openai-compatible");
    assert_eq!(report["usage"][0]["source"], "reported");

    // Default header: `authorization: Bearer`.
    env.wire(&dev, "openai-compatible", "hello", "llama3.1:8b");
    env.run_claw("hello", "c", "hi");
    let req = &dev.requests()[1];
    assert_eq!(req["path"], "/v1/chat/completions");
    assert_eq!(
        req["headers"]["authorization"],
        format!("Bearer {COMPATIBLE_KEY}")
    );
}

/// The compatible flags are refused where they do not apply, and every
/// refusal says what to do.
#[test]
fn keys_add_checks_compatible_flags() {
    let env = Env::new();
    let err = env.fails(
        &[
            "keys",
            "add",
            "k",
            "--provider",
            "openai",
            "--auth-header",
            "api-key",
        ],
        "sk-whatever-123456\n",
    );
    assert!(err.contains("openai-compatible"), "{err}");
    let err = env.fails(
        &["keys", "add", "k", "--provider", "openai-compatible"],
        "abc-123456789\n",
    );
    assert!(err.contains("--base-url"), "{err}");
    let err = env.fails(
        &[
            "keys",
            "add",
            "k",
            "--provider",
            "openai-compatible",
            "--base-url",
            "http://127.0.0.1:1/v1",
            "--auth-header",
            "Host",
        ],
        "abc-123456789\n",
    );
    assert!(err.contains("--auth-header"), "{err}");
    let err = env.fails(
        &[
            "keys",
            "add",
            "k",
            "--provider",
            "openai-compatible",
            "--base-url",
            "http://127.0.0.1:1/v1",
            "--path",
            "chat",
        ],
        "abc-123456789\n",
    );
    assert!(err.contains("--path"), "{err}");
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["keys", "list", "--json"])).expect("json");
    assert_eq!(listed, json!([]), "nothing was stored");
}
