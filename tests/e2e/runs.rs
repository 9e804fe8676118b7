//! Running real claws against dev-provider in both wire formats.

use serde_json::Value;

use crate::support::{ANTHROPIC_KEY, DevProvider, Env, OPENAI_KEY};

fn as_i64(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// The provider received the key in its documented header and the assigned
/// model; the claw got the reply; the usage record equals what the provider
/// reported, attributed to the claw and conversation.
fn hello_round_trip(provider: &str, model: &str) {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, provider, "hello", model);

    let report = env.run_claw("hello", "conv-hello-1", "Good morning, claw");
    let requests = dev.requests();
    assert_eq!(requests.len(), 1);
    let req = &requests[0];
    assert_eq!(req["model"], model);
    match provider {
        "openai" => {
            assert_eq!(req["path"], "/v1/chat/completions");
            assert_eq!(
                req["headers"]["authorization"],
                format!("Bearer {OPENAI_KEY}")
            );
            assert!(req["headers"].get("x-api-key").is_none());
        }
        _ => {
            assert_eq!(req["path"], "/v1/messages");
            assert_eq!(req["headers"]["x-api-key"], ANTHROPIC_KEY);
            assert_eq!(req["headers"]["anthropic-version"], "2023-06-01");
            assert!(req["headers"].get("authorization").is_none());
        }
    }

    let output = report["output"].as_str().expect("claw output");
    assert_eq!(
        output,
        format!("[{model}] Read 3 words, beginning: \"Good morning, claw\"")
    );

    let usage = report["usage"].as_array().expect("usage records");
    assert_eq!(usage.len(), 1);
    let record = &usage[0];
    let reported = &req["usage"];
    let (input, output_tokens, cache_read, cache_write, reasoning) = match provider {
        "openai" => (
            as_i64(&reported["prompt_tokens"]),
            as_i64(&reported["completion_tokens"]),
            as_i64(&reported["prompt_tokens_details"]["cached_tokens"]),
            0,
            as_i64(&reported["completion_tokens_details"]["reasoning_tokens"]),
        ),
        _ => (
            as_i64(&reported["input_tokens"])
                + as_i64(&reported["cache_creation_input_tokens"])
                + as_i64(&reported["cache_read_input_tokens"]),
            as_i64(&reported["output_tokens"]),
            as_i64(&reported["cache_read_input_tokens"]),
            as_i64(&reported["cache_creation_input_tokens"]),
            0,
        ),
    };
    assert!(input > 0 && output_tokens > 0);
    assert_eq!(as_i64(&record["input_tokens"]), input);
    assert_eq!(as_i64(&record["output_tokens"]), output_tokens);
    assert_eq!(as_i64(&record["cache_read_tokens"]), cache_read);
    assert_eq!(as_i64(&record["cache_write_tokens"]), cache_write);
    assert_eq!(as_i64(&record["reasoning_tokens"]), reasoning);
    assert_eq!(record["source"], "reported");
    assert_eq!(record["outcome"], "ok");
    assert_eq!(record["provider"], provider);
    assert_eq!(record["model_requested"], model);
    assert_eq!(record["conversation_id"], "conv-hello-1");
    assert_eq!(record["key_version"], 1);
    assert!(record["tool_invocation_id"].is_null());
    let raw: Value =
        serde_json::from_str(record["raw_usage"].as_str().expect("raw usage")).expect("JSON");
    assert_eq!(&raw, reported);

    let claws: Value =
        serde_json::from_str(&env.ok(&["usage", "--by", "claw", "--json"])).expect("JSON");
    assert_eq!(claws[0]["group"], "hello");
    assert_eq!(as_i64(&claws[0]["input_tokens"]), input);
}

#[test]
fn openai_hello_end_to_end() {
    hello_round_trip("openai", "gpt-4o-mini");
}

#[test]
fn anthropic_hello_end_to_end() {
    hello_round_trip("anthropic", "claude-sonnet-4-5");
}

#[test]
fn reasoning_and_cache_tokens_are_metered_as_reported() {
    // A long input pushes the prompt over the emulator's cache threshold,
    // and an o-series model reports reasoning tokens.
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "o3-mini");
    let long = "tokens ".repeat(1200);
    let report = env.run_claw("hello", "conv-long", &long);
    let record = &report["usage"][0];
    let reported = &dev.requests()[0]["usage"];
    assert!(as_i64(&reported["prompt_tokens_details"]["cached_tokens"]) > 0);
    assert!(as_i64(&reported["completion_tokens_details"]["reasoning_tokens"]) > 0);
    assert_eq!(
        record["cache_read_tokens"],
        reported["prompt_tokens_details"]["cached_tokens"]
    );
    assert_eq!(
        record["reasoning_tokens"],
        reported["completion_tokens_details"]["reasoning_tokens"]
    );
    assert_eq!(record["output_tokens"], reported["completion_tokens"]);
}

/// tool-agent: the model's tool calls run as attributed tool invocations;
/// the call made inside `ask_expert` is recorded against that invocation.
fn tool_agent_attribution(provider: &str) {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, provider, "tool-agent", "agent-model");

    let report = env.run_claw("tool-agent", "conv-tools", "What is 12*(3+4)?");
    let output = report["output"].as_str().expect("output");
    assert!(output.contains("calculator = 84"), "{output}");
    assert!(output.contains("word_count = 3"), "{output}");
    assert!(output.contains("ask_expert = [agent-model]"), "{output}");

    let requests = dev.requests();
    assert_eq!(
        requests.len(),
        3,
        "first turn, the expert's call, the final turn"
    );
    let usage = report["usage"].as_array().expect("records");
    assert_eq!(usage.len(), 3);
    let expert = usage
        .iter()
        .filter(|u| u["tool_name"] == "ask_expert")
        .collect::<Vec<_>>();
    assert_eq!(expert.len(), 1);
    let expert = expert[0];
    assert!(
        expert["tool_invocation_id"]
            .as_str()
            .expect("invocation id")
            .starts_with("ti_")
    );
    let call_id = expert["tool_call_id"].as_str().expect("tool call id");
    let first_reply_calls = format!("{}", requests[2]["body"]);
    assert!(
        first_reply_calls.contains(call_id),
        "the invocation answers the model's call {call_id}"
    );
    assert_eq!(usage.iter().filter(|u| u["tool_name"].is_null()).count(), 2);

    // Each record matches the provider's report for its own request.
    for (record, request) in usage.iter().zip(&requests) {
        let reported_out = match provider {
            "openai" => &request["usage"]["completion_tokens"],
            _ => &request["usage"]["output_tokens"],
        };
        assert_eq!(&record["output_tokens"], reported_out);
    }

    // Per tool invocation: the group of ask_expert holds exactly its call.
    let by_tool: Value =
        serde_json::from_str(&env.ok(&["usage", "--by", "tool", "--json"])).expect("JSON");
    let groups = by_tool.as_array().expect("groups");
    let expert_group = groups
        .iter()
        .find(|g| {
            g["group"]
                .as_str()
                .is_some_and(|s| s.starts_with("ask_expert/ti_"))
        })
        .expect("a group for the ask_expert invocation");
    assert_eq!(expert_group["calls"], 1);
    assert_eq!(expert_group["input_tokens"], expert["input_tokens"]);
    let outside = groups
        .iter()
        .find(|g| g["group"] == "(outside tools)")
        .expect("calls outside tools");
    assert_eq!(outside["calls"], 2);
}

#[test]
fn openai_tool_agent_attributes_usage_to_tool_invocations() {
    tool_agent_attribution("openai");
}

#[test]
fn anthropic_tool_agent_attributes_usage_to_tool_invocations() {
    tool_agent_attribution("anthropic");
}

#[test]
fn summarize_chunks_a_long_text_then_combines() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "summarize", "gpt-4o-mini");
    let paragraph = "Claws run in cages and call models through the host. ".repeat(30);
    let text = vec![paragraph; 5].join("\n\n");
    let report = env.run_claw("summarize", "conv-sum", &text);
    let calls = dev.requests().len();
    // Each paragraph is about 1,600 bytes, so 4,000-byte chunks hold two:
    // three chunk summaries, then one combining call.
    assert_eq!(calls, 4);
    assert_eq!(report["usage"].as_array().expect("records").len(), calls);
    assert!(
        report["output"]
            .as_str()
            .expect("output")
            .starts_with("[gpt-4o-mini]")
    );
}

#[test]
fn reassigning_the_model_applies_to_the_next_call_without_redeploy() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "model-a");
    env.run_claw("hello", "c1", "first");
    env.ok(&[
        "claws",
        "assign",
        "hello",
        "--key",
        "openai-key",
        "--model",
        "model-b",
    ]);
    let report = env.run_claw("hello", "c1", "second");

    let models: Vec<Value> = dev.requests().iter().map(|r| r["model"].clone()).collect();
    assert_eq!(models, ["model-a", "model-b"]);
    assert_eq!(report["usage"][0]["model_requested"], "model-b");
    let digest_rows: i64 = env
        .db()
        .query_row("SELECT COUNT(*) FROM claws WHERE name = 'hello'", [], |r| {
            r.get(0)
        })
        .expect("counts");
    assert_eq!(digest_rows, 1);

    // Switching the claw to another provider's key also takes effect at once.
    env.ok_with_stdin(
        &[
            "keys",
            "add",
            "ant",
            "--provider",
            "anthropic",
            "--base-url",
            &dev.base_url("anthropic"),
        ],
        ANTHROPIC_KEY,
    );
    env.ok(&[
        "claws", "assign", "hello", "--key", "ant", "--model", "claude-x",
    ]);
    env.run_claw("hello", "c1", "third");
    let last = dev.requests().pop().expect("a request");
    assert_eq!(last["format"], "anthropic");
    assert_eq!(last["headers"]["x-api-key"], ANTHROPIC_KEY);
}

#[test]
fn a_key_revoked_in_the_database_fails_the_next_call_and_sends_nothing() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.run_claw("hello", "c", "before");
    assert_eq!(dev.requests().len(), 1);

    env.db()
        .execute(
            "UPDATE provider_keys SET state = 'revoked' WHERE name = 'openai-key'",
            [],
        )
        .expect("revokes in the database");
    let err = env.fails(&["run", "hello", "--input", "after"], "");
    assert!(err.contains("revoked"), "{err}");
    assert_eq!(dev.requests().len(), 1, "no request reached the provider");
}

#[test]
fn keys_revoke_stops_the_next_call() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "anthropic", "hello", "claude-x");
    env.run_claw("hello", "c", "before");
    let out = env.ok(&["keys", "revoke", "anthropic-key"]);
    assert!(out.contains("revoked key `anthropic-key`"), "{out}");
    let err = env.fails(&["run", "hello", "--input", "after"], "");
    assert!(
        err.contains("the provider key assigned to this claw was revoked"),
        "{err}"
    );
    assert_eq!(dev.requests().len(), 1);
    let listed: Value = serde_json::from_str(&env.ok(&["keys", "list", "--json"])).expect("JSON");
    assert_eq!(listed[0]["state"], "revoked");
    let err = env.fails(
        &[
            "claws",
            "assign",
            "hello",
            "--key",
            "anthropic-key",
            "--model",
            "m",
        ],
        "",
    );
    assert!(err.contains("is revoked"), "{err}");
}

#[test]
fn rotation_uses_the_new_version_on_the_next_call() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.run_claw("hello", "c", "one");
    let new_key = "sk-proj-ROTATEDkey-11112222333344445555XyZ9";
    let out = env.ok_with_stdin(&["keys", "rotate", "openai-key"], new_key);
    assert!(out.contains("version 2"), "{out}");
    let report = env.run_claw("hello", "c", "two");
    let requests = dev.requests();
    assert_eq!(
        requests[1]["headers"]["authorization"],
        format!("Bearer {new_key}")
    );
    assert_eq!(report["usage"][0]["key_version"], 2);
}
