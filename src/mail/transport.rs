//! Transports that carry a finished reply: `.eml` files in an outbox folder (the embedded
//! default) or an SMTP relay through lettre (STARTTLS or implicit TLS, AUTH, pooled connections). A transport only moves bytes; the outbox decides
//! about retries from the [`SendError`] it returns.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use crate::domain::{is_loopback, url_host};

/// Where replies go: an SMTP relay (`SMTP_URL`, `SMTP_ALLOW_PLAINTEXT`, `SMTP_CA_FILE`,
/// `SMTP_TIMEOUT_SECS`) or, without one, `.eml` files in `SWARM_OUTBOX_DIR`.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// `smtp://[user:password@]host[:port]` (STARTTLS) or `smtps://...` (TLS from the start);
    /// unset means `.eml` files.
    pub url: Option<SecretString>,
    /// May SMTP run without TLS to a non-loopback relay that offers no STARTTLS?
    pub allow_plaintext: bool,
    /// PEM file of the CA certificates to trust for SMTP instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Longest wait for any one SMTP command.
    pub timeout: Duration,
    /// Folder that receives replies as `.eml` files when no SMTP relay is set.
    pub outbox_dir: PathBuf,
}

/// A failed send: transient ones are retried, permanent ones are not.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    pub permanent: bool,
    pub message: String,
}

impl SendError {
    fn transient(message: impl Into<String>) -> Self {
        Self { permanent: false, message: message.into() }
    }
}

pub enum Transport {
    /// Writes `<dir>/task-<id>-<hash>.eml`, atomically (temp file + rename).
    Files(PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

impl Transport {
    pub fn from_settings(settings: &SmtpSettings) -> Result<Self> {
        match &settings.url {
            Some(url) => Ok(Self::Smtp(smtp_transport(url.expose_secret(), settings)?)),
            None => Ok(Self::Files(settings.outbox_dir.clone())),
        }
    }

    /// Sends one message; returns where it went (a file path, or the relay's reply).
    ///
    /// SMTP errors: a 5xx reply is permanent; a 4xx reply is transient; a lost connection or a
    /// timeout is transient with an unknown outcome (the relay may have taken the message after
    /// DATA), so the retry goes out under the same Message-ID.
    pub async fn send(
        &self,
        task: Option<i64>,
        message_id: &str,
        from: &str,
        to: &str,
        bytes: &[u8],
    ) -> Result<String, SendError> {
        match self {
            Self::Files(dir) => write_file(dir, task, message_id, bytes).await,
            Self::Smtp(smtp) => {
                let parse = |a: &str| {
                    a.parse().map_err(|e| SendError { permanent: true, message: format!("address {a}: {e}") })
                };
                let envelope = Envelope::new(Some(parse(from)?), vec![parse(to)?])
                    .map_err(|e| SendError { permanent: true, message: e.to_string() })?;
                match smtp.send_raw(&envelope, bytes).await {
                    Ok(response) => Ok(format!(
                        "smtp {} {}",
                        response.code(),
                        response.message().collect::<Vec<_>>().join(" ")
                    )),
                    Err(e) if e.is_permanent() => Err(SendError { permanent: true, message: e.to_string() }),
                    Err(e) if e.is_transient() => Err(SendError::transient(e.to_string())),
                    Err(e) => Err(SendError::transient(format!(
                        "outcome unknown ({e}); retried with the same Message-ID"
                    ))),
                }
            }
        }
    }
}

/// Builds the SMTP transport from `SMTP_URL`:
///
/// - `smtps://[user:password@]host[:465]`: TLS from the first byte (RFC 8314 §3.3);
/// - `smtp://[user:password@]host[:25]`: STARTTLS (RFC 3207), required unless the host is a
///   loopback address or `SMTP_ALLOW_PLAINTEXT=true` (then used when offered).
///
/// Credentials are sent with AUTH PLAIN or LOGIN (RFC 4954), percent-decoded. Certificates are
/// checked against the system's CAs, or only those in `SMTP_CA_FILE`. Connections are pooled.
fn smtp_transport(url: &str, settings: &SmtpSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
    let shape = "SMTP_URL must be smtp://[user:password@]host[:port] or smtps://...";
    let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("{shape} ({e})"))?;
    let implicit_tls = match parsed.scheme() {
        "smtp" => false,
        "smtps" => true,
        _ => anyhow::bail!(shape),
    };
    let (host, _) = url_host(&parsed).context("SMTP_URL has no host")?;
    let host = host.as_str();
    let port = parsed.port().unwrap_or(if implicit_tls { 465 } else { 25 });
    let credentials = match (parsed.username(), parsed.password()) {
        ("", None) => None,
        (user, Some(password)) => Some((user, password)),
        (_, None) => anyhow::bail!("SMTP_URL credentials must be user:password"),
    };
    let mut tls = TlsParameters::builder(host.to_owned());
    if let Some(file) = &settings.ca_file {
        let pem = std::fs::read(file).with_context(|| format!("SMTP_CA_FILE {}", file.display()))?;
        tls = tls.certificate_store(CertificateStore::None).add_root_certificate(
            Certificate::from_pem(&pem).context("SMTP_CA_FILE is not a PEM certificate")?,
        );
    }
    let tls = tls.build().context("SMTP TLS settings")?;
    let mode = if implicit_tls {
        Tls::Wrapper(tls)
    } else if !starttls_required(host, settings.allow_plaintext) {
        Tls::Opportunistic(tls)
    } else {
        Tls::Required(tls)
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(mode)
        .timeout(Some(settings.timeout));
    if let Some((user, password)) = credentials {
        let decode = |s: &str| -> Result<String> {
            Ok(percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .context("SMTP_URL credentials are not UTF-8 once percent-decoded")?
                .into_owned())
        };
        builder = builder.credentials(Credentials::new(decode(user)?, decode(password)?));
    }
    Ok(builder.build())
}

/// Whether an `smtp://` relay must offer STARTTLS: always, unless it is on this machine
/// (`localhost`, 127.0.0.0/8, ::1, also written as ::ffff:127.x.y.z) or plaintext is allowed.
fn starttls_required(host: &str, allow_plaintext: bool) -> bool {
    !(is_loopback(host) || allow_plaintext)
}

async fn write_file(
    dir: &std::path::Path,
    task: Option<i64>,
    message_id: &str,
    bytes: &[u8],
) -> Result<String, SendError> {
    use sha2::Digest;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| SendError::transient(format!("creating {}: {e}", dir.display())))?;
    // Named after the Message-ID, so a retry of the same delivery overwrites rather than duplicates.
    let tag = hex::encode(&sha2::Sha256::digest(message_id.as_bytes())[..6]);
    let name = match task {
        Some(t) => format!("task-{t:06}-{tag}.eml"),
        None => format!("mail-{tag}.eml"),
    };
    let path = dir.join(&name);
    // A temp name of our own: after a crash another instance may redeliver the same reply into a
    // shared folder at the same time; each writes its own file and the renames are atomic.
    let tmp = dir.join(format!(".{name}.{}.{:08x}.tmp", std::process::id(), rand::random::<u32>()));
    tokio::fs::write(&tmp, bytes)
        .await
        .map_err(|e| SendError::transient(format!("writing {}: {e}", tmp.display())))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| SendError::transient(format!("renaming to {}: {e}", path.display())))?;
    Ok(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::starttls_required;

    #[test]
    fn starttls_is_required_except_on_this_machine_or_when_allowed() {
        for remote in ["smtp.example.org", "192.0.2.25", "2001:db8::25", "localhost.example.org"] {
            assert!(starttls_required(remote, false), "{remote}");
            assert!(!starttls_required(remote, true), "{remote} with SMTP_ALLOW_PLAINTEXT");
        }
        for local in ["localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(!starttls_required(local, false), "{local}");
        }
    }
}
