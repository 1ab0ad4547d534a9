//! Inbound messages: storing raw bytes with their fate in one transaction (dedupe by key,
//! replay nonces), reprocessing quarantined ones, reading them back.

use std::time::Duration;

use super::error::{Result, StoreError};
use serde::Serialize;
use serde_json::json;
use sqlx::FromRow;

use super::{NewTask, OwnedDelivery, Store};
use crate::audit::AuditEvent;
use crate::domain::{BounceNotice, BouncedDelivery, MessageRowId, MessageStatus, Outcome, TaskId};

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
    Bounce(BounceNotice),
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

/// A signed request's replay key, stored with the message in one transaction.
#[derive(Debug)]
pub struct Nonce<'a> {
    pub source: &'a str,
    pub nonce: &'a str,
    /// Kept at least this long; older nonces are purged by the scheduler.
    pub keep_for: Duration,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct MessageRow {
    #[sqlx(try_from = "i64")]
    pub id: MessageRowId,
    pub received_at: String,
    pub source: String,
    pub source_key: Option<String>,
    pub message_id: Option<String>,
    pub sha256: String,
    pub size_bytes: i64,
    #[sqlx(try_from = "String")]
    pub status: MessageStatus,
    pub reason: Option<String>,
    pub sender: Option<String>,
    pub subject: Option<String>,
}

impl Store {
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
        let now = self.now();
        let mut tx = self.begin().await?;
        if let Some(n) = nonce {
            let fresh = sqlx::query(
                "INSERT INTO webhook_nonces (source, nonce, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (source, nonce) DO NOTHING",
            )
            .bind(n.source)
            .bind(n.nonce)
            .bind(self.later(n.keep_for))
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
        self.messages_with_status(MessageStatus::Quarantined, limit).await
    }

    /// Messages of `status`, newest first (at most `limit`).
    pub async fn messages_with_status(&self, status: MessageStatus, limit: i64) -> Result<Vec<MessageRow>> {
        Ok(sqlx::query_as(
            "SELECT id, received_at, source, source_key, message_id, sha256, size_bytes, status, reason,
                    sender, subject
             FROM messages WHERE status = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(status.as_str())
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
        id: impl Into<MessageRowId>,
        message_id: Option<&str>,
        sender: Option<&str>,
        subject: Option<&str>,
        disposition: Disposition,
    ) -> Result<Outcome> {
        let id = id.into().0;
        let now = self.now();
        let mut tx = self.begin().await?;
        let old: Option<(String, Option<String>)> =
            sqlx::query_as("SELECT status, reason FROM messages WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((status, old_reason)) = old else {
            return Err(StoreError::NotFound(format!("no message {id}")));
        };
        if status != MessageStatus::Quarantined.as_str() {
            return Err(StoreError::Conflict(format!("message {id} is {status}, not quarantined")));
        }
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
    ) -> Result<(Disposition, Option<(BounceNotice, Option<BouncedDelivery>)>)> {
        let Disposition::Bounce(b) = disposition else { return Ok((disposition, None)) };
        let delivery = self.bounced_delivery(tx, &b).await?;
        let reason = b.reason(delivery.as_ref());
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
        bounced: Option<(BounceNotice, Option<BouncedDelivery>)>,
        now: &str,
        events: &mut Vec<AuditEvent>,
    ) -> Result<Outcome> {
        let outcome = match disposition {
            Disposition::Task(t) => {
                Outcome::Task { message, task: self.create_task(tx, actor, message, t, now, events).await? }
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
            Disposition::Bounce(b) => Outcome::Ignored { message, reason: format!("bounce ({})", b.kind) },
        };
        if let Some((bounce, Some(delivery))) = bounced {
            self.record_bounce(tx, actor, message, &bounce, &delivery, events).await?;
        }
        Ok(outcome)
    }

    pub async fn message(&self, id: impl Into<MessageRowId>) -> Result<Option<MessageRow>> {
        let id = id.into().0;
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
    pub async fn message_raw(&self, id: impl Into<MessageRowId>) -> Result<Option<Vec<u8>>> {
        let id = id.into().0;
        Ok(sqlx::query_scalar("SELECT raw FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?)
    }

    /// Whether `source` has used `nonce` before (and it is not purged yet): such a request is a
    /// replay, refused before its body is read.
    pub async fn nonce_seen(&self, source: &str, nonce: &str) -> Result<bool> {
        let seen: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM webhook_nonces WHERE source = $1 AND nonce = $2")
                .bind(source)
                .bind(nonce)
                .fetch_optional(&self.reader)
                .await?;
        Ok(seen.is_some())
    }

    /// Deletes replay nonces past their expiry; returns how many.
    pub async fn purge_expired_nonces(&self) -> Result<u64> {
        let done = sqlx::query("DELETE FROM webhook_nonces WHERE expires_at < $1")
            .bind(self.now())
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }
}
