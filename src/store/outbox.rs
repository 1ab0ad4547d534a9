//! The outbox: deliveries queued with their task, claimed under a lease, retried, held by caps
//! and released, read back for the task page.

use std::time::Duration;

use super::error::Result;
use serde::Serialize;
use serde_json::json;
use sqlx::FromRow;

use chrono::{DateTime, Utc};

use super::Store;
use super::dialect::timestamp;
use crate::audit::AuditEvent;
use crate::domain::{DeliveryId, DeliveryStatus, TaskId};

/// What a reply cap counts: replies to one address, or in one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapScope {
    Recipient,
    Thread,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct DeliveryRow {
    #[sqlx(try_from = "i64")]
    pub id: DeliveryId,
    pub task_id: Option<i64>,
    pub kind: String,
    pub message_id: String,
    pub envelope_to: String,
    #[sqlx(try_from = "String")]
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub created_at: String,
    pub delivered_at: Option<String>,
    pub location: Option<String>,
    pub last_error: Option<String>,
}

/// A delivery claimed by the outbox worker.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedDelivery {
    #[sqlx(try_from = "i64")]
    pub id: DeliveryId,
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

impl Store {
    /// Queues `d` in the outbox, due now; `kind` is `mail` (a task's reply) or `refusal`.
    pub(super) async fn insert_delivery(
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
    pub async fn release_delivery(&self, id: impl Into<DeliveryId>, actor: &str) -> Result<bool> {
        let id = id.into().0;
        let now = self.now();
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
            self.commit(tx).await?;
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
        let now = self.now();
        let mut tx = self.begin().await?;
        let claimed: Option<ClaimedDelivery> = sqlx::query_as(self.dialect.claim_delivery())
            .bind(owner)
            .bind(self.later(lease))
            .bind(&now)
            .fetch_optional(&mut *tx)
            .await?;
        self.commit(tx).await?;
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
        let now = self.now();
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
        .bind(d.id.0)
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

    pub async fn task_deliveries(&self, task: impl Into<TaskId>) -> Result<Vec<DeliveryRow>> {
        let task = task.into().0;
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
    pub async fn task_reply(&self, task: impl Into<TaskId>) -> Result<Option<Vec<u8>>> {
        let task = task.into().0;
        Ok(sqlx::query_scalar("SELECT payload FROM outbox WHERE task_id = $1 AND kind = 'mail'")
            .bind(task)
            .fetch_optional(&self.reader)
            .await?)
    }
}
