//! Hostile claws (`tests/hostile`, and hand-written components): each is
//! stopped with an error naming the limit it hit, the calls it made are
//! recorded, and a well-behaved claw running beside it in the same host
//! process (one engine, one instance pool, one worker thread) completes
//! normally.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clawrun::service::{RunReport, Service, ServiceError};
use serde_json::Value;

use crate::support::{DevProvider, Env};

/// What `hello` answers to [`NEIGHBOUR_INPUT`] with model `gpt-4o-mini`.
const NEIGHBOUR_INPUT: &str = "still here?";
const NEIGHBOUR_ANSWER: &str = "[gpt-4o-mini] Read 2 words, beginning: \"still here?\"";

/// A data directory with `hello` and the hostile claw `claw` deployed and
/// assigned a key on dev-provider.
fn setup(claw: &str) -> (DevProvider, Env) {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.wire(&dev, "openai", claw, "gpt-4o-mini");
    (dev, env)
}

/// How a hostile run and its neighbour ended.
struct Beside {
    hostile: Result<RunReport, ServiceError>,
    /// When the hostile run ended, from the start.
    hostile_took: Duration,
    /// When `hello` ended, from the start.
    neighbour_took: Duration,
}

/// Runs `claw` on `input` and, at the same time in the same host process,
/// `hello`, on a runtime with one worker thread: a guest that kept its
/// thread would starve its neighbour. Asserts `hello` answered normally.
fn run_beside_hello(env: &Env, claw: &str, input: &str) -> Beside {
    let svc = Arc::new(Service::open(env.path()).expect("opens the data directory"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let start = Instant::now();
        let hostile = {
            let (svc, claw, input) = (svc.clone(), claw.to_owned(), input.to_owned());
            tokio::spawn(async move {
                let result = svc.run(&claw, "hostile", &input).await;
                (result, start.elapsed())
            })
        };
        // Let the hostile claw start first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let neighbour = {
            let svc = svc.clone();
            tokio::spawn(async move {
                let result = svc.run("hello", "neighbour", NEIGHBOUR_INPUT).await;
                (result, start.elapsed())
            })
        };
        let (neighbour, neighbour_took) = neighbour.await.expect("neighbour task");
        let report = neighbour.expect("the well-behaved claw completes");
        assert_eq!(report.output.result.as_deref(), Ok(NEIGHBOUR_ANSWER));
        assert_eq!(report.usage.len(), 1);
        let (hostile, hostile_took) = hostile.await.expect("hostile task");
        Beside {
            hostile,
            hostile_took,
            neighbour_took,
        }
    })
}

/// The error text of a run that must have failed.
fn failure(beside: &Beside) -> String {
    match &beside.hostile {
        Ok(report) => panic!("the hostile run completed: {:?}", report.output.result),
        Err(e) => e.to_string(),
    }
}

fn usage_records(env: &Env, claw: &str) -> Vec<(String, Option<String>)> {
    let db = env.db();
    let mut stmt = db
        .prepare(
            "SELECT u.outcome, u.tool_name FROM usage_records u JOIN claws c ON c.id = u.claw_id
             WHERE c.name = ?1 ORDER BY u.id",
        )
        .expect("prepares");
    stmt.query_map([claw], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("queries")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn an_infinite_loop_is_stopped_by_its_fuel_limit() {
    let (_dev, env) = setup("hostile-loop");
    env.ok(&["claws", "limits", "hostile-loop", "--fuel", "300000000"]);
    let beside = run_beside_hello(&env, "hostile-loop", "spin");
    assert_eq!(
        failure(&beside),
        "claw `hostile-loop` used up its CPU fuel limit (300000000 units); raise it with \
         `clawrun claws limits hostile-loop --fuel N`"
    );

    // The same through the CLI, with the default limits shown beside it.
    let err = env.fails(&["run", "hostile-loop", "--input", "spin"], "");
    assert!(
        err.contains("used up its CPU fuel limit (300000000 units)"),
        "{err}"
    );
    let shown: Value =
        serde_json::from_str(&env.ok(&["claws", "limits", "hostile-loop", "--json"]))
            .expect("JSON");
    assert_eq!(limit(&shown, "fuel"), (300_000_000, "claw".into()));
    assert_eq!(limit(&shown, "llm-calls"), (500, "default".into()));
}

#[test]
fn an_infinite_loop_is_stopped_at_its_deadline_and_its_neighbour_runs_meanwhile() {
    let (_dev, env) = setup("hostile-loop");
    env.ok(&[
        "claws",
        "limits",
        "hostile-loop",
        "--deadline-ms",
        "6000",
        "--fuel",
        "1000000000000000",
    ]);
    let beside = run_beside_hello(&env, "hostile-loop", "spin");
    assert_eq!(
        failure(&beside),
        "claw `hostile-loop` ran longer than its deadline of 6s; raise it with `clawrun claws \
         limits hostile-loop --deadline-ms N`"
    );
    assert!(beside.hostile_took >= Duration::from_secs(6));
    // The loop yields its thread at every epoch tick: hello, on the same
    // single worker thread, finished while the loop still spun.
    assert!(
        beside.neighbour_took < beside.hostile_took,
        "hello took {:?}, the loop {:?}",
        beside.neighbour_took,
        beside.hostile_took
    );
}

#[test]
fn unbounded_recursion_overflows_the_stack() {
    let (_dev, env) = setup("hostile-recurse");
    let beside = run_beside_hello(&env, "hostile-recurse", "down");
    assert_eq!(
        failure(&beside),
        "claw `hostile-recurse` overflowed its Wasm stack of 512 KiB (a fixed limit); the claw \
         must recurse less deeply"
    );
}

#[test]
fn many_runs_together_stop_at_the_host_memory_budget() {
    // The claw may take 1 GiB, but the host lets all its claws together
    // hold only 96 MiB: the bomb stops there, naming the host's budget.
    let (_dev, env) = setup("hostile-memory-bomb");
    env.ok(&[
        "claws",
        "limits",
        "hostile-memory-bomb",
        "--memory-mib",
        "1024",
    ]);
    let out = env.run_with(
        &["run", "hostile-memory-bomb", "--input", "boom"],
        "",
        &[("CLAWRUN_HOST_MEMORY_MIB", "96")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "could not grow its memory: this host's claws together hold its guest-memory budget \
             of 96 MiB; try again when other runs have ended"
        ),
        "{err}"
    );
    // The budget is given back: the next run has it all again.
    let out = env.run_with(
        &["run", "hello", "--input", "hi"],
        "",
        &[("CLAWRUN_HOST_MEMORY_MIB", "96")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_memory_bomb_stops_at_the_memory_limit() {
    let (_dev, env) = setup("hostile-memory-bomb");
    env.ok(&[
        "claws",
        "limits",
        "hostile-memory-bomb",
        "--memory-mib",
        "64",
    ]);
    let beside = run_beside_hello(&env, "hostile-memory-bomb", "boom");
    let err = failure(&beside);
    assert!(
        err.starts_with(
            "claw `hostile-memory-bomb` reached its memory limit of 64 MiB (linear memory could \
             not grow); raise it with `clawrun claws limits hostile-memory-bomb --memory-mib N`\n\
             the claw's last words on stderr: memory allocation of 1048576 bytes failed"
        ),
        "{err}"
    );
}

#[test]
fn a_gigantic_output_is_refused_and_endless_printing_is_capped_not_failed() {
    let (_dev, env) = setup("hostile-big-output");
    let beside = run_beside_hello(&env, "hostile-big-output", "2000000 0");
    assert_eq!(
        failure(&beside),
        "claw `hostile-big-output` exceeded its value size limit: its output is 2000000 bytes, \
         over the limit of 1048576 bytes per value; raise it with `clawrun claws limits \
         hostile-big-output --max-value-kib N`"
    );

    // 4 MiB printed to stdout and to stderr: the run succeeds, 64 KiB of
    // each is kept and the rest counted as dropped.
    let beside = run_beside_hello(&env, "hostile-big-output", "10 4194304");
    let report = beside.hostile.expect("printing does not fail the claw");
    assert_eq!(report.output.result.as_deref(), Ok("xxxxxxxxxx"));
    assert_eq!(report.output.stdout.len(), 64 * 1024);
    assert_eq!(report.output.stderr.len(), 64 * 1024);
    assert_eq!(
        report.output.output_dropped,
        2 * (4 * 1024 * 1024 - 64 * 1024)
    );
}

#[test]
fn a_gigantic_prompt_is_refused_before_it_reaches_the_provider() {
    let (dev, env) = setup("hostile-big-prompt");
    let beside = run_beside_hello(&env, "hostile-big-prompt", "2000000");
    // The guest receives `invalid-request` and, this one, gives up with it.
    let report = beside.hostile.expect("the claw returns its own error");
    assert_eq!(
        report.output.result,
        Err(
            "invalid request: message 1 is 2000000 bytes, over this claw's limit of 1048576 \
             bytes per value: send less, or ask an admin to raise the limit with `clawrun \
             claws limits CLAW --max-value-kib N`"
                .to_owned()
        )
    );
    assert_eq!(dev.requests().len(), 1, "only hello's request was sent");
    assert!(usage_records(&env, "hostile-big-prompt").is_empty());

    // Raised, the same prompt goes through.
    env.ok(&[
        "claws",
        "limits",
        "hostile-big-prompt",
        "--max-value-kib",
        "4096",
    ]);
    let report = env.run_claw("hostile-big-prompt", "c", "2000000");
    assert_eq!(report["usage"].as_array().expect("records").len(), 1);
}

#[test]
fn a_claw_calling_in_a_loop_is_stopped_at_its_llm_call_limit_with_every_call_recorded() {
    let (dev, env) = setup("repeat");
    env.ok(&["claws", "limits", "repeat", "--llm-calls", "25"]);
    let beside = run_beside_hello(&env, "repeat", "1000 again");
    assert_eq!(
        failure(&beside),
        "claw `repeat` passed its limit of 25 llm-calls per run; raise it with `clawrun claws \
         limits repeat --llm-calls N`"
    );
    assert_eq!(dev.requests().len(), 25 + 1, "25 calls, and hello's");
    let records = usage_records(&env, "repeat");
    assert_eq!(records.len(), 25);
    assert!(records.iter().all(|(outcome, _)| outcome == "ok"));
}

/// The default limit of 500, through the CLI.
#[test]
fn the_default_llm_call_limit_is_500() {
    let (dev, env) = setup("repeat");
    let err = env.fails(&["run", "repeat", "--input", "1000 again"], "");
    assert!(
        err.contains("claw `repeat` passed its limit of 500 llm-calls per run"),
        "{err}"
    );
    assert_eq!(dev.requests().len(), 500);
    assert_eq!(usage_records(&env, "repeat").len(), 500);
}

#[test]
fn a_trap_halfway_through_a_tool_invocation_keeps_the_call_recorded_against_the_tool() {
    let (dev, env) = setup("hostile-tool-trap");
    let beside = run_beside_hello(&env, "hostile-tool-trap", "a question");
    let err = failure(&beside);
    assert!(
        err.starts_with("claw `hostile-tool-trap` trapped: "),
        "{err}"
    );
    assert!(
        err.contains("the tool blew up halfway, after a reply of"),
        "{err}"
    );
    assert_eq!(dev.requests().len(), 2);
    assert_eq!(
        usage_records(&env, "hostile-tool-trap"),
        [("ok".to_owned(), Some("explode".to_owned()))]
    );
}

#[test]
fn a_probing_claw_finds_no_env_files_sockets_or_fine_clock() {
    let (_dev, env) = setup("hostile-probe");
    // A listener the claw is told about: nothing may reach it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port().to_string();
    // Environment the host process has, that the guest must not see.
    let out = env.run_with(
        &["run", "hostile-probe", "--input", &port, "--json"],
        "",
        &[("OPENAI_API_KEY", "sk-from-the-host-environment")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let lines: Vec<&str> = report["output"].as_str().expect("output").lines().collect();
    let expected = [
        "env: 0 variables []".to_owned(),
        "args: 0".to_owned(),
        "read /etc/passwd: denied (No such file or directory (os error 44))".to_owned(),
        "read /proc/self/environ: denied (No such file or directory (os error 44))".to_owned(),
        "read clawrun.db: denied (No such file or directory (os error 44))".to_owned(),
        "read /: denied (No such file or directory (os error 44))".to_owned(),
        "list /: denied (No such file or directory (os error 44))".to_owned(),
        "create /tmp/x: denied (No such file or directory (os error 44))".to_owned(),
        // wasi-libc's own default: no directory of the host is behind it.
        "cwd: Ok(\"/\")".to_owned(),
        format!("tcp connect 127.0.0.1:{port}: denied (Permission denied (os error 2))"),
        "udp bind: denied (Permission denied (os error 2))".to_owned(),
        "lookup localhost: denied (failed to lookup address information: Non-recoverable error)"
            .to_owned(),
        "clocks: finest step 1ms, whole milliseconds: true, many readings".to_owned(),
    ];
    assert_eq!(lines, expected);
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no connection reached the host"
    );
    assert!(!env.path().join("tmp").exists());
}

/// A component of `instances` core instances of an empty module, whose run
/// grows a table by `grow` elements and traps if that was refused.
fn instances_and_tables(instances: usize, grow: u32) -> Vec<u8> {
    let extra: String = (0..instances)
        .map(|i| format!("(core instance $e{i} (instantiate $Empty))\n"))
        .collect();
    let wat = format!(
        r#"(component
      (core module $Empty)
      {extra}
      (core module $Main
        (memory (export "mem") 1)
        (table $t 1 funcref)
        (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
        (func (export "run") (param i32 i32 i32 i32) (result i32)
          (if (i32.lt_s (table.grow $t (ref.null func) (i32.const {grow})) (i32.const 0))
            (then unreachable))
          (i32.store (i32.const 0) (i32.const 0))
          (i32.store (i32.const 4) (i32.const 0))
          (i32.store (i32.const 8) (i32.const 0))
          (i32.const 0)))
      (core instance $main (instantiate $Main))
      (type $res (result string (error string)))
      (func (export "run") (param "input" string) (param "conversation-id" string) (result $res)
        (canon lift (core func $main "run") (memory (core memory $main "mem"))
          (realloc (core func $main "realloc")))))"#
    );
    wat::parse_str(&wat).expect("wat")
}

fn deploy_bytes(env: &Env, name: &str, bytes: &[u8]) {
    let path = env.path().join(format!("{name}.wasm"));
    std::fs::write(&path, bytes).expect("writes");
    env.ok(&[
        "claws",
        "deploy",
        path.to_str().expect("utf-8"),
        "--name",
        name,
    ]);
}

#[test]
fn instance_and_table_limits_stop_the_run_naming_the_limit() {
    let (_dev, env) = setup("hello");
    deploy_bytes(&env, "many", &instances_and_tables(12, 1));
    env.ok(&["claws", "limits", "many", "--instances", "5"]);
    let beside = run_beside_hello(&env, "many", "x");
    assert_eq!(
        failure(&beside),
        "claw `many` needs more core instances than its limit of 5; raise it with `clawrun \
         claws limits many --instances N`"
    );
    env.ok(&["claws", "limits", "many", "--instances", "20"]);
    let report = env.run_claw("many", "c", "x");
    assert_eq!(report["output"], "");

    deploy_bytes(&env, "tables", &instances_and_tables(0, 20_000));
    let beside = run_beside_hello(&env, "tables", "x");
    assert_eq!(
        failure(&beside),
        "claw `tables` reached its limit of 10000 table elements; raise it with `clawrun claws \
         limits tables --table-elements N`"
    );
}

/// A component of several core instances, each growing its own memory by
/// 100 MiB: the run's 256 MiB limit counts all of them together.
#[test]
fn the_memory_limit_counts_every_memory_of_the_component() {
    let (_dev, env) = setup("hello");
    let wat = r#"(component
      (core module $M
        (memory (export "mem") 1)
        (func (export "grow") (result i32) (memory.grow (i32.const 1600))))
      (core instance $a (instantiate $M))
      (core instance $b (instantiate $M))
      (core instance $c (instantiate $M))
      (core module $Main
        (import "a" "grow" (func $ga (result i32)))
        (import "b" "grow" (func $gb (result i32)))
        (import "c" "grow" (func $gc (result i32)))
        (memory (export "mem") 1)
        (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
        (func (export "run") (param i32 i32 i32 i32) (result i32)
          (if (i32.lt_s (call $ga) (i32.const 0)) (then unreachable))
          (if (i32.lt_s (call $gb) (i32.const 0)) (then unreachable))
          (if (i32.lt_s (call $gc) (i32.const 0)) (then unreachable))
          (i32.const 0)))
      (core instance $main (instantiate $Main
        (with "a" (instance $a)) (with "b" (instance $b)) (with "c" (instance $c))))
      (type $res (result string (error string)))
      (func (export "run") (param "input" string) (param "conversation-id" string) (result $res)
        (canon lift (core func $main "run") (memory (core memory $main "mem")) (realloc (core func $main "realloc")))))"#;
    deploy_bytes(&env, "hog", &wat::parse_str(wat).expect("wat"));
    let beside = run_beside_hello(&env, "hog", "x");
    assert_eq!(
        failure(&beside),
        "claw `hog` reached its memory limit of 256 MiB (linear memory could not grow); raise \
         it with `clawrun claws limits hog --memory-mib N`"
    );
    // 400 MiB fit once the limit is raised.
    env.ok(&["claws", "limits", "hog", "--memory-mib", "512"]);
    env.run_claw("hog", "c", "x");
}

#[test]
fn an_oversized_input_is_refused_before_the_claw_starts() {
    let (dev, env) = setup("hello");
    let input = "a".repeat(1024 * 1024 + 1);
    let beside = run_beside_hello(&env, "hello", &input);
    assert_eq!(
        failure(&beside),
        "claw `hello` exceeded its value size limit: its input is 1048577 bytes, over the limit \
         of 1048576 bytes per value; raise it with `clawrun claws limits hello --max-value-kib N`"
    );
    assert_eq!(dev.requests().len(), 1, "only the neighbour called");
}

#[test]
fn limits_beyond_the_pool_are_refused_and_reset_restores_the_defaults() {
    let (_dev, env) = setup("hello");
    let err = env.fails(&["claws", "limits", "hello", "--memory-mib", "2048"], "");
    assert!(
        err.contains(
            "--memory-mib must be between 1 and 1024, the size of the host's memory slots; got \
             2048"
        ),
        "{err}"
    );
    let err = env.fails(&["claws", "limits", "hello", "--llm-calls", "0"], "");
    assert!(err.contains("--llm-calls must be between 1 and"), "{err}");

    env.ok(&["claws", "limits", "hello", "--llm-calls", "7"]);
    env.ok(&["claws", "limits", "hello", "--fuel", "123456789"]);
    let table = env.ok(&["claws", "list"]);
    assert!(table.contains("fuel=123456789,llm-calls=7"), "{table}");
    let listed: Value = serde_json::from_str(&env.ok(&["claws", "list", "--json"])).expect("JSON");
    assert_eq!(limit(&listed[0]["limits"], "llm-calls"), (7, "claw".into()));
    assert_eq!(
        limit(&listed[0]["limits"], "fuel"),
        (123_456_789, "claw".into())
    );
    assert_eq!(limit(&listed[0]["limits"], "memory-mib").1, "default");

    let shown = env.ok(&["claws", "limits", "hello", "--reset"]);
    assert!(shown.contains("llm-calls       500"), "{shown}");
    assert!(!shown.contains("claw"), "{shown}");
    let table = env.ok(&["claws", "list"]);
    assert!(table.contains("default"), "{table}");
}

/// With a limit of one run at a time, a second run waits, then is refused;
/// a run killed outright frees its slot.
#[test]
fn the_organisation_concurrency_limit_refuses_extra_runs_and_survives_a_kill() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    assert_eq!(
        env.ok(&["org", "limits"]),
        "organisation `default`: concurrent runs 64\n"
    );
    assert_eq!(
        env.ok(&["org", "limits", "--concurrent-runs", "1"]),
        "organisation `default`: concurrent runs 1\n"
    );
    dev.fault(serde_json::json!({"delay_ms": 120_000}));
    let mut first = env
        .command(&["run", "hello", "--input", "slow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let waited = Instant::now() + Duration::from_secs(60);
    while dev.requests().is_empty() {
        assert!(Instant::now() < waited, "the first run never called");
        std::thread::sleep(Duration::from_millis(20));
    }

    let started = Instant::now();
    let err = env.fails(&["run", "hello", "--input", "second"], "");
    assert_eq!(
        err,
        "error: organisation `default` already has 1 run(s) in progress, its limit, and none \
         ended within 5 s: try again later, or raise the limit with `clawrun org limits \
         --concurrent-runs N`"
    );
    assert!(started.elapsed() >= Duration::from_secs(5));

    first.kill().expect("kills");
    first.wait().expect("reaped");
    let report = env.run_claw("hello", "c", "third");
    assert_eq!(report["usage"][0]["outcome"], "ok");
    assert_eq!(
        env.ok(&["org", "limits", "--reset"]),
        "organisation `default`: concurrent runs 64\n"
    );
}

/// A limit of a `claws limits --json` list: its value and where it comes from.
fn limit(limits: &Value, name: &str) -> (u64, String) {
    let found = limits
        .as_array()
        .and_then(|all| all.iter().find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no limit {name} in {limits}"));
    (
        found["value"].as_u64().expect("value"),
        found["from"].as_str().expect("from").to_owned(),
    )
}
