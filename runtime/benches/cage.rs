//! Criterion benchmarks of the host's own costs: instantiating a claw in a
//! fresh store, a whole `llm-call` (claw run with one call) against
//! `dev-provider` on loopback with the ledger on disk, and what fuel metering
//! costs guest code (the same CPU-bound loop with and without it).
//!
//! Run with `cargo bench -p clawrun --bench cage`. The claws must be built
//! first (`cargo build --release --target wasm32-wasip2 --manifest-path
//! claws/Cargo.toml`).

use std::path::PathBuf;
use std::sync::Arc;

use clawrun::cage::{Cage, RunContext};
use clawrun::db::SqliteDb;
use clawrun::providers::ProviderKind;
use clawrun::service::llm::LlmService;
use clawrun::service::{self, Service};
use clawrun::vault::MasterKey;
use clawrun::vault::ProviderSecret;
use criterion::{Criterion, criterion_group, criterion_main};

fn claw(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../claws/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the claws first (see the README)",
            path.display()
        )
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn cage_instantiate(c: &mut Criterion) {
    let rt = runtime();
    let cage = Cage::new().expect("engine");
    let bytes = claw("hello");
    let pre = cage.prepare("hello", &bytes).expect("compiles");
    let db = Arc::new(SqliteDb::in_memory().expect("db"));
    let http = clawrun::providers::http_client().expect("client");
    let llm = Arc::new(LlmService::new(
        db,
        MasterKey::generate(),
        http,
        None,
        clawrun::metering::PriceTable::shipped(),
    ));
    let run = RunContext {
        org_id: "org".into(),
        claw_id: "claw".into(),
        claw_name: "hello".into(),
        run_id: "run".into(),
        conversation_id: "conv".into(),
    };
    c.bench_function("cage_instantiate_hello", |b| {
        b.to_async(&rt).iter(|| async {
            cage.instantiate(&pre, run.clone(), llm.clone())
                .await
                .expect("instantiates");
        });
    });
}

fn llm_call(c: &mut Criterion) {
    let rt = runtime();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("binds");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(clawrun::providers::dev::serve(listener));

    let dir = tempfile::tempdir().expect("tempdir");
    service::init(dir.path()).expect("init");
    let svc = Arc::new(Service::open(dir.path()).expect("opens"));
    svc.keys_add(
        "bench",
        ProviderKind::OpenAi,
        Some(&format!("http://{addr}/v1")),
        ProviderSecret::new("sk-bench-0000000000000000000000".into()),
    )
    .expect("adds key");
    svc.claws_deploy("hello", &claw("hello")).expect("deploys");
    svc.claws_assign("hello", "bench", "gpt-4o-mini")
        .expect("assigns");

    c.bench_function("run_hello_one_llm_call_openai", |b| {
        b.to_async(&rt).iter(|| {
            let svc = svc.clone();
            async move {
                let report = svc.run("hello", "bench", "hi").await.expect("runs");
                assert_eq!(report.usage.len(), 1);
            }
        });
    });
}

/// A loop that loads, adds and stores over 1 MiB of linear memory: the kind
/// of code fuel metering slows most (short basic blocks).
const BUSY_LOOP: &str = r#"(module
  (memory 16)
  (func (export "work") (param $n i32) (result i32)
    (local $i i32) (local $acc i32) (local $at i32)
    (loop $next
      (local.set $at (i32.and (i32.shl (local.get $i) (i32.const 2)) (i32.const 0xFFFFC)))
      (local.set $acc (i32.add (local.get $acc) (i32.load (local.get $at))))
      (i32.store (local.get $at) (i32.xor (local.get $acc) (local.get $i)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (local.get $n))))
    (local.get $acc)))"#;

fn fuel_cost(c: &mut Criterion) {
    use wasmtime::{Config, Engine, Instance, Module, Store};
    let mut group = c.benchmark_group("busy_loop_1m_iterations");
    for fuel in [false, true] {
        let mut config = Config::new();
        // As the cage's engine, apart from the setting measured.
        config.epoch_interruption(true).consume_fuel(fuel);
        let engine = Engine::new(&config).expect("engine");
        let module = Module::new(&engine, BUSY_LOOP).expect("compiles");
        let mut store = Store::new(&engine, ());
        store.set_epoch_deadline(u64::MAX);
        let instance = Instance::new(&mut store, &module, &[]).expect("instantiates");
        let work = instance
            .get_typed_func::<i32, i32>(&mut store, "work")
            .expect("export");
        let name = if fuel { "fuel_on" } else { "fuel_off" };
        group.bench_function(name, |b| {
            b.iter(|| {
                if fuel {
                    store.set_fuel(u64::MAX).expect("fuel");
                }
                work.call(&mut store, 1_000_000).expect("runs")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, cage_instantiate, llm_call, fuel_cost);
criterion_main!(benches);
