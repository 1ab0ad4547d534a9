//! Standard Webhooks signature verification (https://www.standardwebhooks.com/, "Verifying
//! webhooks"): headers `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`
//! (space-separated `v1,<base64>`), where each signature is HMAC-SHA256 over
//! `"{id}.{timestamp}.{body}"` keyed with the bytes of a `whsec_<base64>` secret.
//!
//! Works on the raw body bytes. Several secrets are accepted (rotation). Comparison is constant
//! time over the whole 32-byte tag (`verify_slice`): a truncated signature never matches.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a request was refused; the message is safe to return to the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("webhook-timestamp is not Unix seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the allowed window of {0} seconds")]
    OutsideWindow(u64),
    #[error("webhook-signature holds no v1 signature of 32 base64-encoded bytes")]
    MalformedSignature,
    #[error("no valid v1 signature in webhook-signature")]
    NoValidSignature,
}

/// Headers that passed [`Verifier::check_head`]: what the body check needs.
#[derive(Debug)]
pub struct CheckedHead<'a> {
    /// The webhook-id.
    pub id: &'a str,
    timestamp: &'a str,
    /// The decoded `v1` signatures, each 32 bytes.
    candidates: Vec<Vec<u8>>,
}

/// The headers of a signed request.
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

pub struct Verifier {
    keys: Vec<Vec<u8>>,
    tolerance: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Verifier {{ keys: {} (redacted), tolerance: {:?} }}", self.keys.len(), self.tolerance)
    }
}

/// Decodes a `whsec_<base64>` secret (the prefix is optional) into key bytes.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>> {
    let b64 = secret.trim().strip_prefix("whsec_").unwrap_or(secret.trim());
    let key = STANDARD.decode(b64).context("secret is not whsec_ followed by base64")?;
    if key.len() < 16 {
        bail!("secret is shorter than 16 bytes");
    }
    Ok(key)
}

/// Signs like a Standard Webhooks sender: `v1,<base64 HMAC-SHA256>`. Used by tests and docs.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

impl Verifier {
    /// Errors name the position (1-based) of a secret that does not decode, never its value.
    pub fn new(secrets: &[SecretString], tolerance: Duration) -> Result<Self> {
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                decode_secret(s.expose_secret())
                    .with_context(|| format!("SWARM_WEBHOOK_SECRETS entry {}", i + 1))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { keys, tolerance })
    }

    /// Checks one request at time `now` (Unix seconds). Returns the webhook-id on success.
    pub fn verify<'a>(&self, h: SignedHeaders<'a>, body: &[u8], now: i64) -> Result<&'a str, VerifyError> {
        let head = self.check_head(h, now)?;
        self.check_body(&head, body)?;
        Ok(head.id)
    }

    /// What can be checked before the body arrives: every header is present, the timestamp is
    /// Unix seconds within the tolerance of `now`, and at least one `v1` signature is 32 bytes of
    /// base64 (an HMAC-SHA256 tag). A request failing here need not be read at all.
    pub fn check_head<'a>(&self, h: SignedHeaders<'a>, now: i64) -> Result<CheckedHead<'a>, VerifyError> {
        let id = h.id.filter(|s| !s.is_empty()).ok_or(VerifyError::Missing("webhook-id"))?;
        let timestamp =
            h.timestamp.filter(|s| !s.is_empty()).ok_or(VerifyError::Missing("webhook-timestamp"))?;
        let signatures =
            h.signature.filter(|s| !s.is_empty()).ok_or(VerifyError::Missing("webhook-signature"))?;
        let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
        if now.abs_diff(ts) > self.tolerance.as_secs() {
            return Err(VerifyError::OutsideWindow(self.tolerance.as_secs()));
        }
        let candidates: Vec<Vec<u8>> = signatures
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .filter(|tag| tag.len() == 32)
            .collect();
        if candidates.is_empty() {
            return Err(VerifyError::MalformedSignature);
        }
        Ok(CheckedHead { id, timestamp, candidates })
    }

    /// Whether one of `head`'s signatures is the HMAC of `body` under one of the secrets.
    pub fn check_body(&self, head: &CheckedHead<'_>, body: &[u8]) -> Result<(), VerifyError> {
        let prefix = format!("{}.{}.", head.id, head.timestamp);
        for key in &self.keys {
            let Ok(mut mac) = HmacSha256::new_from_slice(key) else { continue };
            mac.update(prefix.as_bytes());
            mac.update(body);
            for candidate in &head.candidates {
                if mac.clone().verify_slice(candidate).is_ok() {
                    return Ok(());
                }
            }
        }
        Err(VerifyError::NoValidSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const OTHER: &str = "whsec_c2Vjb25kLXNlY3JldC1rZXktZm9yLXRlc3Rz";
    const NOW: i64 = 1_790_000_000;

    fn verifier(secrets: &[&str]) -> Verifier {
        let s: Vec<SecretString> = secrets.iter().map(|s| SecretString::from(s.to_string())).collect();
        Verifier::new(&s, Duration::from_secs(300)).expect("valid secrets")
    }

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> SignedHeaders<'a> {
        SignedHeaders { id: Some(id), timestamp: Some(ts), signature: Some(sig) }
    }

    fn signed(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
        sign(&decode_secret(secret).expect("secret"), id, ts, body)
    }

    #[test]
    fn valid_signature_is_accepted() {
        let sig = signed(SECRET, "msg_1", NOW, b"body");
        assert_eq!(
            verifier(&[SECRET]).verify(headers("msg_1", &NOW.to_string(), &sig), b"body", NOW),
            Ok("msg_1")
        );
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let sig = signed(OTHER, "msg_1", NOW, b"body");
        assert_eq!(
            verifier(&[SECRET]).verify(headers("msg_1", &NOW.to_string(), &sig), b"body", NOW),
            Err(VerifyError::NoValidSignature)
        );
    }

    #[test]
    fn altered_body_or_id_is_rejected() {
        let sig = signed(SECRET, "msg_1", NOW, b"body");
        let v = verifier(&[SECRET]);
        assert!(v.verify(headers("msg_1", &NOW.to_string(), &sig), b"bodY", NOW).is_err());
        assert!(v.verify(headers("msg_2", &NOW.to_string(), &sig), b"body", NOW).is_err());
    }

    #[test]
    fn truncated_and_empty_signatures_are_rejected() {
        let sig = signed(SECRET, "msg_1", NOW, b"body");
        let v = verifier(&[SECRET]);
        let ts = NOW.to_string();
        let b64 = sig.strip_prefix("v1,").expect("prefix");
        let truncated = format!("v1,{}", STANDARD.encode(&STANDARD.decode(b64).expect("b64")[..16]));
        for bad in [truncated.as_str(), "v1,", "v1", "", "v2,abc", &sig[..sig.len() - 4]] {
            assert!(v.verify(headers("msg_1", &ts, bad), b"body", NOW).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn old_and_future_timestamps_are_rejected() {
        let v = verifier(&[SECRET]);
        for ts in [NOW - 301, NOW + 301] {
            let sig = signed(SECRET, "msg_1", ts, b"body");
            assert_eq!(
                v.verify(headers("msg_1", &ts.to_string(), &sig), b"body", NOW),
                Err(VerifyError::OutsideWindow(300))
            );
        }
        let ts = NOW - 299;
        let sig = signed(SECRET, "msg_1", ts, b"body");
        assert!(v.verify(headers("msg_1", &ts.to_string(), &sig), b"body", NOW).is_ok());
    }

    #[test]
    fn rotated_secrets_and_multiple_signatures_are_accepted() {
        let v = verifier(&[OTHER, SECRET]);
        let sig = format!("v1,bm90LWEtc2lnbmF0dXJl {}", signed(SECRET, "msg_1", NOW, b"body"));
        assert!(v.verify(headers("msg_1", &NOW.to_string(), &sig), b"body", NOW).is_ok());
    }

    #[test]
    fn the_head_check_refuses_what_no_body_can_fix() {
        let v = verifier(&[SECRET]);
        let ts = NOW.to_string();
        let short = format!("v1,{}", STANDARD.encode([7u8; 16]));
        for bad in ["v1,!!!", "v2,abc", short.as_str(), "v1,"] {
            assert_eq!(
                v.check_head(headers("msg_1", &ts, bad), NOW).map(|h| h.id),
                Err(VerifyError::MalformedSignature),
                "{bad:?}"
            );
        }
        let old = (NOW - 301).to_string();
        let sig = signed(SECRET, "msg_1", NOW - 301, b"body");
        assert_eq!(
            v.check_head(headers("msg_1", &old, &sig), NOW).map(|h| h.id),
            Err(VerifyError::OutsideWindow(300))
        );
        // A well-formed head with a tag of the right size passes; the body check decides.
        let bogus = format!("v1,{}", STANDARD.encode([7u8; 32]));
        let head = v.check_head(headers("msg_1", &ts, &bogus), NOW).expect("well formed");
        assert_eq!(v.check_body(&head, b"body"), Err(VerifyError::NoValidSignature));
    }

    #[test]
    fn missing_headers_are_named() {
        let v = verifier(&[SECRET]);
        let h = SignedHeaders { id: None, timestamp: Some("1"), signature: Some("v1,x") };
        assert_eq!(v.verify(h, b"", NOW), Err(VerifyError::Missing("webhook-id")));
    }

    #[test]
    fn bad_secrets_are_reported_by_position_only() {
        let err = Verifier::new(&[SecretString::from("whsec_!!!".to_string())], Duration::from_secs(1))
            .expect_err("bad");
        let text = format!("{err:#}");
        assert!(text.contains("entry 1") && !text.contains("!!!"), "{text}");
    }
}
