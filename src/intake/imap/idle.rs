//! IDLE (RFC 2177): one connection for as long as this instance holds the mailbox. Take new
//! mail, IDLE until the server reports a change or the cycle ends (at most lease/3, and under
//! 29 minutes as §3 asks), renew the lease, repeat.

use std::time::Duration;

use anyhow::{Context, Result};
use async_imap::extensions::idle::IdleResponse;

use super::ImapIntake;
use super::session::{Live, connect, timed};

/// Longest single IDLE (RFC 2177 §3 asks clients to re-issue it within 29 minutes).
const MAX_IDLE: Duration = Duration::from_secs(25 * 60);

impl ImapIntake {
    /// Returns `Ok(true)` when `stop` fired (after DONE and LOGOUT), `Ok(false)` when the lease
    /// went to another instance.
    pub(super) async fn idle_session(
        &self,
        task_wake: &tokio::sync::Notify,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<bool> {
        let limit = self.settings.command_timeout;
        let cycle = (self.settings.lease / 3).min(MAX_IDLE).max(Duration::from_secs(1));
        let mut session = connect(&self.settings, &self.tls).await?;
        loop {
            if !self.claim().await? {
                let _ = timed(limit, "LOGOUT", session.logout()).await;
                return Ok(false);
            }
            if self.take(&mut Live { session: &mut session, limit }).await?.tasks > 0 {
                task_wake.notify_one();
            }
            let mut idle = session.idle();
            timed(limit, "IDLE", idle.init()).await?;
            let (woken, stopped) = {
                let (wait, _interrupt) = idle.wait_with_timeout(cycle);
                tokio::select! {
                    // The crate's own timeout restarts on every keepalive; this one bounds the cycle.
                    r = tokio::time::timeout(cycle, wait) => (r.unwrap_or(Ok(IdleResponse::Timeout)), false),
                    _ = stop.changed() => (Ok(IdleResponse::ManualInterrupt), true),
                }
            };
            session = timed(limit, "DONE", idle.done()).await?;
            woken.context("IMAP IDLE")?;
            if stopped {
                let _ = timed(limit, "LOGOUT", session.logout()).await;
                return Ok(true);
            }
        }
    }
}
