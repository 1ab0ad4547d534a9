//! SendGrid Inbound Parse, per Twilio SendGrid's "Setting up the Inbound Parse Webhook" and
//! "Securing your Inbound Parse webhooks". A `multipart/form-data` POST in one of two modes:
//!
//! - raw ("POST the raw, full MIME message"): the message is the `email` field;
//! - parsed: `headers` (the raw header block), `text`, `html`, `from`, `to`, `cc`, `subject`,
//!   `envelope` (JSON), `charsets` (JSON: the charset of each field), `attachments` (count),
//!   `attachment-info` (JSON) and files `attachment1..N`. Each text field is decoded with the
//!   charset `charsets` declares for it.
//!
//! Authenticity: HTTP Basic credentials put in the Destination URL, and/or the signature of a
//! security policy: `X-Twilio-Email-Event-Webhook-Signature` is a base64 DER ECDSA P-256/SHA-256
//! signature over `X-Twilio-Email-Event-Webhook-Timestamp` followed by the raw body bytes.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

use super::form::Form;
use super::{FieldAttachment, FieldMessage, Rejection, unacceptable, unauthorized};
use crate::mail::auth::SmtpPeer;

pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";

/// The public key of a SendGrid signing policy.
#[derive(Clone)]
pub struct SignatureKey(VerifyingKey);

impl std::fmt::Debug for SignatureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignatureKey(P-256)")
    }
}

impl SignatureKey {
    /// Accepts the key as SendGrid shows it (base64 of the DER SubjectPublicKeyInfo) or as PEM.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let key = if text.starts_with("-----BEGIN") {
            VerifyingKey::from_public_key_pem(text).context("not a PEM P-256 public key")?
        } else {
            let der = STANDARD.decode(text).context("not base64 (or PEM)")?;
            VerifyingKey::from_public_key_der(&der).context("not a DER P-256 public key")?
        };
        Ok(Self(key))
    }

    /// Verifies the signature headers over `timestamp + body`; the timestamp (Unix seconds)
    /// must be within `tolerance` of `now`.
    pub fn verify(
        &self,
        signature: Option<&str>,
        timestamp: Option<&str>,
        body: &[u8],
        now: i64,
        tolerance: Duration,
    ) -> Result<(), Rejection> {
        let signature = signature
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthorized(format!("missing {SIGNATURE_HEADER} header")))?;
        let timestamp = timestamp
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthorized(format!("missing {TIMESTAMP_HEADER} header")))?;
        let ts: i64 =
            timestamp.trim().parse().map_err(|_| unauthorized("signature timestamp is not Unix seconds"))?;
        if now.abs_diff(ts) > tolerance.as_secs() {
            return Err(unauthorized(format!(
                "signature timestamp is outside the allowed window of {} seconds",
                tolerance.as_secs()
            )));
        }
        let der = STANDARD.decode(signature.trim()).map_err(|_| unauthorized("signature is not base64"))?;
        let signature =
            Signature::from_der(&der).map_err(|_| unauthorized("signature is not a DER ECDSA signature"))?;
        let mut signed = Vec::with_capacity(timestamp.len() + body.len());
        signed.extend_from_slice(timestamp.as_bytes());
        signed.extend_from_slice(body);
        self.0.verify(&signed, &signature).map_err(|_| unauthorized("signature does not match"))
    }
}

/// True when the request posts the raw MIME (`email`, "Send Raw" on) rather than parsed fields.
pub fn carries_raw_mime(form: &Form) -> bool {
    form.get("email").is_some()
}

/// The message of a verified request: the raw MIME as posted, or one rebuilt from the fields.
pub fn message(form: &Form) -> Result<Vec<u8>, Rejection> {
    if let Some(raw) = form.get("email") {
        if raw.bytes.is_empty() {
            return Err(unacceptable("the email field is empty"));
        }
        return Ok(raw.bytes.to_vec());
    }
    let charsets: HashMap<String, String> = match form.text("charsets") {
        None => HashMap::new(),
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| unacceptable(format!("charsets is not a JSON object of strings: {e}")))?,
    };
    let field = |name: &str| -> Option<String> {
        let f = form.get(name)?;
        Some(decode(&f.bytes, charsets.get(name).map(String::as_str)))
    };
    let mut message =
        FieldMessage { headers: header_block(&field("headers").unwrap_or_default()), ..Default::default() };
    message.add_header_if_missing("From", field("from").as_deref());
    message.add_header_if_missing("To", field("to").as_deref());
    message.add_header_if_missing("Cc", field("cc").as_deref());
    message.add_header_if_missing("Subject", field("subject").as_deref());
    if message.header("From").is_none() {
        return Err(unacceptable(
            "no sender: neither headers nor from has a From (is this an Inbound Parse POST?)",
        ));
    }
    message.text = field("text");
    message.html = field("html");
    let info: HashMap<String, AttachmentInfo> = match form.text("attachment-info") {
        None => HashMap::new(),
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| unacceptable(format!("attachment-info is not valid JSON: {e}")))?,
    };
    let count: usize = match form.text("attachments") {
        None => 0,
        Some(n) => n.trim().parse().map_err(|_| unacceptable("attachments is not a number"))?,
    };
    for i in 1..=count {
        let name = format!("attachment{i}");
        let file = form
            .get(&name)
            .ok_or_else(|| unacceptable(format!("attachments is {count} but {name} is missing")))?;
        let meta = info.get(&name);
        message.attachments.push(FieldAttachment {
            filename: meta
                .and_then(|m| m.filename.clone())
                .or_else(|| file.file_name.clone())
                .unwrap_or(name),
            content_type: meta
                .and_then(|m| m.kind.clone())
                .or_else(|| file.content_type.clone())
                .unwrap_or_else(|| "application/octet-stream".into()),
            content: file.bytes.to_vec(),
        });
    }
    Ok(message.to_rfc5322("sendgrid"))
}

/// The SMTP session SendGrid received the message in: `sender_ip` and the `from` of `envelope`
/// (`{"to":["bot@ours.example"],"from":"ann@example.org"}`). `None` without a valid `sender_ip`.
pub fn smtp_peer(form: &Form) -> Option<SmtpPeer> {
    let ip = form.text("sender_ip")?.trim().parse().ok()?;
    #[derive(serde::Deserialize)]
    struct Envelope {
        from: Option<String>,
    }
    let mail_from = form
        .text("envelope")
        .and_then(|json| serde_json::from_str::<Envelope>(&json).ok())
        .and_then(|e| e.from)
        .unwrap_or_default();
    Some(SmtpPeer { ip, mail_from: mail_from.trim().to_owned(), helo: None })
}

#[derive(Debug, serde::Deserialize)]
struct AttachmentInfo {
    filename: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Decodes a field in its declared charset (WHATWG labels: `iso-8859-1`, `windows-1252`,
/// `Shift_JIS`, ...); UTF-8 when none or an unknown one is declared. Never fails: undecodable
/// bytes become U+FFFD.
fn decode(bytes: &[u8], charset: Option<&str>) -> String {
    let encoding = charset
        .and_then(|c| encoding_rs::Encoding::for_label(c.trim().as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    encoding.decode_without_bom_handling(bytes).0.into_owned()
}

/// Splits a raw header block into fields, unfolding continuation lines (RFC 5322 §2.2.3).
fn header_block(block: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::EncodePublicKey;

    fn keys() -> (SigningKey, SignatureKey) {
        let signing = SigningKey::from_slice(&[7u8; 32]).expect("valid scalar");
        let der = signing.verifying_key().to_public_key_der().expect("der");
        (signing.clone(), SignatureKey::parse(&STANDARD.encode(der.as_bytes())).expect("parses"))
    }

    #[test]
    fn signature_covers_timestamp_and_body() {
        let (signing, key) = keys();
        let sig: Signature = signing.sign(b"1700000000body");
        let sig = STANDARD.encode(sig.to_der().as_bytes());
        let five = Duration::from_secs(300);
        assert!(key.verify(Some(&sig), Some("1700000000"), b"body", 1_700_000_000, five).is_ok());
        assert!(key.verify(Some(&sig), Some("1700000000"), b"bodY", 1_700_000_000, five).is_err());
        assert!(key.verify(Some(&sig), Some("1700000001"), b"body", 1_700_000_000, five).is_err());
        assert!(key.verify(Some(&sig[..20]), Some("1700000000"), b"body", 1_700_000_000, five).is_err());
        assert!(key.verify(Some(""), Some("1700000000"), b"body", 1_700_000_000, five).is_err());
        assert!(key.verify(Some(&sig), Some("1700000000"), b"body", 1_700_000_400, five).is_err(), "too old");
    }

    #[test]
    fn charsets_and_header_blocks() {
        assert_eq!(decode(b"Gr\xfc\xdfe", Some("iso-8859-1")), "Grüße");
        assert_eq!(decode("Grüße".as_bytes(), None), "Grüße");
        assert_eq!(decode(b"\x82\xb1\x82\xf1", Some("Shift_JIS")), "こん");
        let h = header_block("From: a@x.org\r\nSubject: one\r\n two\r\nX-Empty:\r\n");
        assert_eq!(
            h,
            vec![
                ("From".into(), "a@x.org".into()),
                ("Subject".into(), "one two".into()),
                ("X-Empty".into(), "".into())
            ]
        );
    }
}
