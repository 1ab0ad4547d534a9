//! The outbox worker: delivers queued replies through the configured transport, under a lease,
//! with the reply's Message-ID unchanged across retries. Transient failures are retried with
//! exponential backoff and jitter; permanent ones fail at once. Every outcome is audited.

use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use rand::Rng;
use tracing::{info, warn};

use crate::mail::transport::Transport;
use crate::store::Store;

/// Attempts before a transiently failing delivery is given up.
pub const MAX_ATTEMPTS: i64 = 6;

/// Delay before retry number `attempt` (1-based): 1 min × 5^(attempt-1), at most 6 h, ±20 % jitter.
pub fn backoff(attempt: i64) -> Duration {
    let base = 60.0 * 5f64.powi((attempt.max(1) - 1).min(10) as i32);
    let capped = base.min(6.0 * 3600.0);
    let jitter = rand::rng().random_range(0.8..1.2);
    Duration::from_secs_f64(capped * jitter)
}

pub struct Outbox {
    store: Store,
    transport: Transport,
    owner: String,
    lease: Duration,
}

impl Outbox {
    pub fn new(store: Store, transport: Transport, owner: String, lease: Duration) -> Self {
        Self { store, transport, owner, lease }
    }

    /// Claims and attempts the next due delivery. `Ok(false)` when none is due.
    pub async fn deliver_next(&self) -> Result<bool> {
        let Some(d) = self.store.claim_delivery(&self.owner, self.lease).await? else {
            return Ok(false);
        };
        if let Some(s) = self.store.suppression(&d.envelope_to).await? {
            let why = format!(
                "not sent: {} is on the suppression list since {} ({})",
                s.address, s.created_at, s.reason
            );
            warn!(delivery = d.id, "{why}");
            self.store.delivery_failed(&d, &self.owner, &why, None).await?;
            return Ok(true);
        }
        match self
            .transport
            .send(d.task_id, &d.message_id, &d.envelope_from, &d.envelope_to, &d.payload)
            .await
        {
            Ok(location) => {
                info!(delivery = d.id, message_id = %d.message_id, %location, "delivered");
                self.store.delivery_succeeded(&d, &self.owner, &location).await?;
            }
            Err(e) if e.permanent || d.attempts >= MAX_ATTEMPTS => {
                warn!(delivery = d.id, error = %e, "delivery failed for good");
                self.store.delivery_failed(&d, &self.owner, &e.message, None).await?;
            }
            Err(e) => {
                let retry_at =
                    Utc::now() + chrono::Duration::from_std(backoff(d.attempts)).unwrap_or_default();
                warn!(delivery = d.id, error = %e, %retry_at, "delivery failed, will retry");
                self.store.delivery_failed(&d, &self.owner, &e.message, Some(retry_at)).await?;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_grows_and_is_capped() {
        let first = backoff(1).as_secs_f64();
        assert!((48.0..=72.0).contains(&first), "{first}");
        assert!(backoff(3).as_secs_f64() >= 0.8 * 1500.0);
        assert!(backoff(20).as_secs_f64() <= 1.2 * 6.0 * 3600.0);
    }
}
