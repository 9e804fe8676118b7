//! Criterion benchmarks of what key custody adds to every `llm-call`: the
//! revocation check (reading the assignment and key state from SQLite), the
//! revocation fence (a shared lock on the key's lock file), decryption
//! (unwrapping the data key, opening the provider key) and the leak guard's
//! scan of the prompt.
//!
//! Run with `cargo bench -p clawrun --bench custody`.

use clawrun::db::{ClawRow, Db, KeyRow, KeyState, OrgRow, SqliteDb};
use clawrun::service::revocation::KeyLocks;
use clawrun::vault::guard::{self, ScanEntry};
use clawrun::vault::{self, DataKey, KeyBinding, MasterKey, ProviderSecret};
use criterion::{Criterion, criterion_group, criterion_main};

const KEYS: [&str; 3] = [
    "sk-proj-bench0000000000000000000000000000000000000000aaaa",
    "sk-ant-api03-bench111111111111111111111111111111111bbbb",
    "sk-bench-222222222222222222222222cccc",
];

fn custody(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = SqliteDb::open(dir.path()).expect("db");
    let master = MasterKey::generate();
    let data_key = DataKey::generate();
    let org = OrgRow {
        id: "org_bench".into(),
        name: "default".into(),
        wrapped_data_key: vault::wrap_data_key(&master, "org_bench", &data_key),
        created_at_ms: 0,
    };
    db.org_create(&org).expect("org");
    let mut entries = Vec::new();
    for (i, key) in KEYS.iter().enumerate() {
        let secret = ProviderSecret::new((*key).into());
        let id = format!("key_{i}");
        let (len, hash) = guard::scan_hash(&data_key, &secret);
        let binding = KeyBinding {
            org_id: &org.id,
            key_id: &id,
            version: 1,
        };
        db.key_insert(
            &KeyRow {
                id: id.clone(),
                org_id: org.id.clone(),
                name: id.clone(),
                provider: "openai".into(),
                base_url: "https://api.openai.com/v1".into(),
                ciphertext: vault::seal_secret(&data_key, binding, &secret),
                version: 1,
                state: KeyState::Active,
                fingerprint: secret.fingerprint(&data_key),
                hint: secret.hint(),
                created_at_ms: 0,
                rotated_at_ms: None,
                revoked_at_ms: None,
                scan_len: len as i64,
                scan_hash: hash as i64,
                api_path: None,
                auth_header: None,
                auth_scheme: None,
            },
            &Default::default(),
        )
        .expect("key");
        entries.push(ScanEntry {
            key_id: id,
            len,
            hash,
            fingerprint: secret.fingerprint(&data_key),
        });
    }
    db.claw_deploy(
        &ClawRow {
            id: "claw_bench".into(),
            org_id: org.id.clone(),
            name: "bench".into(),
            digest: String::new(),
            size: 0,
            key_name: None,
            model: None,
            created_at_ms: 0,
            updated_at_ms: 0,
        },
        b"",
    )
    .expect("claw");
    db.claw_assign("claw_bench", "key_0", "gpt-4o-mini", 0)
        .expect("assign");

    c.bench_function("custody_revocation_check_sqlite", |b| {
        b.iter(|| {
            db.call_target("claw_bench")
                .expect("reads")
                .expect("assigned")
        });
    });
    let locks = KeyLocks::new(dir.path());
    c.bench_function("custody_revocation_fence_lock", |b| {
        b.iter(|| drop(locks.shared("key_0").expect("locks")));
    });
    let target = db
        .call_target("claw_bench")
        .expect("reads")
        .expect("assigned");
    c.bench_function("custody_decrypt_key", |b| {
        b.iter(|| {
            let dk =
                vault::open_data_key(&master, &org.id, &target.wrapped_data_key).expect("opens");
            let binding = KeyBinding {
                org_id: &org.id,
                key_id: &target.key.id,
                version: 1,
            };
            vault::open_secret(&dk, binding, &target.key.ciphertext).expect("opens")
        });
    });
    let prompt_4k = "The quick brown fox jumps over the lazy dog. ".repeat(91);
    c.bench_function("custody_leak_scan_4KiB_prompt_3_keys", |b| {
        b.iter(|| assert!(guard::find_key(&data_key, &entries, &[&prompt_4k]).is_none()));
    });
    let prompt_64k = prompt_4k.repeat(16);
    c.bench_function("custody_leak_scan_64KiB_prompt_3_keys", |b| {
        b.iter(|| assert!(guard::find_key(&data_key, &entries, &[&prompt_64k]).is_none()));
    });
}

criterion_group!(benches, custody);
criterion_main!(benches);
