//! In-process sender authentication with the `mail-auth` crate: DKIM signatures (RFC 6376), SPF
//! (RFC 7208) when the SMTP peer that handed the message over is known, and DMARC alignment of
//! either with the From domain (RFC 7489 §3.1, §6.6).
//!
//! DNS goes through a hickory resolver: the system's (`/etc/resolv.conf`) or the name servers in
//! `SWARM_DNS_RESOLVER`. A DNS failure is a `temperror`, never a pass.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{AuthenticatedMessage, DmarcResult, MessageAuthenticator, SpfOutput, SpfResult};

/// The SMTP session that delivered a message to our provider, when the provider tells us
/// (SendGrid's `sender_ip` and `envelope`). Without it SPF is `none` and DMARC rests on DKIM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpPeer {
    pub ip: IpAddr,
    /// The RFC 5321 MAIL FROM address; empty for the null reverse-path.
    pub mail_from: String,
    /// The EHLO/HELO name, when known.
    pub helo: Option<String>,
}

/// Where DNS questions go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DnsResolver {
    /// The system's configuration (`/etc/resolv.conf`).
    #[default]
    System,
    /// These name servers, over UDP with TCP fallback.
    Servers(Vec<SocketAddr>),
}

/// DKIM + SPF + DMARC verification against DNS. Cheap to clone (the resolver and its cache are
/// shared).
#[derive(Clone)]
pub struct Authenticator {
    inner: MessageAuthenticator,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator")
    }
}

/// The outcome of [`Authenticator::dmarc`]: `Ok` with the results when DMARC passed, `Err` with
/// them when it did not. The text reads like an Authentication-Results resinfo list, e.g.
/// `dkim=pass header.d=example.org; spf=none; dmarc=pass header.from=example.org`.
pub type DmarcVerdict = Result<String, String>;

impl Authenticator {
    /// A verifier whose DNS queries time out after `timeout` (each try; two tries).
    ///
    /// Errors: the system resolver configuration cannot be read.
    pub fn new(resolver: &DnsResolver, timeout: Duration) -> anyhow::Result<Self> {
        let mut options = ResolverOpts::default();
        options.timeout = timeout;
        options.attempts = 2;
        let inner = match resolver {
            DnsResolver::System => {
                let (config, mut system) = mail_auth::hickory_resolver::system_conf::read_system_conf()
                    .map_err(|e| anyhow::anyhow!("reading the system DNS configuration: {e}"))?;
                system.timeout = timeout;
                system.attempts = 2;
                MessageAuthenticator::new(config, system)
            }
            DnsResolver::Servers(servers) => {
                let servers = servers
                    .iter()
                    .map(|addr| {
                        let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                        for connection in &mut server.connections {
                            connection.port = addr.port();
                        }
                        server
                    })
                    .collect();
                MessageAuthenticator::new(ResolverConfig::from_name_servers(servers), options)
            }
        }
        .map_err(|e| anyhow::anyhow!("building the DNS resolver: {e}"))?;
        Ok(Self { inner })
    }

    /// Verifies the DKIM signatures of `raw`, SPF for `peer` when given, and whether either is
    /// aligned with the From domain's DMARC record. A domain without a DMARC record does not
    /// pass: the bot is asked to obey only mail whose sender domain vouches for it.
    pub async fn dmarc(&self, raw: &[u8], peer: Option<&SmtpPeer>) -> DmarcVerdict {
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            return Err("dmarc=none (the message headers could not be read)".into());
        };
        let dkim = self.inner.verify_dkim(&message).await;
        let (spf, mail_from_domain) = match peer {
            Some(peer) => {
                let helo = peer.helo.as_deref().unwrap_or_default();
                let domain = peer.mail_from.rsplit_once('@').map_or(helo, |(_, d)| d).to_owned();
                let output = if peer.mail_from.is_empty() {
                    self.inner.verify_spf(SpfParameters::verify_ehlo(peer.ip, helo, "")).await
                } else {
                    self.inner
                        .verify_spf(SpfParameters::verify_mail_from(peer.ip, helo, "", &peer.mail_from))
                        .await
                };
                (output, domain)
            }
            None => (SpfOutput::new(String::new()), String::new()),
        };
        let dmarc = self
            .inner
            .verify_dmarc(mail_auth::dmarc::verify::DmarcParameters::new(
                &message,
                &dkim,
                &mail_from_domain,
                &spf,
            ))
            .await;

        let mut results: Vec<String> = dkim
            .iter()
            .map(|d| match d.signature() {
                Some(s) => format!("dkim={} header.d={}", resinfo(d.result()), s.d),
                None => format!("dkim={}", resinfo(d.result())),
            })
            .collect();
        if results.is_empty() {
            results.push("dkim=none".into());
        }
        results.push(match spf.result() {
            SpfResult::None if peer.is_none() => "spf=none (SMTP peer unknown)".into(),
            result => {
                format!("spf={} smtp.mailfrom={}", result.to_string().to_ascii_lowercase(), spf.domain())
            }
        });
        let from = dmarc.domain().to_owned();
        let outcome = dmarc.result();
        results.push(match &outcome {
            DmarcResult::None if from.is_empty() => "dmarc=none (no single From domain)".into(),
            DmarcResult::None => {
                format!("dmarc=none header.from={from} (no DMARC record)")
            }
            result => format!("dmarc={} header.from={from}", resinfo(result)),
        });
        let text = results.join("; ");
        if outcome == DmarcResult::Pass { Ok(text) } else { Err(text) }
    }
}

/// mail-auth's `fail; reason` as an Authentication-Results result with a comment:
/// `fail (reason)` (RFC 8601 §2.2).
fn resinfo(result: impl std::fmt::Display) -> String {
    let text = result.to_string();
    match text.split_once("; ") {
        Some((word, reason)) => format!("{word} ({reason})"),
        None => text,
    }
}
