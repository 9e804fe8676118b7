//! The command line's arguments: every command, subcommand and flag.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::db::UsageGroup;
use crate::providers::ProviderKind;

/// Run AI agents compiled to WebAssembly, holding your provider keys for them.
#[derive(Debug, Parser)]
#[command(name = "clawrun", version, about)]
pub(super) struct Cli {
    /// Data directory (database and master key file).
    #[arg(long, global = true, env = "CLAWRUN_DATA_DIR", value_name = "DIR")]
    pub(super) data_dir: Option<PathBuf>,

    /// Organisation the local commands act in [default: default]. With
    /// --server, the token decides the organisation.
    #[arg(long, global = true, env = "CLAWRUN_ORG")]
    pub(super) org: Option<String>,

    /// Act on a remote host's API instead of the local data directory, with
    /// the API token in CLAWRUN_TOKEN.
    #[arg(long, global = true, env = "CLAWRUN_SERVER", value_name = "URL")]
    pub(super) server: Option<String>,

    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
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
    /// Create and list organisations (operator, local only).
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// Show or set an organisation's limits (runs in progress at once;
    /// operator, local only).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Create, list and revoke the organisation's API tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Serve the HTTP API, the dashboard and the OpenAPI document.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Also serve Prometheus metrics of every organisation on this
        /// address (keep it private: labels name every organisation's claws).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// After SIGTERM or Ctrl-C, how long running claws may take to
        /// finish before they are cancelled (their usage is recorded).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
    /// Serve an emulator of the provider APIs on loopback, for offline work.
    DevProvider {
        /// Address to listen on; must be a loopback address.
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum OrgsCommand {
    /// Create an organisation with its own data key, and print its first
    /// API token (shown once).
    Create {
        /// Name of the organisation.
        name: String,
    },
    /// List organisations.
    List,
}

#[derive(Debug, Subcommand)]
pub(super) enum TokensCommand {
    /// Create an API token and print it (shown once).
    Create {
        /// What the token is for.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List tokens (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: the next request bearing it is refused.
    Revoke {
        /// The token's id (`tok_…`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum KeysCommand {
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
pub(super) enum ClawsCommand {
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
    /// Delete a claw with its budgets and rate limits; its usage stays.
    Delete {
        /// Name of the claw.
        name: String,
    },
    /// Show a claw's run limits, or set its own: each flag given replaces
    /// that limit, the others keep theirs. Applies from its next run.
    Limits(ClawLimitsArgs),
}

#[derive(Debug, Args)]
pub(super) struct ClawLimitsArgs {
    /// Name of the claw.
    pub(super) name: String,
    /// Wall-clock time a run may take, host calls included, in milliseconds.
    #[arg(long)]
    pub(super) deadline_ms: Option<u64>,
    /// CPU: fuel a run may burn (about one unit per Wasm instruction).
    #[arg(long)]
    pub(super) fuel: Option<u64>,
    /// Linear memory of a run, summed over every memory, in MiB.
    #[arg(long)]
    pub(super) memory_mib: Option<u64>,
    /// Table elements of a run, summed over every table.
    #[arg(long)]
    pub(super) table_elements: Option<u64>,
    /// Core instances a run may create.
    #[arg(long)]
    pub(super) instances: Option<u64>,
    /// llm-calls per run.
    #[arg(long)]
    pub(super) llm_calls: Option<u64>,
    /// Largest value crossing the cage's boundary (input, output, each text
    /// of an llm-call, a whole llm-call request), in KiB.
    #[arg(long)]
    pub(super) max_value_kib: Option<u64>,
    /// Remove the claw's own limits (before applying the flags given).
    #[arg(long)]
    pub(super) reset: bool,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum OrgCommand {
    /// Show the organisation's limits, or set them.
    Limits {
        /// Runs the organisation may have in progress at once, in every
        /// process sharing the data directory; a run over it waits up to 5 s
        /// for one to end, then fails.
        #[arg(long, conflicts_with = "reset")]
        concurrent_runs: Option<u32>,
        /// Restore the default.
        #[arg(long)]
        reset: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum BudgetsCommand {
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
pub(super) enum LimitsCommand {
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
pub(super) enum VaultCommand {
    /// Re-wrap every organisation's data key under a new master key, in one
    /// transaction; the old master key then opens nothing. With a master
    /// key file the new key is generated and replaces it; with
    /// CLAWRUN_MASTER_KEY the new key (base64) is read from stdin.
    RotateMaster,
}

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// Name of the claw.
    pub(super) name: String,
    /// Conversation id; a new one is made when absent.
    #[arg(long)]
    pub(super) conversation: Option<String>,
    /// Input text; read from stdin when absent.
    #[arg(long)]
    pub(super) input: Option<String>,
    /// Print JSON: output, run id and usage records.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Args)]
pub(super) struct UsageArgs {
    /// Group by claw, conversation, tool, key, model, hour or day.
    #[arg(long, default_value = "claw")]
    pub(super) by: UsageGroup,
    /// Only this claw.
    #[arg(long)]
    pub(super) claw: Option<String>,
    /// Only this conversation.
    #[arg(long)]
    pub(super) conversation: Option<String>,
    /// Only usage at or after this time: RFC 3339 (2026-12-01T00:00:00Z) or
    /// an age like 24h or 7days.
    #[arg(long, value_parser = parse_time)]
    pub(super) since: Option<i64>,
    /// Only usage before this time, in the same forms.
    #[arg(long, value_parser = parse_time)]
    pub(super) until: Option<i64>,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    pub(super) json: bool,
    /// Print CSV.
    #[arg(long)]
    pub(super) csv: bool,
}

/// A time as milliseconds since the Unix epoch, from RFC 3339 or an age.
pub(super) fn parse_time(text: &str) -> Result<i64, String> {
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
