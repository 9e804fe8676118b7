//! The SQLite backend's own tests: migrations, claws and keys, the ledger
//! writer and sync thread, admission across processes.

use super::*;
use crate::db::KeyState;

fn audit() -> AuditRecord {
    AuditRecord {
        at_ms: 1,
        actor: "test".into(),
        action: "key.test".into(),
        outcome: "ok".into(),
        ..AuditRecord::default()
    }
}

fn org(db: &SqliteDb) -> OrgRow {
    let org = OrgRow {
        id: "org_1".into(),
        name: "default".into(),
        wrapped_data_key: vec![1],
        created_at_ms: 1,
    };
    db.org_create(&org).expect("creates");
    org
}

fn key(org: &OrgRow, name: &str) -> KeyRow {
    KeyRow {
        id: format!("key_{name}"),
        org_id: org.id.clone(),
        name: name.into(),
        provider: "openai".into(),
        base_url: "https://api.openai.com/v1".into(),
        ciphertext: vec![9; 40],
        version: 1,
        state: KeyState::Active,
        fingerprint: "f".into(),
        hint: "sk-...abcd".into(),
        created_at_ms: 2,
        rotated_at_ms: None,
        revoked_at_ms: None,
        scan_len: 0,
        scan_hash: 0,
        api_path: None,
        auth_header: None,
        auth_scheme: None,
    }
}

/// Deploys the claw `hello` as `claw_1`, assigned to nothing.
fn deploy_claw(db: &SqliteDb, org: &OrgRow) {
    let claw = ClawRow {
        id: "claw_1".into(),
        org_id: org.id.clone(),
        name: "hello".into(),
        digest: "d".into(),
        size: 0,
        key_name: None,
        model: None,
        created_at_ms: 3,
        updated_at_ms: 3,
    };
    db.claw_deploy(&claw, b"wasm").expect("deploys");
}

#[test]
fn the_audit_log_refuses_updates_and_deletes() {
    let db = SqliteDb::in_memory().expect("opens");
    let record = AuditRecord {
        at_ms: 1,
        actor: "cli:test".into(),
        action: "key.added".into(),
        outcome: "ok".into(),
        ..AuditRecord::default()
    };
    db.audit_append(&record).expect("appends");
    let conn = db.conn();
    let err = conn
        .execute("UPDATE audit_records SET outcome = 'x'", [])
        .expect_err("update refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute("DELETE FROM audit_records", [])
        .expect_err("delete refused");
    assert!(err.to_string().contains("append-only"), "{err}");
    drop(conn);
    assert_eq!(db.audit_records(None).expect("reads"), vec![record]);
}

#[test]
fn migrations_are_idempotent_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = SqliteDb::open(dir.path()).expect("opens");
    org(&db);
    drop(db);
    let db = SqliteDb::open(dir.path()).expect("reopens");
    assert!(db.org_by_name("default").expect("reads").is_some());
}

#[test]
fn a_claw_deployed_before_its_component_moved_keeps_its_bytes_and_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // A database as clawrun left it before migration 0009.
        let mut conn = Connection::open(dir.path().join(DB_FILE)).expect("opens");
        let tx = conn.transaction().expect("begins");
        for sql in &MIGRATIONS[..8] {
            tx.execute_batch(sql).expect("migrates");
        }
        tx.pragma_update(None, "user_version", 8).expect("versions");
        tx.execute_batch(
            "INSERT INTO orgs (id, name, wrapped_data_key, created_at_ms)
                 VALUES ('org_1', 'default', x'01', 1);
             INSERT INTO claws (id, org_id, name, component, digest, created_at_ms, updated_at_ms)
                 VALUES ('claw_1', 'org_1', 'hello', x'0061736d01', 'd', 3, 3);",
        )
        .expect("inserts");
        tx.commit().expect("commits");
    }
    let db = SqliteDb::open(dir.path()).expect("migrates");
    assert_eq!(
        db.claw_component("claw_1").expect("reads"),
        b"\0asm\x01".to_vec()
    );
    let claw = db
        .claw_by_name("org_1", "hello")
        .expect("reads")
        .expect("kept");
    assert_eq!(claw.size, 5);
}

#[test]
fn a_claw_with_limits_can_be_deleted_and_its_limits_go_with_it() {
    let db = SqliteDb::in_memory().expect("opens");
    let org = org(&db);
    deploy_claw(&db, &org);
    let limits = LimitOverrides {
        fuel: Some(1_000_000),
        ..LimitOverrides::default()
    };
    db.claw_limits_set("claw_1", &limits).expect("sets");
    assert!(db.claw_delete(&org.id, "claw_1").expect("deletes"));
    assert_eq!(
        db.claw_limits("claw_1").expect("reads"),
        LimitOverrides::default()
    );
}

#[test]
fn a_redeploy_replaces_the_component_under_the_same_id_and_a_delete_removes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = SqliteDb::open(dir.path()).expect("opens");
    let org = org(&db);
    deploy_claw(&db, &org);
    let again = ClawRow {
        id: "claw_2".into(),
        org_id: org.id.clone(),
        name: "hello".into(),
        digest: "e".into(),
        size: 0,
        key_name: None,
        model: None,
        created_at_ms: 4,
        updated_at_ms: 4,
    };
    db.claw_deploy(&again, b"longer wasm").expect("redeploys");
    let claw = db
        .claw_by_name(&org.id, "hello")
        .expect("reads")
        .expect("kept");
    assert_eq!((claw.id.as_str(), claw.size), ("claw_1", 11));
    assert_eq!(db.claw_component("claw_1").expect("reads"), b"longer wasm");
    assert!(db.claw_delete(&org.id, "claw_1").expect("deletes"));
    assert_eq!(count(dir.path(), "SELECT COUNT(*) FROM claw_components"), 0);
}

#[test]
fn duplicate_key_name_is_a_conflict() {
    let db = SqliteDb::in_memory().expect("opens");
    let org = org(&db);
    db.key_insert(&key(&org, "main"), &audit())
        .expect("inserts");
    let err = db
        .key_insert(
            &KeyRow {
                id: "key_other".into(),
                ..key(&org, "main")
            },
            &audit(),
        )
        .expect_err("dup");
    assert!(matches!(err, DbError::Conflict(_)), "{err}");
}

#[test]
fn call_target_follows_assignment_and_state() {
    let db = SqliteDb::in_memory().expect("opens");
    let org = org(&db);
    let k = key(&org, "main");
    db.key_insert(&k, &audit()).expect("inserts");
    deploy_claw(&db, &org);
    assert!(db.call_target("claw_1").expect("reads").is_none());
    db.claw_assign("claw_1", &k.id, "gpt-4o-mini", 4)
        .expect("assigns");
    let target = db.call_target("claw_1").expect("reads").expect("assigned");
    assert_eq!(target.model, "gpt-4o-mini");
    assert_eq!(target.key.state, KeyState::Active);
    assert!(db.key_revoke(&k.id, 5, &audit()).expect("revokes"));
    assert!(!db.key_revoke(&k.id, 6, &audit()).expect("idempotent"));
    let target = db.call_target("claw_1").expect("reads").expect("assigned");
    assert_eq!(target.key.state, KeyState::Revoked);
    assert_eq!(target.key.revoked_at_ms, Some(5));
}

/// An organisation, a key and a claw, in a database file other
/// processes (here: other `SqliteDb`s) can share.
fn ledger_fixture(dir: &Path) -> SqliteDb {
    let db = SqliteDb::open(dir).expect("opens");
    let org = org(&db);
    db.key_insert(&key(&org, "main"), &audit())
        .expect("inserts");
    deploy_claw(&db, &org);
    db
}

/// Queues `n` records of `tokens` each (runs `run_0`…), with a raw
/// usage object of `detail` bytes if given, dropped unawaited as a
/// finished llm-call does.
fn queue_records(db: &SqliteDb, n: usize, tokens: i64, detail: Option<usize>) {
    let detail = detail.map(|len| "x".repeat(len));
    for i in 0..n {
        let mut record = usage(&format!("run_{i}"), tokens);
        record.raw_usage.clone_from(&detail);
        drop(db.record_call(record, audit(), None, None));
    }
}

fn usage(run_id: &str, tokens: i64) -> UsageRecord {
    UsageRecord {
        at_ms: crate::metering::now_ms(),
        org_id: "org_1".into(),
        claw_id: "claw_1".into(),
        run_id: run_id.into(),
        conversation_id: "conv".into(),
        key_id: "key_main".into(),
        key_version: 1,
        provider: "openai".into(),
        model_requested: "m".into(),
        input_tokens: tokens,
        source: "reported".into(),
        outcome: "ok".into(),
        ..UsageRecord::default()
    }
}

fn call(tokens: i64) -> Admission {
    Admission {
        org_id: "org_1".into(),
        claw_id: "claw_1".into(),
        key_id: "key_main".into(),
        conversation_id: "conv".into(),
        tokens,
        micros: None,
        now_ms: crate::metering::now_ms(),
    }
}

fn claw_budget(db: &SqliteDb, tokens: i64) {
    let budget = Budget {
        id: 0,
        scope: crate::metering::budgets::BudgetScope::Claw,
        claw_id: Some("claw_1".into()),
        unit: crate::metering::budgets::BudgetUnit::Tokens,
        period: crate::metering::budgets::BudgetPeriod::Lifetime,
        amount: tokens,
    };
    db.budget_add("org_1", &budget, 1).expect("adds");
}

fn count(dir: &Path, sql: &str) -> i64 {
    let conn = Connection::open(dir.join(DB_FILE)).expect("opens");
    conn.query_row(sql, [], |r| r.get(0)).expect("counts")
}

#[test]
fn the_stale_reservation_sweep_of_each_admission_reads_only_stale_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SqliteDb::open(dir.path()).expect("opens"));
    let conn = Connection::open(dir.path().join(DB_FILE)).expect("opens");
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN DELETE FROM reservations WHERE at_ms < 1",
            [],
            |r| r.get(3),
        )
        .expect("plans");
    assert!(plan.contains("USING INDEX reservations_by_age"), "{plan}");
}

#[tokio::test]
async fn queued_records_are_committed_and_synced_before_sync_ledger_resolves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ledger_fixture(dir.path());
    queue_records(&db, 200, 10, None);
    db.sync_ledger().await.expect("syncs");
    // Another connection (another process) sees every record.
    assert_eq!(count(dir.path(), "SELECT COUNT(*) FROM usage_records"), 200);
    assert_eq!(
        count(dir.path(), "SELECT SUM(tokens) FROM usage_days"),
        2000
    );
}

#[tokio::test]
async fn the_wal_shrinks_back_once_checkpointed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ledger_fixture(dir.path());
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    // Past the sync thread's threshold: 6 MiB of records.
    queue_records(&db, 96, 1, Some(64 << 10));
    db.sync_ledger().await.expect("syncs");
    assert!(wal_len() > durability::CHECKPOINT_BYTES as u64);
    // The checkpoint runs behind the sync; the first commit after it
    // starts the WAL over and truncates the file. Were the file left
    // long, every later sync would checkpoint again.
    for _ in 0..500 {
        db.record_call(usage("run_small", 1), audit(), None, None)
            .await
            .expect("writes");
        db.sync_ledger().await.expect("syncs");
        if wal_len() <= durability::CHECKPOINT_BYTES as u64 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the WAL stayed at {} bytes", wal_len());
}

/// The scheduling policy (`SCHED_BATCH` is 3) of every thread of this
/// process named `name`.
#[cfg(target_os = "linux")]
fn policies_of(name: &str) -> Vec<u32> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("lists threads") {
        let task = task.expect("reads a thread").path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name; `policy` is field 41.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if let Some(policy) = after.split_whitespace().nth(41 - 3) {
            policies.push(policy.parse().expect("a number"));
        }
    }
    policies
}

/// The scheduling policy and niceness of the calling thread.
#[cfg(target_os = "linux")]
fn own_policy_and_nice() -> (u32, i32) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("reads");
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let field = |n: usize| {
        after
            .split_whitespace()
            .nth(n - 3)
            .expect("a field")
            .to_owned()
    };
    (
        field(41).parse().expect("a number"),
        field(19).parse().expect("a number"),
    )
}

#[cfg(target_os = "linux")]
#[test]
fn a_ledger_thread_keeps_its_niceness_and_runs_as_batch_work() {
    std::thread::spawn(|| {
        rustix::process::setpriority_process(None, 7).expect("lowers its own priority");
        let marked = background_thread();
        let (policy, nice) = own_policy_and_nice();
        assert_eq!(nice, 7, "the thread's niceness changed");
        // Where the system refuses the policy, the thread runs as it was.
        if marked {
            assert_eq!(policy, 3, "not SCHED_BATCH");
        }
    })
    .join()
    .expect("the thread's checks pass");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_ledger_threads_never_preempt_the_calls_that_wake_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ledger_fixture(dir.path());
    db.record_call(usage("run_1", 1), audit(), None, None)
        .await
        .expect("writes");
    db.sync_ledger().await.expect("syncs");
    // Where the system refuses SCHED_BATCH the ledger has just worked
    // without it, which is all there is to check.
    if !std::thread::spawn(background_thread).join().expect("joins") {
        return;
    }
    // Other tests' threads of the same names may be just starting.
    for _ in 0..200 {
        let writer = policies_of("clawrun-writer");
        let sync = policies_of("clawrun-sync");
        if !writer.is_empty() && !sync.is_empty() && writer.iter().chain(&sync).all(|p| *p == 3) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "writer policies {:?}, sync policies {:?}: not SCHED_BATCH",
        policies_of("clawrun-writer"),
        policies_of("clawrun-sync")
    );
}

#[tokio::test]
async fn the_wal_starts_over_under_load_that_never_pauses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ledger_fixture(dir.path());
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    // About 40 MiB of records, queued faster than the writer commits
    // them, so it never waits for work: the sync thread's checkpoints
    // never catch up with it on their own.
    queue_records(&db, 20_000, 1, Some(1 << 10));
    db.sync_ledger().await.expect("syncs");
    let len = std::fs::metadata(&wal).expect("the WAL").len();
    assert!(
        len <= 3 * durability::CHECKPOINT_BYTES as u64,
        "the WAL grew to {len} bytes"
    );
}

#[tokio::test]
async fn a_bad_record_fails_alone_and_its_run_is_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ledger_fixture(dir.path());
    let good = db.record_call(usage("run_good", 1), audit(), None, None);
    let mut broken = usage("run_bad", 1);
    broken.source = "made-up".into();
    let bad = db.record_call(broken, audit(), None, None);
    let after = db.record_call(usage("run_after", 1), audit(), None, None);
    let err = bad.await.expect_err("the CHECK constraint refuses it");
    assert!(err.to_string().contains("CHECK"), "{err}");
    good.await.expect("written");
    after.await.expect("written");
    assert!(db.lost_records("run_bad"));
    assert!(!db.lost_records("run_bad"), "answered once");
    assert!(!db.lost_records("run_good"));
    assert_eq!(count(dir.path(), "SELECT COUNT(*) FROM usage_records"), 2);
}

#[tokio::test]
async fn an_admission_counts_reservations_and_the_records_queued_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ledger_fixture(dir.path());
    claw_budget(&db, 1000);
    let first = db.admit(call(600)).await.expect("decides").expect("fits");
    assert!(first.is_some());
    let refused = db.admit(call(600)).await.expect("decides");
    assert!(
        matches!(refused, Err(Refusal::Budget(_))),
        "600 reserved + 600 > 1000: {refused:?}"
    );
    // The first call used 100 of its 600; its record is queued, not
    // awaited, and the next admission already counts 100, not 600.
    drop(db.record_call(usage("run_1", 100), audit(), first, None));
    let second = db.admit(call(600)).await.expect("decides");
    assert!(matches!(second, Ok(Some(_))), "{second:?}");
    assert_eq!(count(dir.path(), "SELECT COUNT(*) FROM reservations"), 1);
}

#[tokio::test]
async fn an_admission_made_while_another_process_writes_is_decided_once_it_is_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ledger_fixture(dir.path());
    claw_budget(&db, 1000);
    // Another process holds SQLite's write lock until told to let go.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let path = dir.path().join(DB_FILE);
    let other = std::thread::spawn(move || {
        let mut conn = Connection::open(path).expect("opens");
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("takes the write lock");
        held_tx.send(()).expect("tells");
        release_rx.recv().expect("told");
        tx.commit().expect("commits");
    });
    held_rx.recv().expect("held");
    // The caller's thread does not wait for the lock (it would hold up
    // a runtime worker): the writer thread does, and answers.
    let pending = db.admit(call(100));
    release_tx.send(()).expect("releases");
    let decided = pending.await.expect("decides");
    assert!(matches!(decided, Ok(Some(_))), "{decided:?}");
    other.join().expect("joins");
    assert_eq!(count(dir.path(), "SELECT COUNT(*) FROM reservations"), 1);
}

#[tokio::test]
async fn records_still_queued_when_the_database_is_dropped_are_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ledger_fixture(dir.path());
    // Queued and not awaited, as a call queues its records; the process
    // then ends (Ctrl-C, or a run's last call) and drops the database.
    queue_records(&db, 5_000, 1, None);
    drop(db);
    assert_eq!(
        count(dir.path(), "SELECT COUNT(*) FROM usage_records"),
        5_000
    );
}

#[tokio::test]
async fn a_batch_kept_waiting_by_another_process_is_retried_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = ledger_fixture(dir.path());
    // Another process holds the write lock a little past the busy
    // timeout, then lets go.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let path = dir.path().join(DB_FILE);
    let other = std::thread::spawn(move || {
        let mut conn = Connection::open(path).expect("opens");
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("takes the write lock");
        held_tx.send(()).expect("tells");
        std::thread::sleep(BUSY_TIMEOUT + std::time::Duration::from_secs(1));
        tx.commit().expect("commits");
    });
    held_rx.recv().expect("held");
    let pending: Vec<_> = (0..3)
        .map(|i| db.record_call(usage(&format!("run_{i}"), 1), audit(), None, None))
        .collect();
    for p in pending {
        p.await.expect("written once the lock is free");
    }
    other.join().expect("joins");
    assert_eq!(count(dir.path(), "SELECT COUNT(*) FROM usage_records"), 3);
    for i in 0..3 {
        assert!(!db.lost_records(&format!("run_{i}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_admissions_from_two_processes_admit_exactly_what_fits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Arc::new(ledger_fixture(dir.path()));
    claw_budget(&a, 1000);
    let b = Arc::new(SqliteDb::open(dir.path()).expect("opens again"));
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        let db = if i % 2 == 0 { a.clone() } else { b.clone() };
        calls.spawn(async move { db.admit(call(100)).await.expect("decides") });
    }
    let admitted = calls
        .join_all()
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
    assert_eq!(admitted, 10, "ten reservations of 100 fit in 1000");
    assert_eq!(count(dir.path(), "SELECT COUNT(*) FROM reservations"), 10);
}
