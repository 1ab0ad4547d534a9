//! Bounces matched to our deliveries, and the suppression list they feed.

use super::error::Result;
use serde::Serialize;
use serde_json::json;
use sqlx::FromRow;

use super::Store;
use crate::audit::AuditEvent;
use crate::domain::{BounceNotice, BouncedDelivery, MessageRowId};

/// An address on the suppression list.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct Suppression {
    pub address: String,
    pub reason: String,
    pub created_at: String,
}

impl Store {
    /// The delivery a bounce names: one of ours whose Message-ID the bounce quotes, preferring
    /// the recipient the bounce names.
    pub(super) async fn bounced_delivery(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        bounce: &BounceNotice,
    ) -> Result<Option<BouncedDelivery>> {
        for id in &bounce.original_message_ids {
            let rows: Vec<(i64, Option<i64>, String)> = sqlx::query_as(
                "SELECT id, task_id, envelope_to FROM outbox WHERE message_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
            let rows: Vec<BouncedDelivery> = rows
                .into_iter()
                .map(|(id, task_id, envelope_to)| BouncedDelivery { id, task_id, envelope_to })
                .collect();
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
    pub(super) async fn record_bounce(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        actor: &str,
        message: MessageRowId,
        bounce: &BounceNotice,
        delivery: &BouncedDelivery,
        events: &mut Vec<AuditEvent>,
    ) -> Result<()> {
        let text = &bounce.detail;
        sqlx::query("UPDATE outbox SET status = 'bounced', bounce = $1 WHERE id = $2")
            .bind(text)
            .bind(delivery.id)
            .execute(&mut **tx)
            .await?;
        let mut event = AuditEvent::new(actor, "delivery.bounced", format!("delivery:{}", delivery.id))
            .details(json!({"bounce": text, "message": message.0, "recipient": delivery.envelope_to}));
        if let Some(task) = delivery.task_id {
            event = event.task(task);
        }
        events.push(event);
        if bounce.suppress {
            let address = delivery.envelope_to.to_ascii_lowercase();
            let added = sqlx::query(
                "INSERT INTO suppressions (address, reason, created_at, message_id) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (address) DO NOTHING",
            )
            .bind(&address)
            .bind(bounce.suppression_reason())
            .bind(self.now())
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
            self.commit(tx).await?;
            return Ok(false);
        }
        let event = AuditEvent::new(actor, "suppression.removed", format!("address:{address}"));
        self.commit_audited(tx, vec![event]).await?;
        Ok(true)
    }
}
