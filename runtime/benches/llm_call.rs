//! The cost of a caged, metered `llm-call`, against `clawrun dev-provider`
//! on loopback, with metering, the revocation fence and check, the leak
//! guard, a budget and a rate limit all on (set high enough never to
//! refuse). Usage records are committed behind their calls and each phase
//! ends only once they are on disk, as a run's result waits for its
//! records before it leaves the host.
//!
//! Run with `scripts/bench.sh` (which builds the claws, then runs `cargo
//! bench -p clawrun --bench llm_call`); BENCHMARKS.md explains the method
//! and gives the figures. It prints:
//!
//! - cage start: a fresh store and the `hello` claw instantiated from its
//!   `InstancePre`, its export reached, p50 and p99;
//! - at open-loop rates (requests scheduled on a fixed clock, latency
//!   counted from the scheduled time): one `llm-call` through the host
//!   (`LlmService::call`, the host side of the WIT import), one whole run
//!   of `hello` in a cage (cage start, one `llm-call`, output returned), and
//!   the same request sent by a plain reqwest client straight to
//!   dev-provider; the host's overhead is its total minus the time it
//!   spent in the provider exchange (timed inside the host, see
//!   `clawrun::service::provider_wait`);
//! - the highest sustained rate (each rate with its own direct baseline),
//!   and the ledger's records and the vault's decryptions per second at it;
//! - resident memory with 1,000 cages alive, each waiting on a slow reply.
//!
//! A whole run counts until its records are on disk, as `clawrun run` and
//! the API return it. `CLAWRUN_BENCH_PROFILE=RATE` runs only the host's
//! `llm-call` at RATE per second for 10 s, for `perf record` (BENCHMARKS.md).
//!
//! Run by `cargo test` (without `--bench`) it does a few of each, to check
//! that it still works; it asserts no timing.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawrun::cage::{Cage, CageLimits, RunContext};
use clawrun::metering::budgets::{BudgetPeriod, BudgetScope, BudgetUnit};
use clawrun::providers::{Message, ProviderKind, Role};
use clawrun::service::llm::GuestRequest;
use clawrun::service::{self, Service, waits};
use clawrun::vault::ProviderSecret;

const SYSTEM: &str = "You are a friendly assistant. Answer in one short paragraph.";
const INPUT: &str = "Say hello to the benchmark, and tell it how fast the host is today.";
const MAX_TOKENS: u32 = 256;

fn claw(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../claws/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the claws first (scripts/bench.sh does)",
            path.display()
        )
    })
}

/// A `clawrun dev-provider` child process: its CPU and memory are not the
/// host's, as with a real provider.
struct DevProvider {
    child: Child,
    addr: String,
}

impl DevProvider {
    fn start() -> Self {
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
}

impl Drop for DevProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sorted durations, for percentiles.
struct Dist(Vec<Duration>);

impl Dist {
    fn new(mut v: Vec<Duration>) -> Self {
        v.sort();
        Self(v)
    }

    fn pct(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.0.len() as f64 * p).ceil() as usize).clamp(1, self.0.len()) - 1;
        self.0[i]
    }

    fn show(&self) -> String {
        format!(
            "p50 {:>9} p99 {:>9}",
            us(self.pct(0.50)),
            us(self.pct(0.99))
        )
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// One request's figures: from its scheduled time to its end, and the part
/// spent waiting on the provider (zero for the direct client, whose whole
/// time is the provider's).
#[derive(Clone, Copy)]
struct Sample {
    total: Duration,
    wait: Duration,
    ledger: Duration,
    admission: Duration,
    late: Duration,
}

/// What a phase measured.
struct Phase {
    offered: f64,
    done_per_s: f64,
    total: Dist,
    overhead: Dist,
    wait: Dist,
    ledger: Dist,
    admission: Dist,
    /// From the last call's end until every record of the phase was on
    /// disk.
    sync_tail: Duration,
    /// Records made durable per second over the phase and its tail.
    durable_per_s: f64,
    late: Dist,
    errors: usize,
    elapsed: Duration,
}

/// Schedules `count` requests at `rate` per second on a fixed clock,
/// whatever the completions do, from a thread of its own; each request's
/// latency counts from its scheduled time.
fn open_loop<F, Fut>(rt: &tokio::runtime::Runtime, rate: f64, count: usize, request: F) -> Phase
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let request = Arc::new(request);
    let samples = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let errors = Arc::new(AtomicUsize::new(0));
    let pending = Arc::new(AtomicUsize::new(count));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(20);
    for i in 0..count {
        let at = start + interval * i as u32;
        // Sleep to just short of the slot, then spin: the kernel's timer
        // slack alone makes a sleeping thread ~60 µs late.
        let now = Instant::now();
        if at > now + Duration::from_micros(100) {
            std::thread::sleep(at - now - Duration::from_micros(80));
        }
        while Instant::now() < at {
            std::hint::spin_loop();
        }
        let late = Instant::now() - at;
        let (request, samples, errors, pending) = (
            request.clone(),
            samples.clone(),
            errors.clone(),
            pending.clone(),
        );
        rt.spawn(async move {
            let (result, waits) = waits::measure(request()).await;
            let total = at.elapsed();
            if let Err(e) = result
                && errors.fetch_add(1, Ordering::Relaxed) == 0
            {
                eprintln!("first error: {e}");
            }
            lock(&samples).push(Sample {
                total,
                wait: waits.provider,
                ledger: waits.ledger,
                admission: waits.admission,
                late,
            });
            pending.fetch_sub(1, Ordering::Release);
        });
    }
    while pending.load(Ordering::Acquire) > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = start.elapsed();
    let samples = std::mem::take(&mut *lock(&samples));
    Phase {
        offered: rate,
        done_per_s: count as f64 / elapsed.as_secs_f64(),
        total: Dist::new(samples.iter().map(|s| s.total).collect()),
        overhead: Dist::new(
            samples
                .iter()
                .map(|s| s.total.saturating_sub(s.wait))
                .collect(),
        ),
        wait: Dist::new(samples.iter().map(|s| s.wait).collect()),
        ledger: Dist::new(samples.iter().map(|s| s.ledger).collect()),
        admission: Dist::new(samples.iter().map(|s| s.admission).collect()),
        sync_tail: Duration::ZERO,
        durable_per_s: 0.0,
        late: Dist::new(samples.iter().map(|s| s.late).collect()),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn guest_request() -> GuestRequest {
    let message = |role, text: &str| Message {
        role,
        content: text.into(),
        tool_calls: vec![],
        tool_call_id: None,
    };
    GuestRequest {
        messages: vec![message(Role::System, SYSTEM), message(Role::User, INPUT)],
        tools: vec![],
        max_tokens: Some(MAX_TOKENS),
        temperature: None,
    }
}

/// The body the OpenAI adapter sends for [`guest_request`].
fn direct_body(model: &str) -> String {
    serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": INPUT},
        ],
        "max_completion_tokens": MAX_TOKENS,
    })
    .to_string()
}

struct Bench {
    rt: tokio::runtime::Runtime,
    svc: Service,
    cage: Arc<Cage>,
    pre: clawrun::cage::ClawPre<clawrun::cage::CageState>,
    run: RunContext,
    provider: DevProvider,
    /// The baseline's client, built as the host builds its own and kept
    /// for the whole bench as the host keeps its own: both reuse warm
    /// connections.
    direct_http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn setup() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let provider = DevProvider::start();
        let dir = tempfile::tempdir().expect("tempdir");
        service::init(dir.path()).expect("init");
        let svc = Service::open(dir.path()).expect("opens");
        svc.keys_add(
            "bench",
            ProviderKind::OpenAi,
            Some(&format!("http://{}/v1", provider.addr)),
            ProviderSecret::new("sk-bench-0000000000000000000000".into()),
        )
        .expect("adds key");
        let bytes = claw("hello");
        let row = svc.claws_deploy("hello", &bytes).expect("deploys");
        svc.claws_assign("hello", "bench", "gpt-4o-mini")
            .expect("assigns");
        // On, and never in the way: every call is checked against them.
        svc.budgets_add(
            BudgetScope::Claw,
            Some("hello"),
            BudgetUnit::Tokens,
            BudgetPeriod::Month,
            1_000_000_000_000,
        )
        .expect("budget");
        svc.limits_set(None, Some("bench"), Some(100_000_000), None)
            .expect("rate limit");
        let cage = Arc::new(Cage::new().expect("engine"));
        let pre = cage.prepare(&row.digest, &bytes).expect("compiles");
        let run = RunContext {
            org_id: svc.org().id.clone(),
            claw_id: row.id.clone(),
            claw_name: row.name.clone(),
            run_id: "run_bench".into(),
            conversation_id: "conv_bench".into(),
        };
        Self {
            rt,
            svc,
            cage,
            pre,
            run,
            provider,
            direct_http: clawrun::providers::http_client().expect("HTTP client"),
            _dir: dir,
        }
    }

    fn cage_start(&self, iterations: usize) -> Dist {
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let started = Instant::now();
            self.rt
                .block_on(self.cage.instantiate(
                    &self.pre,
                    self.run.clone(),
                    self.svc.llm().clone(),
                ))
                .expect("instantiates");
            times.push(started.elapsed());
        }
        Dist::new(times)
    }

    /// Waits for the phase's records to be on disk and notes how long
    /// that took after its last call.
    fn synced(&self, mut phase: Phase) -> Phase {
        let started = Instant::now();
        self.rt
            .block_on(self.svc.sync_ledger())
            .expect("records reach the disk");
        phase.sync_tail = started.elapsed();
        let calls = phase.done_per_s * phase.elapsed.as_secs_f64();
        phase.durable_per_s = calls / (phase.elapsed + phase.sync_tail).as_secs_f64();
        phase
    }

    fn host_call(&self, rate: f64, count: usize) -> Phase {
        let (llm, run) = (self.svc.llm().clone(), self.run.clone());
        let phase = open_loop(&self.rt, rate, count, move || {
            let (llm, run) = (llm.clone(), run.clone());
            async move {
                llm.call(&run, None, guest_request())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        });
        self.synced(phase)
    }

    fn cage_run(&self, rate: f64, count: usize) -> Phase {
        let (cage, pre, llm, run) = (
            self.cage.clone(),
            self.pre.clone(),
            self.svc.llm().clone(),
            self.run.clone(),
        );
        let phase = open_loop(&self.rt, rate, count, move || {
            let (cage, pre, llm, run) = (cage.clone(), pre.clone(), llm.clone(), run.clone());
            async move {
                let out = cage
                    .run(&pre, run, llm.clone(), INPUT, &CageLimits::default())
                    .await
                    .map_err(|e| e.to_string())?;
                // As `clawrun run` and the API do: the result leaves the
                // host once the run's usage record is on disk.
                llm.sync_ledger().await.map_err(|e| e.to_string())?;
                out.result.map(drop)
            }
        });
        self.synced(phase)
    }

    fn direct(&self, rate: f64, count: usize) -> Phase {
        let http = self.direct_http.clone();
        let url = format!("http://{}/v1/chat/completions", self.provider.addr);
        let body = direct_body("gpt-4o-mini");
        open_loop(&self.rt, rate, count, move || {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            async move {
                let reply = http
                    .post(url)
                    .header("authorization", "Bearer sk-bench-0000000000000000000000")
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !reply.status().is_success() {
                    return Err(format!("status {}", reply.status()));
                }
                let bytes = reply.bytes().await.map_err(|e| e.to_string())?;
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        })
    }

    fn dev(&self, method: reqwest::Method, path: &str, body: &str) {
        let url = format!("http://{}{path}", self.provider.addr);
        let body = body.to_owned();
        self.rt
            .block_on(async move {
                reqwest::Client::new()
                    .request(method, url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
            })
            .expect("dev-provider control request");
    }

    /// Resident memory with `cages` runs of `hello` alive, each waiting on
    /// a reply dev-provider holds back.
    fn waiting_cages(&self, cages: usize, hold: Duration) -> (u64, u64) {
        // Drop dev-provider's request log, which is its memory, not ours.
        self.dev(reqwest::Method::DELETE, "/_dev/requests", "");
        let before = vm_rss_kib();
        let fault = serde_json::json!({"delay_ms": hold.as_millis() as u64, "times": cages});
        self.dev(reqwest::Method::POST, "/_dev/faults", &fault.to_string());
        let handles: Vec<_> = (0..cages)
            .map(|_| {
                let (cage, pre, llm, run) = (
                    self.cage.clone(),
                    self.pre.clone(),
                    self.svc.llm().clone(),
                    self.run.clone(),
                );
                self.rt.spawn(async move {
                    cage.run(&pre, run, llm, INPUT, &CageLimits::default())
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|o| o.result)
                })
            })
            .collect();
        // Measured half-way through the hold, when every cage has sent its
        // request and waits.
        std::thread::sleep(hold / 2);
        let during = vm_rss_kib();
        for h in handles {
            self.rt
                .block_on(h)
                .expect("run task")
                .expect("waiting cage runs");
        }
        (before, during)
    }
}

fn phase_line(name: &str, p: &Phase) {
    println!(
        "  {name:<18} offered {:>5.0}/s done {:>5.0}/s | total {} | overhead {} | provider wait p50 {} | dispatch late p50 {}{}",
        p.offered,
        p.done_per_s,
        p.total.show(),
        p.overhead.show(),
        us(p.wait.pct(0.5)),
        us(p.late.pct(0.5)),
        if p.errors > 0 {
            format!("  ERRORS {}", p.errors)
        } else {
            String::new()
        }
    );
    if p.admission.pct(0.99) > Duration::ZERO {
        println!(
            "  {:<18} of which: admission {} | records queued {} | all on disk {} after the last call ({:.0} records/s durable)",
            "",
            p.admission.show(),
            p.ledger.show(),
            us(p.sync_tail),
            p.durable_per_s,
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` runs the target without it.
    let quick = !std::env::args().any(|a| a == "--bench");
    let bench = Bench::setup();

    // `CLAWRUN_BENCH_PROFILE=RATE` runs only the host's `llm-call` at RATE
    // per second for 10 s, for a profiler to record (BENCHMARKS.md).
    if let Ok(rate) = std::env::var("CLAWRUN_BENCH_PROFILE") {
        let rate: f64 = rate
            .parse()
            .expect("CLAWRUN_BENCH_PROFILE is a rate per second");
        bench.host_call(rate, (rate * 2.0) as usize);
        let host = bench.host_call(rate, (rate * 10.0) as usize);
        phase_line("llm-call (host)", &host);
        return;
    }

    let starts = bench.cage_start(if quick { 20 } else { 20_000 });
    println!(
        "cage start (instantiate hello from InstancePre, fresh store): {}",
        starts.show()
    );

    // Warm the connection pool and SQLite's page cache.
    let warm = bench.host_call(200.0, if quick { 5 } else { 400 });
    assert_eq!(warm.errors, 0, "warm-up calls fail");
    let warm = bench.direct(200.0, if quick { 5 } else { 400 });
    assert_eq!(warm.errors, 0, "warm-up direct requests fail");
    let seconds = if quick { 0.05 } else { 5.0 };
    for rate in [100.0, 1_000.0] {
        let count = ((rate * seconds) as usize).max(5);
        println!("open loop at {rate}/s, {count} requests each:");
        let direct = bench.direct(rate, count);
        phase_line("direct (reqwest)", &direct);
        let host = bench.host_call(rate, count);
        phase_line("llm-call (host)", &host);
        let run = bench.cage_run(rate, count);
        phase_line("hello run (cage)", &run);
        println!(
            "  host/direct total p50 ratio {:.2}, hello run/direct {:.2}",
            host.total.pct(0.5).as_secs_f64() / direct.total.pct(0.5).as_secs_f64(),
            run.total.pct(0.5).as_secs_f64() / direct.total.pct(0.5).as_secs_f64(),
        );
        // Under overload a backlog can fill the cage pool; the full run
        // reports the errors, the quick one must have none.
        if quick {
            assert_eq!(host.errors + run.errors + direct.errors, 0, "calls fail");
        }
    }

    // The highest rate the host sustains: every call done, and its usage
    // record on disk, within the phase's time plus a tenth; p99 under
    // 100 ms; no errors.
    let rates: &[f64] = if quick {
        &[500.0]
    } else {
        &[
            2_000.0, 3_000.0, 4_000.0, 5_000.0, 6_000.0, 7_000.0, 8_000.0,
        ]
    };
    let mut best: Option<(Phase, Phase)> = None;
    for &rate in rates {
        let count = ((rate * if quick { 0.02 } else { 3.0 }) as usize).max(5);
        let host = bench.host_call(rate, count);
        phase_line("llm-call (host)", &host);
        let direct = bench.direct(rate, count);
        phase_line("direct (reqwest)", &direct);
        let kept_up = host.done_per_s >= rate * 0.9
            && host.durable_per_s >= rate * 0.9
            && host.total.pct(0.99) < Duration::from_millis(100)
            && host.errors == 0;
        if !kept_up && !quick {
            break;
        }
        best = Some((direct, host));
    }
    if let Some((direct, best)) = &best {
        println!("highest sustained rate {:.0} calls/s:", best.offered);
        phase_line("direct (reqwest)", direct);
        phase_line("llm-call (host)", best);
        // Each call writes one usage record (on disk by the phase's end)
        // and opens two sealed values (the data key, then the provider
        // key), so these are the ledger's and the vault's rates under
        // that load.
        println!(
            "  ledger {:.0} records/s durable; vault {:.0} decryptions/s ({:.0} keys opened/s)",
            best.durable_per_s,
            best.done_per_s * 2.0,
            best.done_per_s
        );
    }

    let cages = if quick { 8 } else { 1_000 };
    let hold = Duration::from_millis(if quick { 300 } else { 6_000 });
    let (before, during) = bench.waiting_cages(cages, hold);
    println!(
        "memory: {cages} cages waiting on a slow provider: VmRSS {:.1} MiB (before {:.1} MiB, {:.1} KiB per cage)",
        during as f64 / 1024.0,
        before as f64 / 1024.0,
        during.saturating_sub(before) as f64 / cages as f64
    );
}
