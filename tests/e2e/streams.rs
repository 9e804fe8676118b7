//! Streamed calls through the `stream-chat` claw, in every wire format,
//! and the ways a stream can end early.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{DevProvider, Env};

const FORMATS: [(&str, &str); 4] = [
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("gemini", "gemini-2.5-flash"),
    ("openai-compatible", "llama3.1:8b"),
];

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// The normalised counts of a provider's reported usage object, by the
/// rules of its format: (input, output, cache read, cache write, reasoning).
fn normalised(provider: &str, u: &Value) -> (i64, i64, i64, i64, i64) {
    match provider {
        "anthropic" => (
            n(&u["input_tokens"])
                + n(&u["cache_creation_input_tokens"])
                + n(&u["cache_read_input_tokens"]),
            n(&u["output_tokens"]),
            n(&u["cache_read_input_tokens"]),
            n(&u["cache_creation_input_tokens"]),
            0,
        ),
        "gemini" => (
            n(&u["promptTokenCount"]),
            n(&u["candidatesTokenCount"]) + n(&u["thoughtsTokenCount"]),
            n(&u["cachedContentTokenCount"]),
            0,
            n(&u["thoughtsTokenCount"]),
        ),
        _ => (
            n(&u["prompt_tokens"]),
            n(&u["completion_tokens"]),
            n(&u["prompt_tokens_details"]["cached_tokens"]),
            0,
            n(&u["completion_tokens_details"]["reasoning_tokens"]),
        ),
    }
}

fn counts(record: &Value) -> (i64, i64, i64, i64, i64) {
    (
        n(&record["input_tokens"]),
        n(&record["output_tokens"]),
        n(&record["cache_read_tokens"]),
        n(&record["cache_write_tokens"]),
        n(&record["reasoning_tokens"]),
    )
}

/// Each format streams the reply piece by piece; the claw sees the same
/// text a whole reply would carry, then the finish reason and the usage
/// recorded, which equals what the provider reported in its stream
/// (cached and reasoning tokens included: the prompt is long enough to be
/// cached and the model name makes dev-provider reason).
#[test]
fn every_format_streams_with_the_usage_the_provider_reported() {
    let dev = DevProvider::start();
    let env = Env::new();
    let long = "word ".repeat(1200);
    for (provider, model) in FORMATS {
        let model = format!("{model}-reasoning");
        env.wire(&dev, provider, "stream-chat", &model);
        let report = env.run_claw("stream-chat", provider, &format!("Hello stream {long}"));
        let requests = dev.requests();
        let req = requests.last().expect("a request");
        assert_eq!(req["stream"], true, "{provider}");
        assert_eq!(req["stream_complete"], true, "{provider}");
        if provider.starts_with("openai") {
            assert_eq!(req["body"]["stream_options"]["include_usage"], true);
        }
        if provider == "gemini" {
            assert!(
                req["path"]
                    .as_str()
                    .expect("path")
                    .ends_with(":streamGenerateContent?alt=sse")
            );
        }
        let output = report["output"].as_str().expect("output");
        assert!(
            output.starts_with(&format!(
                "[{model}] Read 1202 words, beginning: \"Hello stream word"
            )),
            "{provider}: {output}"
        );
        let usage = report["usage"].as_array().expect("records");
        assert_eq!(usage.len(), 1, "{provider}: one record per streamed call");
        let record = &usage[0];
        assert_eq!(record["source"], "reported", "{provider}");
        assert_eq!(record["outcome"], "ok");
        let reported = normalised(provider, &req["usage"]);
        assert_eq!(counts(record), reported, "{provider}");
        assert!(reported.2 > 0, "{provider}: cache counted");
        if provider != "anthropic" {
            assert!(reported.4 > 0, "{provider}: reasoning counted");
        }
        // The claw's own usage event is the recorded usage.
        assert!(
            output.ends_with(&format!(
                "finish stop, input {}, output {}]",
                reported.0, reported.1
            )),
            "{provider}: {output}"
        );
        let pieces: usize = output
            .rsplit_once("[stream: ")
            .and_then(|(_, s)| s.split(' ').next())
            .and_then(|p| p.parse().ok())
            .expect("piece count");
        assert!(pieces > 5, "{provider}: streamed in pieces, got {pieces}");
    }
}

/// Tool calls streamed in pieces reach the claw whole, with the id and
/// name the provider gave, in every format.
#[test]
fn streamed_tool_calls_round_trip() {
    let dev = DevProvider::start();
    let env = Env::new();
    for (provider, model) in FORMATS {
        env.wire(&dev, provider, "stream-chat", model);
        let report = env.run_claw("stream-chat", provider, "tool serendipity");
        let output = report["output"].as_str().expect("output");
        let call = output
            .lines()
            .find(|l| l.starts_with("call "))
            .unwrap_or_else(|| panic!("{provider}: no tool call in {output}"));
        let parts: Vec<&str> = call.splitn(4, ' ').collect();
        assert_eq!(parts[2], "lookup", "{provider}");
        assert!(!parts[1].is_empty(), "{provider}: the call has an id");
        let args: Value = serde_json::from_str(parts[3]).expect("arguments are JSON");
        assert_eq!(args, json!({"query": "serendipity"}), "{provider}");
        assert!(output.contains("finish tool-calls"), "{provider}: {output}");
    }
}

/// A stream the provider cuts halfway fails the claw with a provider
/// error, and the call is charged what was generated: one record, marked
/// estimated, with output tokens for the text that arrived.
#[test]
fn a_stream_cut_halfway_records_estimated_usage() {
    let dev = DevProvider::start();
    let env = Env::new();
    for (provider, model) in FORMATS {
        let before = env.usage_records().len();
        env.wire(&dev, provider, "stream-chat", model);
        dev.fault(json!({"reply_words": 60, "cut_after": 20}));
        let err = env.fails(&["run", "stream-chat", "--input", "tell me"], "");
        assert!(err.contains("stream stopped after"), "{provider}: {err}");
        let records = env.usage_records();
        assert_eq!(records.len(), before + 1, "{provider}: exactly one record");
        let record = records.last().expect("record");
        assert_eq!(record["source"], "estimated", "{provider}");
        assert_ne!(record["outcome"], "ok", "{provider}");
        assert!(n(&record["input_tokens"]) > 0, "{provider}");
        assert!(
            (5..120).contains(&n(&record["output_tokens"])),
            "{provider}: output of the words that came: {record}"
        );
    }
}

/// A complete stream that carries no usage (OpenAI without
/// include_usage, a compatible server that never sends it) is estimated
/// and says so.
#[test]
fn a_stream_without_usage_is_estimated_and_marked() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai-compatible", "stream-chat", "qwen2.5");
    dev.fault(json!({"no_usage": true}));
    let report = env.run_claw("stream-chat", "c", "hi there");
    let record = &report["usage"][0];
    assert_eq!(record["source"], "estimated");
    assert_eq!(record["outcome"], "ok");
    assert!(n(&record["input_tokens"]) > 0 && n(&record["output_tokens"]) > 0);
}

/// A claw that stops reading drops its stream: the call is recorded with
/// the output generated so far, estimated.
#[test]
fn a_stream_dropped_by_the_claw_is_recorded() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "anthropic", "stream-chat", "claude-haiku-4-5");
    dev.fault(json!({"reply_words": 200, "chunk_delay_ms": 5}));
    let report = env.run_claw("stream-chat", "c", "drop_after=3 go on");
    assert!(
        report["output"]
            .as_str()
            .expect("output")
            .ends_with("[dropped after 3 pieces]")
    );
    let record = &report["usage"][0];
    assert_eq!(record["outcome"], "dropped");
    assert_eq!(record["source"], "estimated");
    assert!(n(&record["output_tokens"]) >= 3);
    // Anthropic's message_start gave the exact input: it is kept.
    let requests = dev.requests();
    assert_eq!(requests[0]["stream_complete"], false);
}

/// A provider that ignores the token cap is stopped once the reply passes
/// it: the claw gets budget-exceeded, and what was generated is recorded.
#[test]
fn a_provider_ignoring_max_tokens_is_stopped_with_budget_exceeded() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "stream-chat", "gpt-4o-mini");
    dev.fault(json!({"reply_words": 3000, "chunk_delay_ms": 2}));
    let err = env.fails(
        &["run", "stream-chat", "--input", "max_tokens=50 write a lot"],
        "",
    );
    assert!(err.contains("budget exceeded"), "{err}");
    assert!(err.contains("max-tokens of 50"), "{err}");
    let records = env.usage_records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["outcome"], "budget_exceeded");
    assert_eq!(records[0]["source"], "estimated");
    let output = n(&records[0]["output_tokens"]);
    assert!(
        (50..1000).contains(&output),
        "stopped soon after the cap: {output}"
    );
    assert_eq!(dev.requests()[0]["stream_complete"], false);
}

/// `keys revoke` during a stream: when it returns, the stream's connection
/// is closed and its usage record written (revocation waits for the call's
/// fence, which the stream releases only after both); the provider sends
/// nothing more, and the claw ends with key-revoked.
#[test]
fn revoking_a_key_mid_stream_stops_the_stream() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "stream-chat", "gpt-4o-mini");
    // 400 words at 20 ms each: eight seconds if nothing stopped it.
    dev.fault(json!({"reply_words": 400, "chunk_delay_ms": 20}));
    let run = env
        .command(&["run", "stream-chat", "--input", "a long story"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let waited = Instant::now();
    loop {
        let sent = dev.requests().first().map_or(0, |r| n(&r["chunks_sent"]));
        if sent >= 5 {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "the stream never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    env.ok(&["keys", "revoke", "openai-key"]);
    let at_revoke = n(&dev.requests()[0]["chunks_sent"]);
    // Ordering, not wall time: the record exists as soon as revoke returns.
    let records = env.usage_records();
    assert_eq!(records.len(), 1, "recorded before revoke returned");
    assert_eq!(records[0]["outcome"], "cancelled_revoked");
    assert_eq!(records[0]["source"], "estimated");
    assert!(n(&records[0]["output_tokens"]) > 0);

    let out = run.wait_with_output().expect("ends");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("revoked"), "{stderr}");
    std::thread::sleep(Duration::from_millis(200));
    let req = &dev.requests()[0];
    assert_eq!(req["stream_complete"], false);
    // The connection was closed before revoke returned; at most the chunk
    // already in the socket's way was counted after.
    assert!(n(&req["chunks_sent"]) <= at_revoke + 2, "{req}");
    assert!(n(&req["chunks_sent"]) < 100);
    assert_eq!(env.usage_records().len(), 1);
}

/// A provider that echoes the key, in every place a stream can carry it:
/// split across text deltas, across a tool call's name, id and arguments,
/// in the model name and the usage object, and in an error event. The key
/// reaches neither the claw, nor the usage records, nor the logs.
#[test]
fn a_key_echoed_anywhere_in_a_stream_is_scrubbed_everywhere() {
    use crate::support::OPENAI_KEY as KEY;
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "stream-chat", "gpt-4o-mini");
    let chunk = |v: Value| format!("data: {v}\n\n");
    let (a, b) = KEY.split_at(KEY.len() / 2);
    let mut body = chunk(json!({"model": KEY, "choices": [{"index": 0,
        "delta": {"role": "assistant", "content": format!("t1 {a}")}}]}));
    body += &chunk(json!({"model": KEY, "choices": [{"index": 0,
        "delta": {"content": format!("{b} end")}}]}));
    body += &chunk(
        json!({"model": KEY, "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": format!("call_{a}"), "type": "function",
         "function": {"name": format!("look{a}"), "arguments": format!("{{\"q\":\"{a}")}}]}}]}),
    );
    body += &chunk(
        json!({"model": KEY, "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": b, "function": {"name": b, "arguments": format!("{b}\"}}")}}]},
        "finish_reason": "tool_calls"}]}),
    );
    body += &chunk(json!({"model": KEY, "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "note": KEY}}));
    body += "data: [DONE]\n\n";
    dev.fault(json!({"status": 200, "body": body}));
    let report = env.run_claw("stream-chat", "echo", "tool hi");
    let output = report["output"].as_str().expect("output");
    assert!(output.contains("[redacted]"), "{output}");

    // An error event quoting the key, after some text.
    let error = format!(
        "{}event: error\ndata: {}\n\n",
        chunk(json!({"choices": [{"index": 0, "delta": {"content": "partial "}}]})),
        json!({"error": {"message": format!("invalid key {KEY}")}})
    );
    dev.fault(json!({"status": 200, "body": error}));
    let failed = env.fails(&["run", "stream-chat", "--input", "again"], "");
    assert!(failed.contains("[redacted]"), "{failed}");

    let records = env.usage_records();
    assert_eq!(records.len(), 2);
    let models: Vec<String> = env
        .db()
        .prepare("SELECT COALESCE(model_returned, '') FROM usage_records")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    let everything = format!(
        "{output}\n{failed}\n{records:?}\n{models:?}\n{}",
        String::from_utf8_lossy(&env.transcript.borrow())
    );
    for piece in [KEY, a, b] {
        assert!(
            !everything.contains(piece),
            "`{piece}` reached the claw, a record or a log"
        );
    }
}

/// An error object inside a 200 answer (Gemini answers so) quoting the key
/// reaches the claw redacted, like any other provider error.
#[test]
fn an_error_inside_a_200_answer_is_redacted() {
    use crate::support::GEMINI_KEY;
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "gemini", "hello", "gemini-2.5-flash");
    let body =
        json!({"error": {"code": 400, "message": format!("API key not valid: {GEMINI_KEY}")}});
    dev.fault(json!({"status": 200, "body": body.to_string()}));
    let failed = env.fails(&["run", "hello", "--input", "hi"], "");
    assert!(failed.contains("[redacted]"), "{failed}");
    assert!(!failed.contains(GEMINI_KEY), "{failed}");
}
