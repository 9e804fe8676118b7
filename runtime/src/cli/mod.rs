//! The command line: argument parsing and output formatting only; every
//! operation is in [`crate::service`].

mod output;
mod secret;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::db::UsageGroup;
use crate::providers::ProviderKind;
use crate::service::{self, Service};
use output::Table;

/// Run AI agents compiled to WebAssembly, holding your provider keys for them.
#[derive(Debug, Parser)]
#[command(name = "clawrun", version, about)]
struct Cli {
    /// Data directory (database and master key file).
    #[arg(long, global = true, env = "CLAWRUN_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the data directory, master key file and database.
    Init,
    /// Add, list, rotate and revoke provider keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Deploy claws and assign them a key and model.
    #[command(subcommand)]
    Claws(ClawsCommand),
    /// Run a claw on one input.
    Run(RunArgs),
    /// Show token usage.
    Usage(UsageArgs),
    /// Show the audit log: key changes, key uses, refused exfiltration.
    Audit {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage the master key.
    #[command(subcommand)]
    Vault(VaultCommand),
    /// Cap what claws may consume, in tokens or dollars, per day, month or lifetime.
    #[command(subcommand)]
    Budgets(BudgetsCommand),
    /// Requests and tokens per minute, per claw or per key.
    #[command(subcommand)]
    Limits(LimitsCommand),
    /// Serve the host over HTTP: /metrics (Prometheus) and /healthz so far.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Serve an emulator of the provider APIs on loopback, for offline work.
    DevProvider {
        /// Address to listen on; must be a loopback address.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Add a provider key. The key itself is read from stdin, or from a
    /// prompt that does not echo; it is never taken as an argument.
    Add {
        /// Name of the key in this organisation.
        name: String,
        /// Provider kind: openai, anthropic, gemini or openai-compatible.
        #[arg(long)]
        provider: ProviderKind,
        /// Base URL as the provider's SDK takes it (https, or http on
        /// loopback); required for openai-compatible.
        #[arg(long)]
        base_url: Option<String>,
        /// openai-compatible: path after the base URL, query allowed
        /// (default /chat/completions).
        #[arg(long)]
        path: Option<String>,
        /// openai-compatible: header carrying the key (default authorization).
        #[arg(long)]
        auth_header: Option<String>,
        /// openai-compatible: word before the key in that header (default
        /// Bearer for authorization, none otherwise; `none` sends the bare key).
        #[arg(long)]
        auth_scheme: Option<String>,
    },
    /// List keys (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store a new version of a key, read from stdin or a prompt.
    Rotate {
        /// Name of the key.
        name: String,
    },
    /// Revoke a key: no request with it starts after this returns.
    Revoke {
        /// Name of the key.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ClawsCommand {
    /// Deploy a claw component (a .wasm built for wasm32-wasip2).
    Deploy {
        /// The component file.
        file: PathBuf,
        /// Name of the claw.
        #[arg(long)]
        name: String,
    },
    /// Assign a key and model to a claw; its next call uses them.
    Assign {
        /// Name of the claw.
        name: String,
        /// Name of the key.
        #[arg(long)]
        key: String,
        /// Model name, as the provider spells it.
        #[arg(long)]
        model: String,
    },
    /// List claws.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BudgetsCommand {
    /// Add a budget. Every llm-call reserves its worst case (input estimate
    /// plus max-tokens) against every budget that applies before it is sent.
    Set {
        /// What it caps: org, claw, or conversation (each conversation apart).
        #[arg(long, default_value = "org")]
        scope: crate::metering::budgets::BudgetScope,
        /// The claw (required for claw budgets; optional for conversation ones).
        #[arg(long)]
        claw: Option<String>,
        /// Cap in tokens (input plus output).
        #[arg(long, conflicts_with = "usd", required_unless_present = "usd")]
        tokens: Option<i64>,
        /// Cap in US dollars of estimated cost (see the price table).
        #[arg(long)]
        usd: Option<f64>,
        /// Window: day, month or lifetime (UTC).
        #[arg(long, default_value = "day")]
        per: crate::metering::budgets::BudgetPeriod,
    },
    /// List budgets.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a budget by id.
    Remove {
        /// The id `budgets list` shows.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
enum LimitsCommand {
    /// Set the per-minute limits of one claw or one key.
    Set {
        /// The claw.
        #[arg(long, conflicts_with = "key", required_unless_present = "key")]
        claw: Option<String>,
        /// The key.
        #[arg(long)]
        key: Option<String>,
        /// Requests per minute.
        #[arg(long)]
        rpm: Option<i64>,
        /// Tokens (input plus output, worst case while in flight) per minute.
        #[arg(long)]
        tpm: Option<i64>,
    },
    /// List rate limits.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove the limits of one claw or one key.
    Remove {
        /// The claw.
        #[arg(long, conflicts_with = "key", required_unless_present = "key")]
        claw: Option<String>,
        /// The key.
        #[arg(long)]
        key: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum VaultCommand {
    /// Re-wrap every organisation's data key under a new master key, in one
    /// transaction; the old master key then opens nothing. With a master
    /// key file the new key is generated and replaces it; with
    /// CLAWRUN_MASTER_KEY the new key (base64) is read from stdin.
    RotateMaster,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Name of the claw.
    name: String,
    /// Conversation id; a new one is made when absent.
    #[arg(long)]
    conversation: Option<String>,
    /// Input text; read from stdin when absent.
    #[arg(long)]
    input: Option<String>,
    /// Print JSON: output, run id and usage records.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct UsageArgs {
    /// Group by claw, conversation, tool, key, model, hour or day.
    #[arg(long, default_value = "claw")]
    by: UsageGroup,
    /// Only this claw.
    #[arg(long)]
    claw: Option<String>,
    /// Only this conversation.
    #[arg(long)]
    conversation: Option<String>,
    /// Only usage at or after this time: RFC 3339 (2026-12-01T00:00:00Z) or
    /// an age like 24h or 7days.
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Only usage before this time, in the same forms.
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV.
    #[arg(long)]
    csv: bool,
}

/// A time as milliseconds since the Unix epoch, from RFC 3339 or an age.
fn parse_time(text: &str) -> Result<i64, String> {
    let to_ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    if let Ok(at) = humantime::parse_rfc3339_weak(text) {
        return Ok(to_ms(at));
    }
    match humantime::parse_duration(text) {
        Ok(age) => Ok(to_ms(std::time::SystemTime::now()) - age.as_millis() as i64),
        Err(_) => Err(format!(
            "`{text}` is neither an RFC 3339 time nor an age like 24h"
        )),
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
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
    match cli.command {
        Command::Init => {
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
        Command::Keys(cmd) => keys(&Service::open(&dir)?, cmd),
        Command::Claws(cmd) => claws(&Service::open(&dir)?, cmd),
        Command::Run(args) => run(&Service::open(&dir)?, args).await,
        Command::Usage(args) => usage(&Service::open(&dir)?, args),
        Command::Audit { json } => audit(&Service::open(&dir)?, json),
        Command::Vault(VaultCommand::RotateMaster) => rotate_master(&Service::open(&dir)?),
        Command::Budgets(cmd) => budgets(&Service::open(&dir)?, cmd),
        Command::Limits(cmd) => limits(&Service::open(&dir)?, cmd),
        Command::Serve { listen } => {
            let svc = std::sync::Arc::new(Service::open(&dir)?);
            crate::api::serve(svc, listen, async {
                shutdown_signal().await;
            })
            .await
            .with_context(|| format!("cannot serve on {listen}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::DevProvider { listen } => dev_provider(listen).await,
    }
}

fn keys(svc: &Service, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
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
                path,
                auth_header,
                auth_scheme,
            };
            // Checked before the key is read, so a typo costs no paste.
            compatible.validate().map_err(anyhow::Error::msg)?;
            let secret = secret::read(&format!("API key for `{name}`"))?;
            let row =
                svc.keys_add_configured(&name, provider, base_url.as_deref(), compatible, secret)?;
            println!(
                "added key `{}` ({}, {}, version {})",
                row.name, row.provider, row.hint, row.version
            );
        }
        KeysCommand::List { json } => {
            let rows = svc.keys_list()?;
            if json {
                output::print_json(&rows.iter().map(output::key_json).collect::<Vec<_>>())?;
            } else {
                output::keys_table(&rows).print();
            }
        }
        KeysCommand::Rotate { name } => {
            let secret = secret::read(&format!("new API key for `{name}`"))?;
            let row = svc.keys_rotate(&name, secret)?;
            println!(
                "rotated key `{}` to version {} ({})",
                row.name, row.version, row.hint
            );
        }
        KeysCommand::Revoke { name } => {
            let row = svc.keys_revoke(&name)?;
            println!(
                "revoked key `{}`: no request with it starts from now on",
                row.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn claws(svc: &Service, cmd: ClawsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ClawsCommand::Deploy { file, name } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let row = svc.claws_deploy(&name, &bytes)?;
            println!(
                "deployed claw `{}` ({} bytes, sha256 {})",
                row.name,
                row.size,
                &row.digest[..16]
            );
            if row.model.is_none() {
                println!(
                    "next: clawrun claws assign {} --key KEY --model MODEL",
                    row.name
                );
            }
        }
        ClawsCommand::Assign { name, key, model } => {
            let row = svc.claws_assign(&name, &key, &model)?;
            println!(
                "claw `{}` now uses key `{}` with model `{}` from its next call",
                row.name,
                row.key_name.unwrap_or_default(),
                row.model.unwrap_or_default()
            );
        }
        ClawsCommand::List { json } => {
            let rows = svc.claws_list()?;
            if json {
                output::print_json(&rows.iter().map(output::claw_json).collect::<Vec<_>>())?;
            } else {
                output::claws_table(&rows).print();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(svc: &Service, args: RunArgs) -> anyhow::Result<ExitCode> {
    let input = match args.input {
        Some(text) => text,
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the input from stdin")?;
            text
        }
    };
    let conversation = args.conversation.unwrap_or_else(|| service::new_id("conv"));
    // Ctrl-C or SIGTERM drops the run: a call in flight then writes its
    // record (estimated input, outcome `cancelled`) before the process ends.
    let report = tokio::select! {
        report = svc.run(&args.name, &conversation, &input) => report?,
        signal = shutdown_signal() => {
            bail!("{signal}: the run of `{}` was stopped; its calls so far are recorded", args.name)
        }
    };
    if !report.output.stderr.is_empty() {
        tracing::debug!(claw = %args.name, stderr = %report.output.stderr, "guest stderr");
    }
    if args.json {
        output::print_json(&serde_json::json!({
            "run_id": report.run_id,
            "conversation_id": report.conversation_id,
            "output": report.output.result.as_ref().ok(),
            "error": report.output.result.as_ref().err(),
            "usage": report.usage,
        }))?;
    } else {
        if let Ok(text) = &report.output.result {
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
    match report.output.result {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(why) => bail!("claw `{}` returned an error: {why}", args.name),
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

fn usage(svc: &Service, args: UsageArgs) -> anyhow::Result<ExitCode> {
    let scope = service::UsageScope {
        claw: args.claw.as_deref(),
        conversation: args.conversation.as_deref(),
        since_ms: args.since,
        until_ms: args.until,
    };
    let totals = svc.usage(args.by, &scope)?;
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

fn audit(svc: &Service, json: bool) -> anyhow::Result<ExitCode> {
    let records = svc.audit_records()?;
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

fn budgets(svc: &Service, cmd: BudgetsCommand) -> anyhow::Result<ExitCode> {
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
                (Some(t), _) => (BudgetUnit::Tokens, t),
                (None, Some(d)) if d.is_finite() && d >= 0.0 => {
                    (BudgetUnit::Micros, (d * 1e6).round() as i64)
                }
                _ => bail!("give --tokens N or --usd AMOUNT (a non-negative number)"),
            };
            let budget = svc.budgets_add(scope, claw.as_deref(), unit, per, amount)?;
            println!("added {budget}");
        }
        BudgetsCommand::List { json } => {
            let rows = svc.budgets_list()?;
            if json {
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
            svc.budgets_remove(id)?;
            println!("removed budget #{id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn limits(svc: &Service, cmd: LimitsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LimitsCommand::Set {
            claw,
            key,
            rpm,
            tpm,
        } => {
            let limit = svc.limits_set(claw.as_deref(), key.as_deref(), rpm, tpm)?;
            println!(
                "{} {}: {} requests and {} tokens per minute",
                limit.scope,
                claw.or(key).unwrap_or_default(),
                limit.rpm.map_or_else(|| "any".into(), |v| v.to_string()),
                limit.tpm.map_or_else(|| "any".into(), |v| v.to_string()),
            );
        }
        LimitsCommand::Remove { claw, key } => {
            svc.limits_remove(claw.as_deref(), key.as_deref())?;
            println!(
                "removed the rate limits of {}",
                claw.or(key).unwrap_or_default()
            );
        }
        LimitsCommand::List { json } => {
            let rows = svc.limits_list()?;
            if json {
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

fn rotate_master(svc: &Service) -> anyhow::Result<ExitCode> {
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
