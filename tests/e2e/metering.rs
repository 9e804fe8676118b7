//! Metering: the ledger survives SIGKILL, and usage queries group, filter
//! and export.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{DevProvider, Env};

#[test]
fn a_usage_record_survives_sigkill_straight_after_the_call() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "repeat", "gpt-4o-mini");
    // The first call answers at once; the second hangs, so the host is
    // killed while the first call's record is its most recent write.
    dev.fault(json!({"status": 200, "delay_ms": 0}));
    dev.fault(json!({"delay_ms": 60_000}));
    let mut host = env
        .command(&[
            "run",
            "repeat",
            "--conversation",
            "crash",
            "--input",
            "5 hello",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    // The second request has arrived: the first call returned to the claw.
    while dev.requests().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the claw never made its second call"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first call's record is queued as the call returns and committed
    // by the ledger's writer a moment later; once another process can see
    // it, nothing the host's death does takes it back.
    while env
        .db()
        .query_row("SELECT COUNT(*) FROM usage_records", [], |r| {
            r.get::<_, i64>(0)
        })
        .expect("counts")
        < 1
    {
        assert!(
            Instant::now() < deadline,
            "the first record was never committed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    host.kill().expect("SIGKILL");
    host.wait().expect("reaped");

    let records: Value =
        serde_json::from_str(&env.ok(&["usage", "--by", "conversation", "--json"])).expect("JSON");
    assert_eq!(records[0]["group"], "crash");
    assert_eq!(records[0]["calls"], 1);
    let reported = &dev.requests()[0]["usage"];
    assert_eq!(records[0]["input_tokens"], reported["prompt_tokens"]);
    assert_eq!(records[0]["output_tokens"], reported["completion_tokens"]);
}

#[test]
fn usage_groups_by_time_filters_by_range_and_exports_csv() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.run_claw("hello", "a", "one");
    env.run_claw("hello", "b", "two");

    let by_day: Value =
        serde_json::from_str(&env.ok(&["usage", "--by", "day", "--json"])).expect("JSON");
    let today = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10]
        .to_owned();
    assert_eq!(by_day[0]["group"], today);
    assert_eq!(by_day[0]["calls"], 2);
    let by_hour: Value =
        serde_json::from_str(&env.ok(&["usage", "--by", "hour", "--json"])).expect("JSON");
    assert!(
        by_hour[0]["group"]
            .as_str()
            .expect("label")
            .ends_with(":00Z")
    );

    let recent: Value =
        serde_json::from_str(&env.ok(&["usage", "--since", "1h", "--json"])).expect("JSON");
    assert_eq!(recent[0]["calls"], 2);
    let future: Value =
        serde_json::from_str(&env.ok(&["usage", "--since", "2999-01-01T00:00:00Z", "--json"]))
            .expect("JSON");
    assert_eq!(future, json!([]));
    let past: Value =
        serde_json::from_str(&env.ok(&["usage", "--until", "2000-01-01T00:00:00Z", "--json"]))
            .expect("JSON");
    assert_eq!(past, json!([]));
    let err = env.fails(&["usage", "--since", "yesterday-ish"], "");
    assert!(err.contains("neither an RFC 3339 time nor an age"), "{err}");

    let csv = env.ok(&["usage", "--by", "conversation", "--csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "group,calls,input_tokens,output_tokens,cache_read_tokens,cache_write_tokens,reasoning_tokens,cost_micros"
    );
    assert_eq!(lines.len(), 3);
    assert!(lines[1].starts_with("a,1,"));
    assert!(lines[2].starts_with("b,1,"));
}

#[test]
fn a_reply_without_usage_is_estimated_and_marked_so() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let body = json!({
        "id": "chatcmpl-x", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "sixteen chars!!!"}}]
    });
    dev.fault(json!({"status": 200, "body": body.to_string()}));
    let report = env.run_claw("hello", "c", "hello there");
    let record = &report["usage"][0];
    assert_eq!(report["output"], "sixteen chars!!!");
    assert_eq!(record["source"], "estimated");
    // "sixteen chars!!!" is 4 tokens under o200k_base ("six", "teen",
    // " chars", "!!!").
    assert_eq!(record["output_tokens"], 4);
    assert!(record["input_tokens"].as_i64().expect("count") > 0);
    assert!(record["raw_usage"].is_null());
}

/// Each record carries its cost from the price table and the table's
/// version; an operator's new table prices new calls only.
#[test]
fn costs_are_estimated_per_record_and_a_price_change_never_rewrites_history() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let first = env.run_claw("hello", "c", "how much does this cost");
    let record = &first["usage"][0];
    let input = record["input_tokens"].as_f64().expect("input");
    let cached = record["cache_read_tokens"].as_f64().expect("cached");
    let output = record["output_tokens"].as_f64().expect("output");
    // gpt-4o-mini in the shipped table: 0.15 input, 0.075 cached, 0.60 output per 1M.
    let expected = ((input - cached) * 0.15 + cached * 0.075 + output * 0.60).round() as i64;
    assert_eq!(record["cost_micros"], expected);
    assert_eq!(record["price_version"], "2026-12-01");

    std::fs::write(
        env.path().join("prices.json"),
        r#"{"version": "ops-2027", "models": {"gpt-4o-mini": {"input": 100, "output": 100, "cache_read": 100, "cache_write": 100}}}"#,
    )
    .expect("writes");
    let second = env.run_claw("hello", "c", "how much does this cost");
    let record2 = &second["usage"][0];
    assert_eq!(record2["price_version"], "ops-2027");
    let tokens = record2["input_tokens"].as_i64().expect("input")
        + record2["output_tokens"].as_i64().expect("output");
    assert_eq!(record2["cost_micros"], tokens * 100);

    let totals: Value =
        serde_json::from_str(&env.ok(&["usage", "--by", "claw", "--json"])).expect("JSON");
    assert_eq!(
        totals[0]["cost_micros"],
        expected + tokens * 100,
        "the first call kept its old price"
    );
    let table = env.ok(&["usage"]);
    assert!(
        table.contains("COST (EST.)") && table.contains('$'),
        "{table}"
    );

    std::fs::write(env.path().join("prices.json"), "{ not json").expect("writes");
    let err = env.fails(&["usage"], "");
    assert!(
        err.contains("prices.json") && err.contains("fix or remove the file"),
        "{err}"
    );
}

/// Usage per claw, per conversation and per tool invocation adds up exactly
/// to what the provider reported, over several conversations of tool-agent.
#[test]
fn usage_per_claw_conversation_and_tool_invocation_adds_up_to_the_provider_reports() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "anthropic", "tool-agent", "claude-x");
    let conversations = ["first", "second", "third"];
    let inputs = [
        "What is 2+2?",
        "Count these five words please",
        "Compute (7*6)-2 for me",
    ];
    let mut expected_by_conversation = Vec::new();
    let mut seen = 0;
    for (conversation, input) in conversations.iter().zip(inputs) {
        env.run_claw("tool-agent", conversation, input);
        let requests = dev.requests();
        let mine = &requests[seen..];
        seen = requests.len();
        let (mut input_tokens, mut output_tokens) = (0, 0);
        for r in mine {
            let u = &r["usage"];
            let n = |f: &str| u[f].as_i64().expect("count");
            input_tokens +=
                n("input_tokens") + n("cache_creation_input_tokens") + n("cache_read_input_tokens");
            output_tokens += n("output_tokens");
        }
        expected_by_conversation.push((
            conversation.to_string(),
            mine.len() as i64,
            input_tokens,
            output_tokens,
        ));
    }
    let by_conversation: Value =
        serde_json::from_str(&env.ok(&["usage", "--by", "conversation", "--json"])).expect("JSON");
    let got: Vec<(String, i64, i64, i64)> = by_conversation
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["group"].as_str().expect("label").to_owned(),
                g["calls"].as_i64().expect("calls"),
                g["input_tokens"].as_i64().expect("input"),
                g["output_tokens"].as_i64().expect("output"),
            )
        })
        .collect();
    assert_eq!(got, expected_by_conversation);

    let total_in: i64 = expected_by_conversation.iter().map(|e| e.2).sum();
    let by_claw: Value =
        serde_json::from_str(&env.ok(&["usage", "--by", "claw", "--json"])).expect("JSON");
    assert_eq!(by_claw[0]["input_tokens"], total_in);
    assert_eq!(by_claw[0]["calls"], 9);

    // One group per ask_expert invocation (one per conversation), each with
    // its one call; everything else outside tools.
    let by_tool: Value =
        serde_json::from_str(&env.ok(&["usage", "--by", "tool", "--json"])).expect("JSON");
    let groups = by_tool.as_array().expect("groups");
    let expert: Vec<&Value> = groups
        .iter()
        .filter(|g| {
            g["group"]
                .as_str()
                .is_some_and(|s| s.starts_with("ask_expert/ti_"))
        })
        .collect();
    assert_eq!(expert.len(), 3);
    assert!(expert.iter().all(|g| g["calls"] == 1));
    let tool_in: i64 = groups
        .iter()
        .map(|g| g["input_tokens"].as_i64().expect("input"))
        .sum();
    assert_eq!(tool_in, total_in, "the tool groups partition the total");
}

/// `clawrun serve` exposes the GenAI client metrics, computed from the
/// ledger, so calls made by other processes sharing the data directory
/// count too.
#[test]
fn serve_exposes_token_and_duration_histograms() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.run_claw("hello", "c", "one");
    env.run_claw("hello", "c", "two");
    dev.fault(json!({"status": 500, "times": 4}));
    env.fails(&["run", "hello", "--input", "x"], "");

    let serve = env.serve(&["--metrics-listen", "127.0.0.1:0"]);
    let metrics_addr = serve.metrics.clone().expect("metrics listener");
    let health = crate::support::http(&serve.addr, "GET", "/healthz", "");
    let metrics = crate::support::http(&metrics_addr, "GET", "/metrics", "");
    // Tenants reach the API listener only: the metrics name every
    // organisation's claws.
    let on_api = crate::support::http_status(&serve.addr, "GET", "/metrics", "");
    drop(serve);
    assert_eq!(health, "ok\n");
    assert_eq!(on_api, 404);

    let labels = "gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o-mini\",gen_ai_agent_name=\"hello\"";
    let reported: i64 = dev
        .requests()
        .iter()
        .filter_map(|r| r["usage"]["prompt_tokens"].as_i64())
        .sum();
    assert!(
        metrics.contains("# TYPE gen_ai_client_token_usage histogram"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "gen_ai_client_token_usage_count{{{labels},gen_ai_token_type=\"input\"}} 2\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "gen_ai_client_token_usage_sum{{{labels},gen_ai_token_type=\"input\"}} {reported}\n"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "gen_ai_client_operation_duration_seconds_count{{{labels}}} 2\n"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("gen_ai_client_operation_duration_seconds_count{{{labels},error_type=\"server_error\"}} 1\n")), "{metrics}");
}

/// Each call's tracing span carries the GenAI attributes the metrics use.
#[test]
fn the_call_span_carries_the_gen_ai_attributes() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let out = env.run(
        &[
            "run",
            "hello",
            "--conversation",
            "span-test",
            "--input",
            "hi",
        ],
        "",
    );
    assert!(out.status.success());
    let logs = String::from_utf8_lossy(&out.stderr);
    let line = logs
        .lines()
        .find(|l| l.contains("llm call finished"))
        .expect("the call's log line");
    for field in [
        "gen_ai.operation.name=\"chat\"",
        "gen_ai.agent.name=hello",
        "gen_ai.conversation.id=span-test",
        "gen_ai.provider.name=\"openai\"",
        "gen_ai.request.model=\"gpt-4o-mini\"",
        "gen_ai.response.model=\"gpt-4o-mini\"",
        "gen_ai.usage.input_tokens=",
        "gen_ai.usage.output_tokens=",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
}
