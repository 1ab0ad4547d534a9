//! `swarm-director`: parse the command line, load settings, start logging, hand over to the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use secrecy::ExposeSecret;
use swarm_director::app::{App, Application};
use swarm_director::audit::{ChainVerifier, CsvExport};
use swarm_director::config::Settings;
use swarm_director::intake::{Outcome, Source};
use swarm_director::store::{AuditFilter, Store};
use swarm_director::web::{parse_bound, task_report};

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
    Csv,
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Print a task with its steps, reply and deliveries as JSON.
    Show { id: i64 },
}

fn init_tracing(settings: &Settings) {
    // html5ever (inside html2text) warns about every odd HTML construct in real mail; those are
    // not ours to act on, so it is quiet unless SWARM_LOG names it.
    let wanted = &settings.log_filter;
    let directives =
        if wanted.contains("html5ever") { wanted.clone() } else { format!("{wanted},html5ever=error") };
    let filter =
        tracing_subscriber::EnvFilter::try_new(&directives).unwrap_or_else(|_| "info,html5ever=error".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if settings.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let settings = Settings::from_env()?;
    init_tracing(&settings);
    match cli.command {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest { files } => ingest(settings, files).await,
        Command::Migrate => {
            Store::connect(settings.database_url.expose_secret(), &settings.db).await?.migrate().await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command: AuditCommand::Export { format: Format::Csv, since, until, task } } => {
            let filter = AuditFilter {
                since: parse_bound("--since", since.as_deref()).map_err(anyhow::Error::msg)?,
                until: parse_bound("--until", until.as_deref()).map_err(anyhow::Error::msg)?,
                task,
            };
            let store = open(&settings).await?;
            let stdout = std::io::stdout().lock();
            let mut csv = CsvExport::new(std::io::BufWriter::new(stdout))?;
            store.for_each_audit(&filter, |r| -> Result<()> { Ok(csv.write(&r)?) }).await?;
            csv.finish()?.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit { command: AuditCommand::Verify } => {
            let store = open(&settings).await?;
            let mut verifier = ChainVerifier::default();
            let mut broken = None;
            store
                .for_each_audit(&AuditFilter::default(), |r| -> Result<()> {
                    if broken.is_none() {
                        broken = verifier.push(&r).err();
                    }
                    Ok(())
                })
                .await?;
            let (head_seq, head_hash) = store.audit_head().await?;
            match broken.map(Err).unwrap_or_else(|| verifier.finish(head_seq, &head_hash)) {
                Ok(n) => {
                    println!("audit log intact: {n} records");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("audit log BROKEN: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Quarantine { command: QuarantineCommand::List { limit } } => {
            let store = open(&settings).await?;
            for m in store.quarantined(limit).await? {
                let reason = m.reason.unwrap_or_default();
                println!("{}\t{}\t{}\t{}\t{reason}", m.id, m.received_at, m.source, m.size_bytes);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Quarantine { command: QuarantineCommand::Show { id } } => {
            let store = open(&settings).await?;
            let m = store.message(id).await?.with_context(|| format!("no message {id}"))?;
            let raw = store.message_raw(id).await?.unwrap_or_default();
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "message: {}\nstatus: {}\nreceived: {}\nsource: {}",
                m.id, m.status, m.received_at, m.source
            )?;
            writeln!(
                out,
                "reason: {}\nbytes: {}\nsha256: {}\n",
                m.reason.unwrap_or_default(),
                m.size_bytes,
                m.sha256
            )?;
            out.write_all(&raw)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Quarantine { command: QuarantineCommand::Reprocess { id } } => {
            let app = App::build(settings).await?;
            let outcome = app.intake.reprocess(id).await?;
            app.drain().await?;
            println!("message {id}\t{}\t{}", outcome.word(), details(&app.store, &outcome).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Outbox { command: OutboxCommand::Release { id } } => {
            let store = open(&settings).await?;
            if store.release_delivery(id, "cli").await? {
                println!("delivery {id} released; a running instance sends it on its next pass");
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("no held delivery {id}")
            }
        }
        Command::Suppression { command: SuppressionCommand::List } => {
            let store = open(&settings).await?;
            for s in store.suppressions().await? {
                println!("{}\t{}\t{}", s.address, s.created_at, s.reason);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Suppression { command: SuppressionCommand::Remove { address } } => {
            let store = open(&settings).await?;
            if store.remove_suppression(&address, "cli").await? {
                println!("{address} removed from the suppression list");
                Ok(ExitCode::SUCCESS)
            } else {
                bail!("{address} is not on the suppression list")
            }
        }
        Command::Task { command: TaskCommand::Show { id } } => {
            let store = open(&settings).await?;
            match task_report(&store, id).await? {
                Some(report) => {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => bail!("no task {id}"),
            }
        }
    }
}

async fn open(settings: &Settings) -> Result<Store> {
    let store = Store::connect(settings.database_url.expose_secret(), &settings.db).await?;
    store.migrate().await?;
    Ok(store)
}

/// Prints `PATH<TAB>OUTCOME<TAB>DETAILS` per file. Exit 1 only when a file could not be read.
async fn ingest(settings: Settings, files: Vec<PathBuf>) -> Result<ExitCode> {
    let app = App::build(settings).await?;
    let mut results = Vec::with_capacity(files.len());
    let mut unreadable = false;
    for path in &files {
        let shown = path.display().to_string();
        match std::fs::read(path) {
            Ok(raw) => {
                let source = Source::new("cli", Some(&shown));
                let outcome =
                    app.intake.accept(&source, &raw).await.with_context(|| format!("storing {shown}"))?;
                results.push((shown, Ok(outcome)));
            }
            Err(e) => {
                unreadable = true;
                results.push((shown, Err(e.to_string())));
            }
        }
    }
    app.drain().await?;
    let mut out = std::io::stdout().lock();
    for (path, outcome) in results {
        let line = match outcome {
            Err(e) => format!("{path}\terror\t{e}"),
            Ok(o) => format!("{path}\t{}\t{}", o.word(), details(&app.store, &o).await?),
        };
        writeln!(out, "{line}")?;
    }
    Ok(if unreadable { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

async fn details(store: &Store, o: &Outcome) -> Result<String> {
    Ok(match o {
        Outcome::Task { task, .. } => {
            let status = store.task(task.0).await?.map(|t| t.status).unwrap_or_default();
            let delivery = store.task_deliveries(task.0).await?.into_iter().next();
            let reply = match delivery {
                Some(d) if d.status == "delivered" => format!("reply={}", d.location.unwrap_or_default()),
                Some(d) => format!("reply={} ({})", d.status, d.last_error.unwrap_or_default()),
                None => "reply=none".into(),
            };
            format!("task={task} status={status} {reply}")
        }
        Outcome::Duplicate { task, message } => match task {
            Some(t) => format!("duplicate_of_task={t}"),
            None => format!("duplicate_of_message={message}"),
        },
        Outcome::Ignored { message, reason } => format!("message={message} reason={reason}"),
        Outcome::Quarantined { message, reason } => format!("message={message} reason={reason}"),
        Outcome::Replayed => "replayed".into(),
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
