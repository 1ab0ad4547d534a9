//! The IMAP connection: TCP, TLS from the start (`imaps://`) or STARTTLS (RFC 3501 §6.2.1,
//! required unless plaintext is allowed), LOGIN or SASL XOAUTH2, every step under the command
//! timeout; and the [`MailboxSession`] commands the mailbox protocol needs, on a real session.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use async_imap::{Client, Session};
use futures_util::TryStreamExt;
use secrecy::ExposeSecret;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::mailbox::MailboxSession;
use super::{Auth, Settings, Tls};

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

/// A logged-in session over either kind of stream.
pub type ImapSession = Session<Box<dyn ImapStream>>;

/// TLS client settings: the system's trusted roots, or only the CAs in `ca_file`.
pub fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<TlsConnector> {
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

/// Runs `f` under `limit`; the error names the command.
pub async fn timed<T, E>(limit: Duration, what: &str, f: impl Future<Output = Result<T, E>>) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| anyhow!("IMAP {what} timed out after {} s", limit.as_secs()))?
        .with_context(|| format!("IMAP {what}"))
}

async fn wrap_tls(
    s: &Settings,
    connector: &TlsConnector,
    stream: Box<dyn ImapStream>,
) -> Result<Box<dyn ImapStream>> {
    let name = ServerName::try_from(s.host.clone())
        .with_context(|| format!("{:?} is not a TLS server name", s.host))?;
    let tls = tokio::time::timeout(s.command_timeout, connector.connect(name, stream))
        .await
        .map_err(|_| anyhow!("TLS handshake with {} timed out", s.host))?
        .with_context(|| format!("TLS handshake with {}", s.host))?;
    Ok(Box::new(tls))
}

/// Connects, protects the connection as `s.tls` asks and logs in.
pub async fn connect(s: &Settings, connector: &TlsConnector) -> Result<ImapSession> {
    let limit = s.command_timeout;
    let tcp = tokio::time::timeout(limit, TcpStream::connect((s.host.as_str(), s.port)))
        .await
        .map_err(|_| anyhow!("connecting to {}:{} timed out", s.host, s.port))?
        .with_context(|| format!("connecting to {}:{}", s.host, s.port))?;
    let mut stream: Box<dyn ImapStream> = Box::new(tcp);
    if s.tls == Tls::Implicit {
        stream = wrap_tls(s, connector, stream).await?;
    }
    let mut client = Client::new(stream);
    timed(limit, "greeting", client.read_response())
        .await?
        .context("the server closed the connection before its greeting")?;
    if s.tls == Tls::StartTls {
        match timed(limit, "STARTTLS", client.run_command_and_check_ok("STARTTLS", None)).await {
            Ok(()) => client = Client::new(wrap_tls(s, connector, client.into_inner()).await?),
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
    login(s, client).await
}

async fn login(s: &Settings, client: Client<Box<dyn ImapStream>>) -> Result<ImapSession> {
    let limit = s.command_timeout;
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

/// The mailbox commands on a real session, each under `limit`.
pub struct Live<'a> {
    pub session: &'a mut ImapSession,
    pub limit: Duration,
}

impl MailboxSession for Live<'_> {
    async fn select(&mut self, mailbox: &str) -> Result<(u32, Option<u32>)> {
        let selected = timed(self.limit, "SELECT", self.session.select(mailbox)).await?;
        Ok((selected.uid_validity.context("the server sent no UIDVALIDITY")?, selected.uid_next))
    }

    async fn uid_search(&mut self, query: &str) -> Result<Vec<u32>> {
        Ok(timed(self.limit, "UID SEARCH", self.session.uid_search(query)).await?.into_iter().collect())
    }

    async fn sizes(&mut self, first: i64) -> Result<Vec<(u32, usize)>> {
        let range = format!("{first}:*");
        let session = &mut *self.session;
        let fetches: Vec<async_imap::types::Fetch> = tokio::time::timeout(self.limit, async {
            session.uid_fetch(&range, "(UID RFC822.SIZE)").await?.try_collect().await
        })
        .await
        .map_err(|_| anyhow!("IMAP UID FETCH timed out"))?
        .context("IMAP UID FETCH (RFC822.SIZE)")?;
        Ok(fetches.iter().filter_map(|f| Some((f.uid?, f.size.unwrap_or(0) as usize))).collect())
    }

    async fn body(&mut self, uid: u32) -> Result<Vec<u8>> {
        let session = &mut *self.session;
        let fetches: Vec<async_imap::types::Fetch> = tokio::time::timeout(self.limit, async {
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

    async fn uid_move(&mut self, uid: u32, mailbox: &str) -> Result<()> {
        timed(self.limit, "UID MOVE", self.session.uid_mv(uid.to_string(), mailbox)).await
    }

    async fn uid_add_flag(&mut self, uid: u32, flag: &str) -> Result<()> {
        let session = &mut *self.session;
        let query = format!("+FLAGS ({flag})");
        tokio::time::timeout(self.limit, async {
            session.uid_store(uid.to_string(), &query).await?.try_collect::<Vec<_>>().await
        })
        .await
        .map_err(|_| anyhow!("IMAP UID STORE timed out"))?
        .context("IMAP UID STORE")?;
        Ok(())
    }
}
