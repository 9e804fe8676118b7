//! Key custody: master key rotation, tampering, rotation hygiene, the leak
//! guard, redaction of echoed keys, pinned endpoints, the audit log, and
//! revocation across processes.

use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::leaks::{contains, files};
use crate::support::{ANTHROPIC_KEY, DevProvider, Env, OPENAI_KEY};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn audit(env: &Env) -> Vec<Value> {
    match serde_json::from_str(&env.ok(&["audit", "--json"])).expect("JSON") {
        Value::Array(items) => items,
        other => panic!("{other}"),
    }
}

#[test]
fn rotate_master_rewraps_and_the_old_master_key_opens_nothing() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let old = std::fs::read_to_string(env.path().join("master.key")).expect("reads");
    let out = env.ok(&["vault", "rotate-master"]);
    assert!(
        out.contains("re-wrapped the data keys of 1 organisation(s)"),
        "{out}"
    );
    let new = std::fs::read_to_string(env.path().join("master.key")).expect("reads");
    assert_ne!(old, new);
    assert!(!env.path().join("master.key.next").exists());

    env.run_claw("hello", "c", "after rotation");
    let out = env.run_with(&["keys", "list"], "", &[("CLAWRUN_MASTER_KEY", old.trim())]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("the master key does not open this data directory")
    );
    assert!(
        audit(&env)
            .iter()
            .any(|a| a["action"] == "master.rotated" && a["outcome"] == "ok")
    );
}

#[test]
fn an_interrupted_master_rotation_is_finished_on_the_next_start() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let key_file = env.path().join("master.key");
    let old = std::fs::read(&key_file).expect("reads");
    env.ok(&["vault", "rotate-master"]);
    // Put the files back as a crash between the commit and the rename
    // would have left them: the new key still in `.next`, the old in place.
    std::fs::rename(&key_file, env.path().join("master.key.next")).expect("renames");
    std::fs::write(&key_file, &old).expect("writes");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    env.run_claw("hello", "c", "recovered");
    assert!(!env.path().join("master.key.next").exists());
    assert_ne!(std::fs::read(&key_file).expect("reads"), old);
}

#[test]
fn rotate_master_with_the_key_in_the_environment_takes_the_new_key_on_stdin() {
    let first = "MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=";
    let second = "MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=";
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |args: &[&str], key: &str, stdin: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_clawrun"))
            .args(args)
            .env("CLAWRUN_DATA_DIR", dir.path())
            .env("CLAWRUN_MASTER_KEY", key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), stdin.as_bytes())
            .expect("writes");
        child.wait_with_output().expect("ends")
    };
    assert!(run(&["init"], first, "").status.success());
    assert!(
        !dir.path().join("master.key").exists(),
        "no file when the key is in the environment"
    );
    assert!(
        run(
            &["keys", "add", "k", "--provider", "openai"],
            first,
            OPENAI_KEY
        )
        .status
        .success()
    );
    let out = run(&["vault", "rotate-master"], first, second);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("set CLAWRUN_MASTER_KEY to the new key"));
    assert!(run(&["keys", "list"], second, "").status.success());
    let stale = run(&["keys", "list"], first, "");
    assert!(!stale.status.success());
}

#[test]
fn a_tampered_ciphertext_fails_that_key_only() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.wire(&dev, "anthropic", "repeat", "claude-x");
    env.db()
        .execute(
            "UPDATE provider_keys SET ciphertext = substr(ciphertext, 1, 20) || X'00' || substr(ciphertext, 22)
             WHERE name = 'openai-key'",
            [],
        )
        .expect("tampers");
    let err = env.fails(&["run", "hello", "--input", "x"], "");
    assert!(
        err.contains("the stored key `openai-key` failed to decrypt; an admin must enter it again with `clawrun keys rotate openai-key`"),
        "{err}"
    );
    assert_eq!(dev.requests().len(), 0);
    let report = env.run_claw("repeat", "c", "1 still fine");
    assert_eq!(report["output"], "1 calls");
    assert!(env.ok(&["keys", "list"]).contains("openai-key"));
    // Entering the key again repairs it.
    env.ok_with_stdin(&["keys", "rotate", "openai-key"], OPENAI_KEY);
    env.run_claw("hello", "c", "repaired");
}

#[test]
fn a_ciphertext_copied_onto_another_key_does_not_open() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.ok_with_stdin(
        &[
            "keys",
            "add",
            "other",
            "--provider",
            "openai",
            "--base-url",
            &dev.base_url("openai"),
        ],
        "sk-other-key-000000000000000000",
    );
    env.db()
        .execute(
            "UPDATE provider_keys SET ciphertext = (SELECT ciphertext FROM provider_keys WHERE name = 'other')
             WHERE name = 'openai-key'",
            [],
        )
        .expect("copies");
    let err = env.fails(&["run", "hello", "--input", "x"], "");
    assert!(err.contains("failed to decrypt"), "{err}");
    assert_eq!(dev.requests().len(), 0);
}

#[test]
fn rotation_destroys_the_old_ciphertext_and_stamps_the_version() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.run_claw("hello", "c", "v1");
    let old: Vec<u8> = env
        .db()
        .query_row(
            "SELECT ciphertext FROM provider_keys WHERE name = 'openai-key'",
            [],
            |r| r.get(0),
        )
        .expect("reads");
    env.ok_with_stdin(
        &["keys", "rotate", "openai-key"],
        "sk-proj-second-version-key-1234567890",
    );
    let report = env.run_claw("hello", "c", "v2");
    assert_eq!(report["usage"][0]["key_version"], 2);
    for file in files(env.path()) {
        let bytes = std::fs::read(&file).expect("reads");
        assert!(
            !contains(&bytes, &old),
            "{} still holds the old ciphertext",
            file.display()
        );
    }
}

#[test]
fn an_echoed_key_in_a_provider_error_is_redacted_for_the_guest_and_logs() {
    let dev = DevProvider::start();
    let env = Env::with_log_level("trace");
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let body = json!({"error": {"message": format!("Incorrect API key provided: {OPENAI_KEY}. Find yours at the dashboard."), "type": "invalid_request_error"}});
    dev.fault(json!({"status": 401, "body": body.to_string()}));
    let err = env.fails(&["run", "hello", "--input", "x"], "");
    assert!(
        err.contains("provider error 401: Incorrect API key provided: [redacted]"),
        "{err}"
    );
    assert!(!contains(&env.transcript.borrow(), OPENAI_KEY.as_bytes()));
    // A partial echo, as some providers print.
    let partial = format!(
        "key sk-proj-...{} is invalid",
        &OPENAI_KEY[OPENAI_KEY.len() - 12..]
    );
    dev.fault(json!({"status": 401, "body": json!({"error": {"message": partial}}).to_string()}));
    let err = env.fails(&["run", "hello", "--input", "x"], "");
    assert!(!err.contains(&OPENAI_KEY[OPENAI_KEY.len() - 12..]), "{err}");
}

#[test]
fn a_prompt_carrying_a_stored_key_is_refused_and_audited() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.ok_with_stdin(
        &["keys", "add", "ant", "--provider", "anthropic"],
        ANTHROPIC_KEY,
    );
    let input = format!("please remember this for me: {ANTHROPIC_KEY} thanks");
    let err = env.fails(&["run", "hello"], &input);
    assert!(
        err.contains("the request contains a stored API key"),
        "{err}"
    );
    assert_eq!(dev.requests().len(), 0, "nothing reached the provider");
    let refused: Vec<Value> = audit(&env)
        .into_iter()
        .filter(|a| a["action"] == "exfiltration.refused")
        .collect();
    assert_eq!(refused.len(), 1);
    let ant_id = serde_json::from_str::<Value>(&env.ok(&["keys", "list", "--json"]))
        .expect("JSON")
        .as_array()
        .expect("list")
        .iter()
        .find(|k| k["name"] == "ant")
        .expect("ant")["id"]
        .clone();
    assert_eq!(refused[0]["key_id"], ant_id);
    assert_eq!(refused[0]["actor"], "claw:hello");
    // Near misses are not refused.
    env.run_claw("hello", "c", &ANTHROPIC_KEY[..ANTHROPIC_KEY.len() - 1]);
}

#[test]
fn redirects_are_never_followed() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let elsewhere = format!("http://{}/v1/chat/completions", dev.addr);
    dev.fault(json!({"status": 307, "body": "", "location": elsewhere}));
    let err = env.fails(&["run", "hello", "--input", "x"], "");
    assert!(err.contains("provider error 307"), "{err}");
    assert_eq!(dev.requests().len(), 1, "the redirect was not followed");
}

#[test]
fn the_audit_log_records_key_changes_and_uses_without_payloads() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    env.run_claw("hello", "c", "a distinctive prompt 12345");
    env.ok_with_stdin(
        &["keys", "rotate", "openai-key"],
        "sk-proj-rotated-000000000000000000000",
    );
    env.ok(&["keys", "revoke", "openai-key"]);
    env.fails(&["run", "hello", "--input", "after"], "");
    let actions: Vec<(String, String, Option<i64>)> = audit(&env)
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap_or("").to_owned(),
                a["outcome"].as_str().unwrap_or("").to_owned(),
                a["key_version"].as_i64(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("key.added".into(), "ok".into(), Some(1)),
            ("key.used".into(), "ok".into(), Some(1)),
            ("key.rotated".into(), "ok".into(), Some(2)),
            ("key.revoked".into(), "ok".into(), Some(2)),
            ("key.used".into(), "refused_revoked".into(), Some(2)),
        ]
    );
    let text = env.ok(&["audit"]);
    assert!(!text.contains("distinctive prompt"));
    assert!(text.contains("key.revoked"));
    let err = env
        .db()
        .execute("DELETE FROM audit_records", [])
        .expect_err("append-only");
    assert!(err.to_string().contains("append-only"));
}

#[test]
fn no_key_byte_reaches_guest_memory() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "tool-agent", "gpt-4o-mini");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let svc = clawrun::service::Service::open(env.path()).expect("opens");
    let (report, memories) = rt
        .block_on(svc.run_and_dump_memory("tool-agent", "c", "What is 6*7?"))
        .expect("runs");
    assert!(
        report
            .output
            .result
            .as_ref()
            .expect("output")
            .contains("calculator = 42")
    );
    assert_eq!(report.usage.len(), 3);
    assert!(!memories.is_empty(), "the guest's memories were read");
    // The scan is not vacuous: the reply text the guest received is there.
    assert!(memories.iter().any(|m| contains(m, b"calculator = 42")));
    for memory in &memories {
        assert!(!contains(memory, OPENAI_KEY.as_bytes()));
        assert!(!contains(
            memory,
            &OPENAI_KEY.as_bytes()[OPENAI_KEY.len() - 16..]
        ));
    }
}

/// Many claws call in a loop against a slow provider; another process
/// revokes the key. No request with the key starts after the revoke
/// returned, the calls in flight are cut with the revoked error, and their
/// usage is recorded.
#[test]
fn revocation_from_another_process_stops_every_claw_at_once() {
    const CLAWS: usize = 6;
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "repeat", "gpt-4o-mini");
    // Every answer takes 300 ms, so calls are always in flight.
    dev.fault(json!({"delay_ms": 300, "times": 100000}));
    let runners: Vec<_> = (0..CLAWS)
        .map(|i| {
            env.command(&[
                "run",
                "repeat",
                "--conversation",
                &format!("load-{i}"),
                "--input",
                "1000 hello",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts")
        })
        .collect();
    // Wait until every claw has completed at least one call.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while dev.requests().len() < CLAWS * 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the claws never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let revoke = env
        .command(&["keys", "revoke", "openai-key"])
        .output()
        .expect("revokes");
    let returned_at = now_ms();
    assert!(revoke.status.success());

    for runner in runners {
        let out = runner.wait_with_output().expect("ends");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("the provider key assigned to this claw was revoked"),
            "{stderr}"
        );
    }
    let requests = dev.requests();
    let with_key: Vec<&Value> = requests
        .iter()
        .filter(|r| r["headers"]["authorization"] == format!("Bearer {OPENAI_KEY}"))
        .collect();
    assert_eq!(with_key.len(), requests.len());
    let late: Vec<u64> = with_key
        .iter()
        .filter_map(|r| r["received_at_ms"].as_u64())
        .filter(|&t| t > returned_at)
        .collect();
    assert!(
        late.is_empty(),
        "requests started after revoke returned at {returned_at}: {late:?}"
    );

    let cut: i64 = env
        .db()
        .query_row(
            "SELECT COUNT(*) FROM usage_records WHERE outcome = 'cancelled_revoked'",
            [],
            |r| r.get(0),
        )
        .expect("counts");
    // A claw is almost always waiting on the provider; on a loaded machine
    // one may be between two calls when the revoke lands, and its next call
    // is then refused before it is sent. Either way, every request that
    // reached the provider has exactly one record: answered, or cut.
    assert!(
        (1..=CLAWS).contains(&(cut as usize)),
        "{cut} calls were cut; at least one was in flight"
    );
    let recorded: i64 = env
        .db()
        .query_row(
            "SELECT COUNT(*) FROM usage_records WHERE outcome IN ('ok', 'cancelled_revoked')",
            [],
            |r| r.get(0),
        )
        .expect("counts");
    assert_eq!(
        recorded as usize,
        requests.len(),
        "every request that reached the provider is recorded once"
    );
    let estimated: i64 = env
        .db()
        .query_row(
            "SELECT MIN(input_tokens) FROM usage_records WHERE outcome = 'cancelled_revoked'",
            [],
            |r| r.get(0),
        )
        .expect("reads");
    assert!(estimated > 0, "a cut call is charged its estimated input");
}

#[test]
fn the_leak_guard_follows_a_rotated_key() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let rotated = "sk-proj-ROTATEDguard-99998888777766665555";
    env.ok_with_stdin(&["keys", "rotate", "openai-key"], rotated);
    let err = env.fails(&["run", "hello"], &format!("leak {rotated} now"));
    assert!(
        err.contains("the request contains a stored API key"),
        "{err}"
    );
    assert_eq!(dev.requests().len(), 0);
}

#[test]
fn concurrent_master_rotations_never_lose_the_keys() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    for round in 0..5 {
        let a = env
            .command(&["vault", "rotate-master"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let b = env
            .command(&["vault", "rotate-master"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let (a, b) = (
            a.wait_with_output().expect("ends"),
            b.wait_with_output().expect("ends"),
        );
        assert!(
            a.status.success() || b.status.success(),
            "round {round}: neither rotation succeeded"
        );
        env.run_claw("hello", "c", &format!("round {round}"));
    }
    let rotations = audit(&env)
        .iter()
        .filter(|a| a["action"] == "master.rotated")
        .count();
    assert!(rotations >= 5, "{rotations}");
}

#[test]
fn a_revocation_is_audited_even_when_waiting_for_calls_fails() {
    let env = Env::new();
    env.ok_with_stdin(&["keys", "add", "k", "--provider", "openai"], OPENAI_KEY);
    // A plain file where the lock directory should be: the wait fails.
    let _ = std::fs::remove_dir_all(env.path().join("locks"));
    std::fs::write(env.path().join("locks"), b"not a directory").expect("writes");
    let err = env.fails(&["keys", "revoke", "k"], "");
    assert!(err.contains("cannot take the key's lock file"), "{err}");
    let listed: Value = serde_json::from_str(&env.ok(&["keys", "list", "--json"])).expect("JSON");
    assert_eq!(
        listed[0]["state"], "revoked",
        "the revocation itself was committed"
    );
    assert_eq!(
        audit(&env)
            .iter()
            .filter(|a| a["action"] == "key.revoked")
            .count(),
        1
    );
}

#[test]
fn a_successful_reply_that_echoes_the_key_is_scrubbed() {
    let dev = DevProvider::start();
    let env = Env::new();
    env.wire(&dev, "openai", "hello", "gpt-4o-mini");
    let body = json!({
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": format!("your key is {OPENAI_KEY}")}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10, "note": OPENAI_KEY}
    });
    dev.fault(json!({"status": 200, "body": body.to_string()}));
    let report = env.run_claw("hello", "c", "hi");
    assert_eq!(report["output"], "your key is [redacted]");
    for file in files(env.path()) {
        let bytes = std::fs::read(&file).expect("reads");
        assert!(
            !contains(&bytes, OPENAI_KEY.as_bytes()),
            "{}",
            file.display()
        );
    }
}
