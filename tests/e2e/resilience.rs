//! Retries, timeouts and caps against dev-provider's faults.

use serde_json::json;

use crate::support::{DevProvider, Env};

/// A 429 with `retry-after` is retried after the wait; the claw gets the
/// answer and the ledger one record, for the attempt that was billed.
#[test]
fn a_429_then_success_is_retried_with_one_usage_record() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    dev.fault(json!({"status": 429, "retry_after": 1}));
    let report = env.run_claw("hello", "c", "Good morning");
    assert!(
        report["output"]
            .as_str()
            .expect("output")
            .starts_with("[gpt-4o-mini]")
    );
    let requests = dev.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["status"], 429);
    assert_eq!(requests[1]["status"], 200);
    // The retry waited the second the provider asked for.
    let waited = requests[1]["received_at_ms"].as_u64().expect("time")
        - requests[0]["received_at_ms"].as_u64().expect("time");
    assert!(waited >= 1000, "retried after {waited} ms");
    let records = env.usage_records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["source"], "reported");
    assert_eq!(records[0]["outcome"], "ok");
}

/// Streams are retried the same way before they start.
#[test]
fn a_refused_stream_is_retried_before_it_starts() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "gemini", "stream-chat", "gemini-2.5-flash");
    dev.fault(json!({"status": 503, "times": 2}));
    let report = env.run_claw("stream-chat", "c", "hello");
    assert!(
        report["output"]
            .as_str()
            .expect("output")
            .contains("finish stop")
    );
    assert_eq!(dev.requests().len(), 3);
    assert_eq!(env.usage_records().len(), 1);
}

/// Anthropic's 529 (overloaded) is retried with backoff.
#[test]
fn an_anthropic_529_is_retried() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "anthropic", "hello", "claude-haiku-4-5");
    dev.fault(json!({"status": 529, "times": 2}));
    env.run_claw("hello", "c", "hi");
    let statuses: Vec<u64> = dev
        .requests()
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect();
    assert_eq!(statuses, [529, 529, 200]);
    let records = env.usage_records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["outcome"], "ok");
}

/// When the attempts run out, the claw gets the provider's refusal typed
/// (rate-limited, with its retry-after), and nothing is charged.
#[test]
fn refusals_past_the_last_attempt_reach_the_claw_typed() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    dev.fault(json!({"status": 429, "retry_after": 0, "times": 2}));
    let out = env.run_with(
        &["run", "hello", "--input", "hi"],
        "",
        &[("CLAWRUN_MAX_ATTEMPTS", "2")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rate limited"), "{stderr}");
    assert_eq!(dev.requests().len(), 2);
    let records = env.usage_records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["outcome"], "rate_limited");
    assert_eq!(records[0]["input_tokens"], 0);
    // A 400 is the request's fault: never retried.
    dev.fault(json!({"status": 400}));
    assert!(
        !env.run(&["run", "hello", "--input", "hi"], "")
            .status
            .success()
    );
    assert_eq!(dev.requests().len(), 3);
}

/// A reply larger than the configured cap is refused, not buffered, and
/// its input charged as an estimate (the provider did the work).
#[test]
fn a_response_over_the_size_cap_is_refused() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let out = env.run_with(
        &["run", "hello", "--input", "hi"],
        "",
        &[("CLAWRUN_MAX_RESPONSE_BYTES", "200")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("larger than 200 bytes"), "{stderr}");
    let records = env.usage_records();
    assert_eq!(records[0]["outcome"], "bad_response");
    assert_eq!(records[0]["source"], "estimated");
    let bad = env.run_with(
        &["run", "hello", "--input", "hi"],
        "",
        &[("CLAWRUN_MAX_ATTEMPTS", "zero")],
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("CLAWRUN_MAX_ATTEMPTS"), "{stderr}");
}

/// A provider that stops sending mid-stream is cut by the read timeout.
#[test]
fn a_silent_stream_is_cut_by_the_read_timeout() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "anthropic", "stream-chat", "claude-haiku-4-5");
    dev.fault(json!({"chunk_delay_ms": 3000}));
    let out = env.run_with(
        &["run", "stream-chat", "--input", "hi"],
        "",
        &[("CLAWRUN_READ_TIMEOUT_SECS", "1")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not answer in time"), "{stderr}");
    let records = env.usage_records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["source"], "estimated");
    assert_eq!(records[0]["outcome"], "timeout");
}
