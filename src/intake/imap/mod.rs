//! IMAP intake, in IDLE (RFC 2177) or poll mode: takes every message above the stored last UID of the mailbox's
//! current UIDVALIDITY (RFC 3501 §2.3.1.1), never by \Seen, so mail a human already read is
//! still processed. Per message, in this order:
//!
//! 1. `UID FETCH n (UID RFC822.SIZE)`: oversize mail is recorded as quarantined and moved to
//!    `IMAP_QUARANTINE_MAILBOX` (or flagged \Flagged) without ever being downloaded;
//! 2. `UID FETCH n BODY.PEEK[]` (PEEK: no \Seen before the commit) and [`Intake::accept`], which
//!    commits the raw bytes;
//! 3. only then the acknowledgement: `UID MOVE` to `IMAP_PROCESSED_MAILBOX`, or `+FLAGS (\Seen)`;
//! 4. the mailbox position moves to n.
//!
//! A crash between 2 and 4 re-fetches the message on the next poll; dedupe makes that a no-op and
//! the acknowledgement is then applied. A new UIDVALIDITY (the mailbox was recreated or
//! renumbered) refetches everything; dedupe keeps each message once. Every command has a timeout.
//!
//! One instance reads a mailbox at a time: it holds a lease in `mailbox_state`, renewed every
//! poll or IDLE cycle (at most every lease/3, and IDLE is re-issued at least every 25 minutes);
//! another instance takes over when it expires, at once when the holder shuts down.
//!
//! [`session`] connects and logs in, [`mailbox`] runs the protocol above on any session (tested
//! without a server), [`idle`] keeps one connection in IDLE, and [`run`] supervises them.

mod idle;
pub mod mailbox;
mod session;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use backon::BackoffBuilder;
use secrecy::SecretString;
use tokio_rustls::TlsConnector;
use tracing::warn;

use crate::intake::Intake;
use crate::store::Store;
use session::{Live, connect, timed};

/// Where IMAP intake starts in a mailbox it has never polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Only mail arriving from now on (the default: pointing the bot at a full inbox does not
    /// answer years of old mail).
    New,
    /// Everything in the mailbox.
    All,
    /// Mail with an internal date on or after this day.
    Since(chrono::NaiveDate),
}

/// How IMAP intake learns about new mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One connection that waits in IDLE (RFC 2177) and takes new mail as soon as it arrives.
    Idle,
    /// Connect, take new mail and log out every `IMAP_POLL_INTERVAL`.
    Poll,
}

/// How the IMAP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// `imaps://`: TLS from the first byte (port 993).
    Implicit,
    /// `imap://`: STARTTLS (RFC 3501 §6.2.1) when the server offers it; plaintext only to a
    /// loopback address or with `IMAP_ALLOW_PLAINTEXT=true`.
    StartTls,
}

/// How intake logs in to IMAP.
#[derive(Debug, Clone)]
pub enum Auth {
    /// LOGIN with `IMAP_PASSWORD`.
    Password(SecretString),
    /// SASL XOAUTH2 (Gmail, Microsoft 365) with an access token printed by this shell command
    /// (`IMAP_OAUTH2_TOKEN_COMMAND`), run before every login so a refreshed token is picked up.
    OAuth2TokenCommand(String),
}

/// One IMAP mailbox to take mail from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    /// May the password go over a connection without TLS (no STARTTLS offered)?
    pub allow_plaintext: bool,
    /// PEM file of the CA certificates to trust instead of the system's (`IMAP_CA_FILE`).
    pub ca_file: Option<PathBuf>,
    pub username: String,
    pub auth: Auth,
    pub mailbox: String,
    /// UID MOVE processed mail here after the commit; otherwise set \Seen.
    pub processed_mailbox: Option<String>,
    /// UID MOVE oversize mail here; otherwise flag it \Flagged.
    pub quarantine_mailbox: Option<String>,
    pub start: Start,
    pub mode: Mode,
    pub poll_interval: Duration,
    /// How long one instance may read the mailbox before renewing its claim; another instance
    /// takes over when it expires.
    pub lease: Duration,
    /// `/health` reports the mailbox degraded when its last successful poll is older than this.
    pub health_max_age: Duration,
    /// Longest wait for any one IMAP command or the connection.
    pub command_timeout: Duration,
}

impl Settings {
    /// The key of this mailbox in `mailbox_state` and the audit log: `imap://user@host:port/Mailbox`.
    pub fn key(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("imap://{}@{host}:{}/{}", self.username, self.port, self.mailbox)
    }
}

/// What one poll did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    /// Messages taken from the mailbox (new UIDs).
    pub taken: usize,
    /// Of those, how many became tasks.
    pub tasks: usize,
    pub duplicates: usize,
    /// Left unread on the server for being over the size limit.
    pub oversize: usize,
    /// Another instance holds the mailbox's lease; nothing was read.
    pub not_ours: bool,
}

pub struct ImapIntake {
    settings: Settings,
    intake: Arc<Intake>,
    store: Store,
    max_bytes: usize,
    /// This process's name on the mailbox lease.
    owner: String,
    tls: TlsConnector,
}

impl ImapIntake {
    /// Errors: an unreadable `IMAP_CA_FILE`, or no trusted CA certificates at all.
    pub fn new(
        settings: Settings,
        intake: Arc<Intake>,
        store: Store,
        max_bytes: usize,
        owner: String,
    ) -> Result<Self> {
        let tls = session::tls_connector(settings.ca_file.as_deref())?;
        Ok(Self { settings, intake, store, max_bytes, owner, tls })
    }

    /// Takes or renews this instance's lease on the mailbox.
    async fn claim(&self) -> Result<bool> {
        Ok(self.store.claim_mailbox(&self.settings.key(), &self.owner, self.settings.lease).await?)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Connects, takes every new message, logs out; does nothing while another instance holds
    /// the mailbox. A failure is recorded on the mailbox (last error, consecutive errors) before
    /// it is returned.
    pub async fn poll_once(&self) -> Result<PollReport> {
        if !self.claim().await? {
            return Ok(PollReport { not_ours: true, ..PollReport::default() });
        }
        let result = self.poll().await;
        if let Err(e) = &result {
            self.store.record_mailbox_error(&self.settings.key(), &format!("{e:#}")).await?;
        }
        result
    }

    async fn poll(&self) -> Result<PollReport> {
        let limit = self.settings.command_timeout;
        let mut session = connect(&self.settings, &self.tls).await?;
        let report = self.take(&mut Live { session: &mut session, limit }).await?;
        let _ = timed(limit, "LOGOUT", session.logout()).await;
        Ok(report)
    }

    /// One round of the supervisor: a poll, or an IDLE session while the lease is ours. The
    /// pause before the next round; `None` when `stop` fired.
    async fn round(
        &self,
        task_wake: &tokio::sync::Notify,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<Duration>> {
        let s = &self.settings;
        match s.mode {
            Mode::Poll => {
                let report = self.poll_once().await?;
                if report.tasks > 0 {
                    task_wake.notify_one();
                }
                Ok(Some(if report.not_ours { s.lease / 3 } else { s.poll_interval }))
            }
            Mode::Idle => {
                if !self.claim().await? {
                    return Ok(Some(s.lease / 3));
                }
                match self.idle_session(task_wake, stop).await {
                    Ok(true) => Ok(None),
                    Ok(false) => Ok(Some(s.lease / 3)),
                    Err(e) => {
                        let _ = self.store.record_mailbox_error(&s.key(), &format!("{e:#}")).await;
                        Err(e)
                    }
                }
            }
        }
    }
}

/// Backoff after consecutive failures: exponential from 1 s, at most 5 minutes, with jitter.
fn failure_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Reads the mailbox until `stop` changes, in IDLE or poll mode. While another instance holds
/// the mailbox, checks its lease every lease/3. After a failure, retries with exponential backoff
/// and jitter (at most 5 minutes). Never stops silently: each failure is logged and recorded on
/// the mailbox (its last error and count of consecutive errors, shown on the status page and in
/// /health). On stop, the lease is released so another instance takes over at once.
pub async fn run(
    imap: Arc<ImapIntake>,
    task_wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let key = imap.settings.key();
    let mut backoff = failure_backoff();
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        let pause = match imap.round(&task_wake, &mut stop).await {
            Ok(None) => break,
            Ok(Some(pause)) => {
                failures = 0;
                backoff = failure_backoff();
                pause
            }
            Err(e) => {
                failures += 1;
                let wait = backoff.next().unwrap_or(Duration::from_secs(300));
                warn!(mailbox = %key, error = %format!("{e:#}"), failures, retry_in_s = wait.as_secs(), "IMAP intake failed");
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => break,
        }
    }
    if let Err(e) = imap.store.release_mailbox(&key, &imap.owner).await {
        warn!(mailbox = %key, error = %format!("{e:#}"), "could not release the mailbox lease");
    }
}
