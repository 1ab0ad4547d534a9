//! Test harness: the whole app on port 0 over a real database (a SQLite file in a temp dir, or a
//! fresh database on a throwaway PostgreSQL cluster), a signing helper, a scripted SMTP server
//! on 127.0.0.1, and waits with deadlines. [`matrix!`] runs a test against both backends.

#![allow(dead_code)]

pub mod dns;
pub mod fleet;
pub mod imap;
pub mod llm;
pub mod pg;
pub mod tls;

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    /// `DATABASE_URL` of a fresh, empty database of this backend (SQLite files under `dir`).
    pub async fn fresh_url(self, dir: &Path) -> String {
        match self {
            Db::Sqlite => format!("sqlite://{}/swarm.db", dir.display()),
            Db::Postgres => pg::fresh_database().await,
        }
    }
}

/// Defines each test once and runs it against both backends: `name::sqlite` and
/// `name::postgres` (skipped with a notice where PostgreSQL cannot run, failing in CI).
///
/// ```ignore
/// matrix! {
///     async fn same_message_twice_makes_one_task(db: Db) { let app = TestApp::spawn(db, &[]).await; ... }
/// }
/// ```
#[allow(unused_macros)]
macro_rules! matrix {
    ($( $(#[$attr:meta])* async fn $name:ident($db:ident: Db) $body:block )*) => {$(
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::support::Db::Sqlite;
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if !$crate::support::pg::available() {
                    return;
                }
                let $db = $crate::support::Db::Postgres;
                $body
            }
        }
    )*};
}

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use swarm_director::app::Application;
use swarm_director::config::Settings;
use swarm_director::domain::{Clock, SystemClock, TaskStatus};
use swarm_director::intake::webhook::{decode_secret, sign};
use swarm_director::store::Store;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const ROTATED: &str = "whsec_c2Vjb25kLXNlY3JldC1rZXktZm9yLXRlc3Rz";

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)).expect("fixture")
}

/// Settings for a test instance on `database_url` with its files in `dir`, plus `extra`
/// overrides (an empty value unsets one).
pub fn settings(dir: &Path, database_url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut map: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), database_url.to_owned()),
        ("SWARM_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("SWARM_OUTBOX_DIR".into(), dir.join("outbox").display().to_string()),
        ("SWARM_TEMPLATES_DIR".into(), dir.join("templates").display().to_string()),
        ("SWARM_WEBHOOK_SECRETS".into(), SECRET.into()),
        ("SWARM_POLL_INTERVAL_MS".into(), "50".into()),
    ]);
    for (k, v) in extra {
        if v.is_empty() {
            map.remove(*k);
        } else {
            map.insert(k.to_string(), v.to_string());
        }
    }
    Settings::from_lookup(|k| map.get(k).cloned()).expect("test settings")
}

pub struct TestApp {
    pub base: String,
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    /// Starts the app on port 0 over a fresh database. `extra` overrides settings; an empty
    /// value unsets one.
    pub async fn spawn(db: Db, extra: &[(&str, &str)]) -> Self {
        Self::spawn_with_clock(db, extra, Arc::new(SystemClock)).await
    }

    /// [`Self::spawn`] with the app reading time from `clock` (tests advance a `ManualClock`
    /// instead of sleeping).
    pub async fn spawn_with_clock(db: Db, extra: &[(&str, &str)], clock: Arc<dyn Clock>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = db.fresh_url(dir.path()).await;
        let settings = settings(dir.path(), &url, extra);
        let app = Application::build_with_clock(settings, clock).await.expect("app builds");
        let base = format!("http://{}", app.local_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            app.run_until(async move {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        let store = Store::connect(&url, &Default::default()).await.expect("test store");
        Self { base, dir, store, http: reqwest::Client::new(), stop: Some(tx), server: Some(server) }
    }

    /// Graceful shutdown; waits for the workers to stop.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts `body` to /inbound/raw signed with `secret` at `timestamp`.
    pub async fn post_signed_with(
        &self,
        body: &[u8],
        id: &str,
        secret: &str,
        timestamp: i64,
    ) -> reqwest::Response {
        let sig = sign(&decode_secret(secret).expect("secret"), id, timestamp, body);
        self.http
            .post(self.url("/inbound/raw"))
            .header("content-type", "message/rfc822")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sig)
            .body(body.to_vec())
            .send()
            .await
            .expect("request")
    }

    pub async fn post_signed(&self, body: &[u8], id: &str) -> reqwest::Response {
        self.post_signed_with(body, id, SECRET, chrono::Utc::now().timestamp()).await
    }

    /// Waits (5 s at most) until the task is done or failed and its reply is no longer pending.
    pub async fn wait_finished(&self, task: i64) -> TaskStatus {
        self.wait_finished_within(task, Duration::from_secs(5)).await
    }

    /// [`Self::wait_finished`] with another deadline.
    pub async fn wait_finished_within(&self, task: i64, deadline: Duration) -> TaskStatus {
        wait_until(deadline, || async {
            let status = self.store.task_status(swarm_director::domain::TaskId(task)).await.ok().flatten()?;
            let deliveries = self.store.task_deliveries(task).await.ok()?;
            let settled = deliveries
                .iter()
                .all(|d| ["delivered", "failed", "bounced", "held"].contains(&d.status.as_str()));
            match status {
                TaskStatus::Done if !deliveries.is_empty() && settled => Some(status),
                TaskStatus::Failed => Some(status),
                _ => None,
            }
        })
        .await
        .unwrap_or_else(|| panic!("task {task} did not finish in time"))
    }

    pub async fn message_count(&self) -> i64 {
        let o = self.store.overview(1).await.expect("overview");
        o.messages_by_status.iter().map(|(_, n)| n).sum()
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, or `deadline` passes.
pub async fn wait_until<T, F, Fut>(deadline: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the scripted SMTP server answers to the end of DATA.
#[derive(Clone, Copy, Debug)]
pub enum DataReply {
    Accept,
    /// 451: try again later.
    Transient,
    /// 550: rejected for good.
    Reject,
    /// Takes the data, then closes the connection without a reply: the sender cannot know
    /// whether the message was accepted (it is counted as received here).
    Drop,
    /// Takes the data and never replies (the sender times out or is killed meanwhile).
    Hang,
}

/// One message received by [`SmtpServer`].
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: Vec<u8>,
    /// Whether the message came over TLS (STARTTLS or implicit).
    pub tls: bool,
}

/// How the scripted SMTP server uses TLS (certificates from [`tls::test_ca`]).
#[derive(Clone)]
pub enum SmtpTls {
    None,
    /// Offers STARTTLS (RFC 3207).
    StartTls(tokio_rustls::TlsAcceptor),
    /// TLS from the first byte (smtps, RFC 8314).
    Implicit(tokio_rustls::TlsAcceptor),
}

impl SmtpTls {
    /// An acceptor for `cert.pem`/`key.pem` in `dir`.
    pub fn acceptor(dir: &Path) -> tokio_rustls::TlsAcceptor {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
            .expect("cert.pem")
            .collect::<Result<_, _>>()
            .expect("certs");
        let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("key.pem");
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// A real (if small) SMTP server on 127.0.0.1 speaking RFC 5321 to lettre, scripted per test.
pub struct SmtpServer {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// `user:password` of every AUTH PLAIN the server saw.
    pub logins: Arc<Mutex<Vec<String>>>,
}

impl SmtpServer {
    pub async fn start(reply: DataReply) -> Self {
        Self::script(vec![reply]).await
    }

    /// Answers the n-th DATA (over all connections) with `replies[n]`, the last one thereafter.
    pub async fn script(replies: Vec<DataReply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
        Self::serve(listener, replies, SmtpTls::None)
    }

    /// Like [`Self::script`] on a given port (a server that comes up late).
    pub async fn script_on(port: u16, replies: Vec<DataReply>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind smtp");
        Self::serve(listener, replies, SmtpTls::None)
    }

    /// A server that accepts every message, with TLS as `tls` says.
    pub async fn with_tls(tls: SmtpTls) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind smtp");
        Self::serve(listener, vec![DataReply::Accept], tls)
    }

    fn serve(listener: TcpListener, replies: Vec<DataReply>, tls: SmtpTls) -> Self {
        let port = listener.local_addr().expect("addr").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let script = Arc::new((replies, std::sync::atomic::AtomicUsize::new(0)));
        let logins = Arc::new(Mutex::new(Vec::new()));
        let seen = logins.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (store, script, seen, tls) = (store.clone(), script.clone(), seen.clone(), tls.clone());
                tokio::spawn(async move {
                    let peers = Peers { script, store, logins: seen };
                    let _ = match tls {
                        SmtpTls::None => session(socket, &peers, true, false, false).await.map(drop),
                        SmtpTls::Implicit(acceptor) => {
                            let stream = acceptor.accept(socket).await?;
                            session(stream, &peers, true, true, false).await.map(drop)
                        }
                        SmtpTls::StartTls(acceptor) => {
                            match session(socket, &peers, true, false, true).await? {
                                Some(plain) => {
                                    let stream = acceptor.accept(plain).await?;
                                    session(stream, &peers, false, true, false).await.map(drop)
                                }
                                None => Ok(()),
                            }
                        }
                    };
                    Ok::<(), std::io::Error>(())
                });
            }
        });
        Self { port, received, logins }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn messages(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

/// What every session of one server shares.
struct Peers {
    script: Arc<(Vec<DataReply>, std::sync::atomic::AtomicUsize)>,
    store: Arc<Mutex<Vec<Received>>>,
    logins: Arc<Mutex<Vec<String>>>,
}

/// One SMTP session over `stream`. Greets unless it continues after STARTTLS (`secure`). With
/// `offer_starttls`, a STARTTLS command ends it and hands the stream back for the handshake.
async fn session<S>(
    stream: S,
    peers: &Peers,
    greet: bool,
    secure: bool,
    offer_starttls: bool,
) -> std::io::Result<Option<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (script, store, logins) = (&peers.script, &peers.store, &peers.logins);
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = BufReader::new(read);
    // After STARTTLS the client sends EHLO again without a new greeting (RFC 3207 §4.2).
    if greet {
        write.write_all(b"220 test.local ESMTP scripted\r\n").await?;
    }
    let fresh = Received { mail_from: String::new(), rcpt_to: vec![], data: vec![], tls: secure };
    let mut current = fresh.clone();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            if offer_starttls {
                write.write_all(b"250-test.local\r\n250-STARTTLS\r\n").await?;
            } else {
                write.write_all(b"250-test.local\r\n").await?;
            }
            write.write_all(b"250-8BITMIME\r\n250-AUTH PLAIN\r\n250 SIZE 30000000\r\n").await?;
        } else if offer_starttls && upper.starts_with("STARTTLS") {
            write.write_all(b"220 2.0.0 ready to start TLS\r\n").await?;
            write.flush().await?;
            return Ok(Some(lines.into_inner().unsplit(write)));
        } else if upper.starts_with("AUTH PLAIN") {
            let mut token = line[10..].trim().to_owned();
            if token.is_empty() {
                write.write_all(b"334 \r\n").await?;
                token.clear();
                lines.read_line(&mut token).await?;
            }
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).unwrap_or_default();
            let parts: Vec<String> =
                decoded.split(|b| *b == 0).map(|p| String::from_utf8_lossy(p).into_owned()).collect();
            logins.lock().expect("lock").push(parts[1..].join(":"));
            write.write_all(b"235 2.7.0 Authentication successful\r\n").await?;
        } else if upper.starts_with("HELO") {
            write.write_all(b"250 test.local\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            current.mail_from = line[10..].trim().trim_matches(['<', '>']).to_owned();
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            current.rcpt_to.push(line[8..].trim().trim_matches(['<', '>']).to_owned());
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("DATA") {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if lines.read_until(b'\n', &mut l).await? == 0 {
                    return Ok(None);
                }
                if l == b".\r\n" {
                    break;
                }
                // Undo dot-stuffing (RFC 5321 §4.5.2).
                let l = if l.starts_with(b"..") { l[1..].to_vec() } else { l };
                data.extend_from_slice(&l);
            }
            let n = script.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let reply = script.0.get(n).or(script.0.last()).copied().unwrap_or(DataReply::Accept);
            let keep = |data: Vec<u8>| {
                let mut kept = current.clone();
                kept.data = data;
                store.lock().expect("lock").push(kept);
            };
            match reply {
                DataReply::Drop => {
                    keep(data);
                    return Ok(None);
                }
                DataReply::Hang => {
                    keep(data);
                    std::future::pending::<()>().await;
                }
                DataReply::Accept => {
                    keep(data);
                    current = fresh.clone();
                    write.write_all(b"250 2.0.0 queued as 42\r\n").await?;
                }
                DataReply::Transient => write.write_all(b"451 4.3.0 try again later\r\n").await?,
                DataReply::Reject => write.write_all(b"550 5.7.1 rejected by policy\r\n").await?,
            }
        } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
            write.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(None);
        } else {
            write.write_all(b"502 command not implemented\r\n").await?;
        }
    }
}

/// Reads a delivered reply file.
pub fn read_reply(location: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(location)).expect("reply file")
}
