//! The operator's settings: the metrics listener, scheduled jobs (schedules, retention, digest
//! and alert mail) and the proxies whose forwarded client address is believed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::domain::{EmailAddress, IpNet};
use crate::scheduler::{self, JobSettings};

/// See the fields; `.env.example` lists each variable with its default.
#[derive(Debug, Clone)]
pub struct OpsSettings {
    /// `SWARM_METRICS_ADDR`: a second listener serving only `/metrics`, without the admin
    /// token (bind it where only the scraper reaches). Unset: `/metrics` is on the main port,
    /// behind the admin token.
    pub metrics_addr: Option<SocketAddr>,
    /// What the scheduled jobs need (retention, digest, alerts, schedules).
    pub jobs: JobSettings,
    /// `SWARM_TRUSTED_PROXIES`: comma-separated IP addresses or CIDR ranges; a request from one
    /// of them is taken to come from the last address of its `X-Forwarded-For` that is not a
    /// trusted proxy (rate limits and logs). Empty: the peer address, always.
    pub trusted_proxies: Vec<IpNet>,
}

/// Reads the operator's settings. `public_url` defaults to `http://<SWARM_HTTP_ADDR>`.
pub fn ops_settings(
    get: &dyn Fn(&str) -> Option<String>,
    number: &dyn Fn(&str, u64) -> Result<u64>,
    from: &EmailAddress,
    http_addr: SocketAddr,
    imap_max_age: Option<Duration>,
) -> Result<OpsSettings> {
    let metrics_addr = get("SWARM_METRICS_ADDR")
        .map(|a| a.parse().with_context(|| format!("SWARM_METRICS_ADDR={a:?} is not host:port")))
        .transpose()?;
    let address = |key: &str| -> Result<Option<EmailAddress>> {
        get(key).map(|a| EmailAddress::parse(&a).with_context(|| key.to_owned())).transpose()
    };
    let mut schedules = BTreeMap::new();
    for job in scheduler::JOBS {
        let key = format!("SWARM_SCHEDULE_{}", job.name.to_ascii_uppercase().replace('-', "_"));
        if let Some(cron) = get(&key) {
            scheduler::parse_schedule(&cron).with_context(|| format!("{key}={cron:?}"))?;
            schedules.insert(job.name.to_owned(), cron);
        }
    }
    let public_url = get("SWARM_PUBLIC_URL").unwrap_or_else(|| format!("http://{http_addr}"));
    url::Url::parse(&public_url).with_context(|| format!("SWARM_PUBLIC_URL={public_url:?} is not a URL"))?;
    let mut trusted_proxies = Vec::new();
    for item in get("SWARM_TRUSTED_PROXIES").unwrap_or_default().split(',').filter(|s| !s.trim().is_empty()) {
        trusted_proxies.push(item.trim().parse::<IpNet>().context("SWARM_TRUSTED_PROXIES")?);
    }
    let retention_days = number("SWARM_RETENTION_DAYS", 90)?;
    if retention_days > 36_500 {
        bail!("SWARM_RETENTION_DAYS={retention_days} is over 100 years; 0 keeps everything");
    }
    Ok(OpsSettings {
        metrics_addr,
        jobs: JobSettings {
            schedules,
            retention_days: u32::try_from(retention_days).unwrap_or(0),
            digest_to: address("SWARM_DIGEST_TO")?,
            alert_to: address("SWARM_ALERT_TO")?,
            alert_repeat: Duration::from_secs(number("SWARM_ALERT_REPEAT_SECS", 24 * 3600)?.max(60)),
            mailbox_silence: imap_max_age.unwrap_or(Duration::from_secs(600)),
            from: from.clone(),
            public_url: public_url.trim_end_matches('/').to_owned(),
        },
        trusted_proxies,
    })
}
