//! Transports that carry a finished reply: `.eml` files in an outbox folder (the embedded
//! default) or an SMTP relay through lettre. A transport only moves bytes; the outbox decides
//! about retries from the [`SendError`] it returns.

use std::path::PathBuf;

use anyhow::{Context, Result};
use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::Settings;

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
    pub fn from_settings(settings: &Settings) -> Result<Self> {
        match &settings.smtp_url {
            Some(url) => Ok(Self::Smtp(plain_smtp(url.expose_secret())?)),
            None => Ok(Self::Files(settings.outbox_dir.clone())),
        }
    }

    /// Sends one message; returns where it went (a file path, or the relay's reply).
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
                    Err(e) => Err(SendError { permanent: e.is_permanent(), message: e.to_string() }),
                }
            }
        }
    }
}

/// Plain SMTP from `smtp://[user:password@]host[:port]` (port 25 by default). TLS (smtps://,
/// STARTTLS) is not supported yet and is refused rather than silently downgraded.
fn plain_smtp(url: &str) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
    let rest =
        url.strip_prefix("smtp://").context("SMTP_URL must start with smtp:// (TLS is not supported yet)")?;
    let rest = rest.trim_end_matches('/');
    let (credentials, host_port) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, rest),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().context("SMTP_URL port is not a number")?),
        None => (host_port, 25),
    };
    anyhow::ensure!(!host.is_empty(), "SMTP_URL has no host");
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port);
    if let Some(c) = credentials {
        let (user, password) = c.split_once(':').context("SMTP_URL credentials must be user:password")?;
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            user.into(),
            password.into(),
        ));
    }
    Ok(builder.build())
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
