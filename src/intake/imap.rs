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

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use async_imap::{Client, Session};
use futures_util::TryStreamExt;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tracing::{info, instrument, warn};

use crate::domain::Outcome;
use crate::intake::{Intake, Source};
use crate::store::Store;

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
        format!("imap://{}@{}:{}/{}", self.username, self.host, self.port, self.mailbox)
    }
}

/// SASL XOAUTH2 (https://developers.google.com/gmail/imap/xoauth2-protocol): the initial response
/// carries the user and the bearer token; when the server rejects it, it sends an error
/// challenge, which is answered with an empty response to end the exchange.
struct XOAuth2 {
    initial: Option<String>,
}

impl async_imap::Authenticator for XOAuth2 {
    type Response = String;

    fn process(&mut self, _challenge: &[u8]) -> String {
        self.initial.take().unwrap_or_default()
    }
}

/// Runs `IMAP_OAUTH2_TOKEN_COMMAND` (through `sh -c`) and returns the token it prints. The
/// token is never logged; a failing command is reported with its exit status and stderr.
async fn oauth2_token(command: &str, limit: Duration) -> Result<String> {
    let run = tokio::process::Command::new("sh").arg("-c").arg(command).kill_on_drop(true).output();
    let out = tokio::time::timeout(limit, run)
        .await
        .map_err(|_| anyhow!("IMAP_OAUTH2_TOKEN_COMMAND timed out after {} s", limit.as_secs()))?
        .context("running IMAP_OAUTH2_TOKEN_COMMAND")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!(
            "IMAP_OAUTH2_TOKEN_COMMAND failed ({}): {}",
            out.status,
            stderr.lines().next().unwrap_or("")
        );
    }
    let token = String::from_utf8(out.stdout).context("IMAP_OAUTH2_TOKEN_COMMAND printed no UTF-8 token")?;
    let token = token.trim();
    anyhow::ensure!(
        !token.is_empty() && !token.contains(['\x01', '\n']),
        "IMAP_OAUTH2_TOKEN_COMMAND printed no usable token"
    );
    Ok(token.to_owned())
}

/// A plain or TLS connection, so one session type serves both.
pub trait ImapStream: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> ImapStream for T {}

type ImapSession = Session<Box<dyn ImapStream>>;

/// TLS client settings: the system's trusted roots, or only the CAs in `ca_file`.
fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<TlsConnector> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("IMAP_CA_FILE {}", path.display()))?
            {
                roots.add(cert.with_context(|| format!("IMAP_CA_FILE {}", path.display()))?)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system certificate rustls cannot use is skipped, like other clients do.
                let _ = roots.add(cert);
            }
        }
    }
    anyhow::ensure!(!roots.is_empty(), "no trusted CA certificates for IMAP TLS");
    let config =
        ClientConfig::builder_with_provider(Arc::new(tokio_rustls::rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
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

/// Longest single IDLE (RFC 2177 §3 asks clients to re-issue it within 29 minutes).
const MAX_IDLE: Duration = Duration::from_secs(25 * 60);

pub struct ImapIntake {
    settings: Settings,
    intake: Arc<Intake>,
    store: Store,
    max_bytes: usize,
    /// This process's name on the mailbox lease.
    owner: String,
    tls: TlsConnector,
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
    /// Errors: an unreadable `IMAP_CA_FILE`, or no trusted CA certificates at all.
    pub fn new(
        settings: Settings,
        intake: Arc<Intake>,
        store: Store,
        max_bytes: usize,
        owner: String,
    ) -> Result<Self> {
        let tls = tls_connector(settings.ca_file.as_deref())?;
        Ok(Self { settings, intake, store, max_bytes, owner, tls })
    }

    async fn wrap_tls(&self, stream: Box<dyn ImapStream>) -> Result<Box<dyn ImapStream>> {
        let s = &self.settings;
        let name = ServerName::try_from(s.host.clone())
            .with_context(|| format!("{:?} is not a TLS server name", s.host))?;
        let tls = tokio::time::timeout(s.command_timeout, self.tls.connect(name, stream))
            .await
            .map_err(|_| anyhow!("TLS handshake with {} timed out", s.host))?
            .with_context(|| format!("TLS handshake with {}", s.host))?;
        Ok(Box::new(tls))
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

    async fn connect(&self) -> Result<ImapSession> {
        let s = &self.settings;
        let limit = s.command_timeout;
        let tcp = tokio::time::timeout(limit, TcpStream::connect((s.host.as_str(), s.port)))
            .await
            .map_err(|_| anyhow!("connecting to {}:{} timed out", s.host, s.port))?
            .with_context(|| format!("connecting to {}:{}", s.host, s.port))?;
        let mut stream: Box<dyn ImapStream> = Box::new(tcp);
        if s.tls == Tls::Implicit {
            stream = self.wrap_tls(stream).await?;
        }
        let mut client = Client::new(stream);
        timed(limit, "greeting", client.read_response())
            .await?
            .context("the server closed the connection before its greeting")?;
        if s.tls == Tls::StartTls {
            match timed(limit, "STARTTLS", client.run_command_and_check_ok("STARTTLS", None)).await {
                Ok(()) => client = Client::new(self.wrap_tls(client.into_inner()).await?),
                Err(e) if s.allow_plaintext => {
                    tracing::debug!(error = %format!("{e:#}"), "no STARTTLS; plaintext allowed to this server");
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "{} offers no STARTTLS; refusing to send the password in clear text \
                         (use imaps://, or IMAP_ALLOW_PLAINTEXT=true)",
                        s.host
                    )));
                }
            }
        }
        let session = match &s.auth {
            Auth::Password(password) => {
                tokio::time::timeout(limit, client.login(&s.username, password.expose_secret())).await
            }
            Auth::OAuth2TokenCommand(command) => {
                let token = oauth2_token(command, limit).await?;
                let xoauth2 =
                    XOAuth2 { initial: Some(format!("user={}\x01auth=Bearer {token}\x01\x01", s.username)) };
                tokio::time::timeout(limit, client.authenticate("XOAUTH2", xoauth2)).await
            }
        };
        session
            .map_err(|_| anyhow!("IMAP login timed out"))?
            .map_err(|(e, _)| anyhow!("IMAP login as {} failed: {e}", s.username))
    }

    async fn poll(&self) -> Result<PollReport> {
        let limit = self.settings.command_timeout;
        let mut session = self.connect().await?;
        let report = self.take(&mut session).await?;
        let _ = timed(limit, "LOGOUT", session.logout()).await;
        Ok(report)
    }

    /// On a logged-in session: (re)selects the mailbox and takes every message above the stored
    /// position, committing each before acknowledging it.
    #[instrument(skip_all, fields(mailbox = %self.settings.key()))]
    async fn take(&self, session: &mut ImapSession) -> Result<PollReport> {
        let s = &self.settings;
        let key = s.key();
        let limit = s.command_timeout;
        let mailbox = timed(limit, "SELECT", session.select(&s.mailbox)).await?;
        let uidvalidity = i64::from(mailbox.uid_validity.context("the server sent no UIDVALIDITY")?);
        let stored = self.store.mailbox_state(&key).await?.filter(|st| st.uidvalidity != 0);
        let mut last_uid = match &stored {
            Some(st) if st.uidvalidity == uidvalidity => st.last_uid,
            // Renumbered: take everything again; dedupe keeps each message once.
            Some(_) => 0,
            None => self.starting_uid(session, mailbox.uid_next).await?,
        };
        if stored.as_ref().is_none_or(|st| st.uidvalidity != uidvalidity) {
            self.store.save_mailbox_position(&key, uidvalidity, last_uid).await?;
        }

        let mut report = PollReport::default();
        for (uid, size) in self.new_uids(session, last_uid).await? {
            let source_key = format!("{key};UIDVALIDITY={uidvalidity};UID={uid}");
            let source = Source::new(&key, Some(&source_key));
            let outcome = if size > self.max_bytes {
                report.oversize += 1;
                self.intake.quarantine_unread(&source, size, self.max_bytes).await?
            } else {
                let raw = self.download(session, uid).await?;
                self.intake.accept(&source, &raw).await?
            };
            report.taken += 1;
            match &outcome {
                Outcome::Task { .. } => report.tasks += 1,
                Outcome::Duplicate { .. } => report.duplicates += 1,
                _ => {}
            }
            self.acknowledge(session, uid, matches!(outcome, Outcome::Quarantined { .. })).await?;
            last_uid = i64::from(uid);
            self.store.save_mailbox_position(&key, uidvalidity, last_uid).await?;
        }
        if report.taken == 0 {
            // Nothing new: still a successful look at the mailbox.
            self.store.save_mailbox_position(&key, uidvalidity, last_uid).await?;
        } else {
            info!(
                taken = report.taken,
                tasks = report.tasks,
                duplicates = report.duplicates,
                "took new mail"
            );
        }
        Ok(report)
    }

    /// One IDLE connection, for as long as this instance holds the mailbox: take new mail, IDLE
    /// until the server reports a change (or a cycle ends), repeat. Returns `Ok(true)` when `stop`
    /// fired (after DONE and LOGOUT), `Ok(false)` when the lease went to another instance.
    async fn idle_session(
        &self,
        task_wake: &tokio::sync::Notify,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<bool> {
        let limit = self.settings.command_timeout;
        let cycle = (self.settings.lease / 3).min(MAX_IDLE).max(Duration::from_secs(1));
        let mut session = self.connect().await?;
        loop {
            if !self.claim().await? {
                let _ = timed(limit, "LOGOUT", session.logout()).await;
                return Ok(false);
            }
            if self.take(&mut session).await?.tasks > 0 {
                task_wake.notify_one();
            }
            let mut idle = session.idle();
            timed(limit, "IDLE", idle.init()).await?;
            let (woken, stopped) = {
                let (wait, _interrupt) = idle.wait_with_timeout(cycle);
                tokio::select! {
                    // The crate's own timeout restarts on every keepalive; this one bounds the cycle.
                    r = tokio::time::timeout(cycle, wait) => (r.unwrap_or(Ok(async_imap::extensions::idle::IdleResponse::Timeout)), false),
                    _ = stop.changed() => (Ok(async_imap::extensions::idle::IdleResponse::ManualInterrupt), true),
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

    /// Where a never-polled mailbox starts (`IMAP_START`): the UID after which mail is taken.
    async fn starting_uid(&self, session: &mut ImapSession, uid_next: Option<u32>) -> Result<i64> {
        let limit = self.settings.command_timeout;
        match self.settings.start {
            Start::All => Ok(0),
            Start::New => match uid_next {
                Some(next) => Ok(i64::from(next) - 1),
                None => {
                    let all = timed(limit, "UID SEARCH", session.uid_search("ALL")).await?;
                    Ok(all.into_iter().max().map_or(0, i64::from))
                }
            },
            Start::Since(day) => {
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
    let s = &imap.settings;
    let key = s.key();
    let mut failures: u32 = 0;
    loop {
        if *stop.borrow() {
            break;
        }
        let outcome: Result<Duration> = match s.mode {
            Mode::Poll => imap.poll_once().await.map(|report| {
                if report.tasks > 0 {
                    task_wake.notify_one();
                }
                if report.not_ours { s.lease / 3 } else { s.poll_interval }
            }),
            Mode::Idle => match imap.claim().await {
                Ok(false) => Ok(s.lease / 3),
                Err(e) => Err(e),
                Ok(true) => match imap.idle_session(&task_wake, &mut stop).await {
                    Ok(true) => break,
                    Ok(false) => Ok(s.lease / 3),
                    Err(e) => {
                        let _ = imap.store.record_mailbox_error(&key, &format!("{e:#}")).await;
                        Err(e)
                    }
                },
            },
        };
        let pause = match outcome {
            Ok(pause) => {
                failures = 0;
                pause
            }
            Err(e) => {
                failures += 1;
                let backoff = Duration::from_secs(1) * 2u32.saturating_pow(failures.min(9));
                let backoff = backoff.min(Duration::from_secs(300)).mul_f64(rand::random_range(0.8..1.2));
                warn!(mailbox = %key, error = %format!("{e:#}"), failures, retry_in_s = backoff.as_secs(), "IMAP intake failed");
                backoff
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
