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
