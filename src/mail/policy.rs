//! Sender policy (invariant 7): which senders the bot obeys.
//!
//! - `SWARM_ALLOWED_SENDERS`: addresses (`ann@example.org`) and domains (`@example.org`); empty
//!   means anyone.
//! - `SWARM_REQUIRE_DMARC` (default on when an allowlist is set): the From domain must have passed
//!   DMARC (RFC 7489). Proven one of two ways:
//!   - in process ([`DmarcProof::Dns`]): DKIM, SPF when the SMTP peer is known, and DMARC
//!     alignment verified against DNS by [`crate::mail::auth::Authenticator`];
//!   - by our own receiving server ([`DmarcProof::Header`], `SWARM_TRUSTED_AUTHSERV_ID`): only the
//!     topmost `Authentication-Results` header (RFC 8601) counts, only when its authserv-id is the
//!     trusted one, and only a `dmarc=pass` whose `header.from` is the From domain. Anyone can
//!     write an Authentication-Results header lower down; the topmost one is the last hop's, ours.
//!
//! A refused sender's message makes no task; it is stored as ignored with the reason.

use std::time::Duration;

use anyhow::Context;

use crate::mail::ParsedMail;
use crate::mail::auth::{Authenticator, DmarcVerdict, DnsResolver, SmtpPeer};

/// The policy as configured (`SWARM_ALLOWED_SENDERS`, `SWARM_REQUIRE_DMARC`,
/// `SWARM_TRUSTED_AUTHSERV_ID`, `SWARM_DNS_RESOLVER`, `SWARM_DNS_TIMEOUT_SECS`,
/// `SWARM_POLITE_REFUSAL`); [`SenderPolicy::build`] makes the working policy from it.
#[derive(Debug, Clone, Default)]
pub struct PolicySettings {
    /// Lower-case addresses and `@domain` entries; empty allows anyone.
    pub allowed: Vec<String>,
    /// How DMARC is proven; `None` when it is not required.
    pub dmarc: Option<DmarcSource>,
    pub polite_refusal: bool,
}

/// Where the proof of DMARC is to come from, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmarcSource {
    /// The topmost Authentication-Results header, when written by this authserv-id.
    Header { authserv_id: String },
    /// Verified in process against these name servers, each query within `timeout`.
    Dns { resolver: DnsResolver, timeout: Duration },
}

/// The configured policy.
#[derive(Debug, Clone, Default)]
pub struct SenderPolicy {
    /// Lower-case addresses and `@domain` entries; empty allows anyone.
    pub allowed: Vec<String>,
    /// How DMARC is proven; `None` when it is not required.
    pub dmarc: Option<DmarcProof>,
    /// `SWARM_POLITE_REFUSAL`: answer a refused sender once per message, but only one whose
    /// DMARC passed (never a forged or unverifiable sender: that would be backscatter).
    pub polite_refusal: bool,
}

/// Where the proof that the From domain passed DMARC comes from.
#[derive(Debug, Clone)]
pub enum DmarcProof {
    /// The topmost Authentication-Results header, when written by this authserv-id.
    Header { authserv_id: String },
    /// Verified here against DNS.
    Dns(Box<Authenticator>),
}

impl SenderPolicy {
    /// The working policy; builds the DNS authenticator when DMARC is verified in process.
    ///
    /// Errors when the resolver cannot be set up.
    pub fn build(settings: &PolicySettings) -> anyhow::Result<Self> {
        let dmarc = match &settings.dmarc {
            None => None,
            Some(DmarcSource::Header { authserv_id }) => {
                Some(DmarcProof::Header { authserv_id: authserv_id.clone() })
            }
            Some(DmarcSource::Dns { resolver, timeout }) => Some(DmarcProof::Dns(Box::new(
                Authenticator::new(resolver, *timeout).context("SWARM_REQUIRE_DMARC needs a DNS resolver")?,
            ))),
        };
        Ok(Self { allowed: settings.allowed.clone(), dmarc, polite_refusal: settings.polite_refusal })
    }

    /// The lower-case From address and domain, when the From header holds a valid address.
    fn sender(mail: &ParsedMail) -> Option<(String, String)> {
        let from = &mail.email.from.as_ref()?.address;
        Some((from.as_str().to_ascii_lowercase(), from.domain().to_ascii_lowercase()))
    }

    fn listed(&self, address: &str, domain: &str) -> bool {
        self.allowed.is_empty()
            || self.allowed.iter().any(|a| {
                a.eq_ignore_ascii_case(address)
                    || a.strip_prefix('@').is_some_and(|d| d.eq_ignore_ascii_case(domain))
            })
    }

    /// Runs the in-process DMARC verification (DNS queries) when the policy asks for it and the
    /// sender is on the allowlist; `None` otherwise. Its result goes to [`Self::check`].
    pub async fn verify(
        &self,
        raw: &[u8],
        mail: &ParsedMail,
        peer: Option<&SmtpPeer>,
    ) -> Option<DmarcVerdict> {
        let Some(DmarcProof::Dns(authenticator)) = &self.dmarc else { return None };
        let (address, domain) = Self::sender(mail)?;
        if !self.listed(&address, &domain) && !self.polite_refusal {
            return None;
        }
        Some(authenticator.dmarc(raw, peer).await)
    }

    /// Whether a sender this policy refused gets a polite refusal: the option is on, the sender
    /// is outside the allowlist and its From domain passed DMARC.
    pub fn refuses_politely(&self, mail: &ParsedMail, verified: Option<&DmarcVerdict>) -> bool {
        let Some((address, domain)) = Self::sender(mail) else { return false };
        self.polite_refusal
            && !self.listed(&address, &domain)
            && match &self.dmarc {
                None => false,
                Some(DmarcProof::Dns(_)) => matches!(verified, Some(Ok(_))),
                Some(DmarcProof::Header { authserv_id }) => {
                    trusted_header_passes(mail, authserv_id, &domain).is_ok()
                }
            }
    }

    /// `Ok` when the sender may be obeyed; `Err(reason)` otherwise. `verified` is what
    /// [`Self::verify`] returned for this message.
    pub fn check(&self, mail: &ParsedMail, verified: Option<&DmarcVerdict>) -> Result<(), String> {
        if self.allowed.is_empty() && self.dmarc.is_none() {
            return Ok(());
        }
        let (address, domain) =
            Self::sender(mail).ok_or_else(|| "sender policy: no valid From address".to_owned())?;
        if !self.listed(&address, &domain) {
            return Err(format!("sender policy: {address} is not in SWARM_ALLOWED_SENDERS"));
        }
        match &self.dmarc {
            None => Ok(()),
            Some(DmarcProof::Dns(_)) => match verified {
                Some(Ok(_)) => Ok(()),
                Some(Err(results)) => {
                    Err(format!("sender policy: DMARC did not pass for {domain}: {results}"))
                }
                None => Err(format!("sender policy: DMARC was not verified for {domain}")),
            },
            Some(DmarcProof::Header { authserv_id }) => trusted_header_passes(mail, authserv_id, &domain),
        }
    }
}

/// The topmost Authentication-Results must be `trusted`'s and say `dmarc=pass` for `domain`.
fn trusted_header_passes(mail: &ParsedMail, trusted: &str, domain: &str) -> Result<(), String> {
    let top = mail.signals.authentication_results.first();
    let Some(results) = top.and_then(|h| parse_authentication_results(h)) else {
        return Err(format!("sender policy: no Authentication-Results from {trusted} (DMARC is required)"));
    };
    if !results.authserv_id.eq_ignore_ascii_case(trusted) {
        return Err(format!(
            "sender policy: the topmost Authentication-Results is from {:?}, not {trusted}",
            results.authserv_id
        ));
    }
    match results.dmarc {
        Some((ref result, ref header_from)) if result == "pass" => match header_from {
            Some(d) if !d.eq_ignore_ascii_case(domain) => {
                Err(format!("sender policy: DMARC passed for {d}, not for the From domain {domain}"))
            }
            _ => Ok(()),
        },
        Some((result, _)) => Err(format!("sender policy: DMARC {result} for {domain}")),
        None => Err(format!("sender policy: no DMARC result for {domain}")),
    }
}

/// What we read from one Authentication-Results header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthResults {
    pub authserv_id: String,
    /// The `dmarc=` result (lower case) and its `header.from` property.
    pub dmarc: Option<(String, Option<String>)>,
}

/// Parses `authserv-id [version]; method=result [(comment)] ptype.property=value ...; ...`
/// (RFC 8601 §2.2). Comments are dropped. `None` when there is no authserv-id.
pub fn parse_authentication_results(value: &str) -> Option<AuthResults> {
    let mut clean = String::with_capacity(value.len());
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth == 0 => clean.push(if c.is_control() { ' ' } else { c }),
            _ => {}
        }
    }
    let mut parts = clean.split(';');
    let authserv_id = parts.next()?.split_whitespace().next()?.to_owned();
    let mut dmarc = None;
    for resinfo in parts {
        let mut tokens = resinfo.split_whitespace();
        let Some((method, result)) = tokens.next().and_then(|t| t.split_once('=')) else { continue };
        if !method.eq_ignore_ascii_case("dmarc") || dmarc.is_some() {
            continue;
        }
        let header_from = tokens
            .filter_map(|t| t.split_once('='))
            .find(|(k, _)| k.eq_ignore_ascii_case("header.from"))
            .map(|(_, v)| v.trim_matches('"').to_ascii_lowercase());
        dmarc = Some((result.to_ascii_lowercase(), header_from));
    }
    Some(AuthResults { authserv_id, dmarc })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::parse;
    use crate::mail::parse::Limits as MimeLimits;

    fn mail(headers: &str) -> ParsedMail {
        parse(format!("{headers}\r\nSubject: x\r\n\r\nbody").as_bytes(), &MimeLimits::default())
            .expect("parses")
    }

    fn policy(allowed: &[&str], dmarc: bool) -> SenderPolicy {
        SenderPolicy {
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            dmarc: dmarc.then(|| DmarcProof::Header { authserv_id: "mx.ours.example".into() }),
            polite_refusal: false,
        }
    }

    const PASS: &str = "Authentication-Results: mx.ours.example; dkim=pass header.d=example.org; \
                        spf=pass smtp.mailfrom=example.org; dmarc=pass (p=reject) header.from=example.org";

    #[test]
    fn open_policy_allows_anyone() {
        assert!(SenderPolicy::default().check(&mail("From: x@anywhere.example"), None).is_ok());
    }

    #[test]
    fn allowlist_takes_addresses_and_domains() {
        let p = policy(&["boss@corp.example", "@example.org"], false);
        assert!(p.check(&mail("From: Ann <ann@example.org>"), None).is_ok());
        assert!(p.check(&mail("From: boss@corp.example"), None).is_ok());
        let err = p.check(&mail("From: eve@evil.example"), None).expect_err("not allowed");
        assert!(err.contains("SWARM_ALLOWED_SENDERS"), "{err}");
    }

    #[test]
    fn dmarc_must_pass_in_the_topmost_trusted_header_for_the_from_domain() {
        let p = policy(&["@example.org"], true);
        assert!(p.check(&mail(&format!("{PASS}\r\nFrom: ann@example.org")), None).is_ok());
        let none = p.check(&mail("From: ann@example.org"), None).expect_err("no proof");
        assert!(none.contains("no Authentication-Results"), "{none}");
        // A forged header below ours does not count; a forged one on top is not from our server.
        let forged_top = format!(
            "Authentication-Results: mx.evil.example; dmarc=pass header.from=example.org\r\n{PASS}\r\nFrom: ann@example.org"
        );
        assert!(p.check(&mail(&forged_top), None).expect_err("untrusted top").contains("mx.evil.example"));
        let fail = PASS.replace("dmarc=pass", "dmarc=fail");
        assert!(
            p.check(&mail(&format!("{fail}\r\nFrom: ann@example.org")), None)
                .expect_err("fail")
                .contains("DMARC fail")
        );
        let other = PASS.replace("header.from=example.org", "header.from=other.example");
        assert!(p.check(&mail(&format!("{other}\r\nFrom: ann@example.org")), None).is_err(), "not aligned");
    }

    #[test]
    fn authentication_results_are_parsed_without_comments() {
        let r = parse_authentication_results(
            "mx.ours.example 1; dkim=pass (good sig) header.d=x.org; dmarc=PASS (p=none dis=none) header.from=X.org",
        )
        .expect("parses");
        assert_eq!(r.authserv_id, "mx.ours.example");
        assert_eq!(r.dmarc, Some(("pass".into(), Some("x.org".into()))));
        assert_eq!(parse_authentication_results("mx.ours.example; none").expect("parses").dmarc, None);
    }
}
