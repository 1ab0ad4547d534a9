//! IMAP mailbox positions (UIDVALIDITY, last UID), the one-reader lease, and poll health.

use std::time::Duration;

use super::error::Result;
use serde::Serialize;
use serde_json::json;
use sqlx::FromRow;

use super::Store;
use crate::audit::AuditEvent;

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

impl Store {
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
        let now = self.now();
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
        let now = self.now();
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
        .bind(self.later(lease))
        .bind(mailbox)
        .bind(&now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        self.commit(tx).await?;
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
        let now = self.now();
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
}
