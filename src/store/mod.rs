//! Storage: connection pools, migrations and every SQL statement of the application.
//!
//! Two backends, chosen by the `DATABASE_URL` scheme, behind one API (callers never see SQL or
//! the dialect):
//! - SQLite (`sqlite://path`): WAL mode, a busy timeout, one writer connection (writes are
//!   serialized in-process, readers never block them), `BEGIN IMMEDIATE` transactions.
//! - PostgreSQL (`postgres://...`): one pool for several instances on one database; work is
//!   claimed with `FOR NO KEY UPDATE SKIP LOCKED`.
//!
//! Statements are written once with `$N` placeholders, which both drivers accept; the few that
//! differ by dialect are named in [`Dialect`]. Every state change appends its audit record in the
//! same transaction (invariant 3); the single-row chain head is the last lock a transaction takes
//! (`FOR UPDATE` on PostgreSQL), so concurrent writers in several processes append in one total
//! order without deadlocks. Migrations: `migrations/sqlite`, `migrations/postgres`.
//!
//! One file per aggregate: [`messages`], [`tasks`], [`outbox`], [`suppressions`], [`mailboxes`],
//! [`audit`], [`reports`], [`jobs`] (scheduled runs, alerts, retention), [`tokens`] (API tokens, idempotency keys), and [`leases`] (heartbeats, fences) across them; [`dialect`] holds what differs between the backends. Business rules
//! (who joins a conversation, what a bounce means) are decided by the callers' domain modules;
//! this module only stores what they decided.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, Connection, Transaction};

use crate::audit::AuditEvent;
use crate::domain::{Clock, SystemClock};
use audit::append_to_chain;
use dialect::Dialect;

/// `SELECT <the columns of a [`TaskRow`]> FROM tasks <rest>`, as one static statement.
macro_rules! select_task_rows {
    ($rest:literal) => {
        concat!(
            "SELECT id, message_id, created_at, updated_at, sender, reply_to, subject, workflow, status, \
             attempts, started_at, finished_at, error, conversation_id, follows FROM tasks ",
            $rest
        )
    };
}

mod activity;
mod api;
mod audit;
mod backup;
mod dialect;
mod error;
mod jobs;
mod leases;
mod mailboxes;
mod messages;
mod outbox;
mod reports;
mod suppressions;
mod tasks;
mod tokens;

pub use activity::StepSample;
pub use api::{AuditPage, TaskFilter};
pub use audit::AuditFilter;
pub use dialect::timestamp;
pub use error::{Result, StoreError};
pub use jobs::{AlertRow, JobRun, Purged};
pub use leases::{Expired, Heartbeat, Leased};
pub use mailboxes::MailboxState;
pub use messages::{Disposition, MessageRow, NewMessage, Nonce};
pub use outbox::{CapScope, ClaimedDelivery, DeliveryRow, NewDelivery, OwnedDelivery};
pub use reports::{Digest, Gauges, Overview};
pub use suppressions::Suppression;
pub use tasks::{ClaimedTask, NewStep, NewTask, StepOutcome, StepRow, TaskRow};
pub use tokens::{KeyUse, TokenRow};

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub struct DbOptions {
    /// Connections in the pool (PostgreSQL), or SQLite reader connections (SQLite has one writer).
    pub pool_size: u32,
    /// Longest wait for a free connection.
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout`; SQLite busy timeout (the longest wait for the write lock).
    pub statement_timeout: Duration,
    /// SQLite `synchronous = FULL` (the default): every commit is on disk before it returns, so
    /// an acknowledged message survives a power loss. `false` is `NORMAL`: commits survive a
    /// crash of the process, and the last ones may be lost with the machine's power.
    pub sqlite_full_sync: bool,
}

impl Default for DbOptions {
    fn default() -> Self {
        Self {
            pool_size: 10,
            acquire_timeout: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(30),
            sqlite_full_sync: true,
        }
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    writer: AnyPool,
    reader: AnyPool,
    dialect: Dialect,
    clock: Arc<dyn Clock>,
    /// The last write transaction's failure, if it failed (cleared by the next commit).
    write_failure: Arc<std::sync::Mutex<Option<String>>>,
}

fn as_json<S: serde::Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.to_owned())).serialize(s)
}

fn as_json_opt<S: serde::Serializer>(text: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match text {
        Some(t) => as_json(t, s),
        None => s.serialize_none(),
    }
}

/// Whether a connection given back to the pool may be used again. One that still counts a
/// transaction open once the rollback queued by its dropped transaction has run is closed
/// instead (the pool opens a fresh one): that is what a failed `COMMIT` leaves behind (SQLite
/// on a full disk rolls back by itself, the driver still counts the transaction, and every later
/// `BEGIN` on the connection would fail until a restart).
async fn fit_for_reuse(conn: &mut AnyConnection) -> std::result::Result<bool, sqlx::Error> {
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // Runs after the queued rollback, on the connection's own worker.
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!("closing a database connection left inside a failed transaction");
        return Ok(false);
    }
    Ok(true)
}

/// Hides a password in a database URL for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl Store {
    /// The same database read through `clock`: every timestamp this store writes or compares
    /// (leases, retries, windows, audit records) comes from it.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// The clock this store reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Now, as the tables store it.
    fn now(&self) -> String {
        timestamp(self.clock.now())
    }

    /// `d` from now, as the tables store it.
    fn later(&self, d: Duration) -> String {
        dialect::later(self.clock.now(), d)
    }

    /// Opens the database named by `url`: `sqlite://path` (the file and its folder are created
    /// when missing) or `postgres://user:password@host:port/db`. Does not migrate; see
    /// [`Store::migrate`].
    ///
    /// Errors: an unsupported URL scheme, an unreachable server, file or folder. The URL's
    /// password never appears in an error.
    pub async fn connect(url: &str, options: &DbOptions) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            Self::connect_sqlite(url, path, options).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(url, options).await
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite:// or postgres:// (got {:?})", redact(url))
        }
    }

    async fn connect_sqlite(url: &str, path: &str, options: &DbOptions) -> anyhow::Result<Self> {
        let (file, query) = path.split_once('?').unwrap_or((path, ""));
        if !file.is_empty()
            && file != ":memory:"
            && let Some(dir) = Path::new(file).parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Create the file when missing, unless the URL says otherwise.
        let url = if query.contains("mode=") {
            url.to_owned()
        } else if query.is_empty() {
            format!("{url}?mode=rwc")
        } else {
            format!("{url}&mode=rwc")
        };
        let connect =
            AnyConnectOptions::from_str(&url).with_context(|| format!("parsing DATABASE_URL {url:?}"))?;
        let busy_ms = options.statement_timeout.as_millis();
        let sync = if options.sqlite_full_sync { "FULL" } else { "NORMAL" };
        let pragmas = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON; \
             PRAGMA busy_timeout = {busy_ms};"
        );
        let writer_pragmas = pragmas.clone();
        let writer = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .after_release(|conn, _| Box::pin(fit_for_reuse(conn)))
            .after_connect(move |conn, _| {
                let sql = writer_pragmas.clone();
                Box::pin(async move { sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map(|_| ()) })
            })
            .connect_with(connect.clone())
            .await
            .with_context(|| format!("opening {file}"))?;
        let reader = AnyPoolOptions::new()
            .max_connections(options.pool_size.max(1))
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _| {
                let sql = format!("{pragmas} PRAGMA query_only = ON;");
                Box::pin(async move { sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map(|_| ()) })
            })
            .connect_lazy_with(connect);
        Ok(Self {
            writer,
            reader,
            dialect: Dialect::Sqlite,
            clock: Arc::new(SystemClock),
            write_failure: Arc::default(),
        })
    }

    async fn connect_postgres(url: &str, options: &DbOptions) -> anyhow::Result<Self> {
        let connect = AnyConnectOptions::from_str(url)
            .with_context(|| format!("parsing DATABASE_URL {:?}", redact(url)))?;
        let timeout_ms = options.statement_timeout.as_millis();
        let pool = AnyPoolOptions::new()
            .max_connections(options.pool_size.max(1))
            .acquire_timeout(options.acquire_timeout)
            .after_release(|conn, _| Box::pin(fit_for_reuse(conn)))
            .after_connect(move |conn, _| {
                let sql = format!("SET statement_timeout = {timeout_ms}");
                Box::pin(async move { sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map(|_| ()) })
            })
            .connect_with(connect)
            .await
            .with_context(|| format!("connecting to {}", redact(url)))?;
        Ok(Self {
            writer: pool.clone(),
            reader: pool,
            dialect: Dialect::Postgres,
            clock: Arc::new(SystemClock),
            write_failure: Arc::default(),
        })
    }

    /// Applies pending migrations of this backend (`migrations/sqlite` or `migrations/postgres`,
    /// embedded in the binary). Safe to run from several instances at once on PostgreSQL (sqlx
    /// holds an advisory lock while migrating).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        self.migrator().run(&self.writer).await.context("applying migrations")
    }

    fn migrator(&self) -> sqlx::migrate::Migrator {
        match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres"),
        }
    }

    /// Whether the database holds every migration this binary embeds, each applied
    /// successfully: `Ok(false)` when one is missing or failed (run `migrate`), an error when
    /// the database cannot be read. One read on the reader pool, for `/readyz`.
    pub async fn migrations_current(&self) -> Result<bool> {
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.reader)
            .await?;
        Ok(self.migrator().iter().all(|m| applied.contains(&m.version)))
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, Any>> {
        let begun = self.writer.begin_with(self.dialect.begin()).await;
        self.note_write(begun.as_ref().map(|_| ()));
        Ok(begun?)
    }

    /// Commits `tx`, noting the outcome for [`Store::write_failure`].
    async fn commit(&self, tx: Transaction<'static, Any>) -> Result<()> {
        let committed = tx.commit().await;
        self.note_write(committed.as_ref().map(|_| ()));
        Ok(committed?)
    }

    fn note_write(&self, outcome: std::result::Result<(), &sqlx::Error>) {
        let mut failure = self.write_failure.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) if failure.is_some() => {
                tracing::info!("database writes succeed again");
                *failure = None;
            }
            Ok(()) => {}
            Err(e) => *failure = Some(e.to_string()),
        }
    }

    /// Why the last write transaction failed, while no later one has committed: a database
    /// that answers reads but cannot commit (a full disk, a lock held past the busy timeout)
    /// is failing, not healthy. Writes of other processes sharing the database are not seen.
    pub fn write_failure(&self) -> Option<String> {
        self.write_failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Appends `events` to the audit chain and commits. The chain head is locked here, as the
    /// last lock the transaction takes: a transaction holding the head never waits for a row
    /// lock, so concurrent writers cannot deadlock on it (see the module docs).
    async fn commit_audited(&self, mut tx: Transaction<'static, Any>, events: Vec<AuditEvent>) -> Result<()> {
        append_to_chain(&mut tx, self.dialect, &self.now(), events).await?;
        self.commit(tx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(redact("postgres://swarm:s3cret@db:5432/x"), "postgres://***@db:5432/x");
        assert_eq!(redact("sqlite://data/swarm.db"), "sqlite://data/swarm.db");
    }
}
