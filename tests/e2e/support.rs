//! Shared helpers: building the claws, a dev-provider process, a data
//! directory, and running the CLI.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// Keys used by the tests. Distinctive, so a scan for them cannot match
/// anything else.
pub const OPENAI_KEY: &str = "sk-proj-e2eTESTkey-7f3a9c1d5b2e8f4a6c0d9e1b3QxZa";
pub const ANTHROPIC_KEY: &str = "sk-ant-api03-e2eTESTkey-4c8e2a6f0b9d1c3e5a7b-Wq9P";
pub const GEMINI_KEY: &str = "AIzaSyE2eTESTkey-9b7d5f3a1c8e6b4d2f0aGm";
pub const COMPATIBLE_KEY: &str = "gsk_e2eTESTkey_5e1a9c3f7b2d8e4a6c0fCmp";

/// The test key of each provider kind.
pub fn key_for(provider: &str) -> &'static str {
    match provider {
        "openai" => OPENAI_KEY,
        "anthropic" => ANTHROPIC_KEY,
        "gemini" => GEMINI_KEY,
        _ => COMPATIBLE_KEY,
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Builds the example claws and the hostile ones (`tests/hostile`) once per
/// test process and returns the folder holding their `.wasm` files.
pub fn claws() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let target = root.join("claws/target");
        // Both workspaces build into one target directory, so they share
        // their compiled dependencies.
        for manifest in ["claws/Cargo.toml", "tests/hostile/Cargo.toml"] {
            let status = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--release",
                    "--target",
                    "wasm32-wasip2",
                    "--manifest-path",
                ])
                .arg(root.join(manifest))
                .arg("--target-dir")
                .arg(&target)
                .env_remove("CARGO_TARGET_DIR")
                .status()
                .expect("cargo runs");
            assert!(
                status.success(),
                "building {manifest} failed; is the wasm32-wasip2 target installed?"
            );
        }
        target.join("wasm32-wasip2/release")
    })
}

pub fn claw(name: &str) -> PathBuf {
    claws().join(format!("{}.wasm", name.replace('-', "_")))
}

/// A `clawrun dev-provider` process on an ephemeral loopback port.
pub struct DevProvider {
    child: Child,
    pub addr: String,
}

impl DevProvider {
    pub fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_clawrun"))
            .args(["dev-provider", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dev-provider starts");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("reads the banner");
        let addr = line
            .trim()
            .strip_prefix("dev-provider listening on http://")
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
            .to_owned();
        Self { child, addr }
    }

    pub fn base_url(&self, provider: &str) -> String {
        match provider {
            "openai" | "openai-compatible" => format!("http://{}/v1", self.addr),
            _ => format!("http://{}", self.addr),
        }
    }

    /// Every request the emulator received, oldest first.
    pub fn requests(&self) -> Vec<Value> {
        let body = http(&self.addr, "GET", "/_dev/requests", "");
        match serde_json::from_str(&body).expect("request log is JSON") {
            Value::Array(items) => items,
            other => panic!("unexpected log {other}"),
        }
    }

    /// Queues a fault for the next request(s).
    pub fn fault(&self, fault: Value) {
        http(&self.addr, "POST", "/_dev/faults", &fault.to_string());
    }
}

impl Drop for DevProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of a minimal HTTP/1.1 exchange.
pub fn http_status(addr: &str, method: &str, path: &str, body: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connects");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// A minimal HTTP/1.1 exchange, enough for the emulator's control routes.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connects to dev-provider");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 2"), "{method} {path}: {head}");
    body.to_owned()
}

/// A `clawrun serve` process.
pub struct Serve {
    pub child: Child,
    /// The API's address.
    pub addr: String,
    /// The metrics listener's address, when asked for.
    pub metrics: Option<String>,
}

impl Serve {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A data directory and the CLI run against it.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// Everything every command printed, for leak scans.
    pub transcript: std::cell::RefCell<Vec<u8>>,
    /// `CLAWRUN_LOG` for every command.
    pub log_level: &'static str,
}

impl Env {
    pub fn new() -> Self {
        Self::with_log_level("info")
    }

    /// An environment whose commands log at `level` (`trace` for leak scans:
    /// slower, since the compiler then logs too).
    pub fn with_log_level(log_level: &'static str) -> Self {
        let env = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            transcript: Default::default(),
            log_level,
        };
        env.ok(&["init"]);
        env
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_clawrun"));
        cmd.args(args)
            .env("CLAWRUN_DATA_DIR", self.path())
            .env("CLAWRUN_LOG", self.log_level)
            .env_remove("CLAWRUN_MASTER_KEY");
        cmd
    }

    pub fn run_with(&self, args: &[&str], stdin: &str, extra_env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("clawrun starts");
        // A command that fails before reading stdin closes it: that is
        // its business, not the test's.
        match child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
        {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writes stdin: {e}"),
            _ => {}
        }
        let out = child.wait_with_output().expect("clawrun ends");
        let mut t = self.transcript.borrow_mut();
        t.extend_from_slice(&out.stdout);
        t.extend_from_slice(&out.stderr);
        out
    }

    pub fn run(&self, args: &[&str], stdin: &str) -> Output {
        self.run_with(args, stdin, &[])
    }

    /// Runs a command that must succeed and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with_stdin(args, "")
    }

    pub fn ok_with_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "clawrun {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| l.starts_with("error"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Runs a command that must fail and returns its error line(s).
    pub fn fails(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "clawrun {args:?} should have failed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts `count` runs of `claw` at once, each in its own conversation,
    /// and returns their outputs once all have ended.
    pub fn parallel_runs(&self, claw: &str, count: usize, input: &str) -> Vec<Output> {
        let runs: Vec<Child> = (0..count)
            .map(|i| {
                self.command(&[
                    "run",
                    claw,
                    "--conversation",
                    &format!("parallel-{i}"),
                    "--input",
                    input,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starts")
            })
            .collect();
        runs.into_iter()
            .map(|r| r.wait_with_output().expect("ends"))
            .collect()
    }

    /// Runs a claw with `--json` and returns the parsed report.
    pub fn run_claw(&self, claw: &str, conversation: &str, input: &str) -> Value {
        let out = self.ok(&[
            "run",
            claw,
            "--conversation",
            conversation,
            "--input",
            input,
            "--json",
        ]);
        serde_json::from_str(&out).expect("run --json prints JSON")
    }

    /// Adds a key for `provider` pointing at `dev`, deploys `claw` and
    /// assigns it that key and `model`.
    pub fn wire(&self, dev: &DevProvider, provider: &str, claw_name: &str, model: &str) {
        self.wire_with(dev, provider, claw_name, model, &[]);
    }

    /// [`Env::wire`] with more `keys add` flags.
    pub fn wire_with(
        &self,
        dev: &DevProvider,
        provider: &str,
        claw_name: &str,
        model: &str,
        flags: &[&str],
    ) {
        let key = key_for(provider);
        let key_name = format!("{provider}-key");
        if !self.ok(&["keys", "list"]).contains(&key_name) {
            let base_url = dev.base_url(provider);
            let mut args = vec![
                "keys",
                "add",
                &key_name,
                "--provider",
                provider,
                "--base-url",
                &base_url,
            ];
            args.extend_from_slice(flags);
            self.ok_with_stdin(&args, &format!("{key}\n"));
        }
        let file = claw(claw_name);
        self.ok(&[
            "claws",
            "deploy",
            file.to_str().expect("utf-8 path"),
            "--name",
            claw_name,
        ]);
        self.ok(&[
            "claws", "assign", claw_name, "--key", &key_name, "--model", model,
        ]);
    }

    /// Starts `clawrun serve` on an ephemeral loopback port with `extra`
    /// arguments, and reads the addresses it prints.
    pub fn serve(&self, extra: &[&str]) -> Serve {
        self.serve_with(extra, &[])
    }

    /// As [`Env::serve`], with `extra_env` set for the server.
    pub fn serve_with(&self, extra: &[&str], extra_env: &[(&str, &str)]) -> Serve {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = self
            .command(&args)
            .envs(extra_env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("banner");
        let addr = line
            .trim()
            .strip_prefix("clawrun serving on http://")
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
            .to_owned();
        let metrics = extra.contains(&"--metrics-listen").then(|| {
            let mut line = String::new();
            out.read_line(&mut line).expect("metrics banner");
            line.trim()
                .strip_prefix("metrics on http://")
                .and_then(|l| l.strip_suffix("/metrics"))
                .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
                .to_owned()
        });
        Serve {
            child,
            addr,
            metrics,
        }
    }

    /// Every usage record, oldest first, as JSON objects with the columns
    /// tests look at.
    pub fn usage_records(&self) -> Vec<Value> {
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT outcome, source, input_tokens, output_tokens, cache_read_tokens, \
                 cache_write_tokens, reasoning_tokens, provider, raw_usage FROM usage_records ORDER BY id",
            )
            .expect("prepares");
        stmt.query_map([], |r| {
            Ok(serde_json::json!({
                "outcome": r.get::<_, String>(0)?,
                "source": r.get::<_, String>(1)?,
                "input_tokens": r.get::<_, i64>(2)?,
                "output_tokens": r.get::<_, i64>(3)?,
                "cache_read_tokens": r.get::<_, i64>(4)?,
                "cache_write_tokens": r.get::<_, i64>(5)?,
                "reasoning_tokens": r.get::<_, i64>(6)?,
                "provider": r.get::<_, String>(7)?,
                "raw_usage": r.get::<_, Option<String>>(8)?,
            }))
        })
        .expect("queries")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    /// A read-only connection to the database, as an operator with file
    /// access would open it.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.path().join("clawrun.db")).expect("opens the database")
    }
}
