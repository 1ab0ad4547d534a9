//! The command line's commands, one function each: what `main.rs` calls once it has parsed the
//! arguments and read the settings. Each prints its result to stdout (tab-separated lines or
//! JSON, documented per command) and returns the process exit code; errors are returned for
//! `main` to print. A row that is not there (no such task, delivery or suppression) is an error.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use secrecy::ExposeSecret;

use crate::app::{App, Application};
use crate::audit::CsvExport;
use crate::audit::export::JsonlExport;
use crate::config::Settings;
use crate::intake::Source;
use crate::reports::{outcome_details, parse_bound, task_audit_pdf, task_report, verify_audit};
use crate::store::{AuditFilter, Store, StoreError};

/// The exit code of a failed command (sysexits(3)): 66 (`EX_NOINPUT`) when what it names does
/// not exist, 65 (`EX_DATAERR`) when it is in a state that does not allow the change, 75
/// (`EX_TEMPFAIL`) when the database failed or a lease was lost (try again), 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> ExitCode {
    match error.chain().find_map(|cause| cause.downcast_ref::<StoreError>()) {
        Some(StoreError::NotFound(_)) => ExitCode::from(66),
        Some(StoreError::Conflict(_)) => ExitCode::from(65),
        Some(StoreError::Database(_) | StoreError::LeaseLost(_)) => ExitCode::from(75),
        None => ExitCode::FAILURE,
    }
}

/// Logs to stderr with `SWARM_LOG` directives, as text (colours only on a terminal) or JSON.
pub fn init_tracing(settings: &Settings) {
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
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// `serve`: HTTP, task workers, outbox worker, IMAP intake and scheduler until SIGINT/SIGTERM.
pub async fn serve(settings: Settings) -> Result<ExitCode> {
    let app = Application::build(settings).await?;
    app.run_until(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `migrate`: applies the migrations.
pub async fn migrate(settings: Settings) -> Result<ExitCode> {
    open(&settings).await?;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

/// `ingest FILE...`: prints `PATH<TAB>OUTCOME<TAB>DETAILS` per file once its task and reply are
/// done. Exit 1 only when a file could not be read.
pub async fn ingest(settings: Settings, files: Vec<PathBuf>) -> Result<ExitCode> {
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
            Ok(o) => format!("{path}\t{}\t{}", o.word(), outcome_details(&app.store, &o).await?),
        };
        writeln!(out, "{line}")?;
    }
    Ok(if unreadable { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The format of `audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// RFC 4180 CSV with a header row.
    Csv,
    /// JSON Lines: one record per line.
    Jsonl,
    /// The audit report of one task (`--task`), with the chain hashes.
    Pdf,
}

/// `audit export`: the audit log on stdout as CSV or JSON Lines, optionally bounded in time and
/// to one task; or one task's PDF report.
pub async fn audit_export(
    settings: Settings,
    format: ExportFormat,
    since: Option<String>,
    until: Option<String>,
    task: Option<i64>,
) -> Result<ExitCode> {
    let filter = AuditFilter {
        since: parse_bound("--since", since.as_deref()).map_err(anyhow::Error::msg)?,
        until: parse_bound("--until", until.as_deref()).map_err(anyhow::Error::msg)?,
        task,
    };
    let store = open(&settings).await?;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        ExportFormat::Csv => {
            let mut csv = CsvExport::new(stdout)?;
            store.for_each_audit(&filter, |r| -> Result<()> { Ok(csv.write(&r)?) }).await?;
            csv.finish()?.flush()?;
        }
        ExportFormat::Jsonl => {
            let mut jsonl = JsonlExport::new(stdout);
            store.for_each_audit(&filter, |r| -> Result<()> { Ok(jsonl.write(&r)?) }).await?;
            jsonl.finish()?;
        }
        ExportFormat::Pdf => {
            let id = task.context("--format pdf is a per-task report: name the task with --task ID")?;
            let now = store.clock().now();
            let pdf = task_audit_pdf(&store, id, now)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no task {id}")))?;
            stdout.write_all(&pdf)?;
            stdout.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `audit verify`: checks the hash chain; exit 1 naming the first bad record.
pub async fn audit_verify(settings: Settings) -> Result<ExitCode> {
    let store = open(&settings).await?;
    match verify_audit(&store).await? {
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

/// `backup PATH`: an online copy of the SQLite database (while `serve` runs), then checked:
/// `PRAGMA integrity_check` and the audit chain on the copy. Prints one line per step; exit 1
/// when a check fails (the copy is kept for inspection), 65 on PostgreSQL or an existing PATH.
pub async fn backup(settings: Settings, path: PathBuf) -> Result<ExitCode> {
    let store = open(&settings).await?;
    let begun = std::time::Instant::now();
    store.backup_into(&path).await?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("copied to {}: {bytes} bytes in {} ms", path.display(), begun.elapsed().as_millis());
    let copy = Store::connect(&format!("sqlite://{}", path.display()), &settings.db).await?;
    let integrity = copy.integrity_check().await?;
    let chain = verify_audit(&copy).await?;
    let tasks = copy.overview(0).await?.tasks_by_status.iter().map(|(_, n)| n).sum::<i64>();
    match (&integrity, &chain) {
        (Ok(()), Ok(records)) => {
            println!("integrity_check: ok");
            println!("audit log intact: {records} records; {tasks} tasks");
            println!("backup done in {} ms", begun.elapsed().as_millis());
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            println!("integrity_check: {}", integrity.err().unwrap_or_else(|| "ok".into()));
            println!(
                "audit log: {}",
                chain.map_or_else(|e| format!("BROKEN: {e}"), |n| format!("intact: {n} records"))
            );
            println!("backup FAILED its checks; the copy is left at {} for inspection", path.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `job list`: `NAME<TAB>SCHEDULE<TAB>STATE<TAB>LAST RUN<TAB>ABOUT`; STATE is `on` or why it
/// is off, LAST RUN `<status> <started_at> <note>` or `-`.
pub async fn job_list(settings: Settings) -> Result<ExitCode> {
    let store = open(&settings).await?;
    let last = store.last_job_runs().await?;
    let jobs = &settings.ops.jobs;
    for job in crate::scheduler::JOBS {
        let state = (job.disabled)(jobs).map_or_else(|| "on".to_owned(), |why| format!("off: {why}"));
        let run = last.iter().find(|r| r.job == job.name).map_or_else(
            || "-".to_owned(),
            |r| format!("{} {} {}", r.status, r.started_at, r.note.as_deref().unwrap_or_default()),
        );
        println!("{}\t{}\t{state}\t{run}\t{}", job.name, job.schedule_in(jobs), job.about);
    }
    Ok(ExitCode::SUCCESS)
}

/// `job run NAME`: runs the job now, even when its setting leaves it off on the schedule, and
/// prints what it reported; the outbox sends any mail it queued (here, before exiting).
pub async fn job_run(settings: Settings, name: String) -> Result<ExitCode> {
    crate::scheduler::job(&name)?;
    let app = App::build(settings).await?;
    let note = crate::scheduler::run_now(&app.jobs(), &name).await?;
    println!("{name}: {note}");
    app.drain().await?;
    Ok(ExitCode::SUCCESS)
}

/// `quarantine list`: `ID<TAB>RECEIVED<TAB>SOURCE<TAB>BYTES<TAB>REASON`, newest first.
pub async fn quarantine_list(settings: Settings, limit: i64) -> Result<ExitCode> {
    let store = open(&settings).await?;
    for m in store.quarantined(limit).await? {
        let reason = m.reason.unwrap_or_default();
        println!("{}\t{}\t{}\t{}\t{reason}", m.id, m.received_at, m.source, m.size_bytes);
    }
    Ok(ExitCode::SUCCESS)
}

/// `quarantine show ID`: the message's details, a blank line, then its raw bytes as received.
pub async fn quarantine_show(settings: Settings, id: i64) -> Result<ExitCode> {
    let store = open(&settings).await?;
    let m = store.message(id).await?.ok_or_else(|| StoreError::NotFound(format!("no message {id}")))?;
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

/// `quarantine reprocess ID`: parses the message again; prints `message ID<TAB>OUTCOME<TAB>DETAILS`.
pub async fn quarantine_reprocess(settings: Settings, id: i64) -> Result<ExitCode> {
    let app = App::build(settings).await?;
    let outcome = app.intake.reprocess(id).await?;
    app.drain().await?;
    println!("message {id}\t{}\t{}", outcome.word(), outcome_details(&app.store, &outcome).await?);
    Ok(ExitCode::SUCCESS)
}

/// `outbox release ID`: sends a held reply despite the reply caps.
pub async fn outbox_release(settings: Settings, id: i64) -> Result<ExitCode> {
    let store = open(&settings).await?;
    if !store.release_delivery(id, "cli").await? {
        return Err(StoreError::NotFound(format!("no held delivery {id}")).into());
    }
    println!("delivery {id} released; a running instance sends it on its next pass");
    Ok(ExitCode::SUCCESS)
}

/// `suppression list`: `ADDRESS<TAB>SINCE<TAB>REASON`, newest first.
pub async fn suppression_list(settings: Settings) -> Result<ExitCode> {
    let store = open(&settings).await?;
    for s in store.suppressions().await? {
        println!("{}\t{}\t{}", s.address, s.created_at, s.reason);
    }
    Ok(ExitCode::SUCCESS)
}

/// `suppression remove ADDRESS`: sends to the address again.
pub async fn suppression_remove(settings: Settings, address: String) -> Result<ExitCode> {
    let store = open(&settings).await?;
    if !store.remove_suppression(&address, "cli").await? {
        return Err(StoreError::NotFound(format!("{address} is not on the suppression list")).into());
    }
    println!("{address} removed from the suppression list");
    Ok(ExitCode::SUCCESS)
}

/// `token create`: stores the token's hash and prints `NAME<TAB>SCOPES<TAB>EXPIRES`, then the
/// token alone on the next line. It is not shown again.
pub async fn token_create(
    settings: Settings,
    name: String,
    scopes: String,
    expires: Option<String>,
) -> Result<ExitCode> {
    use crate::domain::{Scopes, new_token, parse_lifetime, token_hash, valid_token_name};
    anyhow::ensure!(valid_token_name(&name), "token names are 1-64 of a-z, 0-9, - and _ (got {name:?})");
    let scopes = Scopes::parse(&scopes)?;
    let lifetime = expires.as_deref().map(parse_lifetime).transpose().map_err(anyhow::Error::msg)?;
    let store = open(&settings).await?;
    let expires_at = lifetime.map(|secs| {
        crate::store::timestamp(
            store.clock().now() + chrono::Duration::seconds(secs.min(i64::MAX as u64) as i64),
        )
    });
    let token = new_token();
    store.create_token(&name, &token_hash(&token), &scopes.to_string(), expires_at.as_deref(), "cli").await?;
    println!("{name}\t{scopes}\t{}", expires_at.as_deref().unwrap_or("never"));
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// `token list`: `NAME<TAB>SCOPES<TAB>CREATED<TAB>LAST USED<TAB>EXPIRES<TAB>STATE`, where STATE
/// is `active`, `expired` or `revoked <time>`.
pub async fn token_list(settings: Settings) -> Result<ExitCode> {
    let store = open(&settings).await?;
    let now = crate::store::timestamp(store.clock().now());
    for t in store.tokens().await? {
        let state = match (&t.revoked_at, &t.expires_at) {
            (Some(at), _) => format!("revoked {at}"),
            (None, Some(until)) if *until <= now => "expired".to_owned(),
            _ => "active".to_owned(),
        };
        let or_dash = |t: &Option<String>| t.clone().unwrap_or_else(|| "-".into());
        println!(
            "{}\t{}\t{}\t{}\t{}\t{state}",
            t.name,
            t.scopes,
            t.created_at,
            or_dash(&t.last_used_at),
            or_dash(&t.expires_at)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `token revoke NAME`: the token is refused from now on (audited).
pub async fn token_revoke(settings: Settings, name: String) -> Result<ExitCode> {
    let store = open(&settings).await?;
    if !store.revoke_token(&name, "cli").await? {
        return Err(StoreError::NotFound(format!("no active token {name:?}")).into());
    }
    println!("token {name} revoked");
    Ok(ExitCode::SUCCESS)
}

/// `task show ID`: the task report as pretty JSON.
pub async fn task_show(settings: Settings, id: i64) -> Result<ExitCode> {
    let store = open(&settings).await?;
    let Some(report) = task_report(&store, id).await? else {
        return Err(StoreError::NotFound(format!("no task {id}")).into());
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// The database, migrated.
async fn open(settings: &Settings) -> Result<Store> {
    let store = Store::connect(settings.database_url.expose_secret(), &settings.db).await?;
    store.migrate().await?;
    Ok(store)
}

/// Resolves on SIGINT or SIGTERM.
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
