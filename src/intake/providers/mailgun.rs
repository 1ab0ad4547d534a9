//! Mailgun routes (`forward()` to our URL), per Mailgun's "Receiving Messages via HTTP through a
//! forward() action" and "Securing Webhooks": the POST carries `timestamp`, `token` and
//! `signature`, the hex HMAC-SHA256 of `timestamp + token` keyed with the HTTP webhook signing
//! key. The signature does not cover the body, so a token is accepted once only (the caller
//! records it as a nonce in the same transaction as the message).
//!
//! Two shapes: parsed fields (`/inbound/mailgun`: `message-headers`, `body-plain`, `body-html`,
//! `stripped-text`, `attachment-1..N`, ...) and raw MIME (`/inbound/mailgun/mime`: `body-mime`).

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::form::Form;
use super::{FieldAttachment, FieldMessage, Rejection, unacceptable, unauthorized};

/// A verified Mailgun request: the token that must not be seen again, the message, and Mailgun's
/// reply text without quotes (`stripped-text`), a hint for quote stripping.
#[derive(Debug)]
pub struct Inbound {
    pub token: String,
    pub raw: Vec<u8>,
    pub stripped_text: Option<String>,
}

/// Checks `signature` = hex(HMAC-SHA256(key, timestamp + token)) in constant time over the whole
/// 32-byte tag (a truncated or empty signature never matches), and that `timestamp` (Unix
/// seconds) is within `tolerance` of `now`.
pub fn verify(
    key: &[u8],
    timestamp: &str,
    token: &str,
    signature: &str,
    now: i64,
    tolerance: Duration,
) -> Result<(), Rejection> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| unauthorized("timestamp is not Unix seconds"))?;
    if now.abs_diff(ts) > tolerance.as_secs() {
        return Err(unauthorized(format!(
            "timestamp is outside the allowed window of {} seconds",
            tolerance.as_secs()
        )));
    }
    if token.is_empty() {
        return Err(unauthorized("empty token"));
    }
    let tag = hex::decode(signature.trim()).map_err(|_| unauthorized("signature is not hex"))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key).map_err(|_| unauthorized("signature does not match"))?;
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.verify_slice(&tag).map_err(|_| unauthorized("signature does not match"))
}

/// Signs like Mailgun does; for tests and the benchmark.
pub fn sign(key: &[u8], timestamp: &str, token: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn verified(form: &Form, key: &[u8], now: i64, tolerance: Duration) -> Result<String, Rejection> {
    let field = |name: &str| form.text(name).ok_or_else(|| unauthorized(format!("missing {name}")));
    let (timestamp, token, signature) = (field("timestamp")?, field("token")?, field("signature")?);
    verify(key, &timestamp, &token, &signature, now, tolerance)?;
    Ok(token)
}

/// `/inbound/mailgun/mime`: the raw message is the `body-mime` field.
pub fn from_mime_form(form: &Form, key: &[u8], now: i64, tolerance: Duration) -> Result<Inbound, Rejection> {
    let token = verified(form, key, now, tolerance)?;
    let raw = form.get("body-mime").map(|f| f.bytes.to_vec()).filter(|b| !b.is_empty());
    let raw = raw.ok_or_else(|| {
        unacceptable("missing body-mime: configure the route to store and notify the MIME URL")
    })?;
    Ok(Inbound { token, raw, stripped_text: None })
}

/// `/inbound/mailgun`: rebuilds the message from the parsed fields.
pub fn from_parsed_form(
    form: &Form,
    key: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<Inbound, Rejection> {
    let token = verified(form, key, now, tolerance)?;
    let mut message = FieldMessage::default();
    if let Some(json) = form.text("message-headers") {
        let pairs: Vec<(String, String)> = serde_json::from_str(&json).map_err(|e| {
            unacceptable(format!("message-headers is not a JSON list of [name, value] pairs: {e}"))
        })?;
        message.headers = pairs;
    }
    message.add_header_if_missing("From", form.text("from").as_deref());
    message.add_header_if_missing("To", form.text("recipient").as_deref());
    message.add_header_if_missing("Subject", form.text("subject").as_deref());
    if message.header("From").is_none() {
        return Err(unacceptable("no sender: neither message-headers nor from has a From"));
    }
    message.text = form.text("body-plain");
    message.html = form.text("body-html");
    let count: usize = match form.text("attachment-count") {
        None => 0,
        Some(n) => n.trim().parse().map_err(|_| unacceptable("attachment-count is not a number"))?,
    };
    for i in 1..=count {
        let name = format!("attachment-{i}");
        let file = form
            .get(&name)
            .ok_or_else(|| unacceptable(format!("attachment-count is {count} but {name} is missing")))?;
        message.attachments.push(FieldAttachment {
            filename: file.file_name.clone().unwrap_or(name),
            content_type: file.content_type.clone().unwrap_or_else(|| "application/octet-stream".into()),
            content: file.bytes.to_vec(),
        });
    }
    let stripped_text = form.text("stripped-text").filter(|t| !t.trim().is_empty());
    Ok(Inbound { token, raw: message.to_rfc5322("mailgun"), stripped_text })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"key-3ax6xnjp29jd6fds4gc373sgvjxteol0";
    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn signature_is_checked_over_timestamp_and_token() {
        let sig = sign(KEY, "1700000000", "tok");
        assert!(verify(KEY, "1700000000", "tok", &sig, 1_700_000_010, FIVE_MIN).is_ok());
        assert!(verify(b"other", "1700000000", "tok", &sig, 1_700_000_010, FIVE_MIN).is_err());
        assert!(verify(KEY, "1700000000", "tok2", &sig, 1_700_000_010, FIVE_MIN).is_err());
        assert!(verify(KEY, "1700000000", "tok", &sig[..32], 1_700_000_010, FIVE_MIN).is_err(), "truncated");
        assert!(verify(KEY, "1700000000", "tok", "", 1_700_000_010, FIVE_MIN).is_err(), "empty");
        let old = verify(KEY, "1700000000", "tok", &sig, 1_700_000_301, FIVE_MIN).expect_err("too old");
        assert!(old.to_string().contains("window"));
        assert!(verify(KEY, "1700000000", "tok", &sig, 1_699_999_699, FIVE_MIN).is_err(), "too far ahead");
    }
}
