//! The ledger's sustained write rate from many concurrent writers, as a
//! busy host has: each writer waits for its record to be committed (as an
//! `llm-call` does), and each phase ends once the sync thread has put the
//! last record on disk.
//!
//! Run with `cargo bench -p clawrun --bench ledger`; it prints records per
//! second for 1, 8 and 64 concurrent writers. Run by `cargo test` (without
//! `--bench`) it writes a few records only, to check it still works.

use std::sync::Arc;
use std::time::Instant;

use clawrun::db::{AuditRecord, Db, SqliteDb, UsageRecord};

fn record(i: usize) -> (UsageRecord, AuditRecord) {
    let usage = UsageRecord {
        at_ms: i as i64,
        org_id: "org_bench".into(),
        claw_id: "claw_bench".into(),
        run_id: format!("run_{i}"),
        conversation_id: format!("conv_{}", i % 100),
        key_id: "key_bench".into(),
        key_version: 1,
        provider: "openai".into(),
        model_requested: "gpt-4o-mini".into(),
        model_returned: Some("gpt-4o-mini".into()),
        input_tokens: 1200,
        output_tokens: 300,
        cache_read_tokens: 1024,
        raw_usage: Some(r#"{"prompt_tokens":1200,"completion_tokens":300}"#.into()),
        source: "reported".into(),
        latency_ms: 12,
        outcome: "ok".into(),
        cost_micros: Some(257),
        price_version: Some("bench".into()),
        ..UsageRecord::default()
    };
    let audit = AuditRecord {
        at_ms: i as i64,
        org_id: Some("org_bench".into()),
        actor: "claw:bench".into(),
        action: "key.used".into(),
        key_id: Some("key_bench".into()),
        key_version: Some(1),
        claw_id: Some("claw_bench".into()),
        outcome: "ok".into(),
        subject: None,
    };
    (usage, audit)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test` runs the target without it.
    let quick = !std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(SqliteDb::open(dir.path()).expect("opens"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for writers in [1usize, 8, 64] {
        let per_writer = if quick { 5 } else { 20_000 / writers.min(20) };
        let started = Instant::now();
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for i in 0..per_writer {
                        let (usage, audit) = record(w * 1_000_000 + i);
                        db.record_call_blocking(usage, audit, None)
                            .expect("records");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer");
        }
        // Committed is not yet durable: the rate counts the sync thread
        // putting the last record on disk.
        runtime.block_on(db.sync_ledger()).expect("synced");
        let total = writers * per_writer;
        let rate = total as f64 / started.elapsed().as_secs_f64();
        println!("ledger: {writers:>2} concurrent writers, {total} records: {rate:>9.0} records/s");
    }
}
