//! Leases on claimed work: renewing them while the work is in hand (a [`Heartbeat`]), fencing a
//! write on one ([`Store::fence_task`]: the write fails with [`StoreError::LeaseLost`] once the
//! lease is another owner's), and letting every lease of one owner expire at once (a restarted
//! instance taking back its own claims; a shutdown past its grace period handing them on).
//!
//! Renewals are bookkeeping of a claim, not a change of the work's state: they are not audited
//! (the claim and the outcome are); expiring an owner's leases is, with the counts.

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tracing::warn;

use super::{Result, Store, StoreError};
use crate::audit::AuditEvent;
use crate::domain::{DeliveryId, TaskId};

/// Claimed work a lease is held on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leased {
    /// A running task.
    Task(TaskId),
    /// A delivery being sent.
    Delivery(DeliveryId),
}

impl std::fmt::Display for Leased {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Task(id) => write!(f, "task {id}"),
            Self::Delivery(id) => write!(f, "delivery {id}"),
        }
    }
}

/// How many leases [`Store::expire_leases`] let go, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    pub tasks: u64,
    pub deliveries: u64,
    pub mailboxes: u64,
}

impl Expired {
    pub fn total(&self) -> u64 {
        self.tasks + self.deliveries + self.mailboxes
    }
}

impl Store {
    /// Extends `owner`'s lease on `what` to now + `lease`. `false`, writing nothing, when the
    /// work is no longer `owner`'s (its lease ran out and another worker claimed it, or it ended).
    pub async fn renew_lease(&self, what: Leased, owner: &str, lease: Duration) -> Result<bool> {
        let (statement, id) = match what {
            Leased::Task(id) => (
                "UPDATE tasks SET lease_until = $1 WHERE id = $2 AND status = 'running' AND lease_owner = $3",
                id.0,
            ),
            Leased::Delivery(id) => (
                "UPDATE outbox SET lease_until = $1 WHERE id = $2 AND status = 'sending' AND lease_owner = $3",
                id.0,
            ),
        };
        let mut tx = self.begin().await?;
        let renewed = sqlx::query(statement)
            .bind(self.later(lease))
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        self.commit(tx).await?;
        Ok(renewed == 1)
    }

    /// The fence of a write on a running task, inside the write's transaction: `LeaseLost`
    /// unless `owner` still holds the task. On PostgreSQL the row stays locked until the commit,
    /// so no claim can slip in between the check and the write.
    pub(super) async fn fence_task(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        task: i64,
        owner: &str,
    ) -> Result<()> {
        let held = sqlx::query(
            "UPDATE tasks SET updated_at = $1 WHERE id = $2 AND status = 'running' AND lease_owner = $3",
        )
        .bind(self.now())
        .bind(task)
        .bind(owner)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if held == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(format!("task {task} is no longer {owner}'s")))
        }
    }

    /// Lets every lease `owner` holds expire now, so any instance (this one included) may claim
    /// the work at once: at start, a restarted instance takes back what its previous run had in
    /// hand; at shutdown, work not finished within the grace period is handed on. Audited as
    /// `leases.expired` when there was any.
    pub async fn expire_leases(&self, owner: &str, why: &str) -> Result<Expired> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let mut expire = async |statement: &'static str| -> Result<u64> {
            Ok(sqlx::query(statement).bind(&now).bind(owner).execute(&mut *tx).await?.rows_affected())
        };
        let expired = Expired {
            tasks: expire("UPDATE tasks SET lease_until = $1 WHERE status = 'running' AND lease_owner = $2")
                .await?,
            deliveries: expire(
                "UPDATE outbox SET lease_until = $1 WHERE status = 'sending' AND lease_owner = $2",
            )
            .await?,
            mailboxes: expire("UPDATE mailbox_state SET lease_until = $1 WHERE lease_owner = $2").await?,
        };
        if expired.total() == 0 {
            self.commit(tx).await?;
            return Ok(expired);
        }
        let event = AuditEvent::new("worker", "leases.expired", format!("owner:{owner}")).details(json!({
            "why": why, "tasks": expired.tasks, "deliveries": expired.deliveries, "mailboxes": expired.mailboxes,
        }));
        self.commit_audited(tx, vec![event]).await?;
        Ok(expired)
    }

    /// Renews `owner`'s lease on `what` every `lease / 3` until the returned [`Heartbeat`] is
    /// dropped. Its [`Heartbeat::lost`] resolves once a renewal finds the lease gone, or when no
    /// renewal succeeded for a whole `lease` (the database unreachable: the lease may have run out).
    pub fn heartbeat(&self, what: Leased, owner: &str, lease: Duration) -> Heartbeat {
        let (lost_tx, lost) = watch::channel(false);
        let store = self.clone();
        let owner = owner.to_owned();
        let every = (lease / 3).max(Duration::from_millis(100));
        let renewer = tokio::spawn(async move {
            let mut last_renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match store.renew_lease(what, &owner, lease).await {
                    Ok(true) => last_renewed = tokio::time::Instant::now(),
                    Ok(false) => break,
                    Err(e) => {
                        warn!(%what, error = %e, "could not renew the lease");
                        if last_renewed.elapsed() >= lease {
                            break;
                        }
                    }
                }
            }
            warn!(%what, "lease lost: another worker may own it now");
            let _ = lost_tx.send(true);
        });
        Heartbeat { lost, renewer }
    }
}

/// A running lease renewal (see [`Store::heartbeat`]); stops when dropped.
pub struct Heartbeat {
    lost: watch::Receiver<bool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    /// Resolves when the lease is lost; never while it is held.
    pub async fn lost(&mut self) {
        if self.lost.wait_for(|lost| *lost).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}
