//! Read-only summaries for the status page and health: counts, recent tasks, pending work.

use super::error::Result;
use serde::Serialize;

use super::{MailboxState, Store, TaskRow};

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

/// What the daily digest reports about the work since a time (see [`Store::digest`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Digest {
    /// `(status, count)` of tasks created since.
    pub tasks: Vec<(String, i64)>,
    /// `(id, subject, error)` of tasks that failed since, newest first, at most 20.
    pub failed: Vec<(i64, String, Option<String>)>,
    /// `(sender, tasks)`, the five busiest senders.
    pub top_senders: Vec<(String, i64)>,
    /// `(id, reason)` of messages quarantined since, newest first, at most 20, and how many.
    pub quarantined: Vec<(i64, Option<String>)>,
    pub quarantined_total: i64,
    /// `(delivery id, recipient)` of every reply held for a person to release.
    pub held: Vec<(i64, String)>,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
}

/// See [`Store::gauges`].
#[derive(Debug, Clone)]
pub struct Gauges {
    /// `(workflow, status, count)`.
    pub tasks: Vec<(String, String, i64)>,
    /// `(status, count)`.
    pub deliveries: Vec<(String, i64)>,
    pub mailboxes: Vec<MailboxState>,
}

impl Store {
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

    /// What `/metrics` reports as gauges, read at scrape time so every instance agrees: tasks
    /// by `(workflow, status)`, deliveries by status, and every mailbox's state.
    pub async fn gauges(&self) -> Result<Gauges> {
        let db = &self.reader;
        let tasks = sqlx::query_as("SELECT workflow, status, COUNT(*) FROM tasks GROUP BY workflow, status")
            .fetch_all(db)
            .await?;
        let deliveries =
            sqlx::query_as("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetch_all(db).await?;
        Ok(Gauges { tasks, deliveries, mailboxes: self.mailbox_states().await? })
    }

    /// The digest's figures for the work since `since` (RFC 3339).
    pub async fn digest(&self, since: &str) -> Result<Digest> {
        let db = &self.reader;
        let tasks = sqlx::query_as(
            "SELECT status, COUNT(*) FROM tasks WHERE created_at >= $1 GROUP BY status ORDER BY status",
        )
        .bind(since)
        .fetch_all(db)
        .await?;
        let failed = sqlx::query_as(
            "SELECT id, subject, error FROM tasks WHERE status = 'failed' AND updated_at >= $1 ORDER BY id DESC LIMIT 20",
        )
        .bind(since)
        .fetch_all(db)
        .await?;
        let top_senders = sqlx::query_as(
            "SELECT sender, COUNT(*) AS n FROM tasks WHERE created_at >= $1 GROUP BY sender ORDER BY n DESC, sender LIMIT 5",
        )
        .bind(since)
        .fetch_all(db)
        .await?;
        let quarantined = sqlx::query_as(
            "SELECT id, reason FROM messages WHERE status = 'quarantined' AND received_at >= $1 ORDER BY id DESC LIMIT 20",
        )
        .bind(since)
        .fetch_all(db)
        .await?;
        let quarantined_total = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE status = 'quarantined' AND received_at >= $1",
        )
        .bind(since)
        .fetch_one(db)
        .await?;
        let held = sqlx::query_as("SELECT id, envelope_to FROM outbox WHERE status = 'held' ORDER BY id")
            .fetch_all(db)
            .await?;
        let (tokens_in, tokens_out, cost_usd): (Option<i64>, Option<i64>, Option<f64>) = sqlx::query_as(
            "SELECT CAST(SUM(tokens_in) AS BIGINT), CAST(SUM(tokens_out) AS BIGINT), CAST(SUM(cost_usd) AS DOUBLE PRECISION)
             FROM task_steps WHERE started_at >= $1",
        )
        .bind(since)
        .fetch_one(db)
        .await?;
        Ok(Digest {
            tasks,
            failed,
            top_senders,
            quarantined,
            quarantined_total,
            held,
            tokens_in: tokens_in.unwrap_or(0),
            tokens_out: tokens_out.unwrap_or(0),
            cost_usd: cost_usd.unwrap_or(0.0),
        })
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
}
