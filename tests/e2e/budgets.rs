//! Budgets and rate limits, enforced before a request is sent and holding
//! under concurrency across processes.

use std::process::Stdio;

use serde_json::{Value, json};

use crate::support::{DevProvider, Env};

/// `hello` asks for at most 256 reply tokens; its short prompt is estimated
/// at about 30 more. A budget of 5 such worst cases admits exactly 5.
const HELLO_WORST_CASE_APPROX: i64 = 300;

#[test]
fn twenty_parallel_claws_against_a_budget_for_five_send_exactly_five() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let out = env.ok(&[
        "budgets",
        "set",
        "--scope",
        "claw",
        "--claw",
        "hello",
        "--tokens",
        &(5 * HELLO_WORST_CASE_APPROX).to_string(),
        "--per",
        "day",
    ]);
    assert!(out.contains("claw daily budget of 1500 tokens"), "{out}");
    // Slow answers keep the admitted calls in flight while the rest try.
    // Long enough that every one of the 20 processes has started and asked
    // before the first admitted call settles, even on a loaded machine.
    dev.fault(json!({"delay_ms": 10_000, "times": 100}));
    let mut refused = 0;
    for out in env.parallel_runs("hello", 20, "hi") {
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("budget exceeded: claw daily budget of 1500 tokens"),
                "{stderr}"
            );
            refused += 1;
        }
    }
    assert_eq!(
        dev.requests().len(),
        5,
        "exactly five calls reached the provider"
    );
    assert_eq!(refused, 15);
    let reservations: i64 = env
        .db()
        .query_row("SELECT COUNT(*) FROM reservations", [], |r| r.get(0))
        .expect("counts");
    assert_eq!(reservations, 0, "every reservation was settled");
}

#[test]
fn a_money_budget_refuses_what_it_cannot_afford_and_settles_to_actual_cost() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    // gpt-4o-mini output is $0.60 per million: 256 tokens worst case cost
    // about $0.00016, so a $0.0001 budget admits nothing.
    env.ok(&["budgets", "set", "--usd", "0.0001", "--per", "month"]);
    let err = env.fails(&["run", "hello", "--input", "hi"], "");
    assert!(
        err.contains("budget exceeded: organisation monthly budget of $0.000100"),
        "{err}"
    );
    assert_eq!(dev.requests().len(), 0);
    let listed: Value =
        serde_json::from_str(&env.ok(&["budgets", "list", "--json"])).expect("JSON");
    let id = listed[0]["id"].as_i64().expect("id").to_string();
    env.ok(&["budgets", "remove", &id]);
    env.ok(&["budgets", "set", "--usd", "1", "--per", "lifetime"]);
    env.run_claw("hello", "c", "hi");
    // A model without a price cannot be checked against a money budget.
    env.ok(&[
        "claws",
        "assign",
        "hello",
        "--key",
        "openai-key",
        "--model",
        "no-such-price",
    ]);
    let err = env.fails(&["run", "hello", "--input", "hi"], "");
    assert!(err.contains("the assigned model has no price"), "{err}");
}

#[test]
fn per_conversation_budgets_count_each_conversation_apart() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.ok(&[
        "budgets",
        "set",
        "--scope",
        "conversation",
        "--tokens",
        "300",
        "--per",
        "lifetime",
    ]);
    env.run_claw("hello", "a", "hi");
    // The first call used about 40 tokens; another worst case of about 280
    // would pass 300 in conversation a; conversation b is fresh.
    let err = env.fails(
        &["run", "hello", "--conversation", "a", "--input", "hi"],
        "",
    );
    assert!(
        err.contains("per-conversation lifetime budget of 300 tokens"),
        "{err}"
    );
    env.run_claw("hello", "b", "hi");
}

#[test]
fn a_claw_rate_limit_answers_rate_limited_with_a_retry_after() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "repeat", "gpt-4o-mini");
    let out = env.ok(&["limits", "set", "--claw", "repeat", "--rpm", "3"]);
    assert!(out.contains("3 requests"), "{out}");
    let out = env.run(&["run", "repeat", "--input", "10 ping"], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopped after 3 calls: rate limited; retry after"),
        "{stderr}"
    );
    let ms: i64 = stderr
        .split("retry after ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .expect("a retry-after in ms");
    assert!(ms > 0 && ms <= 60_000, "{ms}");
    assert_eq!(dev.requests().len(), 3);
}

#[test]
fn a_key_token_rate_limit_counts_every_claw_on_the_key() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.wire(&dev, "openai", "repeat", "gpt-4o-mini");
    env.ok(&["limits", "set", "--key", "openai-key", "--tpm", "100"]);
    // repeat asks with the default 4,096-token cap. A first call in an
    // empty minute is admitted even though its worst case passes the limit
    // (it could never run otherwise); the next one must wait.
    let out = env.run(&["run", "repeat", "--input", "3 ping"], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stopped after 1 calls: rate limited"),
        "{stderr}"
    );
    let err = env.fails(&["run", "hello", "--input", "hi"], "");
    assert!(err.contains("rate limited"), "{err}");
    assert_eq!(dev.requests().len(), 1);
}

#[test]
fn an_interrupted_run_records_its_call_in_flight_and_releases_its_reservation() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.ok(&["budgets", "set", "--tokens", "100000"]);
    dev.fault(json!({"delay_ms": 10_000}));
    let run = env
        .command(&["run", "hello", "--conversation", "cut", "--input", "hi"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while dev.requests().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &run.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = run.wait_with_output().expect("ends");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("interrupted: the run of `hello` was stopped")
    );
    let (outcome, source, input): (String, String, i64) = env
        .db()
        .query_row(
            "SELECT outcome, source, input_tokens FROM usage_records",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("one record");
    assert_eq!(
        (outcome.as_str(), source.as_str()),
        ("cancelled", "estimated")
    );
    assert!(input > 0);
    let reservations: i64 = env
        .db()
        .query_row("SELECT COUNT(*) FROM reservations", [], |r| r.get(0))
        .expect("counts");
    assert_eq!(reservations, 0);
}

#[test]
fn setting_one_limit_keeps_the_other_and_limits_can_be_removed() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.ok(&["limits", "set", "--claw", "hello", "--rpm", "5"]);
    env.ok(&["limits", "set", "--claw", "hello", "--tpm", "900"]);
    let listed: Value = serde_json::from_str(&env.ok(&["limits", "list", "--json"])).expect("JSON");
    assert_eq!(
        (listed[0]["rpm"].as_i64(), listed[0]["tpm"].as_i64()),
        (Some(5), Some(900))
    );
    env.ok(&["limits", "remove", "--claw", "hello"]);
    assert_eq!(
        serde_json::from_str::<Value>(&env.ok(&["limits", "list", "--json"])).expect("JSON"),
        json!([])
    );
    let err = env.fails(&["limits", "remove", "--claw", "hello"], "");
    assert!(err.contains("no rate limits are set there"), "{err}");
}

#[test]
fn a_reply_naming_an_unpriced_model_is_priced_as_the_model_asked_for() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let body = json!({
        "model": "openai/gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000}
    });
    dev.fault(json!({"status": 200, "body": body.to_string()}));
    let report = env.run_claw("hello", "c", "hi");
    // gpt-4o-mini: 1,000 input at 0.15 and 1,000 output at 0.60 per million.
    assert_eq!(report["usage"][0]["cost_micros"], 750);
}

#[test]
fn a_key_rate_limit_holds_under_concurrency() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.ok(&["limits", "set", "--key", "openai-key", "--rpm", "3"]);
    dev.fault(json!({"delay_ms": 2000, "times": 100}));
    let limited = env
        .parallel_runs("hello", 12, "hi")
        .into_iter()
        .filter(|out| String::from_utf8_lossy(&out.stderr).contains("rate limited; retry after"))
        .count();
    assert_eq!(
        dev.requests().len(),
        3,
        "exactly three calls reached the provider"
    );
    assert_eq!(limited, 9);
}
