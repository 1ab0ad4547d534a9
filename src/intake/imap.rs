//! IMAP intake, poll mode: takes every message above the stored last UID of the mailbox's
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

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use async_imap::{Client, Session};
use futures_util::TryStreamExt;
use secrecy::ExposeSecret;
use tokio::net::TcpStream;
use tracing::{info, instrument, warn};

use crate::config::{ImapSettings, ImapStart};
use crate::domain::Outcome;
use crate::intake::{Intake, Source};
use crate::store::Store;

type ImapSession = Session<TcpStream>;

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
}

pub struct ImapIntake {
    settings: ImapSettings,
    intake: Arc<Intake>,
    store: Store,
    max_bytes: usize,
}

async fn timed<T, E>(limit: Duration, what: &str, f: impl Future<Output = Result<T, E>>) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| anyhow!("IMAP {what} timed out after {} s", limit.as_secs()))?
        .with_context(|| format!("IMAP {what}"))
}

impl ImapIntake {
    pub fn new(settings: ImapSettings, intake: Arc<Intake>, store: Store, max_bytes: usize) -> Self {
        Self { settings, intake, store, max_bytes }
    }

    pub fn settings(&self) -> &ImapSettings {
        &self.settings
    }

    /// Connects, takes every new message, logs out. A failure is recorded on the mailbox
    /// (last error, consecutive errors) before it is returned.
    pub async fn poll_once(&self) -> Result<PollReport> {
        let result = self.poll().await;
        if let Err(e) = &result {
            self.store.record_mailbox_error(&self.settings.key(), &format!("{e:#}")).await?;
        }
        result
    }

    async fn connect(&self) -> Result<ImapSession> {
        let s = &self.settings;
        let limit = s.command_timeout;
        let tcp = tokio::time::timeout(limit, TcpStream::connect((s.host.as_str(), s.port)))
            .await
            .map_err(|_| anyhow!("connecting to {}:{} timed out", s.host, s.port))?
            .with_context(|| format!("connecting to {}:{}", s.host, s.port))?;
        let mut client = Client::new(tcp);
        timed(limit, "greeting", client.read_response())
            .await?
            .context("the server closed the connection before its greeting")?;
        tokio::time::timeout(limit, client.login(&s.username, s.password.expose_secret()))
            .await
            .map_err(|_| anyhow!("IMAP LOGIN timed out"))?
            .map_err(|(e, _)| anyhow!("IMAP LOGIN as {} failed: {e}", s.username))
    }

    #[instrument(skip_all, fields(mailbox = %self.settings.key()))]
    async fn poll(&self) -> Result<PollReport> {
        let s = &self.settings;
        let key = s.key();
        let limit = s.command_timeout;
        let mut session = self.connect().await?;
        let mailbox = timed(limit, "SELECT", session.select(&s.mailbox)).await?;
        let uidvalidity = i64::from(mailbox.uid_validity.context("the server sent no UIDVALIDITY")?);
        let stored = self.store.mailbox_state(&key).await?.filter(|st| st.uidvalidity != 0);
        let mut last_uid = match &stored {
            Some(st) if st.uidvalidity == uidvalidity => st.last_uid,
            // Renumbered: take everything again; dedupe keeps each message once.
            Some(_) => 0,
            None => self.starting_uid(&mut session, mailbox.uid_next).await?,
        };
        if stored.as_ref().is_none_or(|st| st.uidvalidity != uidvalidity) {
            self.store.save_mailbox_position(&key, uidvalidity, last_uid).await?;
        }

        let mut report = PollReport::default();
        for (uid, size) in self.new_uids(&mut session, last_uid).await? {
            let source_key = format!("{key};UIDVALIDITY={uidvalidity};UID={uid}");
            let source = Source { name: &key, key: Some(&source_key), nonce: None };
            let outcome = if size > self.max_bytes {
                report.oversize += 1;
                self.intake.quarantine_unread(&source, size, self.max_bytes).await?
            } else {
                let raw = self.download(&mut session, uid).await?;
                self.intake.accept(&source, &raw).await?
            };
            report.taken += 1;
            match &outcome {
                Outcome::Task { .. } => report.tasks += 1,
                Outcome::Duplicate { .. } => report.duplicates += 1,
                _ => {}
            }
            self.acknowledge(&mut session, uid, matches!(outcome, Outcome::Quarantined { .. })).await?;
            last_uid = i64::from(uid);
            self.store.save_mailbox_position(&key, uidvalidity, last_uid).await?;
        }
        if report.taken == 0 {
            // Nothing new: still a successful poll.
            self.store.save_mailbox_position(&key, uidvalidity, last_uid).await?;
        }
        let _ = timed(limit, "LOGOUT", session.logout()).await;
        if report.taken > 0 {
            info!(taken = report.taken, tasks = report.tasks, duplicates = report.duplicates, "polled");
        }
        Ok(report)
    }

    /// Where a never-polled mailbox starts (`IMAP_START`): the UID after which mail is taken.
    async fn starting_uid(&self, session: &mut ImapSession, uid_next: Option<u32>) -> Result<i64> {
        let limit = self.settings.command_timeout;
        match self.settings.start {
            ImapStart::All => Ok(0),
            ImapStart::New => match uid_next {
                Some(next) => Ok(i64::from(next) - 1),
                None => {
                    let all = timed(limit, "UID SEARCH", session.uid_search("ALL")).await?;
                    Ok(all.into_iter().max().map_or(0, i64::from))
                }
            },
            ImapStart::Since(day) => {
                let query = format!("SINCE {}", day.format("%d-%b-%Y"));
                let found = timed(limit, "UID SEARCH", session.uid_search(&query)).await?;
                Ok(found
                    .into_iter()
                    .min()
                    .map_or_else(|| i64::from(uid_next.unwrap_or(1)) - 1, |u| i64::from(u) - 1))
            }
        }
    }

    /// UIDs above `last_uid` with their RFC822.SIZE, ascending. (`n:*` also returns the newest
    /// message when no UID is above n; such UIDs are filtered out.)
    async fn new_uids(&self, session: &mut ImapSession, last_uid: i64) -> Result<Vec<(u32, usize)>> {
        let limit = self.settings.command_timeout;
        let range = format!("{}:*", last_uid + 1);
        let fetches: Vec<async_imap::types::Fetch> = tokio::time::timeout(limit, async {
            session.uid_fetch(&range, "(UID RFC822.SIZE)").await?.try_collect().await
        })
        .await
        .map_err(|_| anyhow!("IMAP UID FETCH timed out"))?
        .context("IMAP UID FETCH (RFC822.SIZE)")?;
        let mut uids: Vec<(u32, usize)> = fetches
            .iter()
            .filter_map(|f| Some((f.uid?, f.size.unwrap_or(0) as usize)))
            .filter(|(uid, _)| i64::from(*uid) > last_uid)
            .collect();
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    async fn download(&self, session: &mut ImapSession, uid: u32) -> Result<Vec<u8>> {
        let limit = self.settings.command_timeout;
        let fetches: Vec<async_imap::types::Fetch> = tokio::time::timeout(limit, async {
            session.uid_fetch(uid.to_string(), "(UID BODY.PEEK[])").await?.try_collect().await
        })
        .await
        .map_err(|_| anyhow!("IMAP UID FETCH {uid} timed out"))?
        .with_context(|| format!("IMAP UID FETCH {uid} BODY.PEEK[]"))?;
        fetches
            .iter()
            .find(|f| f.uid == Some(uid))
            .and_then(|f| f.body())
            .map(<[u8]>::to_vec)
            .with_context(|| format!("the server returned no body for UID {uid}"))
    }

    /// After the commit: move the message away, or mark it, so the mailbox shows it was handled.
    async fn acknowledge(&self, session: &mut ImapSession, uid: u32, quarantined: bool) -> Result<()> {
        let s = &self.settings;
        let limit = s.command_timeout;
        let (target, flag) = if quarantined {
            (s.quarantine_mailbox.as_deref(), "+FLAGS (\\Flagged)")
        } else {
            (s.processed_mailbox.as_deref(), "+FLAGS (\\Seen)")
        };
        match target {
            Some(mailbox) => timed(limit, "UID MOVE", session.uid_mv(uid.to_string(), mailbox)).await,
            None => {
                tokio::time::timeout(limit, async {
                    session.uid_store(uid.to_string(), flag).await?.try_collect::<Vec<_>>().await
                })
                .await
                .map_err(|_| anyhow!("IMAP UID STORE timed out"))?
                .context("IMAP UID STORE")?;
                Ok(())
            }
        }
    }
}

/// Polls until `stop` changes: every `IMAP_POLL_INTERVAL`, or sooner after new tasks; after a
/// failure, again with exponential backoff and jitter (at most 5 minutes). Never stops silently:
/// each failure is logged and recorded on the mailbox.
pub async fn run(
    imap: Arc<ImapIntake>,
    task_wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let interval = imap.settings.poll_interval;
    let mut failures: u32 = 0;
    loop {
        let pause = match imap.poll_once().await {
            Ok(report) => {
                failures = 0;
                if report.tasks > 0 {
                    task_wake.notify_one();
                }
                interval
            }
            Err(e) => {
                failures += 1;
                let backoff = interval.min(Duration::from_secs(5)) * 2u32.saturating_pow(failures.min(8));
                let backoff = backoff.min(Duration::from_secs(300)).mul_f64(rand::random_range(0.8..1.2));
                warn!(mailbox = %imap.settings.key(), error = %format!("{e:#}"), failures, retry_in_s = backoff.as_secs(), "IMAP poll failed");
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}
