//! Scheduled jobs' storage: one claim per `(job, scheduled_at)`, the alert conditions with the
//! samples their checks compare, operator notices queued in the outbox, and the retention purge.
//!
//! Job-run rows are bookkeeping, not audited (like lease renewals); what a job changes is: the
//! purge (`retention.purged`), a queued notice (`notice.queued`) and an alert's change of state
//! (`alert.raised`, `alert.recovered`), each in the transaction that makes it.

use serde::Serialize;
use serde_json::json;
use sqlx::FromRow;

use super::error::Result;
use super::{OwnedDelivery, Store};
use crate::audit::AuditEvent;

/// One run of a job, as recorded.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct JobRun {
    pub job: String,
    /// The scheduled time it ran for (RFC 3339), or the time of a manual run.
    pub scheduled_at: String,
    /// `schedule` or `manual`.
    pub trigger_kind: String,
    pub owner: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// `running`, `ok` or `failed`.
    pub status: String,
    /// What the job reported, or its error.
    pub note: Option<String>,
}

/// A liveness condition's stored state (see `scheduler::alerts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertRow {
    /// `mailbox:<host:port/folder>`, `outbox-backlog` or `llm-breaker`.
    pub condition: String,
    pub firing: bool,
    /// When it started firing, or recovered.
    pub since: String,
    /// When the operator was last mailed about it.
    pub notified_at: Option<String>,
    /// Consecutive checks that found the condition's sign (a growing backlog, an open breaker).
    pub streak: i64,
    /// The last check's figure (the backlog), for the next check to compare with.
    pub sample: i64,
    pub detail: Option<String>,
}

/// What one retention purge removed, by kind of content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Purged {
    /// Raw messages (the bytes as received).
    pub messages: u64,
    /// Task inputs (the parsed email: bodies and attachments' text).
    pub tasks: u64,
    /// Step inputs and outputs.
    pub steps: u64,
    /// Rendered replies and notices in the outbox.
    pub replies: u64,
}

impl Store {
    /// Claims the run of `job` for `scheduled_at` as `owner`: `Ok(false)` when it is already
    /// claimed (by another instance, or before a restart), so each scheduled time runs once.
    pub async fn claim_job_run(
        &self,
        job: &str,
        scheduled_at: &str,
        trigger: &str,
        owner: &str,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO job_runs (job, scheduled_at, trigger_kind, owner, started_at, status)
             VALUES ($1, $2, $3, $4, $5, 'running')
             ON CONFLICT (job, scheduled_at) DO NOTHING",
        )
        .bind(job)
        .bind(scheduled_at)
        .bind(trigger)
        .bind(owner)
        .bind(self.now())
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records how a claimed run ended.
    pub async fn finish_job_run(&self, job: &str, scheduled_at: &str, ok: bool, note: &str) -> Result<()> {
        sqlx::query("UPDATE job_runs SET finished_at = $1, status = $2, note = $3 WHERE job = $4 AND scheduled_at = $5")
            .bind(self.now())
            .bind(if ok { "ok" } else { "failed" })
            .bind(note)
            .bind(job)
            .bind(scheduled_at)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// The latest run of each job that ever ran, by job name.
    pub async fn last_job_runs(&self) -> Result<Vec<JobRun>> {
        Ok(sqlx::query_as(
            "SELECT r.job, r.scheduled_at, r.trigger_kind, r.owner, r.started_at, r.finished_at, r.status, r.note
             FROM job_runs r
             JOIN (SELECT job, MAX(started_at) AS latest FROM job_runs GROUP BY job) l
               ON l.job = r.job AND l.latest = r.started_at
             ORDER BY r.job",
        )
        .fetch_all(&self.reader)
        .await?)
    }

    /// Every stored alert condition.
    pub async fn alerts(&self) -> Result<Vec<AlertRow>> {
        type Row = (String, i64, String, Option<String>, i64, i64, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT condition, firing, since, notified_at, streak, sample, detail FROM alerts ORDER BY condition",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(condition, firing, since, notified_at, streak, sample, detail)| AlertRow {
                condition,
                firing: firing != 0,
                since,
                notified_at,
                streak,
                sample,
                detail,
            })
            .collect())
    }

    /// Stores `alert`'s new state; with `notice`, queues that mail and audits `action`
    /// (`alert.raised` or `alert.recovered`), all in one transaction.
    pub async fn save_alert(
        &self,
        alert: &AlertRow,
        notice: Option<(&'static str, &OwnedDelivery)>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO alerts (condition, firing, since, notified_at, streak, sample, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (condition) DO UPDATE SET firing = $2, since = $3, notified_at = $4, streak = $5,
                 sample = $6, detail = $7",
        )
        .bind(&alert.condition)
        .bind(i64::from(alert.firing))
        .bind(&alert.since)
        .bind(&alert.notified_at)
        .bind(alert.streak)
        .bind(alert.sample)
        .bind(&alert.detail)
        .execute(&mut *tx)
        .await?;
        let mut events = Vec::new();
        if let Some((action, mail)) = notice {
            let now = self.now();
            let id = self.insert_delivery(&mut tx, None, "notice", &mail.as_new(), &now).await?;
            events.push(
                AuditEvent::new("scheduler", action, format!("alert:{}", alert.condition))
                    .details(json!({"delivery": id, "to": mail.envelope_to, "detail": alert.detail})),
            );
        }
        self.commit_audited(tx, events).await
    }

    /// Queues an operator notice (the digest) in the outbox, audited as `notice.queued` with
    /// `what`. Returns the delivery id.
    pub async fn queue_notice(&self, what: &str, mail: &OwnedDelivery) -> Result<i64> {
        let mut tx = self.begin().await?;
        let id = self.insert_delivery(&mut tx, None, "notice", &mail.as_new(), &self.now()).await?;
        let event = AuditEvent::new("scheduler", "notice.queued", format!("outbox:{id}"))
            .details(json!({"what": what, "to": mail.envelope_to, "message_id": mail.message_id}));
        self.commit_audited(tx, vec![event]).await?;
        Ok(id)
    }

    /// Removes the content older than `before` (RFC 3339) of finished work: raw messages, task
    /// inputs, step inputs and outputs, and rendered replies of deliveries that are delivered
    /// or failed for good. Rows, sizes, SHA-256 digests and every audit record stay (the audit
    /// chain holds no content, so `audit verify` still passes). Queued or running tasks, their
    /// messages and pending or held deliveries are never touched. Audited as
    /// `retention.purged` with the counts and the cutoff, in the same transaction.
    pub async fn purge_content(&self, before: &str) -> Result<Purged> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let finished = "status IN ('done', 'failed', 'cancelled') AND purged_at IS NULL AND COALESCE(finished_at, updated_at) < $1";
        let steps = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE task_steps SET input = 'null', output = NULL WHERE task_id IN (SELECT id FROM tasks WHERE {finished})"
        )))
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let tasks = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE tasks SET input = '{{\"purged\":true}}', purged_at = $2 WHERE {finished}"
        )))
        .bind(before)
        .bind(&now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let messages = sqlx::query(
            "UPDATE messages SET raw = $2, purged_at = $3
             WHERE purged_at IS NULL AND received_at < $1
               AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.message_id = messages.id
                                AND t.status IN ('queued', 'running'))",
        )
        .bind(before)
        .bind(Vec::<u8>::new())
        .bind(&now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let replies = sqlx::query(
            "UPDATE outbox SET payload = $2, purged_at = $3
             WHERE purged_at IS NULL AND status IN ('delivered', 'failed') AND created_at < $1",
        )
        .bind(before)
        .bind(Vec::<u8>::new())
        .bind(&now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let purged = Purged { messages, tasks, steps, replies };
        let event = AuditEvent::new("scheduler", "retention.purged", "retention")
            .details(json!({"before": before, "purged": purged}));
        self.commit_audited(tx, vec![event]).await?;
        Ok(purged)
    }
}
