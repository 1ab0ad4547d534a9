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

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, FromRow, Row, Transaction};

use crate::audit::{self, AuditEvent, AuditRecord};
use crate::domain::{DeliveryStatus, MessageRowId, MessageStatus, Outcome, StepStatus, TaskId, TaskStatus};

/// Formats a time the way every table stores it: RFC 3339, UTC, microseconds, `Z`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn now() -> String {
    timestamp(Utc::now())
}

/// `d` from now; absurdly long durations (a mistyped setting) clamp to the last second of year
/// 9999, which still sorts correctly as text.
fn later(d: Duration) -> String {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| Utc::now().checked_add_signed(d))
        .filter(|t| t.timestamp() < 253_402_300_800)
        .map(timestamp)
        .unwrap_or_else(|| "9999-12-31T23:59:59.999999Z".to_owned())
}

/// Which SQL dialect a store speaks; private to this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Opens a write transaction. SQLite takes the write lock up front, so another process waits
    /// (busy timeout) instead of failing on a read-to-write upgrade.
    fn begin(self) -> &'static str {
        match self {
            Self::Sqlite => "BEGIN IMMEDIATE",
            Self::Postgres => "BEGIN",
        }
    }

    /// Reads the audit chain head, locking it until commit on PostgreSQL.
    fn chain_head(self) -> &'static str {
        match self {
            Self::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
            Self::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        }
    }

    /// Claims the oldest queued task, or one whose lease expired.
    fn claim_task(self) -> &'static str {
        match self {
            Self::Sqlite => CLAIM_TASK_SQLITE,
            Self::Postgres => CLAIM_TASK_POSTGRES,
        }
    }

    /// Claims the next due delivery, or one whose lease expired.
    fn claim_delivery(self) -> &'static str {
        match self {
            Self::Sqlite => CLAIM_DELIVERY_SQLITE,
            Self::Postgres => CLAIM_DELIVERY_POSTGRES,
        }
    }
}

// The claims differ only in the lock clause of the subquery; SQLite's single writer makes the
// UPDATE atomic already, PostgreSQL needs SKIP LOCKED so concurrent instances take different rows.
// NO KEY UPDATE (not UPDATE): the row's key never changes, and the weaker lock does not block the
// KEY SHARE locks that foreign-key checks take when the previous owner still writes its steps.
const CLAIM_TASK_SQLITE: &str = "UPDATE tasks
     SET status = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1,
         started_at = COALESCE(started_at, $3), updated_at = $3
     WHERE id = (SELECT id FROM tasks
                 WHERE status = 'queued' OR (status = 'running' AND lease_until < $3)
                 ORDER BY id LIMIT 1)
     RETURNING id, attempts, created_at, workflow, sender, reply_to, subject, input, conversation_id";
const CLAIM_TASK_POSTGRES: &str = "UPDATE tasks
     SET status = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1,
         started_at = COALESCE(started_at, $3), updated_at = $3
     WHERE id = (SELECT id FROM tasks
                 WHERE status = 'queued' OR (status = 'running' AND lease_until < $3)
                 ORDER BY id LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED)
     RETURNING id, attempts, created_at, workflow, sender, reply_to, subject, input, conversation_id";
const CLAIM_DELIVERY_SQLITE: &str = "UPDATE outbox
     SET status = 'sending', lease_owner = $1, lease_until = $2, attempts = attempts + 1
     WHERE id = (SELECT id FROM outbox
                 WHERE (status = 'pending' AND next_attempt_at <= $3)
                    OR (status = 'sending' AND lease_until < $3)
                 ORDER BY next_attempt_at, id LIMIT 1)
     RETURNING id, task_id, message_id, envelope_from, envelope_to, payload, attempts, thread_key, cap_exempt";
const CLAIM_DELIVERY_POSTGRES: &str = "UPDATE outbox
     SET status = 'sending', lease_owner = $1, lease_until = $2, attempts = attempts + 1
     WHERE id = (SELECT id FROM outbox
                 WHERE (status = 'pending' AND next_attempt_at <= $3)
                    OR (status = 'sending' AND lease_until < $3)
                 ORDER BY next_attempt_at, id LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED)
     RETURNING id, task_id, message_id, envelope_from, envelope_to, payload, attempts, thread_key, cap_exempt";

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
}

/// A raw inbound message about to be stored.
#[derive(Debug)]
pub struct NewMessage<'a> {
    /// Where it came from: `cli`, `webhook:raw`, ...
    pub source: &'a str,
    /// The source's own key (file path, webhook-id), for the record.
    pub source_key: Option<&'a str>,
    /// Unique per message: `mid:<Message-ID>` or `sha256:<hex>`.
    pub dedupe_key: &'a str,
    pub message_id: Option<&'a str>,
    pub sha256: &'a str,
    pub raw: &'a [u8],
    pub sender: Option<&'a str>,
    pub subject: Option<&'a str>,
}

/// What to do with a newly stored message, decided before the transaction.
#[derive(Debug)]
pub enum Disposition {
    Task(NewTask),
    Ignored(String),
    Quarantined(String),
    /// A delivery failure report: matched to the outbox delivery it names, which is marked
    /// bounced; a hard bounce puts the recipient on the suppression list. Stored as ignored.
    Bounce(crate::mail::bounce::Bounce),
    /// A sender the policy refused, answered once: stored as ignored with `reason`, and the
    /// refusal queued in the outbox (no task) in the same transaction.
    Refused {
        reason: String,
        refusal: OwnedDelivery,
    },
}

impl Disposition {
    /// The message row's status and reason for this fate.
    fn status(&self) -> (MessageStatus, Option<&str>) {
        match self {
            Disposition::Task(_) => (MessageStatus::Accepted, None),
            Disposition::Bounce(_) => (MessageStatus::Ignored, Some("bounce")),
            Disposition::Ignored(r) | Disposition::Refused { reason: r, .. } => {
                (MessageStatus::Ignored, Some(r.as_str()))
            }
            Disposition::Quarantined(r) => (MessageStatus::Quarantined, Some(r.as_str())),
        }
    }
}

/// What [`Store::follow_up`] found.
enum FollowUp {
    New,
    Joins { conversation: i64, follows: i64 },
    NotJoined { task: i64, why: String },
}

/// The outbox delivery a bounce reports on.
#[derive(Debug, FromRow)]
struct BouncedDelivery {
    id: i64,
    task_id: Option<i64>,
    envelope_to: String,
}

#[derive(Debug)]
pub struct NewTask {
    pub sender: String,
    pub reply_to: String,
    pub subject: String,
    pub workflow: String,
    /// Why this workflow: the routing rule that matched, or how it was chosen (audited).
    pub routed_by: String,
    /// JSON of the parsed email the agents work on.
    pub input: String,
    /// What may make it a follow-up of an earlier task.
    pub follow_up: FollowUpHints,
}

/// How a message may continue an earlier task's conversation: it answers one of our replies
/// (a Message-ID in In-Reply-To/References) or carries a task's `[#id]` tag. It joins only when
/// its sender is that task's sender; anyone else's mail starts its own task, so a leaked or
/// guessed tag cannot read or steer someone else's conversation.
#[derive(Debug, Clone, Default)]
pub struct FollowUpHints {
    /// In-Reply-To then References, bare Message-IDs.
    pub references: Vec<String>,
    /// The `[#id]` in the subject.
    pub tag: Option<i64>,
}

/// A signed request's replay key, stored with the message in one transaction.
#[derive(Debug)]
pub struct Nonce<'a> {
    pub source: &'a str,
    pub nonce: &'a str,
    /// Kept at least this long; older nonces are purged by the scheduler.
    pub keep_for: Duration,
}

/// A task claimed by a worker, with its lease.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedTask {
    pub id: i64,
    pub attempts: i64,
    /// When the task was created (the message was accepted), RFC 3339.
    pub created_at: String,
    pub workflow: String,
    pub sender: String,
    pub reply_to: String,
    pub subject: String,
    pub input: String,
    /// The first task of the conversation this one continues (a follow-up); `None` otherwise.
    pub conversation_id: Option<i64>,
}

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

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct TaskRow {
    pub id: i64,
    pub message_id: i64,
    pub created_at: String,
    pub updated_at: String,
    pub sender: String,
    pub reply_to: String,
    pub subject: String,
    pub workflow: String,
    pub status: String,
    pub attempts: i64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub conversation_id: Option<i64>,
    pub follows: Option<i64>,
}

/// What a reply cap counts: replies to one address, or in one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapScope {
    Recipient,
    Thread,
}

/// An address on the suppression list.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Suppression {
    pub address: String,
    pub reason: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct StepRow {
    pub id: i64,
    pub attempt: i64,
    pub position: i64,
    pub agent: String,
    pub model: Option<String>,
    pub status: String,
    #[serde(serialize_with = "as_json")]
    pub input: String,
    #[serde(serialize_with = "as_json_opt")]
    pub output: Option<String>,
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub cost_usd: Option<f64>,
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

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub task_id: Option<i64>,
    pub kind: String,
    pub message_id: String,
    pub envelope_to: String,
    pub status: String,
    pub attempts: i64,
    pub created_at: String,
    pub delivered_at: Option<String>,
    pub location: Option<String>,
    pub last_error: Option<String>,
}

/// A delivery claimed by the outbox worker.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub task_id: Option<i64>,
    pub message_id: String,
    pub envelope_from: String,
    pub envelope_to: String,
    pub payload: Vec<u8>,
    pub attempts: i64,
    /// Root Message-ID of the conversation, for the per-thread reply cap.
    pub thread_key: Option<String>,
    /// 1 when a person released this held reply: the reply caps do not apply.
    pub cap_exempt: i64,
}

/// [`NewDelivery`] with owned fields, for a delivery decided before its transaction.
#[derive(Debug, Clone)]
pub struct OwnedDelivery {
    pub message_id: String,
    pub envelope_from: String,
    pub envelope_to: String,
    pub payload: Vec<u8>,
    pub thread_key: String,
}

impl OwnedDelivery {
    pub fn as_new(&self) -> NewDelivery<'_> {
        NewDelivery {
            message_id: &self.message_id,
            envelope_from: &self.envelope_from,
            envelope_to: &self.envelope_to,
            payload: &self.payload,
            thread_key: &self.thread_key,
        }
    }
}

/// A reply to queue with a task's completion.
#[derive(Debug)]
pub struct NewDelivery<'a> {
    pub message_id: &'a str,
    pub envelope_from: &'a str,
    pub envelope_to: &'a str,
    pub payload: &'a [u8],
    /// Root Message-ID of the conversation (first References entry, else the request's own).
    pub thread_key: &'a str,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct MessageRow {
    pub id: i64,
    pub received_at: String,
    pub source: String,
    pub source_key: Option<String>,
    pub message_id: Option<String>,
    pub sha256: String,
    pub size_bytes: i64,
    pub status: String,
    pub reason: Option<String>,
    pub sender: Option<String>,
    pub subject: Option<String>,
}

/// Everything the status page shows.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Overview {
    pub tasks_by_status: Vec<(String, i64)>,
    pub messages_by_status: Vec<(String, i64)>,
    pub outbox_backlog: i64,
    /// Deliveries by status (`held` ones wait for a person: a reply cap was reached).
    pub deliveries_by_status: Vec<(String, i64)>,
    pub last_inbound: Vec<(String, String)>,
    pub recent: Vec<TaskRow>,
    pub mailboxes: Vec<MailboxState>,
}

/// Where IMAP intake stands in one mailbox.
#[derive(Debug, Clone, Serialize, FromRow, PartialEq, Eq)]
pub struct MailboxState {
    /// `imap://user@host:port/Mailbox`, the key of this row.
    pub mailbox: String,
    pub uidvalidity: i64,
    /// Highest UID committed and acknowledged (flagged or moved); the next poll fetches above it.
    pub last_uid: i64,
    pub last_ok_at: Option<String>,
    pub last_error: Option<String>,
    pub consecutive_errors: i64,
}

/// Restricts an audit export; `None` means no bound. Times are RFC 3339.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub task: Option<i64>,
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRecord, sqlx::Error> {
    let details: String = row.try_get("details")?;
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        entity: row.try_get("entity")?,
        task_id: row.try_get("task_id")?,
        // A row whose details no longer parse was altered; keep the text so the hash check names it.
        details: serde_json::from_str(&details).unwrap_or(Value::String(details)),
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Appends `events` to the audit chain inside the caller's transaction, as its last step: reads
/// (on PostgreSQL: locks) the head, computes the hashes, then writes every record and the new
/// head. The head is held for as few round trips as possible, since it serializes all writers:
/// PostgreSQL does the writes in one statement (a data-modifying CTE), SQLite in two.
async fn append_to_chain(conn: &mut AnyConnection, dialect: Dialect, events: Vec<AuditEvent>) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let (mut seq, mut hash): (i64, String) =
        sqlx::query_as(dialect.chain_head()).fetch_one(&mut *conn).await?;
    let at = now();
    const COLUMNS: usize = 9;
    let rows: Vec<String> = (0..events.len())
        .map(|r| {
            let params: Vec<String> = (1..=COLUMNS).map(|c| format!("${}", r * COLUMNS + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let insert = format!(
        "INSERT INTO audit_log (seq, at, actor, action, entity, task_id, details, prev_hash, hash) VALUES {}",
        rows.join(", ")
    );
    let head_params = (events.len() * COLUMNS + 1, events.len() * COLUMNS + 2);
    let sql = match dialect {
        Dialect::Postgres => format!(
            "WITH appended AS ({insert} RETURNING seq) UPDATE audit_head SET seq = ${}, hash = ${} WHERE id = 1",
            head_params.0, head_params.1
        ),
        Dialect::Sqlite => insert,
    };
    // The statement text holds only placeholders; every value is bound.
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for event in events {
        let next = seq + 1;
        let next_hash = audit::chain_hash(
            &hash,
            next,
            &at,
            &event.actor,
            event.action,
            &event.entity,
            event.task_id,
            &event.details,
        );
        query = query
            .bind(next)
            .bind(at.clone())
            .bind(event.actor)
            .bind(event.action)
            .bind(event.entity)
            .bind(event.task_id)
            .bind(event.details.to_string())
            .bind(hash)
            .bind(next_hash.clone());
        seq = next;
        hash = next_hash;
    }
    match dialect {
        Dialect::Postgres => {
            query.bind(seq).bind(hash).execute(&mut *conn).await?;
        }
        Dialect::Sqlite => {
            query.execute(&mut *conn).await?;
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(hash)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// A step about to start, for [`Store::start_steps`].
#[derive(Debug)]
pub struct NewStep<'a> {
    pub position: usize,
    pub agent: &'a str,
    /// The model an LLM step calls.
    pub model: Option<&'a str>,
    pub input: &'a Value,
}

/// A finished step, for [`Store::finish_steps`].
#[derive(Debug)]
pub struct StepOutcome<'a> {
    pub step: i64,
    pub agent: &'a str,
    /// The JSON output, or the error.
    pub outcome: Result<&'a Value, &'a str>,
    pub duration_ms: u64,
    /// Tokens and cost of an LLM step (spent even when it failed).
    pub usage: Option<&'a crate::agents::Usage>,
}

impl Store {
    /// Opens the database named by `url`: `sqlite://path` (the file and its folder are created
    /// when missing) or `postgres://user:password@host:port/db`. Does not migrate; see
    /// [`Store::migrate`].
    ///
    /// Errors: an unsupported URL scheme, an unreachable server, file or folder. The URL's
    /// password never appears in an error.
    pub async fn connect(url: &str, options: &DbOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            Self::connect_sqlite(url, path, options).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(url, options).await
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite:// or postgres:// (got {:?})", redact(url))
        }
    }

    async fn connect_sqlite(url: &str, path: &str, options: &DbOptions) -> Result<Self> {
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
        Ok(Self { writer, reader, dialect: Dialect::Sqlite })
    }

    async fn connect_postgres(url: &str, options: &DbOptions) -> Result<Self> {
        let connect = AnyConnectOptions::from_str(url)
            .with_context(|| format!("parsing DATABASE_URL {:?}", redact(url)))?;
        let timeout_ms = options.statement_timeout.as_millis();
        let pool = AnyPoolOptions::new()
            .max_connections(options.pool_size.max(1))
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _| {
                let sql = format!("SET statement_timeout = {timeout_ms}");
                Box::pin(async move { sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map(|_| ()) })
            })
            .connect_with(connect)
            .await
            .with_context(|| format!("connecting to {}", redact(url)))?;
        Ok(Self { writer: pool.clone(), reader: pool, dialect: Dialect::Postgres })
    }

    /// Applies pending migrations of this backend (`migrations/sqlite` or `migrations/postgres`,
    /// embedded in the binary). Safe to run from several instances at once on PostgreSQL (sqlx
    /// holds an advisory lock while migrating).
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Dialect::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator.run(&self.writer).await.context("applying migrations")
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, Any>> {
        Ok(self.writer.begin_with(self.dialect.begin()).await?)
    }

    /// Appends `events` to the audit chain and commits. The chain head is locked here, as the
    /// last lock the transaction takes: a transaction holding the head never waits for a row
    /// lock, so concurrent writers cannot deadlock on it (see the module docs).
    async fn commit_audited(&self, mut tx: Transaction<'static, Any>, events: Vec<AuditEvent>) -> Result<()> {
        append_to_chain(&mut tx, self.dialect, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a raw message and its disposition in one transaction, with audit records.
    ///
    /// Dedupe is the unique `dedupe_key`: a second copy stores nothing and returns
    /// [`Outcome::Duplicate`] with the first copy's ids. With a nonce, a nonce seen before returns
    /// [`Outcome::Replayed`] and stores nothing.
    pub async fn accept_message(
        &self,
        actor: &str,
        msg: NewMessage<'_>,
        disposition: Disposition,
        nonce: Option<Nonce<'_>>,
    ) -> Result<Outcome> {
        let now = now();
        let mut tx = self.begin().await?;
        if let Some(n) = nonce {
            let fresh = sqlx::query(
                "INSERT INTO webhook_nonces (source, nonce, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (source, nonce) DO NOTHING",
            )
            .bind(n.source)
            .bind(n.nonce)
            .bind(later(n.keep_for))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if fresh == 0 {
                return Ok(Outcome::Replayed);
            }
        }
        // A bounce is matched first, so the stored reason says what it bounced.
        let (disposition, bounced) = self.resolve_bounce(&mut tx, disposition).await?;
        let (status, reason) = disposition.status();
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO messages (received_at, source, source_key, dedupe_key, message_id, sha256,
                                   size_bytes, raw, status, reason, sender, subject)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (dedupe_key) DO NOTHING
             RETURNING id",
        )
        .bind(&now)
        .bind(msg.source)
        .bind(msg.source_key)
        .bind(msg.dedupe_key)
        .bind(msg.message_id)
        .bind(msg.sha256)
        .bind(msg.raw.len() as i64)
        .bind(msg.raw)
        .bind(status.as_str())
        .bind(reason)
        .bind(msg.sender)
        .bind(msg.subject)
        .fetch_optional(&mut *tx)
        .await?;

        let Some(message) = inserted else {
            let first: i64 = sqlx::query_scalar("SELECT id FROM messages WHERE dedupe_key = $1")
                .bind(msg.dedupe_key)
                .fetch_one(&mut *tx)
                .await?;
            let task: Option<i64> = sqlx::query_scalar("SELECT id FROM tasks WHERE message_id = $1")
                .bind(first)
                .fetch_optional(&mut *tx)
                .await?;
            let mut event = AuditEvent::new(actor, "message.duplicate", format!("message:{first}")).details(
                json!({"source": msg.source, "source_key": msg.source_key, "dedupe_key": msg.dedupe_key}),
            );
            event.task_id = task;
            self.commit_audited(tx, vec![event]).await?;
            return Ok(Outcome::Duplicate { message: MessageRowId(first), task: task.map(TaskId) });
        };

        let mut events =
            vec![AuditEvent::new(actor, "message.received", format!("message:{message}")).details(json!({
                "source": msg.source,
                "source_key": msg.source_key,
                "message_id": msg.message_id,
                "sha256": msg.sha256,
                "size_bytes": msg.raw.len(),
            }))];
        let message = MessageRowId(message);
        let outcome =
            self.apply_disposition(&mut tx, actor, message, disposition, bounced, &now, &mut events).await?;
        self.commit_audited(tx, events).await?;
        Ok(outcome)
    }

    /// Quarantined messages, newest first (at most `limit`).
    pub async fn quarantined(&self, limit: i64) -> Result<Vec<MessageRow>> {
        Ok(sqlx::query_as(
            "SELECT id, received_at, source, source_key, message_id, sha256, size_bytes, status, reason,
                    sender, subject
             FROM messages WHERE status = 'quarantined' ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Gives a quarantined message a new fate after it was parsed again (with today's limits and
    /// code): its row takes the new status, and a task is created when it now deserves one, all in
    /// one audited transaction. A message whose Message-ID another message already has becomes a
    /// duplicate of that one. Errors when the message is not quarantined.
    pub async fn reprocess_message(
        &self,
        actor: &str,
        id: i64,
        message_id: Option<&str>,
        sender: Option<&str>,
        subject: Option<&str>,
        disposition: Disposition,
    ) -> Result<Outcome> {
        let now = now();
        let mut tx = self.begin().await?;
        let old: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT status, reason FROM messages WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((status, old_reason)) = old else { anyhow::bail!("no message {id}") };
        anyhow::ensure!(
            status == MessageStatus::Quarantined.as_str(),
            "message {id} is {status}, not quarantined"
        );
        let first: Option<i64> = match message_id {
            Some(mid) => {
                sqlx::query_scalar(
                    "SELECT id FROM messages WHERE message_id = $1 AND id <> $2 ORDER BY id LIMIT 1",
                )
                .bind(mid)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
            }
            None => None,
        };
        let disposition = match first {
            Some(first) => Disposition::Ignored(format!("duplicate of message {first} (same Message-ID)")),
            None => disposition,
        };
        let (disposition, bounced) = self.resolve_bounce(&mut tx, disposition).await?;
        let (status, reason) = disposition.status();
        sqlx::query(
            "UPDATE messages SET status = $1, reason = $2, message_id = COALESCE($3, message_id),
                                 sender = COALESCE($4, sender), subject = COALESCE($5, subject)
             WHERE id = $6",
        )
        .bind(status.as_str())
        .bind(reason)
        .bind(message_id)
        .bind(sender)
        .bind(subject)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let mut events = vec![
            AuditEvent::new(actor, "message.reprocessed", format!("message:{id}"))
                .details(json!({"was": old_reason, "now": status.as_str()})),
        ];
        let outcome = self
            .apply_disposition(&mut tx, actor, MessageRowId(id), disposition, bounced, &now, &mut events)
            .await?;
        self.commit_audited(tx, events).await?;
        Ok(outcome)
    }

    /// Matches a bounce to the delivery it reports on and turns it into `Ignored` with a reason
    /// that says what it bounced.
    async fn resolve_bounce(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        disposition: Disposition,
    ) -> Result<(Disposition, Option<(crate::mail::bounce::Bounce, Option<BouncedDelivery>)>)> {
        let Disposition::Bounce(b) = disposition else { return Ok((disposition, None)) };
        let delivery = self.bounced_delivery(tx, &b).await?;
        let reason = match &delivery {
            Some(d) => format!(
                "bounce ({}) of our reply to {} (delivery {}{})",
                b.kind(),
                d.envelope_to,
                d.id,
                d.task_id.map(|t| format!(", task {t}")).unwrap_or_default()
            ),
            None => format!("bounce ({}) of a message that is not one of our replies", b.kind()),
        };
        Ok((Disposition::Ignored(reason), Some((b, delivery))))
    }

    /// Carries out a stored message's fate: creates its task, or records why not; applies a
    /// matched bounce. Pushes the audit events.
    #[allow(clippy::too_many_arguments)]
    async fn apply_disposition(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        actor: &str,
        message: MessageRowId,
        disposition: Disposition,
        bounced: Option<(crate::mail::bounce::Bounce, Option<BouncedDelivery>)>,
        now: &str,
        events: &mut Vec<AuditEvent>,
    ) -> Result<Outcome> {
        let outcome = match disposition {
            Disposition::Task(t) => {
                let joined = self.follow_up(tx, &t).await?;
                let (conversation, follows) = match &joined {
                    FollowUp::Joins { conversation, follows } => (Some(*conversation), Some(*follows)),
                    _ => (None, None),
                };
                let task: i64 = sqlx::query_scalar(
                    "INSERT INTO tasks (message_id, created_at, updated_at, sender, reply_to, subject,
                                        workflow, input, status, conversation_id, follows)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', $9, $10)
                     RETURNING id",
                )
                .bind(message.0)
                .bind(now)
                .bind(now)
                .bind(&t.sender)
                .bind(&t.reply_to)
                .bind(&t.subject)
                .bind(&t.workflow)
                .bind(&t.input)
                .bind(conversation)
                .bind(follows)
                .fetch_one(&mut **tx)
                .await?;
                let mut details = json!({"message": message.0, "workflow": t.workflow, "routed_by": t.routed_by,
                                         "sender": t.sender, "subject": t.subject});
                match joined {
                    FollowUp::Joins { conversation, follows } => {
                        details["conversation"] = json!(conversation);
                        details["follows"] = json!(follows);
                    }
                    FollowUp::NotJoined { task, why } => {
                        details["not_joined"] = json!({"task": task, "reason": why});
                    }
                    FollowUp::New => {}
                }
                events.push(
                    AuditEvent::new(actor, "task.created", format!("task:{task}"))
                        .task(task)
                        .details(details),
                );
                Outcome::Task { message, task: TaskId(task) }
            }
            Disposition::Ignored(reason) => {
                events.push(
                    AuditEvent::new(actor, "message.ignored", format!("message:{message}"))
                        .details(json!({"reason": reason})),
                );
                Outcome::Ignored { message, reason }
            }
            Disposition::Refused { reason, refusal } => {
                let delivery = self.insert_delivery(tx, None, "refusal", &refusal.as_new(), now).await?;
                events.push(
                    AuditEvent::new(actor, "message.ignored", format!("message:{message}"))
                        .details(json!({"reason": reason})),
                );
                events.push(AuditEvent::new(actor, "refusal.queued", format!("outbox:{delivery}")).details(
                    json!({
                        "message": message.0,
                        "message_id": refusal.message_id,
                        "to": refusal.envelope_to,
                    }),
                ));
                Outcome::Ignored { message, reason }
            }
            Disposition::Quarantined(reason) => {
                events.push(
                    AuditEvent::new(actor, "message.quarantined", format!("message:{message}"))
                        .details(json!({"reason": reason})),
                );
                Outcome::Quarantined { message, reason }
            }
            // Turned into Ignored above; kept total rather than panicking.
            Disposition::Bounce(b) => Outcome::Ignored { message, reason: format!("bounce ({})", b.kind()) },
        };
        if let Some((bounce, Some(delivery))) = bounced {
            self.record_bounce(tx, actor, message, &bounce, &delivery, events).await?;
        }
        Ok(outcome)
    }

    /// Whether a new task continues an earlier one (see [`FollowUpHints`]): the newest of our
    /// replies it answers, else its `[#id]` tag, names the candidate; it joins that conversation
    /// only when the sender is the candidate's sender.
    async fn follow_up(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        t: &NewTask,
    ) -> Result<FollowUp> {
        let mut candidate: Option<i64> = None;
        for id in t.follow_up.references.iter().rev() {
            candidate = sqlx::query_scalar::<_, Option<i64>>(
                "SELECT task_id FROM outbox WHERE message_id = $1 AND task_id IS NOT NULL",
            )
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?
            .flatten();
            if candidate.is_some() {
                break;
            }
        }
        let Some(earlier) = candidate.or(t.follow_up.tag) else { return Ok(FollowUp::New) };
        let row: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT sender, conversation_id FROM tasks WHERE id = $1")
                .bind(earlier)
                .fetch_optional(&mut **tx)
                .await?;
        Ok(match row {
            None => FollowUp::New,
            Some((sender, conversation)) if sender.eq_ignore_ascii_case(&t.sender) => {
                FollowUp::Joins { conversation: conversation.unwrap_or(earlier), follows: earlier }
            }
            Some(_) => {
                FollowUp::NotJoined { task: earlier, why: "the sender is not that task's sender".into() }
            }
        })
    }

    /// The last `limit` tasks of conversation `conversation` created before `before`, oldest
    /// first: their input (the parsed email) and the output of each finished step, by agent.
    pub async fn conversation(
        &self,
        conversation: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<(TaskRow, String, Vec<StepRow>)>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE (id = $1 OR conversation_id = $1) AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(conversation)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        let mut turns = Vec::with_capacity(ids.len());
        for id in ids.into_iter().rev() {
            let (Some(task), Some(input)) = (self.task(id).await?, self.task_input(id).await?) else {
                continue;
            };
            turns.push((task, input, self.task_steps(id).await?));
        }
        Ok(turns)
    }

    /// The delivery a bounce names: one of ours whose Message-ID the bounce quotes, preferring
    /// the recipient the bounce names.
    async fn bounced_delivery(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        bounce: &crate::mail::bounce::Bounce,
    ) -> Result<Option<BouncedDelivery>> {
        for id in &bounce.original_message_ids {
            let rows: Vec<BouncedDelivery> = sqlx::query_as(
                "SELECT id, task_id, envelope_to FROM outbox WHERE message_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
            let preferred = rows.iter().position(|r| {
                bounce.recipient.as_deref().is_some_and(|to| r.envelope_to.eq_ignore_ascii_case(to))
            });
            let mut rows = rows;
            if let Some(i) = preferred {
                return Ok(Some(rows.swap_remove(i)));
            }
            if let Some(first) = rows.into_iter().next() {
                return Ok(Some(first));
            }
        }
        Ok(None)
    }

    /// Marks the delivery bounced and, for a hard bounce, suppresses its recipient.
    async fn record_bounce(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        actor: &str,
        message: MessageRowId,
        bounce: &crate::mail::bounce::Bounce,
        delivery: &BouncedDelivery,
        events: &mut Vec<AuditEvent>,
    ) -> Result<()> {
        let text = match &bounce.diagnostic {
            Some(d) => format!("{}: {d}", bounce.kind()),
            None => bounce.kind(),
        };
        sqlx::query("UPDATE outbox SET status = 'bounced', bounce = $1 WHERE id = $2")
            .bind(&text)
            .bind(delivery.id)
            .execute(&mut **tx)
            .await?;
        let mut event = AuditEvent::new(actor, "delivery.bounced", format!("delivery:{}", delivery.id))
            .details(json!({"bounce": text, "message": message.0, "recipient": delivery.envelope_to}));
        if let Some(task) = delivery.task_id {
            event = event.task(task);
        }
        events.push(event);
        if bounce.hard {
            let address = delivery.envelope_to.to_ascii_lowercase();
            let added = sqlx::query(
                "INSERT INTO suppressions (address, reason, created_at, message_id) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (address) DO NOTHING",
            )
            .bind(&address)
            .bind(format!("hard bounce {}", text))
            .bind(now())
            .bind(message.0)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if added > 0 {
                events.push(
                    AuditEvent::new(actor, "suppression.added", format!("address:{address}"))
                        .details(json!({"reason": text, "message": message.0})),
                );
            }
        }
        Ok(())
    }

    /// Addresses we do not send to, newest first: (address, reason, created_at).
    pub async fn suppressions(&self) -> Result<Vec<Suppression>> {
        Ok(sqlx::query_as(
            "SELECT address, reason, created_at FROM suppressions ORDER BY created_at DESC, address",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    /// The suppression of `address`, if any (compared in lower case).
    pub async fn suppression(&self, address: &str) -> Result<Option<Suppression>> {
        Ok(sqlx::query_as("SELECT address, reason, created_at FROM suppressions WHERE address = $1")
            .bind(address.to_ascii_lowercase())
            .fetch_optional(&self.reader)
            .await?)
    }

    /// Takes `address` off the suppression list (audited). `false` when it was not on it.
    pub async fn remove_suppression(&self, address: &str, actor: &str) -> Result<bool> {
        let address = address.to_ascii_lowercase();
        let mut tx = self.begin().await?;
        let removed = sqlx::query("DELETE FROM suppressions WHERE address = $1")
            .bind(&address)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 0 {
            tx.commit().await?;
            return Ok(false);
        }
        let event = AuditEvent::new(actor, "suppression.removed", format!("address:{address}"));
        self.commit_audited(tx, vec![event]).await?;
        Ok(true)
    }

    /// Claims the oldest queued task, or one whose lease expired (its worker died), for `lease`.
    /// Counts the attempt. `None` when there is no work.
    pub async fn claim_task(&self, owner: &str, lease: Duration) -> Result<Option<ClaimedTask>> {
        let now = now();
        let mut tx = self.begin().await?;
        let claimed: Option<ClaimedTask> = sqlx::query_as(self.dialect.claim_task())
            .bind(owner)
            .bind(later(lease))
            .bind(&now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(t) = claimed else {
            tx.commit().await?;
            return Ok(None);
        };
        let event = AuditEvent::new("worker", "task.claimed", format!("task:{}", t.id))
            .task(t.id)
            .details(json!({"owner": owner, "attempt": t.attempts}));
        self.commit_audited(tx, vec![event]).await?;
        Ok(Some(t))
    }

    /// Records that the steps of one workflow stage started, in one transaction; returns their
    /// ids in the same order.
    pub async fn start_steps(&self, task: i64, attempt: i64, steps: &[NewStep<'_>]) -> Result<Vec<i64>> {
        let now = now();
        let mut tx = self.begin().await?;
        let mut ids = Vec::with_capacity(steps.len());
        let mut events = Vec::with_capacity(steps.len());
        for s in steps {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO task_steps (task_id, attempt, position, agent, model, input, status, started_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'running', $7)
                 RETURNING id",
            )
            .bind(task)
            .bind(attempt)
            .bind(s.position as i64)
            .bind(s.agent)
            .bind(s.model)
            .bind(s.input.to_string())
            .bind(&now)
            .fetch_one(&mut *tx)
            .await?;
            events.push(AuditEvent::new("worker", "step.started", format!("step:{id}")).task(task).details(
                json!({"agent": s.agent, "model": s.model, "position": s.position, "attempt": attempt}),
            ));
            ids.push(id);
        }
        self.commit_audited(tx, events).await?;
        Ok(ids)
    }

    /// Records the outcomes of one stage's steps, in one transaction.
    pub async fn finish_steps(&self, task: i64, outcomes: &[StepOutcome<'_>]) -> Result<()> {
        let now = now();
        let mut tx = self.begin().await?;
        let mut events = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            let (status, output, error) = match o.outcome {
                Ok(v) => (StepStatus::Ok, Some(v.to_string()), None),
                Err(e) => (StepStatus::Failed, None, Some(e)),
            };
            let usage = o.usage;
            sqlx::query(
                "UPDATE task_steps SET status = $1, output = $2, error = $3, finished_at = $4, duration_ms = $5,
                                       model = COALESCE($6, model), tokens_in = $7, tokens_out = $8, cost_usd = $9
                 WHERE id = $10",
            )
            .bind(status.as_str())
            .bind(output)
            .bind(error)
            .bind(&now)
            .bind(o.duration_ms as i64)
            .bind(usage.map(|u| u.model.as_str()))
            .bind(usage.map(|u| u.tokens_in as i64))
            .bind(usage.map(|u| u.tokens_out as i64))
            .bind(usage.and_then(|u| u.cost_usd))
            .bind(o.step)
            .execute(&mut *tx)
            .await?;
            let mut details = json!({"agent": o.agent, "status": status.as_str(), "duration_ms": o.duration_ms, "error": error});
            if let Some(u) = usage {
                details["model"] = json!(u.model);
                details["tokens_in"] = json!(u.tokens_in);
                details["tokens_out"] = json!(u.tokens_out);
                details["cost_usd"] = json!(u.cost_usd);
                details["calls"] = json!(u.calls);
            }
            events.push(
                AuditEvent::new("worker", "step.finished", format!("step:{}", o.step))
                    .task(task)
                    .details(details),
            );
        }
        self.commit_audited(tx, events).await
    }

    /// Sets the workflow a director chose for `task`, audited with the reason.
    pub async fn route_task(&self, task: i64, workflow: &str, reason: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE tasks SET workflow = $1, updated_at = $2 WHERE id = $3")
            .bind(workflow)
            .bind(now())
            .bind(task)
            .execute(&mut *tx)
            .await?;
        let event = AuditEvent::new("worker", "task.routed", format!("task:{task}"))
            .task(task)
            .details(json!({"workflow": workflow, "reason": reason}));
        self.commit_audited(tx, vec![event]).await
    }

    /// Queues `d` in the outbox, due now; `kind` is `mail` (a task's reply) or `refusal`.
    async fn insert_delivery(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        task: Option<i64>,
        kind: &str,
        d: &NewDelivery<'_>,
        now: &str,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO outbox (task_id, kind, message_id, envelope_from, envelope_to, payload,
                                 status, next_attempt_at, created_at, thread_key)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9)
             RETURNING id",
        )
        .bind(task)
        .bind(kind)
        .bind(d.message_id)
        .bind(d.envelope_from)
        .bind(d.envelope_to)
        .bind(d.payload)
        .bind(now)
        .bind(now)
        .bind(d.thread_key)
        .fetch_one(&mut **tx)
        .await?)
    }

    /// Marks a task done and queues its reply in one transaction (invariant 4).
    ///
    /// Returns `false`, changing nothing, when `owner` no longer holds the task's lease.
    pub async fn complete_task(&self, task: i64, owner: &str, reply: NewDelivery<'_>) -> Result<bool> {
        self.complete_task_with(task, owner, reply, Value::Null).await
    }

    /// [`Self::complete_task`], with `details` (workflow, LLM totals) in its `task.completed`
    /// audit record.
    pub async fn complete_task_with(
        &self,
        task: i64,
        owner: &str,
        reply: NewDelivery<'_>,
        details: Value,
    ) -> Result<bool> {
        let now = now();
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE tasks SET status = 'done', finished_at = $1, updated_at = $1,
                              lease_owner = NULL, lease_until = NULL
             WHERE id = $2 AND status = 'running' AND lease_owner = $3",
        )
        .bind(&now)
        .bind(task)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        let delivery = self.insert_delivery(&mut tx, Some(task), "mail", &reply, &now).await?;
        let events = vec![
            AuditEvent::new("worker", "task.completed", format!("task:{task}")).task(task).details(details),
            AuditEvent::new("worker", "reply.queued", format!("outbox:{delivery}")).task(task).details(
                json!({"message_id": reply.message_id, "to": reply.envelope_to, "size_bytes": reply.payload.len()}),
            ),
        ];
        self.commit_audited(tx, events).await?;
        Ok(true)
    }

    /// Marks a task failed for good. Returns `false` when `owner` no longer holds its lease.
    pub async fn fail_task(&self, task: i64, owner: &str, error: &str) -> Result<bool> {
        let now = now();
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE tasks SET status = 'failed', error = $1, finished_at = $2, updated_at = $2,
                              lease_owner = NULL, lease_until = NULL
             WHERE id = $3 AND status = 'running' AND lease_owner = $4",
        )
        .bind(error)
        .bind(&now)
        .bind(task)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Ok(false);
        }
        let event = AuditEvent::new("worker", "task.failed", format!("task:{task}"))
            .task(task)
            .details(json!({"error": error}));
        self.commit_audited(tx, vec![event]).await?;
        Ok(true)
    }

    /// Replies delivered at or after `since` (RFC 3339) to `recipient` when `Recipient`, or in
    /// the conversation `key` when `Thread`.
    pub async fn delivered_since(&self, scope: CapScope, key: &str, since: &str) -> Result<i64> {
        let sql = match scope {
            CapScope::Recipient => {
                "SELECT COUNT(*) FROM outbox WHERE envelope_to = $1 AND status = 'delivered' AND delivered_at >= $2"
            }
            CapScope::Thread => {
                "SELECT COUNT(*) FROM outbox WHERE thread_key = $1 AND status = 'delivered' AND delivered_at >= $2"
            }
        };
        Ok(sqlx::query_scalar(sql).bind(key).bind(since).fetch_one(&self.reader).await?)
    }

    /// Releases a held reply: it is sent on the next pass despite the reply caps (audited as
    /// `delivery.released`). `false` when no held delivery has this id.
    pub async fn release_delivery(&self, id: i64, actor: &str) -> Result<bool> {
        let now = now();
        let mut tx = self.begin().await?;
        let task: Option<Option<i64>> = sqlx::query_scalar(
            "UPDATE outbox SET status = 'pending', cap_exempt = 1, next_attempt_at = $1
             WHERE id = $2 AND status = 'held' RETURNING task_id",
        )
        .bind(&now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(task) = task else {
            tx.commit().await?;
            return Ok(false);
        };
        let mut event = AuditEvent::new(actor, "delivery.released", format!("outbox:{id}"));
        if let Some(task) = task {
            event = event.task(task);
        }
        self.commit_audited(tx, vec![event]).await?;
        Ok(true)
    }

    /// Holds a claimed delivery: not sent, kept with the reason (audited as `delivery.held`).
    pub async fn delivery_held(&self, d: &ClaimedDelivery, owner: &str, reason: &str) -> Result<()> {
        self.finish_delivery(d, owner, DeliveryStatus::Held, None, Some(reason), None).await
    }

    /// Claims the next due delivery, or one whose lease expired, and counts the attempt.
    pub async fn claim_delivery(&self, owner: &str, lease: Duration) -> Result<Option<ClaimedDelivery>> {
        let now = now();
        let mut tx = self.begin().await?;
        let claimed: Option<ClaimedDelivery> = sqlx::query_as(self.dialect.claim_delivery())
            .bind(owner)
            .bind(later(lease))
            .bind(&now)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Records a delivery that succeeded, with where it went (file path or relay answer).
    pub async fn delivery_succeeded(&self, d: &ClaimedDelivery, owner: &str, location: &str) -> Result<()> {
        self.finish_delivery(d, owner, DeliveryStatus::Delivered, Some(location), None, None).await
    }

    /// Records a failed attempt: retried at `retry_at`, or failed for good when `None`.
    pub async fn delivery_failed(
        &self,
        d: &ClaimedDelivery,
        owner: &str,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let status = if retry_at.is_some() { DeliveryStatus::Pending } else { DeliveryStatus::Failed };
        self.finish_delivery(d, owner, status, None, Some(error), retry_at).await
    }

    async fn finish_delivery(
        &self,
        d: &ClaimedDelivery,
        owner: &str,
        status: DeliveryStatus,
        location: Option<&str>,
        error: Option<&str>,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let now = now();
        let next = retry_at.map(timestamp).unwrap_or_else(|| now.clone());
        let delivered_at = (status == DeliveryStatus::Delivered).then_some(now.as_str());
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE outbox SET status = $1, location = COALESCE($2, location), last_error = $3,
                               delivered_at = $4, next_attempt_at = $5, lease_owner = NULL, lease_until = NULL
             WHERE id = $6 AND status = 'sending' AND lease_owner = $7",
        )
        .bind(status.as_str())
        .bind(location)
        .bind(error)
        .bind(delivered_at)
        .bind(&next)
        .bind(d.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            // Our lease expired and another worker took over; its outcome is the one recorded.
            return Ok(());
        }
        let action = match status {
            DeliveryStatus::Delivered => "delivery.delivered",
            DeliveryStatus::Pending => "delivery.retry",
            DeliveryStatus::Held => "delivery.held",
            _ => "delivery.failed",
        };
        let mut event = AuditEvent::new("outbox", action, format!("outbox:{}", d.id)).details(json!({
            "message_id": d.message_id,
            "attempt": d.attempts,
            "location": location,
            "error": error,
            "next_attempt_at": retry_at.map(timestamp),
        }));
        event.task_id = d.task_id;
        self.commit_audited(tx, vec![event]).await
    }

    /// The stored position of an IMAP mailbox, if it was ever polled.
    pub async fn mailbox_state(&self, mailbox: &str) -> Result<Option<MailboxState>> {
        Ok(sqlx::query_as(
            "SELECT mailbox, uidvalidity, last_uid, last_ok_at, last_error, consecutive_errors
             FROM mailbox_state WHERE mailbox = $1",
        )
        .bind(mailbox)
        .fetch_optional(&self.reader)
        .await?)
    }

    /// Every polled mailbox, for the status page and /health.
    pub async fn mailbox_states(&self) -> Result<Vec<MailboxState>> {
        Ok(sqlx::query_as(
            "SELECT mailbox, uidvalidity, last_uid, last_ok_at, last_error, consecutive_errors
             FROM mailbox_state ORDER BY mailbox",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    /// Moves a mailbox's position to `last_uid` under `uidvalidity` and marks it healthy. A new
    /// UIDVALIDITY (the server renumbered the mailbox) is audited.
    pub async fn save_mailbox_position(&self, mailbox: &str, uidvalidity: i64, last_uid: i64) -> Result<()> {
        let now = now();
        let mut tx = self.begin().await?;
        let previous: Option<i64> =
            sqlx::query_scalar("SELECT uidvalidity FROM mailbox_state WHERE mailbox = $1")
                .bind(mailbox)
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO mailbox_state (mailbox, uidvalidity, last_uid, last_ok_at, last_error,
                                        consecutive_errors, updated_at)
             VALUES ($1, $2, $3, $4, NULL, 0, $4)
             ON CONFLICT (mailbox) DO UPDATE SET uidvalidity = $2, last_uid = $3, last_ok_at = $4,
                 last_error = NULL, consecutive_errors = 0, updated_at = $4",
        )
        .bind(mailbox)
        .bind(uidvalidity)
        .bind(last_uid)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        let events = match previous {
            Some(old) if old != 0 && old != uidvalidity => {
                vec![AuditEvent::new("intake:imap", "mailbox.resync", format!("mailbox:{mailbox}")).details(
                    json!({"old_uidvalidity": old, "uidvalidity": uidvalidity, "last_uid": last_uid}),
                )]
            }
            _ => Vec::new(),
        };
        self.commit_audited(tx, events).await
    }

    /// Takes or renews the right to read `mailbox` for `lease`: `true` when `owner` holds it now,
    /// `false` while another owner's lease is still running.
    pub async fn claim_mailbox(&self, mailbox: &str, owner: &str, lease: Duration) -> Result<bool> {
        let now = now();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO mailbox_state (mailbox, uidvalidity, last_uid, consecutive_errors, updated_at)
             VALUES ($1, 0, 0, 0, $2)
             ON CONFLICT (mailbox) DO NOTHING",
        )
        .bind(mailbox)
        .bind(&now)
        .execute(&mut *tx)
        .await?;
        let held = sqlx::query(
            "UPDATE mailbox_state SET lease_owner = $1, lease_until = $2
             WHERE mailbox = $3 AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $4)",
        )
        .bind(owner)
        .bind(later(lease))
        .bind(mailbox)
        .bind(&now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(held == 1)
    }

    /// Gives up `owner`'s lease on `mailbox` (graceful shutdown), so another instance takes over
    /// at once.
    pub async fn release_mailbox(&self, mailbox: &str, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE mailbox_state SET lease_owner = NULL, lease_until = NULL WHERE mailbox = $1 AND lease_owner = $2",
        )
        .bind(mailbox)
        .bind(owner)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Records a failed poll: the error and one more consecutive failure.
    pub async fn record_mailbox_error(&self, mailbox: &str, error: &str) -> Result<()> {
        let now = now();
        sqlx::query(
            "INSERT INTO mailbox_state (mailbox, uidvalidity, last_uid, last_error, consecutive_errors, updated_at)
             VALUES ($1, 0, 0, $2, 1, $3)
             ON CONFLICT (mailbox) DO UPDATE SET last_error = $2,
                 consecutive_errors = mailbox_state.consecutive_errors + 1, updated_at = $3",
        )
        .bind(mailbox)
        .bind(error)
        .bind(&now)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Queued or leased tasks, and deliveries not yet delivered or failed for good.
    pub async fn pending_work(&self) -> Result<(i64, i64)> {
        let tasks: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE status IN ('queued', 'running')")
                .fetch_one(&self.reader)
                .await?;
        let deliveries: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'sending')")
                .fetch_one(&self.reader)
                .await?;
        Ok((tasks, deliveries))
    }

    /// Deletes replay nonces past their expiry; returns how many.
    pub async fn purge_expired_nonces(&self) -> Result<u64> {
        let done = sqlx::query("DELETE FROM webhook_nonces WHERE expires_at < $1")
            .bind(now())
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn overview(&self, recent: i64) -> Result<Overview> {
        let db = &self.reader;
        let tasks_by_status =
            sqlx::query_as("SELECT status, COUNT(*) FROM tasks GROUP BY status ORDER BY status")
                .fetch_all(db)
                .await?;
        let messages_by_status =
            sqlx::query_as("SELECT status, COUNT(*) FROM messages GROUP BY status ORDER BY status")
                .fetch_all(db)
                .await?;
        let outbox_backlog =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'sending')")
                .fetch_one(db)
                .await?;
        let deliveries_by_status =
            sqlx::query_as("SELECT status, COUNT(*) FROM outbox GROUP BY status ORDER BY status")
                .fetch_all(db)
                .await?;
        let last_inbound =
            sqlx::query_as("SELECT source, MAX(received_at) FROM messages GROUP BY source ORDER BY source")
                .fetch_all(db)
                .await?;
        let recent =
            sqlx::query_as(select_task_rows!("ORDER BY id DESC LIMIT $1")).bind(recent).fetch_all(db).await?;
        let mailboxes = self.mailbox_states().await?;
        Ok(Overview {
            tasks_by_status,
            messages_by_status,
            outbox_backlog,
            deliveries_by_status,
            last_inbound,
            recent,
            mailboxes,
        })
    }

    pub async fn task(&self, id: i64) -> Result<Option<TaskRow>> {
        Ok(sqlx::query_as(select_task_rows!("WHERE id = $1")).bind(id).fetch_optional(&self.reader).await?)
    }

    /// The task's input as stored: the parsed email JSON ([`crate::mail::InboundEmail`]).
    pub async fn task_input(&self, id: i64) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT input FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?)
    }

    pub async fn task_steps(&self, task: i64) -> Result<Vec<StepRow>> {
        Ok(sqlx::query_as(
            "SELECT id, attempt, position, agent, model, status, input, output, error, started_at,
                    finished_at, duration_ms, tokens_in, tokens_out, cost_usd
             FROM task_steps WHERE task_id = $1 ORDER BY id",
        )
        .bind(task)
        .fetch_all(&self.reader)
        .await?)
    }

    pub async fn task_deliveries(&self, task: i64) -> Result<Vec<DeliveryRow>> {
        Ok(sqlx::query_as(
            "SELECT id, task_id, kind, message_id, envelope_to, status, attempts, created_at,
                    delivered_at, location, last_error
             FROM outbox WHERE task_id = $1 ORDER BY id",
        )
        .bind(task)
        .fetch_all(&self.reader)
        .await?)
    }

    /// The stored reply of a task (complete RFC 5322 bytes), if one was queued.
    pub async fn task_reply(&self, task: i64) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar("SELECT payload FROM outbox WHERE task_id = $1 AND kind = 'mail'")
            .bind(task)
            .fetch_optional(&self.reader)
            .await?)
    }

    pub async fn message(&self, id: i64) -> Result<Option<MessageRow>> {
        Ok(sqlx::query_as(
            "SELECT id, received_at, source, source_key, message_id, sha256, size_bytes, status, reason,
                    sender, subject
             FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await?)
    }

    /// The raw bytes of a stored message, exactly as received.
    pub async fn message_raw(&self, id: i64) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar("SELECT raw FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?)
    }

    /// Calls `each` for every audit record matching `filter`, in `seq` order, streaming.
    pub async fn for_each_audit(
        &self,
        filter: &AuditFilter,
        mut each: impl FnMut(AuditRecord) -> Result<()>,
    ) -> Result<()> {
        let sql = "SELECT seq, at, actor, action, entity, task_id, details, prev_hash, hash
                   FROM audit_log
                   WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at <= $2) AND ($3 IS NULL OR task_id = $3)
                   ORDER BY seq";
        let mut rows = sqlx::query(sql)
            .bind(filter.since.map(timestamp))
            .bind(filter.until.map(timestamp))
            .bind(filter.task)
            .fetch(&self.reader);
        while let Some(row) = rows.try_next().await? {
            each(audit_from_row(&row)?)?;
        }
        Ok(())
    }

    /// The chain head: `(seq, hash)` of the newest record.
    pub async fn audit_head(&self) -> Result<(i64, String)> {
        Ok(sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&self.reader).await?)
    }

    /// Task status as stored, for callers that wait on a task.
    pub async fn task_status(&self, id: TaskId) -> Result<Option<TaskStatus>> {
        let s: Option<String> = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.reader)
            .await?;
        Ok(s.and_then(|s| TaskStatus::parse(&s)))
    }
}

/// Hides a password in a database URL for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_of_any_length_give_sortable_times() {
        assert!(later(Duration::from_secs(60)) > now());
        assert_eq!(later(Duration::from_secs(u64::MAX)), "9999-12-31T23:59:59.999999Z");
        assert!(later(Duration::from_secs(u64::MAX)) > later(Duration::from_secs(3600 * 24 * 365 * 100)));
    }

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(redact("postgres://swarm:s3cret@db:5432/x"), "postgres://***@db:5432/x");
        assert_eq!(redact("sqlite://data/swarm.db"), "sqlite://data/swarm.db");
    }
}
