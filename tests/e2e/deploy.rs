//! Bad input: what is not a claw is refused with a message that says what to
//! do, and nothing already stored is lost.

use crate::support::{DevProvider, Env, claw};

fn write(env: &Env, name: &str, bytes: &[u8]) -> String {
    let path = env.path().join(name);
    std::fs::write(&path, bytes).expect("writes");
    path.to_str().expect("utf-8").to_owned()
}

/// Lists claws and keys, to check nothing changed.
fn snapshot(env: &Env) -> (String, String) {
    (
        env.ok(&["claws", "list", "--json"]),
        env.ok(&["keys", "list", "--json"]),
    )
}

#[test]
fn non_wasm_core_module_and_foreign_components_are_refused() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let before = snapshot(&env);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "notes.wasm",
            b"hello, I am a text file".to_vec(),
            "not a WebAssembly file",
        ),
        ("empty.wasm", Vec::new(), "not a WebAssembly file"),
        (
            "core.wasm",
            wat::parse_str("(module (func (export \"run\")))").expect("wat"),
            "core WebAssembly module, not a component",
        ),
        (
            "truncated.wasm",
            std::fs::read(claw("hello")).expect("reads")[..2000].to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "other-world.wasm",
            wat::parse_str("(component)").expect("wat"),
            "does not implement the claw world",
        ),
        (
            "extra-import.wasm",
            wat::parse_str(
                r#"(component (import "evil:net/sockets" (instance (export "connect" (func)))))"#,
            )
            .expect("wat"),
            "imports something clawrun does not provide",
        ),
    ];
    for (file, bytes, expected) in cases {
        let path = write(&env, file, &bytes);
        let err = env.fails(&["claws", "deploy", &path, "--name", "hello"], "");
        assert!(err.contains(expected), "{file}: {err}");
    }
    assert_eq!(snapshot(&env), before, "a refused deploy changes nothing");
    env.run_claw("hello", "c", "still works");
}

/// A claw-shaped component exporting `export` (the whole `(func (export
/// ...))` clause) and importing `imports`.
fn component(imports: &str, export: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
      {imports}
      (core module $Main
        (memory (export "mem") 1)
        (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
        (func (export "run") (param i32 i32 i32 i32) (result i32) (i32.const 0))
        (func (export "run1") (param i32 i32) (result i32) (i32.const 0)))
      (core instance $main (instantiate $Main))
      (type $res (result string (error string)))
      {export})"#
    ))
    .expect("wat")
}

const RUN_EXPORT: &str = r#"(func (export "run") (param "input" string) (param "conversation-id" string) (result $res)
        (canon lift (core func $main "run") (memory (core memory $main "mem")) (realloc (core func $main "realloc"))))"#;

#[test]
fn truncated_oversized_wrong_world_and_extra_import_uploads_are_refused() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let before = snapshot(&env);
    let hello = std::fs::read(claw("hello")).expect("reads");

    // The claw world itself deploys: the cases below differ from it in one
    // thing each.
    let path = write(&env, "minimal.wasm", &component("", RUN_EXPORT));
    env.ok(&["claws", "deploy", &path, "--name", "minimal"]);
    let before_minimal = snapshot(&env);
    assert_ne!(before, before_minimal);

    let mut oversized = b"\0asm\x0d\0\x01\0".to_vec();
    oversized.resize(32 * 1024 * 1024 + 1, 0);
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "oversized.wasm",
            oversized,
            "the file is 33554433 bytes; a claw component may be at most 33554432 bytes".into(),
        ),
        (
            "header-only.wasm",
            hello[..9].to_vec(),
            "not a valid WebAssembly component".into(),
        ),
        (
            "half.wasm",
            hello[..hello.len() / 2].to_vec(),
            "not a valid WebAssembly component".into(),
        ),
        (
            "last-byte-missing.wasm",
            hello[..hello.len() - 1].to_vec(),
            "not a valid WebAssembly component".into(),
        ),
        (
            "wrong-signature.wasm",
            component(
                "",
                r#"(func (export "run") (param "input" string) (result $res)
                  (canon lift (core func $main "run1") (memory (core memory $main "mem")) (realloc (core func $main "realloc"))))"#,
            ),
            "does not implement the claw world".into(),
        ),
        (
            "wrong-export-name.wasm",
            component(
                "",
                &RUN_EXPORT.replace("(export \"run\")", "(export \"handle\")"),
            ),
            "does not implement the claw world".into(),
        ),
        (
            "wasi-http-import.wasm",
            component(
                r#"(import "wasi:http/outgoing-handler@0.2.0" (instance (export "handle" (func))))"#,
                RUN_EXPORT,
            ),
            "imports something clawrun does not provide".into(),
        ),
        (
            "unknown-llm-function.wasm",
            component(
                r#"(import "clawrun:claw/llm@0.1.0" (instance (export "steal-key" (func (result string)))))"#,
                RUN_EXPORT,
            ),
            "imports something clawrun does not provide".into(),
        ),
    ];
    for (file, bytes, expected) in cases {
        let path = write(&env, file, &bytes);
        let err = env.fails(&["claws", "deploy", &path, "--name", "hello"], "");
        assert!(err.contains(&expected), "{file}: {err}");
    }
    assert_eq!(
        snapshot(&env),
        before_minimal,
        "a refused deploy changes nothing"
    );
    env.run_claw("hello", "c", "still works");
}

#[test]
fn unknown_claw_and_missing_assignment_are_clear_errors() {
    let env = Env::new();
    let err = env.fails(&["run", "nope", "--input", "x"], "");
    assert!(
        err.contains("no claw named `nope`: deploy it with"),
        "{err}"
    );

    let hello = claw("hello");
    env.ok(&[
        "claws",
        "deploy",
        hello.to_str().expect("utf-8"),
        "--name",
        "hello",
    ]);
    let err = env.fails(&["run", "hello", "--input", "x"], "");
    assert!(
        err.contains("no provider key and model are assigned to this claw"),
        "{err}"
    );
    let err = env.fails(
        &[
            "claws", "assign", "hello", "--key", "missing", "--model", "m",
        ],
        "",
    );
    assert!(err.contains("no key named `missing`"), "{err}");
}

#[test]
fn provider_garbage_and_server_errors_reach_the_claw_as_typed_errors() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");

    dev.fault(serde_json::json!({"status": 200, "body": "{this is not json"}));
    let err = env.fails(&["run", "hello", "--input", "x"], "");
    assert!(
        err.contains("provider error 0: the provider's answer could not be read"),
        "{err}"
    );

    // A 500 is retried: it fails the claw when every attempt gets one.
    dev.fault(serde_json::json!({"status": 500, "times": 4}));
    let err = env.fails(&["run", "hello", "--input", "x"], "");
    assert!(err.contains("provider error 500: injected fault"), "{err}");

    // A 429 asking for a longer wait than the host waits out itself.
    dev.fault(serde_json::json!({"status": 429, "retry_after": 7}));
    let err = env.fails(&["run", "hello", "--input", "x"], "");
    assert!(err.contains("rate limited; retry after 7000 ms"), "{err}");

    // Each failed call is in the ledger with no tokens and its outcome.
    let outcomes: Vec<(String, i64)> = {
        let db = env.db();
        let mut stmt = db
            .prepare("SELECT outcome, input_tokens FROM usage_records ORDER BY id")
            .expect("prepares");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("queries")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    // An unreadable answer was probably billed: its input is estimated.
    assert_eq!(outcomes[0].0, "bad_response");
    assert!(outcomes[0].1 > 0, "{outcomes:?}");
    assert_eq!(
        outcomes[1..],
        [("server_error".into(), 0), ("rate_limited".into(), 0)]
    );

    // The data is intact and the next call works.
    let report = env.run_claw("hello", "c", "recovered");
    assert_eq!(report["usage"][0]["outcome"], "ok");
}

#[test]
fn anthropic_overloaded_maps_to_a_provider_error() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "anthropic", "hello", "claude-x");
    // Retried like a 5xx; fails the claw when every attempt gets one.
    dev.fault(serde_json::json!({"status": 529, "times": 4}));
    let err = env.fails(&["run", "hello", "--input", "x"], "");
    assert!(err.contains("provider error 529"), "{err}");
}

#[test]
fn redeploy_replaces_the_component_and_keeps_the_assignment() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let summarize = claw("summarize");
    env.ok(&[
        "claws",
        "deploy",
        summarize.to_str().expect("utf-8"),
        "--name",
        "hello",
    ]);
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["claws", "list", "--json"])).expect("JSON");
    assert_eq!(listed[0]["model"], "gpt-4o-mini");
    assert_eq!(listed[0]["key"], "openai-key");
    let report = env.run_claw("hello", "c", "text to summarise");
    assert_eq!(report["usage"].as_array().expect("records").len(), 1);
}
