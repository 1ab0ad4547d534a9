//! `swarm-director`: parse the command line, load settings, start logging, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use swarm_director::cli;
use swarm_director::config::Settings;

#[derive(Parser)]
#[command(name = "swarm-director", version, about = "Email- and webhook-driven automation bot")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bot: HTTP, task worker, outbox worker, scheduler.
    Serve,
    /// Feed raw RFC 5322 files through intake; wait for their tasks and replies.
    Ingest {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Apply database migrations.
    Migrate,
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Tasks.
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Messages that could not be parsed, kept with their raw bytes and the reason.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Replies waiting to go out.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Scheduled jobs: retention, webhook nonces, digest, alerts.
    Job {
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Write an online, checked copy of the SQLite database to PATH (see docs/backup.md).
    Backup { path: PathBuf },
    /// API tokens (for /api/v1, /mcp and the pages).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Addresses we no longer send to (hard bounces).
    Suppression {
        #[command(subcommand)]
        command: SuppressionCommand,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// Print `ID<TAB>RECEIVED<TAB>SOURCE<TAB>BYTES<TAB>REASON`, newest first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Print the message's details, a blank line, then its raw bytes exactly as received.
    Show { id: i64 },
    /// Parse it again with today's limits and code: it becomes a task (or is ignored) if it now can.
    Reprocess { id: i64 },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Send a reply that a reply cap held (its delivery id is on the task page).
    Release { id: i64 },
}

#[derive(Subcommand)]
enum JobCommand {
    /// Print `NAME<TAB>SCHEDULE<TAB>STATE<TAB>LAST RUN<TAB>ABOUT`.
    List,
    /// Run one job now and print what it did.
    Run { name: String },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token and print it (once: only its SHA-256 is stored).
    Create {
        /// 1-64 of a-z, 0-9, - and _; audit records name the token by it.
        #[arg(long)]
        name: String,
        /// Comma-separated: read (see tasks and mail), operate (retry, cancel, release,
        /// reprocess, create tasks), approve (decide held drafts).
        #[arg(long, default_value = "read")]
        scopes: String,
        /// Lifetime such as 90d, 12h or 30m; none when absent.
        #[arg(long)]
        expires: Option<String>,
    },
    /// Print `NAME<TAB>SCOPES<TAB>CREATED<TAB>LAST USED<TAB>EXPIRES<TAB>STATE`.
    List,
    /// Refuse the token from now on.
    Revoke { name: String },
}

#[derive(Subcommand)]
enum SuppressionCommand {
    /// Print `ADDRESS<TAB>SINCE<TAB>REASON`, newest first.
    List,
    /// Send to ADDRESS again.
    Remove { address: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Write the audit log to stdout.
    Export {
        #[arg(long, value_enum, default_value = "csv")]
        format: Format,
        /// Only records at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only records at or before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only records of this task.
        #[arg(long)]
        task: Option<i64>,
    },
    /// Check the hash chain; exits non-zero naming the first bad record.
    Verify,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// JSON Lines, one record per line.
    Jsonl,
    /// One task's audit report with the chain hashes (needs --task).
    Pdf,
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Print a task with its steps, reply and deliveries as JSON.
    Show { id: i64 },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            cli::exit_code(&e)
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let settings = Settings::from_env()?;
    cli::init_tracing(&settings);
    match cli.command {
        Command::Serve => cli::serve(settings).await,
        Command::Ingest { files } => cli::ingest(settings, files).await,
        Command::Migrate => cli::migrate(settings).await,
        Command::Audit { command: AuditCommand::Export { format, since, until, task } } => {
            let format = match format {
                Format::Csv => cli::ExportFormat::Csv,
                Format::Jsonl => cli::ExportFormat::Jsonl,
                Format::Pdf => cli::ExportFormat::Pdf,
            };
            cli::audit_export(settings, format, since, until, task).await
        }
        Command::Audit { command: AuditCommand::Verify } => cli::audit_verify(settings).await,
        Command::Quarantine { command: QuarantineCommand::List { limit } } => {
            cli::quarantine_list(settings, limit).await
        }
        Command::Quarantine { command: QuarantineCommand::Show { id } } => {
            cli::quarantine_show(settings, id).await
        }
        Command::Quarantine { command: QuarantineCommand::Reprocess { id } } => {
            cli::quarantine_reprocess(settings, id).await
        }
        Command::Outbox { command: OutboxCommand::Release { id } } => cli::outbox_release(settings, id).await,
        Command::Suppression { command: SuppressionCommand::List } => cli::suppression_list(settings).await,
        Command::Suppression { command: SuppressionCommand::Remove { address } } => {
            cli::suppression_remove(settings, address).await
        }
        Command::Token { command: TokenCommand::Create { name, scopes, expires } } => {
            cli::token_create(settings, name, scopes, expires).await
        }
        Command::Token { command: TokenCommand::List } => cli::token_list(settings).await,
        Command::Token { command: TokenCommand::Revoke { name } } => cli::token_revoke(settings, name).await,
        Command::Task { command: TaskCommand::Show { id } } => cli::task_show(settings, id).await,
        Command::Job { command: JobCommand::List } => cli::job_list(settings).await,
        Command::Job { command: JobCommand::Run { name } } => cli::job_run(settings, name).await,
        Command::Backup { path } => cli::backup(settings, path).await,
    }
}
