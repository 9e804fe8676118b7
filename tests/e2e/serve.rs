//! `clawrun serve` as a process: organisations and tokens from the CLI, the
//! CLI's remote mode against it, and shutdown on SIGTERM.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{DevProvider, Env, OPENAI_KEY, Serve, claw};

/// A served host with an organisation `acme` and its token.
struct Remote {
    env: Env,
    serve: Serve,
    token: String,
}

impl Remote {
    fn start(grace: &str) -> Self {
        Self::start_with(grace, &[])
    }

    /// As [`Remote::start`], with `extra_env` set for the server.
    fn start_with(grace: &str, extra_env: &[(&str, &str)]) -> Self {
        let env = Env::new();
        let created = env.ok(&["orgs", "create", "acme"]);
        let token = created
            .lines()
            .last()
            .expect("token line")
            .trim()
            .to_owned();
        assert!(token.starts_with("clawrun_tok_"), "{created}");
        let serve = env.serve_with(&["--grace", grace], extra_env);
        Self { env, serve, token }
    }

    /// The CLI against the served host, as acme.
    fn cli(&self, args: &[&str], stdin: &str) -> Output {
        let url = self.serve.url();
        let mut all = vec!["--server", url.as_str()];
        all.extend_from_slice(args);
        self.env
            .run_with(&all, stdin, &[("CLAWRUN_TOKEN", &self.token)])
    }

    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "clawrun --server {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args, "")).expect("JSON")
    }

    fn wire(&self, dev: &DevProvider) {
        self.ok(
            &[
                "keys",
                "add",
                "k",
                "--provider",
                "openai",
                "--base-url",
                &dev.base_url("openai"),
            ],
            &format!("{OPENAI_KEY}\n"),
        );
        let file = claw("hello");
        self.ok(
            &[
                "claws",
                "deploy",
                file.to_str().expect("utf-8"),
                "--name",
                "hello",
            ],
            "",
        );
        self.ok(
            &[
                "claws",
                "assign",
                "hello",
                "--key",
                "k",
                "--model",
                "gpt-4o-mini",
            ],
            "",
        );
    }
}

#[test]
fn the_cli_manages_an_organisation_on_a_remote_host() {
    let dev = DevProvider::start();
    let remote = Remote::start("5s");
    remote.wire(&dev);

    let run = remote.json(&[
        "run",
        "hello",
        "--input",
        "remote",
        "--conversation",
        "r1",
        "--json",
    ]);
    assert!(
        run["output"].as_str().is_some_and(|o| o.contains("remote")),
        "{run}"
    );
    assert_eq!(run["usage"].as_array().map(Vec::len), Some(1));
    let usage = remote.json(&["usage", "--by", "conversation", "--json"]);
    assert_eq!(usage[0]["group"], "r1");
    assert_eq!(usage[0]["calls"], 1);

    // Budgets and limits through the API.
    let added = remote.ok(
        &[
            "budgets", "set", "--scope", "claw", "--claw", "hello", "--usd", "2.5", "--per",
            "month",
        ],
        "",
    );
    assert!(added.contains("$2.500000"), "{added}");
    let budgets = remote.json(&["budgets", "list", "--json"]);
    let id = budgets[0]["id"].as_i64().expect("id").to_string();
    remote.ok(&["budgets", "remove", &id], "");
    assert_eq!(remote.json(&["budgets", "list", "--json"]), json!([]));
    remote.ok(&["limits", "set", "--claw", "hello", "--rpm", "7"], "");
    assert_eq!(remote.json(&["limits", "list", "--json"])[0]["rpm"], 7);
    remote.ok(&["limits", "remove", "--claw", "hello"], "");

    // Rotation and revocation, then the audit log shows the token acting.
    remote.ok(&["keys", "rotate", "k"], &format!("{OPENAI_KEY}-2\n"));
    remote.ok(&["keys", "revoke", "k"], "");
    let keys = remote.json(&["keys", "list", "--json"]);
    assert_eq!(keys[0]["state"], "revoked");
    assert_eq!(keys[0]["version"], 2);
    let audit = remote.json(&["audit", "--json"]);
    let token_id = &remote.token["clawrun_".len().."clawrun_".len() + 20];
    assert!(
        audit
            .as_array()
            .expect("records")
            .iter()
            .any(|r| r["action"] == "key.revoked" && r["actor"] == format!("token:{token_id}")),
        "{audit}"
    );

    // Everything landed in acme, not in the local default organisation.
    assert!(
        remote
            .env
            .ok(&["--org", "acme", "keys", "list"])
            .contains("revoked")
    );
    assert!(!remote.env.ok(&["keys", "list"]).contains(" k "));

    // A second token, listed, then revoked: it stops working at once.
    let second = remote.ok(&["tokens", "create", "--name", "ci"], "");
    let second = second.trim().to_owned();
    let listed = remote.ok(&["tokens", "list"], "");
    assert!(
        listed.contains("ci") && !listed.contains(&second),
        "{listed}"
    );
    let second_id = &second["clawrun_".len().."clawrun_".len() + 20];
    let url = remote.serve.url();
    let with_second = |args: &[&str]| {
        let mut all = vec!["--server", url.as_str()];
        all.extend_from_slice(args);
        remote.env.run_with(&all, "", &[("CLAWRUN_TOKEN", &second)])
    };
    assert!(with_second(&["claws", "list"]).status.success());
    remote.ok(&["tokens", "revoke", second_id], "");
    let refused = with_second(&["claws", "list"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refused the token in CLAWRUN_TOKEN"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Without a token, the CLI says where to get one.
    let out = remote
        .env
        .run(&["--server", url.as_str(), "claws", "list"], "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("CLAWRUN_TOKEN"));
    // Operator commands stay local.
    let out = remote.cli(&["orgs", "create", "x"], "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("local data directory only"));

    remote.ok(&["claws", "delete", "hello"], "");
    assert_eq!(remote.json(&["claws", "list", "--json"]), json!([]));

    // The key crossed the CLI, the API and the server's log: none kept it.
    let transcript = remote.env.transcript.borrow();
    let text = String::from_utf8_lossy(&transcript);
    assert!(!text.contains(OPENAI_KEY), "a key reached the CLI's output");
}

/// Past `CLAWRUN_MAX_CALLS_IN_FLIGHT`, a call waits for a turn instead of
/// failing (each call in flight holds a lock file and a connection), and
/// runs once one ends.
#[test]
fn calls_past_the_in_flight_limit_wait_their_turn() {
    let dev = DevProvider::start();
    let remote = Remote::start_with("60s", &[("CLAWRUN_MAX_CALLS_IN_FLIGHT", "1")]);
    remote.wire(&dev);
    dev.fault(json!({"delay_ms": 1500, "times": 1}));
    let first = start_run(&remote);
    wait_for_request(&dev);
    let second = start_run(&remote);
    // The second run has started and called well before the first reply
    // comes back; its request must not reach the provider meanwhile.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        dev.requests().len(),
        1,
        "a second call was sent past the limit"
    );
    for client in [first, second] {
        let out = client.wait_with_output().expect("client ends");
        assert!(
            out.status.success(),
            "a run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(dev.requests().len(), 2);
    let outcomes = outcomes(&remote.env);
    assert_eq!(outcomes, ["ok", "ok"]);
}

/// A limit that is not a positive whole number stops `serve` with an error
/// naming the variable.
#[test]
fn a_bad_in_flight_limit_is_refused_by_name() {
    let env = Env::new();
    env.ok(&["orgs", "create", "acme"]);
    let out = env
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .env("CLAWRUN_MAX_CALLS_IN_FLIGHT", "lots")
        .output()
        .expect("serve runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CLAWRUN_MAX_CALLS_IN_FLIGHT"), "{stderr}");
}

/// SIGTERM stops new connections and lets a running claw finish: its answer
/// reaches the client and its usage is recorded.
#[test]
fn sigterm_lets_a_running_claw_finish() {
    let dev = DevProvider::start();
    let remote = Remote::start("60s");
    remote.wire(&dev);
    dev.fault(json!({"delay_ms": 1500}));
    let client = start_run(&remote);
    wait_for_request(&dev);
    terminate(&remote.serve);
    let out = client.wait_with_output().expect("client ends");
    assert!(
        out.status.success(),
        "the run was cut: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut serve = remote.serve;
    let status = wait_exit(&mut serve.child, Duration::from_secs(30));
    assert!(status.success());
    let outcomes = outcomes(&remote.env);
    assert_eq!(outcomes, ["ok"]);
}

/// Past the grace period, a running claw is cancelled and its call is
/// recorded with its estimated input, outcome `cancelled`.
#[test]
fn sigterm_past_the_grace_period_cancels_and_records() {
    let dev = DevProvider::start();
    let remote = Remote::start("1s");
    remote.wire(&dev);
    dev.fault(json!({"delay_ms": 60000}));
    let client = start_run(&remote);
    wait_for_request(&dev);
    terminate(&remote.serve);
    let mut serve = remote.serve;
    let started = Instant::now();
    let status = wait_exit(&mut serve.child, Duration::from_secs(30));
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(30));
    let out = client.wait_with_output().expect("client ends");
    assert!(!out.status.success());
    let (outcome, source, input): (String, String, i64) = remote
        .env
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
}

/// A claw spinning in guest code is cancelled too: guests yield to the host
/// at every epoch tick, so dropping the run stops it.
#[test]
fn sigterm_past_the_grace_period_stops_a_spinning_claw() {
    let dev = DevProvider::start();
    let remote = Remote::start("1s");
    remote.wire(&dev);
    let file = claw("hostile-loop");
    remote.ok(
        &[
            "claws",
            "deploy",
            file.to_str().expect("utf-8"),
            "--name",
            "spin",
        ],
        "",
    );
    // Neither its fuel nor its deadline would stop it for an hour.
    remote.ok(
        &[
            "claws",
            "limits",
            "spin",
            "--fuel",
            "1000000000000000",
            "--deadline-ms",
            "3600000",
        ],
        "",
    );
    let client = remote
        .env
        .command(&[
            "--server",
            &remote.serve.url(),
            "run",
            "spin",
            "--input",
            "spin",
        ])
        .env("CLAWRUN_TOKEN", &remote.token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("client starts");
    std::thread::sleep(Duration::from_millis(1500));
    terminate(&remote.serve);
    let mut serve = remote.serve;
    let status = wait_exit(&mut serve.child, Duration::from_secs(60));
    assert!(status.success());
    let out = client.wait_with_output().expect("client ends");
    assert!(!out.status.success());
}

#[test]
fn org_with_server_is_refused() {
    let remote = Remote::start("1s");
    let out = remote.cli(&["--org", "other", "keys", "list"], "");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the token in CLAWRUN_TOKEN decides"),
        "{stderr}"
    );
}

/// The outcome of every usage record, oldest first.
fn outcomes(env: &Env) -> Vec<String> {
    env.db()
        .prepare("SELECT outcome FROM usage_records ORDER BY id")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn start_run(remote: &Remote) -> std::process::Child {
    remote
        .env
        .command(&[
            "--server",
            &remote.serve.url(),
            "run",
            "hello",
            "--input",
            "slow",
        ])
        .env("CLAWRUN_TOKEN", &remote.token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client starts")
}

fn wait_for_request(dev: &DevProvider) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while dev.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the run never reached the provider"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn terminate(serve: &Serve) {
    let status = Command::new("kill")
        .args(["-TERM", &serve.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            return status;
        }
        assert!(Instant::now() < deadline, "serve did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}
