//! The outbox worker: delivers queued replies through the configured transport, under a lease,
//! with the reply's Message-ID unchanged across retries. Transient failures are retried on the
//! `SMTP_RETRY_SCHEDULE` (default 1m, 5m, 30m, 2h, 6h, 24h, with jitter) and then fail; permanent
//! ones fail at once. Replies to suppressed addresses are not sent. Every outcome is audited.

use std::time::Duration;

use anyhow::Result;
use rand::Rng;
use tracing::{info, warn};

use crate::mail::transport::Transport;
use crate::store::{CapScope, ClaimedDelivery, Leased, Store, timestamp};

/// The wait after failed attempt number `attempt` (1-based): the schedule's entry, ±20 % jitter
/// so deliveries that failed together do not retry together. `None` once the schedule is used up.
pub fn backoff(schedule: &[Duration], attempt: i64) -> Option<Duration> {
    let base = schedule.get(usize::try_from(attempt.max(1) - 1).ok()?)?;
    let jitter = rand::rng().random_range(0.8..1.2);
    Some(base.mul_f64(jitter))
}

pub struct Outbox {
    store: Store,
    transport: Transport,
    owner: String,
    lease: Duration,
    /// Waits between attempts after transient failures (`SMTP_RETRY_SCHEDULE`).
    schedule: Vec<Duration>,
    caps: Caps,
}

/// Reply caps (`SWARM_REPLY_CAP_THREAD`, `SWARM_REPLY_CAP_RECIPIENT`): beyond them a reply is
/// held, audited and shown, not sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    pub per_thread: Option<ReplyCap>,
    pub per_recipient: Option<ReplyCap>,
}

/// A reply cap: `count` replies within `window`; beyond it replies are held, not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyCap {
    pub count: u32,
    pub window: Duration,
}

impl Outbox {
    pub fn new(
        store: Store,
        transport: Transport,
        owner: String,
        lease: Duration,
        schedule: Vec<Duration>,
        caps: Caps,
    ) -> Self {
        Self { store, transport, owner, lease, schedule, caps }
    }

    /// Why this delivery must be held, if a cap is reached: counts the replies delivered within
    /// each cap's window to the same recipient and in the same conversation.
    async fn over_cap(&self, d: &ClaimedDelivery) -> Result<Option<String>> {
        if d.cap_exempt != 0 {
            return Ok(None);
        }
        let scopes = [
            (self.caps.per_recipient, CapScope::Recipient, Some(d.envelope_to.as_str()), "recipient"),
            (self.caps.per_thread, CapScope::Thread, d.thread_key.as_deref(), "thread"),
        ];
        for (cap, scope, key, what) in scopes {
            let (Some(cap), Some(key)) = (cap, key) else { continue };
            let since = timestamp(
                self.store.clock().now() - chrono::Duration::from_std(cap.window).unwrap_or_default(),
            );
            let sent = self.store.delivered_since(scope, key, &since).await?;
            if sent >= i64::from(cap.count) {
                return Ok(Some(format!(
                    "held: {sent} replies to this {what} within {} s reached the cap of {}; not sent",
                    cap.window.as_secs(),
                    cap.count
                )));
            }
        }
        Ok(None)
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
            warn!(delivery = d.id.0, "{why}");
            self.store.delivery_failed(&d, &self.owner, &why, None).await?;
            count_attempt("suppressed");
            return Ok(true);
        }
        if let Some(why) = self.over_cap(&d).await? {
            warn!(delivery = d.id.0, to = %d.envelope_to, "{why}");
            self.store.delivery_held(&d, &self.owner, &why).await?;
            count_attempt("held");
            return Ok(true);
        }
        // The lease is renewed while the relay talks; when it is lost, this attempt stops
        // unrecorded and the worker that claimed the delivery since then records its own.
        let mut heartbeat = self.store.heartbeat(Leased::Delivery(d.id), &self.owner, self.lease);
        let sent = tokio::select! {
            sent = self.transport.send(d.task_id, &d.message_id, &d.envelope_from, &d.envelope_to, &d.payload) => sent,
            () = heartbeat.lost() => return Ok(true),
        };
        drop(heartbeat);
        match sent {
            Ok(location) => {
                info!(delivery = d.id.0, message_id = %d.message_id, %location, "delivered");
                self.store.delivery_succeeded(&d, &self.owner, &location).await?;
                count_attempt("delivered");
            }
            Err(e) => match backoff(&self.schedule, d.attempts).filter(|_| !e.permanent) {
                None => {
                    warn!(delivery = d.id.0, attempts = d.attempts, error = %e, "delivery failed for good");
                    self.store.delivery_failed(&d, &self.owner, &e.message, None).await?;
                    count_attempt("failed");
                }
                Some(wait) => {
                    let retry_at =
                        self.store.clock().now() + chrono::Duration::from_std(wait).unwrap_or_default();
                    warn!(delivery = d.id.0, error = %e, %retry_at, "delivery failed, will retry");
                    self.store.delivery_failed(&d, &self.owner, &e.message, Some(retry_at)).await?;
                    count_attempt("retry");
                }
            },
        }
        Ok(true)
    }
}

/// `swarm_delivery_attempts_total{result}`: `delivered`, `retry`, `failed`, `held`, `suppressed`.
fn count_attempt(result: &'static str) {
    metrics::counter!("swarm_delivery_attempts_total", "result" => result).increment(1);
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_follows_the_schedule_then_stops() {
        let schedule = [Duration::from_secs(60), Duration::from_secs(300)];
        let first = backoff(&schedule, 1).expect("first retry").as_secs_f64();
        assert!((48.0..=72.0).contains(&first), "{first}");
        let second = backoff(&schedule, 2).expect("second retry").as_secs_f64();
        assert!((240.0..=360.0).contains(&second), "{second}");
        assert_eq!(backoff(&schedule, 3), None, "schedule used up: fail for good");
    }
}
