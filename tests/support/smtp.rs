//! A real (if small) SMTP server on 127.0.0.1 speaking RFC 5321 to lettre, scripted per test:
//! what it answers to DATA, TLS (STARTTLS or implicit), AUTH PLAIN.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

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

/// How the scripted SMTP server uses TLS (certificates from [`super::tls::test_ca`]).
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
