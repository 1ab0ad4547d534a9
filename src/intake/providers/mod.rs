//! Provider inbound webhooks: Mailgun routes, SendGrid Inbound Parse, Postmark inbound, and the
//! generic signed task hook. Each module checks its provider's proof of authenticity exactly as
//! the provider documents it and turns the request into one RFC 5322 message, so the rest of the
//! pipeline sees a single format; [`crate::intake::Intake::accept`] then stores it (raw first,
//! dedupe) before the handler answers 2xx.
//!
//! When a provider posts parsed fields instead of the raw MIME, [`FieldMessage::to_rfc5322`]
//! rebuilds a faithful message: the original header fields in order (minus those describing the
//! old MIME structure), the text and HTML bodies as `multipart/alternative`, and the attachments.

pub mod form;
pub mod hook;
pub mod mailgun;
pub mod postmark;
pub mod sendgrid;

use std::borrow::Cow;

use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;
use sha2::{Digest, Sha256};

use crate::domain::MessageId;

/// Why a provider request is refused. The message is safe to show the caller: it never holds
/// a secret or an internal detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Missing or wrong credentials or signature, or a timestamp outside the window (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Content that will never be accepted, however often it is retried. Each provider has its own
    /// status for "stop retrying" (Mailgun 406, Postmark 403).
    #[error("{0}")]
    Unacceptable(String),
}

pub(crate) fn unauthorized(message: impl Into<String>) -> Rejection {
    Rejection::Unauthorized(message.into())
}

pub(crate) fn unacceptable(message: impl Into<String>) -> Rejection {
    Rejection::Unacceptable(message.into())
}

/// Header fields that describe the original MIME body; the rebuilt message has its own.
const STRUCTURAL_HEADERS: &[&str] = &[
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
    "content-length",
    "mime-version",
];

/// One attachment of a [`FieldMessage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldAttachment {
    pub filename: String,
    /// `type/subtype`; `application/octet-stream` when the provider declared none.
    pub content_type: String,
    pub content: Vec<u8>,
}

/// A message as a provider describes it in separate fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMessage {
    /// Header fields in their original order, as (name, value).
    pub headers: Vec<(String, String)>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<FieldAttachment>,
    /// The Message-ID we give the message when its headers carry no usable one (the task hook's
    /// id from its webhook-id, Postmark's MessageID); else one from a digest of the fields.
    pub minted_id: Option<MessageId>,
}

impl FieldMessage {
    /// The first value of a header field (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Adds `name: value` unless the message already has that field or `value` is empty.
    pub fn add_header_if_missing(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value.map(str::trim).filter(|v| !v.is_empty())
            && self.header(name).is_none()
        {
            self.headers.push((name.to_owned(), value.to_owned()));
        }
    }

    /// Writes the message as RFC 5322 with CRLF line endings (RFC 5322 §2.1, MIME per RFC 2045-2049).
    ///
    /// - Header names that are not RFC 5322 §3.6.8 field names are dropped; values are unfolded
    ///   onto one line (CR, LF and NUL become spaces) and written as given, so encoded words stay
    ///   encoded and UTF-8 stays UTF-8 (RFC 6532).
    /// - A Message-ID under `inbound.invalid` ([`crate::domain::SYNTHETIC_DOMAIN`]) in the
    ///   headers is dropped: only we mint those.
    ///   A message without another one gets [`Self::minted_id`], else
    ///   `<{provider}.{sha256 of the fields}@inbound.invalid>`, stable across redeliveries of
    ///   the same fields, so retries dedupe. Every synthetic id in the result is therefore ours
    ///   (intake trusts it, see [`crate::intake::Source::minted_id`]).
    /// - Bodies become `text/plain` and `text/html` (alternatives when both exist), attachments
    ///   follow as `multipart/mixed`; the encodings are mail-builder's choice.
    pub fn to_rfc5322(&self, provider: &str) -> Vec<u8> {
        let mut builder = MessageBuilder::new();
        let mut has_message_id = false;
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if !is_field_name(name) || STRUCTURAL_HEADERS.contains(&lower.as_str()) {
                continue;
            }
            // mail-builder adds Message-ID and Date itself unless it sees these exact spellings.
            let name: Cow<'static, str> = match lower.as_str() {
                "message-id" if MessageId::parse(value).is_some_and(|id| id.is_synthetic()) => continue,
                "message-id" => {
                    has_message_id = true;
                    "Message-ID".into()
                }
                "date" => "Date".into(),
                _ => name.clone().into(),
            };
            builder = builder.header(name, Raw::new(one_line(value)));
        }
        if !has_message_id {
            let id = self.minted_id.clone().unwrap_or_else(|| MessageId::synthetic(provider, &self.digest()));
            builder = builder.header("Message-ID", Raw::new(id.bracketed()));
        }
        if let Some(text) = &self.text {
            builder = builder.text_body(text.replace("\r\n", "\n"));
        }
        if let Some(html) = &self.html {
            builder = builder.html_body(html.replace("\r\n", "\n"));
        }
        if self.text.is_none() && self.html.is_none() {
            builder = builder.text_body("");
        }
        for a in &self.attachments {
            builder = builder.attachment(a.content_type.clone(), a.filename.clone(), a.content.as_slice());
        }
        let mut out = Vec::new();
        builder.serialize(&mut out);
        out
    }

    /// A SHA-256 over every field, for a stable fallback Message-ID.
    fn digest(&self) -> String {
        let mut hash = Sha256::new();
        let mut put = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        for (name, value) in &self.headers {
            put(name.as_bytes());
            put(value.as_bytes());
        }
        put(self.text.as_deref().unwrap_or("").as_bytes());
        put(self.html.as_deref().unwrap_or("").as_bytes());
        for a in &self.attachments {
            put(a.filename.as_bytes());
            put(a.content_type.as_bytes());
            put(&a.content);
        }
        hex::encode(&hash.finalize()[..16])
    }
}

/// RFC 5322 §3.6.8: printable US-ASCII except colon.
fn is_field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// A header value on one line: folding undone, CR, LF, NUL and other controls become spaces.
pub(crate) fn one_line(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && out.ends_with(' ') {
            continue;
        }
        out.push(c);
    }
    out.trim().to_owned()
}

/// The credentials of an `Authorization` header value (RFC 9110 §11.6.2; the scheme is
/// case-insensitive, §11.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Bearer <token>` (RFC 6750 §2.1).
    Bearer(String),
    /// `Basic <base64 user:password>` (RFC 7617), decoded.
    Basic(Vec<u8>),
}

impl Credentials {
    /// `None` for another scheme or a Basic value that is not base64.
    pub fn parse(authorization: &str) -> Option<Self> {
        use base64::Engine;
        let (scheme, rest) = authorization.trim().split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") {
            Some(Self::Bearer(rest.trim().to_owned()))
        } else if scheme.eq_ignore_ascii_case("basic") {
            base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok().map(Self::Basic)
        } else {
            None
        }
    }
}

/// Compares secrets in time that depends only on their lengths.
pub fn secrets_match(presented: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    presented.ct_eq(expected).into()
}

/// Checks HTTP Basic credentials (RFC 7617) against `expected` (`user:password`) in constant
/// time over the whole string.
pub fn basic_auth_matches(authorization: Option<&str>, expected: &str) -> bool {
    match authorization.and_then(Credentials::parse) {
        Some(Credentials::Basic(decoded)) => secrets_match(&decoded, expected.as_bytes()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::parse;
    use crate::mail::parse::Limits as MimeLimits;

    fn sample() -> FieldMessage {
        FieldMessage {
            headers: vec![
                ("From".into(), "Jöns <jons@example.org>".into()),
                ("To".into(), "bot@example.com".into()),
                ("Subject".into(), "=?utf-8?q?Gr=C3=BC=C3=9Fe?= and\r\n\tmore".into()),
                ("Message-Id".into(), "<abc@example.org>".into()),
                ("Content-Type".into(), "multipart/alternative; boundary=old".into()),
                ("X-Evil\r\nBcc".into(), "x".into()),
                ("X-Injected".into(), "a\r\nBcc: victim@example.org".into()),
            ],
            text: Some("Hello\r\nthere".into()),
            html: Some("<p>Hello</p>".into()),
            attachments: vec![FieldAttachment {
                filename: "notes.txt".into(),
                content_type: "text/plain".into(),
                content: b"attached text".to_vec(),
            }],
            minted_id: None,
        }
    }

    #[test]
    fn rebuilt_message_parses_back_to_the_same_fields() {
        let raw = sample().to_rfc5322("test");
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("boundary=old"), "the old structure is dropped:\n{text}");
        assert!(!text.contains("\nBcc"), "no header injection:\n{text}");
        assert_eq!(text.matches("Message-ID:").count(), 1, "{text}");
        let mail = parse(&raw, &MimeLimits::default()).expect("parses").email;
        assert_eq!(mail.message_id.as_ref().map(|id| id.as_str()), Some("abc@example.org"));
        assert_eq!(
            mail.from.as_ref().map(|f| (f.name.as_deref(), f.address.as_str())),
            Some((Some("Jöns"), "jons@example.org"))
        );
        assert_eq!(mail.subject, "Grüße and more");
        assert_eq!(mail.body_text.trim(), "Hello\nthere");
        assert_eq!(mail.attachments.len(), 1);
        assert_eq!(mail.attachments[0].text.as_deref(), Some("attached text"));
    }

    #[test]
    fn missing_message_id_is_stable_per_content() {
        let mut m = sample();
        m.headers.retain(|(n, _)| n != "Message-Id");
        let a = parse(&m.to_rfc5322("postmark"), &MimeLimits::default()).expect("parses").email.message_id;
        let b = parse(&m.to_rfc5322("postmark"), &MimeLimits::default()).expect("parses").email.message_id;
        assert_eq!(a, b);
        assert!(a.as_ref().is_some_and(|id| id.as_str().starts_with("postmark.")));
        m.text = Some("other".into());
        let c = parse(&m.to_rfc5322("postmark"), &MimeLimits::default()).expect("parses").email.message_id;
        assert_ne!(a, c);
    }

    #[test]
    fn basic_auth_needs_the_exact_pair() {
        use base64::Engine;
        let header = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert!(basic_auth_matches(Some(&header("user:pw")), "user:pw"));
        assert!(!basic_auth_matches(Some(&header("user:p")), "user:pw"));
        assert!(!basic_auth_matches(Some(&header("user:pwx")), "user:pw"));
        assert!(!basic_auth_matches(None, "user:pw"));
        assert!(!basic_auth_matches(Some("Bearer user:pw"), "user:pw"));
        let lower = header("user:pw").replacen("Basic", "basic", 1);
        assert!(basic_auth_matches(Some(&lower), "user:pw"), "schemes are case-insensitive (RFC 9110 §11.1)");
        assert_eq!(Credentials::parse("bEaReR  tok "), Some(Credentials::Bearer("tok".into())));
        assert_eq!(Credentials::parse("Digest x"), None);
    }
}
