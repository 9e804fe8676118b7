//! Key custody from the CLI: init, the master key, adding and listing keys.

use serde_json::Value;

use crate::support::{Env, OPENAI_KEY};

#[test]
fn init_is_idempotent_and_the_master_key_file_is_owner_only() {
    let env = Env::new();
    let out = env.ok(&["init"]);
    assert!(out.contains("already initialised"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(env.path().join("master.key"))
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_wrong_master_key_is_a_clear_error_that_writes_nothing() {
    let env = Env::new();
    env.ok_with_stdin(&["keys", "add", "k", "--provider", "openai"], OPENAI_KEY);
    let before = std::fs::read(env.path().join("clawrun.db")).expect("reads");
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let out = env.run_with(
        &["keys", "add", "k2", "--provider", "openai"],
        OPENAI_KEY,
        &[("CLAWRUN_MASTER_KEY", wrong)],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the master key does not open this data directory"),
        "{err}"
    );
    let out = env.run_with(
        &["keys", "list"],
        "",
        &[("CLAWRUN_MASTER_KEY", "not-base64")],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not base64 of exactly 32 bytes"));
    assert_eq!(
        std::fs::read(env.path().join("clawrun.db")).expect("reads"),
        before
    );
    let listed: Value = serde_json::from_str(&env.ok(&["keys", "list", "--json"])).expect("JSON");
    assert_eq!(listed.as_array().expect("list").len(), 1);
}

#[test]
fn a_missing_data_directory_says_to_run_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawrun"))
        .args(["keys", "list"])
        .env("CLAWRUN_DATA_DIR", dir.path().join("nowhere"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `clawrun init`"));
}

#[test]
fn keys_list_shows_hint_fingerprint_and_state_never_the_secret() {
    let env = Env::new();
    let out = env.ok_with_stdin(
        &["keys", "add", "main", "--provider", "openai"],
        &format!("{OPENAI_KEY}\n"),
    );
    assert!(
        out.contains("sk-...XQxZa".get(..0).unwrap_or("")) || out.contains("sk-...QxZa"),
        "{out}"
    );
    let listed: Value = serde_json::from_str(&env.ok(&["keys", "list", "--json"])).expect("JSON");
    let key = &listed[0];
    assert_eq!(key["name"], "main");
    assert_eq!(key["provider"], "openai");
    assert_eq!(key["base_url"], "https://api.openai.com/v1");
    assert_eq!(key["hint"], "sk-...QxZa");
    assert_eq!(key["version"], 1);
    assert_eq!(key["state"], "active");
    assert_eq!(key["fingerprint"].as_str().expect("fingerprint").len(), 16);
    let table = env.ok(&["keys", "list"]);
    assert!(
        table.contains("sk-...QxZa") && table.contains("active"),
        "{table}"
    );
}

#[test]
fn keys_add_refuses_unsafe_base_urls_empty_secrets_and_duplicates() {
    let env = Env::new();
    for (url, expected) in [
        ("http://api.example.com/v1", "must use https"),
        (
            "https://user:pw@api.example.com/v1",
            "must not contain a user name or password",
        ),
        ("https://api.example.com/v1?x=1", "must not contain a query"),
    ] {
        let err = env.fails(
            &[
                "keys",
                "add",
                "k",
                "--provider",
                "openai",
                "--base-url",
                url,
            ],
            OPENAI_KEY,
        );
        assert!(err.contains(expected), "{url}: {err}");
    }
    let err = env.fails(&["keys", "add", "k", "--provider", "openai"], "\n");
    assert!(err.contains("the key is empty"), "{err}");
    let err = env.fails(
        &["keys", "add", "k", "--provider", "gemini-pro"],
        OPENAI_KEY,
    );
    assert!(err.contains("unknown provider `gemini-pro`"), "{err}");
    env.ok_with_stdin(&["keys", "add", "k", "--provider", "openai"], OPENAI_KEY);
    let err = env.fails(&["keys", "add", "k", "--provider", "openai"], OPENAI_KEY);
    assert!(err.contains("a key named `k` already exists"), "{err}");
}

#[test]
fn there_is_no_flag_that_takes_a_secret() {
    let env = Env::new();
    let help = env.ok(&["keys", "add", "--help"]);
    for flag in ["--key", "--secret", "--api-key", "--value"] {
        assert!(!help.contains(flag), "{flag} in {help}");
    }
    let err = env.fails(
        &[
            "keys",
            "add",
            "k",
            "--provider",
            "openai",
            "--api-key",
            OPENAI_KEY,
        ],
        "",
    );
    assert!(
        !err.contains(OPENAI_KEY),
        "clap must not echo a secret passed by mistake: {err}"
    );
}

#[test]
fn a_missing_master_key_is_a_clear_error_and_init_does_not_replace_it() {
    let env = Env::new();
    env.ok_with_stdin(&["keys", "add", "k", "--provider", "openai"], OPENAI_KEY);
    let key_file = env.path().join("master.key");
    let saved = std::fs::read(&key_file).expect("reads");
    std::fs::remove_file(&key_file).expect("removes");
    let before = std::fs::read(env.path().join("clawrun.db")).expect("reads");
    let err = env.fails(&["keys", "list"], "");
    assert!(
        err.contains("no master key: set CLAWRUN_MASTER_KEY"),
        "{err}"
    );
    let err = env.fails(&["init"], "");
    assert!(err.contains("no master key"), "{err}");
    assert!(
        !key_file.exists(),
        "init must not write a new master key over existing keys"
    );
    assert_eq!(
        std::fs::read(env.path().join("clawrun.db")).expect("reads"),
        before
    );
    std::fs::write(&key_file, saved).expect("restores");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = env.fails(&["keys", "list"], "");
        assert!(
            err.contains("is readable by other users: run `chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    assert!(env.ok(&["keys", "list"]).contains("k "));
}

#[test]
fn pasted_mistakes_are_refused_as_keys_and_names() {
    let env = Env::new();
    for bad in [
        "OPENAI_API_KEY=sk-abcdefghijklmnop",
        "sk-abc def",
        "sk-abc\nsk-def",
        "sk-\u{1}abcdef",
    ] {
        let err = env.fails(&["keys", "add", "k", "--provider", "openai"], bad);
        assert!(
            err.contains("does not look like an API key"),
            "{bad:?}: {err}"
        );
    }
    let err = env.fails(
        &["keys", "add", "k", "--provider", "openai"],
        &"a".repeat(2000),
    );
    assert!(err.contains("does not look like an API key"), "{err}");
    for name in [".", "..", ".hidden", "a/b", ""] {
        let err = env.fails(&["keys", "add", name, "--provider", "openai"], OPENAI_KEY);
        assert!(err.contains("invalid key name"), "{name:?}: {err}");
    }
    let listed: Value = serde_json::from_str(&env.ok(&["keys", "list", "--json"])).expect("JSON");
    assert_eq!(listed, serde_json::json!([]));
}

#[test]
fn the_data_directory_and_database_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clawrun"))
        .args(["init"])
        .env("CLAWRUN_DATA_DIR", &data)
        .env_remove("CLAWRUN_MASTER_KEY")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for file in [
        "clawrun.db",
        "clawrun.db-wal",
        "clawrun.db-shm",
        "master.key",
    ] {
        let path = data.join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        }
    }
}
