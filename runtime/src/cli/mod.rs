//! The command line: argument parsing and output formatting only; every
//! operation is in [`crate::service`].

mod args;
mod backend;
mod output;
mod secret;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;

use crate::service::{self, Host};
use args::{
    BudgetsCommand, ClawsCommand, Cli, Command, KeysCommand, LimitsCommand, OrgCommand,
    OrgsCommand, RunArgs, TokensCommand, UsageArgs, VaultCommand,
};
use backend::{Backend, Remote};
use output::Table;

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // Each call in flight holds a lock file and a connection; distributions
    // often set a soft limit of 1,024 under a far higher hard one.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!(error = %e, "cannot raise the open-file limit");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", output::printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Crates of the code generator, whose TRACE output is hundreds of
/// megabytes per compiled claw and says nothing about clawrun: kept at
/// `info` unless `CLAWRUN_LOG` names them.
const COMPILER_TARGETS: &[&str] = &["cranelift", "regalloc2", "wasmtime_internal_cranelift"];

/// Logs go to stderr, filtered by `CLAWRUN_LOG` (default `warn`).
fn init_logging() {
    let mut spec = std::env::var("CLAWRUN_LOG").unwrap_or_else(|_| "warn".into());
    for target in COMPILER_TARGETS {
        if !spec.contains(target) {
            spec.push_str(&format!(",{target}=info"));
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn data_dir(cli: &Cli) -> PathBuf {
    if let Some(dir) = &cli.data_dir {
        return dir.clone();
    }
    match std::env::var_os("XDG_DATA_HOME").or_else(|| std::env::var_os("HOME")) {
        Some(base) if std::env::var_os("XDG_DATA_HOME").is_some() => {
            Path::new(&base).join("clawrun")
        }
        Some(home) => Path::new(&home).join(".local/share/clawrun"),
        None => PathBuf::from(".clawrun"),
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let dir = data_dir(&cli);
    if cli.server.is_some() && cli.org.is_some() {
        bail!(
            "--org (or CLAWRUN_ORG) names a local organisation; with --server the token in \
             CLAWRUN_TOKEN decides which organisation acts: drop one of them"
        );
    }
    let org = cli.org.as_deref().unwrap_or(service::DEFAULT_ORG);
    let backend = || -> anyhow::Result<Backend> {
        Ok(match &cli.server {
            Some(server) => Backend::Remote(Remote::new(server)?),
            None => Backend::Local(Host::open(&dir)?.org(org)?),
        })
    };
    let local_only = |what: &str| -> anyhow::Result<()> {
        if cli.server.is_some() {
            bail!(
                "`clawrun {what}` acts on a local data directory only: run it on the host, without --server"
            );
        }
        Ok(())
    };
    match cli.command {
        Command::Init => {
            local_only("init")?;
            let report = service::init(&dir)?;
            if report.already {
                println!(
                    "clawrun data directory {} is already initialised",
                    dir.display()
                );
            } else {
                println!("initialised clawrun data directory {}", dir.display());
            }
            if report.wrote_master_key {
                println!(
                    "master key written to {} (mode 0600): back it up; without it the stored keys cannot be opened",
                    dir.join(crate::vault::MASTER_KEY_FILE).display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(ref cmd) => keys(&backend()?, cmd).await,
        Command::Claws(ref cmd) => claws(&backend()?, cmd).await,
        Command::Run(ref args) => run(&backend()?, args).await,
        Command::Usage(ref args) => usage(&backend()?, args).await,
        Command::Audit { json } => audit(&backend()?, json).await,
        Command::Vault(VaultCommand::RotateMaster) => {
            local_only("vault rotate-master")?;
            rotate_master(&Host::open(&dir)?.org(service::DEFAULT_ORG)?)
        }
        Command::Budgets(ref cmd) => budgets(&backend()?, cmd).await,
        Command::Limits(ref cmd) => limits(&backend()?, cmd).await,
        Command::Orgs(ref cmd) => {
            local_only("orgs")?;
            orgs(&Host::open(&dir)?, cmd)
        }
        Command::Tokens(ref cmd) => tokens(&backend()?, cmd).await,
        Command::Org(OrgCommand::Limits {
            concurrent_runs,
            reset,
        }) => {
            local_only("org limits")?;
            let svc = Host::open(&dir)?.org(org)?;
            let limit = if reset || concurrent_runs.is_some() {
                svc.set_concurrent_runs(concurrent_runs)?
            } else {
                svc.concurrent_runs()?
            };
            println!("organisation `{org}`: concurrent runs {limit}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            listen,
            metrics_listen,
            grace,
        } => {
            local_only("serve")?;
            let host = Host::open(&dir)?;
            let options = crate::api::ServeOptions {
                listen,
                metrics_listen,
                grace,
            };
            crate::api::serve(host, options, async {
                shutdown_signal().await;
            })
            .await
            .with_context(|| format!("cannot serve on {listen}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DevProvider { listen } => dev_provider(listen).await,
    }
}

fn orgs(host: &std::sync::Arc<Host>, cmd: &OrgsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        OrgsCommand::Create { name } => {
            let (org, token) = host.orgs_create(name)?;
            println!("created organisation `{}` ({})", org.name, org.id);
            println!("its admin API token, shown only now; store it in a secret manager:");
            println!("{}", token.expose());
        }
        OrgsCommand::List => {
            let mut table = Table::new(&["NAME", "ID", "CREATED"]);
            for o in host.orgs_list()? {
                table.row(vec![o.name, o.id, output::time(o.created_at_ms)]);
            }
            table.print();
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tokens(backend: &Backend, cmd: &TokensCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokensCommand::Create { name } => {
            let token = backend.tokens_create(name).await?;
            eprintln!(
                "created API token {} (`{}`), shown only now:",
                token.view.id, token.view.name
            );
            println!("{}", token.token);
        }
        TokensCommand::List { json } => {
            let rows = backend.tokens_list().await?;
            if *json {
                output::print_json(&rows)?;
            } else {
                let mut table = Table::new(&["ID", "NAME", "CREATED", "REVOKED"]);
                for t in rows {
                    table.row(vec![
                        t.id,
                        t.name,
                        t.created_at,
                        t.revoked_at.unwrap_or_else(|| "-".into()),
                    ]);
                }
                table.print();
            }
        }
        TokensCommand::Revoke { id } => {
            backend.tokens_revoke(id).await?;
            println!("revoked API token {id}: requests bearing it are refused from now on");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn keys(backend: &Backend, cmd: &KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Add {
            name,
            provider,
            base_url,
            path,
            auth_header,
            auth_scheme,
        } => {
            let compatible = crate::providers::CompatibleConfig {
                path: path.clone(),
                auth_header: auth_header.clone(),
                auth_scheme: auth_scheme.clone(),
            };
            // Checked before the key is read, so a typo costs no paste.
            compatible.validate().map_err(anyhow::Error::msg)?;
            let secret = secret::read(&format!("API key for `{name}`"))?;
            let key = backend
                .keys_add(name, *provider, base_url.as_deref(), compatible, secret)
                .await?;
            println!(
                "added key `{}` ({}, {}, version {})",
                key.name, key.provider, key.hint, key.version
            );
        }
        KeysCommand::List { json } => {
            let rows = backend.keys_list().await?;
            if *json {
                output::print_json(&rows)?;
            } else {
                output::keys_table(&rows).print();
            }
        }
        KeysCommand::Rotate { name } => {
            let secret = secret::read(&format!("new API key for `{name}`"))?;
            let key = backend.keys_rotate(name, secret).await?;
            println!(
                "rotated key `{}` to version {} ({})",
                key.name, key.version, key.hint
            );
        }
        KeysCommand::Revoke { name } => {
            let key = backend.keys_revoke(name).await?;
            println!(
                "revoked key `{}`: no request with it starts from now on",
                key.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn claws(backend: &Backend, cmd: &ClawsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClawsCommand::Deploy { file, name } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let claw = backend.claws_deploy(name, bytes).await?;
            println!(
                "deployed claw `{}` ({} bytes, sha256 {})",
                claw.name,
                claw.size,
                &claw.digest[..16.min(claw.digest.len())]
            );
            if claw.model.is_none() {
                println!(
                    "next: clawrun claws assign {} --key KEY --model MODEL",
                    claw.name
                );
            }
        }
        ClawsCommand::Assign { name, key, model } => {
            let claw = backend.claws_assign(name, key, model).await?;
            println!(
                "claw `{}` now uses key `{}` with model `{}` from its next call",
                claw.name,
                claw.key.unwrap_or_default(),
                claw.model.unwrap_or_default()
            );
        }
        ClawsCommand::List { json } => {
            let rows = backend.claws_list().await?;
            if *json {
                output::print_json(&rows)?;
            } else {
                output::claws_table(&rows).print();
            }
        }
        ClawsCommand::Delete { name } => {
            backend.claws_delete(name).await?;
            println!("deleted claw `{name}`; its usage records stay");
        }
        ClawsCommand::Limits(args) => {
            let request = crate::api::views::LimitsRequest {
                deadline_ms: args.deadline_ms,
                fuel: args.fuel,
                memory_mib: args.memory_mib,
                table_elements: args.table_elements,
                instances: args.instances,
                llm_calls: args.llm_calls,
                max_value_kib: args.max_value_kib,
                reset: args.reset,
            };
            let limits = if request.reset || !request.overrides().is_empty() {
                backend.claws_set_limits(&args.name, &request).await?
            } else {
                backend.claw_limits(&args.name).await?
            };
            if args.json {
                output::print_json(&limits)?;
            } else {
                output::limits_table(&limits).print();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(backend: &Backend, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let input = match &args.input {
        Some(text) => text.clone(),
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the input from stdin")?;
            text
        }
    };
    let conversation = args
        .conversation
        .clone()
        .unwrap_or_else(|| service::new_id("conv"));
    // Ctrl-C or SIGTERM drops the run: a call in flight then writes its
    // record (estimated input, outcome `cancelled`) before the process ends.
    let report = tokio::select! {
        report = backend.run(&args.name, &conversation, &input) => report?,
        signal = shutdown_signal() => {
            bail!("{signal}: the run of `{}` was stopped; its calls so far are recorded", args.name)
        }
    };
    if args.json {
        output::print_json(&report)?;
    } else {
        if let Some(text) = &report.output {
            println!("{text}");
        }
        let (input, output) = report.usage.iter().fold((0, 0), |(i, o), u| {
            (i + u.input_tokens, o + u.output_tokens)
        });
        eprintln!(
            "run {} (conversation {}): {} model call(s), {input} input and {output} output tokens",
            report.run_id,
            report.conversation_id,
            report.usage.len()
        );
    }
    match report.error {
        None => Ok(ExitCode::SUCCESS),
        Some(why) => bail!("claw `{}` returned an error: {why}", args.name),
    }
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupted",
                _ = term.recv() => "terminated",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "interrupted"
}

async fn usage(backend: &Backend, args: &UsageArgs) -> anyhow::Result<ExitCode> {
    let scope = service::UsageScope {
        claw: args.claw.as_deref(),
        conversation: args.conversation.as_deref(),
        since_ms: args.since,
        until_ms: args.until,
    };
    let totals = backend.usage(args.by, &scope).await?;
    if args.json {
        output::print_json(&totals)?;
    } else if args.csv {
        let mut out = csv::Writer::from_writer(std::io::stdout().lock());
        for t in &totals {
            out.serialize(t)?;
        }
        out.flush()?;
    } else {
        let mut table = Table::new(&[
            "GROUP",
            "CALLS",
            "INPUT",
            "OUTPUT",
            "CACHE READ",
            "CACHE WRITE",
            "REASONING",
            "COST (EST.)",
        ]);
        for t in &totals {
            table.row(vec![
                t.group.clone(),
                t.calls.to_string(),
                t.input_tokens.to_string(),
                t.output_tokens.to_string(),
                t.cache_read_tokens.to_string(),
                t.cache_write_tokens.to_string(),
                t.reasoning_tokens.to_string(),
                output::cost(t.cost_micros),
            ]);
        }
        table.print();
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit(backend: &Backend, json: bool) -> anyhow::Result<ExitCode> {
    let records = backend.audit().await?;
    if json {
        output::print_json(&records)?;
    } else {
        let mut table = Table::new(&[
            "TIME", "ACTOR", "ACTION", "KEY", "VERSION", "CLAW", "OUTCOME",
        ]);
        for r in &records {
            table.row(vec![
                output::time(r.at_ms),
                r.actor.clone(),
                r.action.clone(),
                r.key_id.clone().unwrap_or_else(|| "-".into()),
                r.key_version.map_or_else(|| "-".into(), |v| v.to_string()),
                r.claw_id.clone().unwrap_or_else(|| "-".into()),
                r.outcome.clone(),
            ]);
        }
        table.print();
    }
    Ok(ExitCode::SUCCESS)
}

async fn budgets(backend: &Backend, cmd: &BudgetsCommand) -> anyhow::Result<ExitCode> {
    use crate::metering::budgets::BudgetUnit;
    match cmd {
        BudgetsCommand::Set {
            scope,
            claw,
            tokens,
            usd,
            per,
        } => {
            let (unit, amount) = match (tokens, usd) {
                (Some(t), _) => (BudgetUnit::Tokens, *t),
                (None, Some(d)) if d.is_finite() && *d >= 0.0 => {
                    (BudgetUnit::Micros, (d * 1e6).round() as i64)
                }
                _ => bail!("give --tokens N or --usd AMOUNT (a non-negative number)"),
            };
            let budget = backend
                .budgets_add(*scope, claw.as_deref(), unit, *per, amount)
                .await?;
            println!("added {budget}");
        }
        BudgetsCommand::List { json } => {
            let rows = backend.budgets_list().await?;
            if *json {
                output::print_json(&rows)?;
            } else {
                let mut table = Table::new(&["ID", "BUDGET", "CLAW"]);
                for b in &rows {
                    table.row(vec![
                        b.id.to_string(),
                        b.to_string(),
                        b.claw_id.clone().unwrap_or_else(|| "-".into()),
                    ]);
                }
                table.print();
            }
        }
        BudgetsCommand::Remove { id } => {
            backend.budgets_remove(*id).await?;
            println!("removed budget #{id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn limits(backend: &Backend, cmd: &LimitsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LimitsCommand::Set {
            claw,
            key,
            rpm,
            tpm,
        } => {
            let limit = backend
                .limits_set(claw.as_deref(), key.as_deref(), *rpm, *tpm)
                .await?;
            println!(
                "{} {}: {} requests and {} tokens per minute",
                limit.scope,
                claw.as_deref().or(key.as_deref()).unwrap_or_default(),
                limit.rpm.map_or_else(|| "any".into(), |v| v.to_string()),
                limit.tpm.map_or_else(|| "any".into(), |v| v.to_string()),
            );
        }
        LimitsCommand::Remove { claw, key } => {
            backend
                .limits_remove(claw.as_deref(), key.as_deref())
                .await?;
            println!(
                "removed the rate limits of {}",
                claw.as_deref().or(key.as_deref()).unwrap_or_default()
            );
        }
        LimitsCommand::List { json } => {
            let rows = backend.limits_list().await?;
            if *json {
                output::print_json(&rows)?;
            } else {
                let mut table = Table::new(&["SCOPE", "ID", "RPM", "TPM"]);
                for l in &rows {
                    let show = |v: Option<i64>| v.map_or_else(|| "-".into(), |v| v.to_string());
                    table.row(vec![
                        l.scope.clone(),
                        l.target_id.clone(),
                        show(l.rpm),
                        show(l.tpm),
                    ]);
                }
                table.print();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn rotate_master(svc: &service::Service) -> anyhow::Result<ExitCode> {
    let new_key = if crate::vault::MasterKey::from_env() {
        let secret = secret::read("new master key (base64 of 32 bytes)")?;
        Some(crate::vault::MasterKey::from_base64(
            secret.expose(),
            "stdin",
        )?)
    } else {
        None
    };
    let rotated = svc.rotate_master(new_key)?;
    println!(
        "re-wrapped the data keys of {} organisation(s) under a new master key",
        rotated.orgs
    );
    if rotated.replaced_file {
        println!(
            "{} now holds the new key; the old key opens nothing",
            crate::vault::MASTER_KEY_FILE
        );
    } else {
        println!("set CLAWRUN_MASTER_KEY to the new key now: the old one opens nothing");
    }
    Ok(ExitCode::SUCCESS)
}

async fn dev_provider(listen: SocketAddr) -> anyhow::Result<ExitCode> {
    if !listen.ip().is_loopback() {
        bail!("dev-provider listens on loopback only: use an address like 127.0.0.1:8787");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "dev-provider listening on http://{addr}")?;
    writeln!(out, "  openai base URL:    http://{addr}/v1")?;
    writeln!(out, "  anthropic base URL: http://{addr}")?;
    out.flush()?;
    drop(out);
    tokio::select! {
        served = crate::providers::dev::serve(listener) => served?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}
