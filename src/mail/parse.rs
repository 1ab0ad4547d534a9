//! Untrusted raw RFC 5322 / MIME bytes → [`InboundEmail`], the one shape the rest of the
//! pipeline sees, whatever the source.
//!
//! Limits (invariant 6): the byte size is checked before parsing, and enclosed messages (encoded
//! ones too) are walked level by level before mail-parser builds them ([`super::enclosed`]: its
//! nesting of them recurses and could overflow the stack). mail-parser walks multipart nesting
//! iteratively, so its time and memory grow linearly with the (capped) input; MIME depth and part
//! count are checked right after, before anything else touches the message. Charsets are decoded by mail-parser (RFC 2047, 2231).

use std::borrow::Cow;

use mail_parser::{Address, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType};
use serde::Serialize;

use crate::domain::{Attachment, EmailAddress, InboundEmail, Mailbox, MessageId, one_line, truncate};
use crate::mail::{enclosed, quote};

/// Limits applied to untrusted inbound mail before and while parsing (`SWARM_MAX_MESSAGE_BYTES`,
/// `SWARM_MAX_MIME_DEPTH`, `SWARM_MAX_MIME_PARTS`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest raw message accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of multiparts and enclosed messages.
    pub max_depth: usize,
    /// Most MIME parts in one message, counting nested ones.
    pub max_parts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: 25 * 1024 * 1024, max_depth: 20, max_parts: 2_000 }
    }
}

/// Bytes of a text attachment kept for the agents.
const ATTACHMENT_TEXT_BYTES: usize = 64 * 1024;

/// Header facts the guard looks at; not stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Signals {
    /// `Auto-Submitted` value, lower case (RFC 3834 §5).
    pub auto_submitted: Option<String>,
    /// `Return-Path: <>` (a bounce or other notification, RFC 5321 §4.5.5).
    pub null_return_path: bool,
    /// `multipart/report` `report-type` (RFC 6522), lower case.
    pub report_type: Option<String>,
    pub precedence: Option<String>,
    /// The auto-reply marker found: `X-Autoreply`, `X-Autorespond`, `X-Apple-Action: VACATION`,
    /// an auto-reply subject ("Automatic reply:", "Out of Office", ...), and the like.
    pub auto_reply: Option<String>,
    /// The list header found: `List-Id` (RFC 2919), `List-Unsubscribe` and friends (RFC 2369),
    /// `Mailing-List` (ezmlm), `X-Mailing-List`.
    pub list_header: Option<String>,
    /// `X-Loop` value, lower case (procmail and helpdesk loop marker; ours carries our address).
    pub x_loop: Option<String>,
    /// A delivery failure report, when this message is one.
    pub bounce: Option<crate::mail::bounce::Bounce>,
    /// `Authentication-Results` values, topmost (newest) first, on one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub authentication_results: Vec<String>,
}

#[derive(Debug)]
pub struct ParsedMail {
    pub email: InboundEmail,
    pub signals: Signals,
}

/// Why a message cannot be parsed; becomes the quarantine reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("message is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("message is empty")]
    Empty,
    #[error("unparseable: no RFC 5322 header section found")]
    NoHeaders,
    #[error("MIME nesting deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("more than {limit} MIME parts ({parts})")]
    TooManyParts { parts: usize, limit: usize },
    #[error("more than {limit} enclosed messages (message/rfc822, message/global, digest parts)")]
    TooManyEnclosed { limit: usize },
    #[error("its encoded enclosed messages decode to {size} bytes, over the limit of {limit} bytes")]
    DecodedTooLarge { size: usize, limit: usize },
}

pub use super::enclosed::MAX_ENCLOSED;

/// Parses raw bytes under `limits`.
pub fn parse(raw: &[u8], limits: &Limits) -> Result<ParsedMail, ParseError> {
    if raw.len() > limits.max_bytes {
        return Err(ParseError::TooLarge { size: raw.len(), limit: limits.max_bytes });
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let normalized = normalize(raw);
    check_enclosed(&normalized, limits)?;
    let message = MessageParser::default().parse(normalized.as_ref()).ok_or(ParseError::NoHeaders)?;
    // mail-parser turns any first line into a "header"; a message needs at least one real field:
    // a name of printable ASCII without space or colon (RFC 5322 §2.2) and a value.
    let is_field_name = |n: &str| !n.is_empty() && n.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    if !message.headers().iter().any(|h| is_field_name(h.name()) && !matches!(h.value(), HeaderValue::Empty))
    {
        return Err(ParseError::NoHeaders);
    }
    check_shape(&message, limits)?;
    Ok(ParsedMail { email: to_inbound(&message), signals: signals(&message) })
}

/// The enclosed messages, before mail-parser builds them (see [`super::enclosed`]); encoded ones
/// may decode to as many bytes as the message may have.
fn check_enclosed(raw: &[u8], limits: &Limits) -> Result<(), ParseError> {
    let bounds = enclosed::Limits {
        max_depth: limits.max_depth,
        max_parts: limits.max_parts,
        max_decoded: limits.max_bytes,
    };
    enclosed::check(raw, bounds).map_err(|refusal| match refusal {
        enclosed::Refusal::TooDeep => ParseError::TooDeep { limit: limits.max_depth },
        enclosed::Refusal::TooManyParts(parts) => ParseError::TooManyParts { parts, limit: limits.max_parts },
        enclosed::Refusal::TooManyEnclosed => ParseError::TooManyEnclosed { limit: MAX_ENCLOSED },
        enclosed::Refusal::DecodedTooLarge(size) => {
            ParseError::DecodedTooLarge { size, limit: limits.max_bytes }
        }
    })
}

/// Repairs what real mail stores get wrong before parsing (the stored raw bytes stay as received):
/// leading blank lines or padding before the header section, and classic-Mac CR-only line
/// endings, which become CRLF when lone CRs outnumber LFs.
fn normalize(raw: &[u8]) -> Cow<'_, [u8]> {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(raw.len());
    let raw = &raw[start..];
    let lf = raw.iter().filter(|&&b| b == b'\n').count();
    let lone_cr = raw.windows(2).filter(|w| w[0] == b'\r' && w[1] != b'\n').count()
        + usize::from(raw.last() == Some(&b'\r'));
    if lone_cr <= lf {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + lone_cr);
    for (i, &b) in raw.iter().enumerate() {
        out.push(b);
        if b == b'\r' && raw.get(i + 1) != Some(&b'\n') {
            out.push(b'\n');
        }
    }
    Cow::Owned(out)
}

/// Counts parts (nested messages included) and measures nesting depth, stopping as soon as a
/// limit is passed, so the walk itself is bounded.
fn check_shape(message: &Message<'_>, limits: &Limits) -> Result<(), ParseError> {
    fn walk(
        message: &Message<'_>,
        part: u32,
        depth: usize,
        parts: &mut usize,
        limits: &Limits,
    ) -> Result<(), ParseError> {
        if depth > limits.max_depth {
            return Err(ParseError::TooDeep { limit: limits.max_depth });
        }
        *parts += 1;
        if *parts > limits.max_parts {
            return Err(ParseError::TooManyParts { parts: *parts, limit: limits.max_parts });
        }
        match message.part(part).map(|p| &p.body) {
            Some(PartType::Multipart(children)) => {
                for &child in children {
                    walk(message, child, depth + 1, parts, limits)?;
                }
            }
            Some(PartType::Message(inner)) => walk(inner, 0, depth + 1, parts, limits)?,
            _ => {}
        }
        Ok(())
    }
    if message.parts.len() > limits.max_parts {
        return Err(ParseError::TooManyParts { parts: message.parts.len(), limit: limits.max_parts });
    }
    let mut parts = 0;
    walk(message, 0, 1, &mut parts, limits)
}

fn addresses(value: Option<&Address<'_>>) -> Vec<EmailAddress> {
    value
        .map(|a| a.iter().filter_map(|addr| addr.address()).filter_map(|s| EmailAddress::parse(s).ok()))
        .into_iter()
        .flatten()
        .collect()
}

fn message_ids(value: &HeaderValue<'_>) -> Vec<MessageId> {
    let ids: Vec<&str> = match value {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(list) => list.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    };
    ids.into_iter().filter_map(MessageId::parse).collect()
}

fn to_inbound(m: &Message<'_>) -> InboundEmail {
    let from = m.from().and_then(|list| {
        let first = list.first()?;
        if let Some(address) = first.address().and_then(|a| EmailAddress::parse(a).ok()) {
            return Some(Mailbox { name: first.name().map(one_line).filter(|n| !n.is_empty()), address });
        }
        // "From: Ann ann@x.org" (no angle brackets) is split oddly by mail-parser; take the
        // first word anywhere in the field that is an address.
        list.iter()
            .flat_map(|addr| [addr.address(), addr.name()])
            .flatten()
            .flat_map(str::split_whitespace)
            .find_map(|w| EmailAddress::parse(w.trim_matches(|c| "<>\"'(),;".contains(c))).ok())
            .map(|address| Mailbox { name: None, address })
    });
    let (body_text, from_html) = body_text(m);
    let new_text = quote::new_text(&body_text);
    InboundEmail {
        message_id: m.message_id().and_then(MessageId::parse),
        from,
        reply_to: addresses(m.reply_to()).into_iter().next(),
        to: addresses(m.to()),
        cc: addresses(m.cc()),
        subject: m.subject().map(one_line).unwrap_or_default(),
        date: m.date().filter(|d| d.is_valid()).map(|d| d.to_rfc3339()),
        in_reply_to: message_ids(m.in_reply_to()),
        references: message_ids(m.references()),
        body_text,
        new_text,
        from_html,
        attachments: m
            .attachments
            .iter()
            .filter(|&&id| !(id == 0 && root_text(m).is_some()))
            .filter_map(|&id| m.part(id))
            .map(attachment)
            .collect(),
        metadata: None,
    }
}

/// The text bodies joined; when there are none, the HTML bodies converted to text.
fn body_text(m: &Message<'_>) -> (String, bool) {
    let texts: Vec<Cow<'_, str>> = (0..m.text_body_count())
        .filter(|&i| m.text_part(i as u32).is_some_and(|p| !p.is_text_html()))
        .filter_map(|i| m.body_text(i))
        .collect();
    if !texts.is_empty() {
        return (normalize_newlines(&texts.join("\n")), false);
    }
    let htmls: Vec<String> =
        (0..m.html_body_count()).filter_map(|i| m.body_html(i)).map(|h| html_to_text(&h)).collect();
    if !htmls.is_empty() {
        return (normalize_newlines(&htmls.join("\n")), true);
    }
    match root_text(m) {
        Some(PartType::Text(t)) => (normalize_newlines(t), false),
        Some(PartType::Html(h)) => (normalize_newlines(&html_to_text(h)), true),
        _ => (String::new(), false),
    }
}

/// The root part, when the message has no text or HTML body but its root is text: a multipart
/// whose boundary never appears is parsed as one text part, which mail-parser files as an
/// attachment. That text is the body.
fn root_text<'a>(m: &'a Message<'_>) -> Option<&'a PartType<'a>> {
    if m.text_body_count() > 0 || m.html_body_count() > 0 {
        return None;
    }
    m.part(0).map(|p| &p.body).filter(|b| matches!(b, PartType::Text(_) | PartType::Html(_)))
}

/// HTML → plain text with html2text; blockquotes come out as `> ` lines, so quote stripping
/// works on HTML-only replies too.
pub fn html_to_text(html: &str) -> String {
    html2text::config::plain().string_from_read(html.as_bytes(), 10_000).unwrap_or_else(|_| html.to_owned())
}

fn normalize_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n").replace('\u{0}', "")
}

fn attachment(part: &MessagePart<'_>) -> Attachment {
    let content_type = part
        .content_type()
        .map(|ct| match ct.subtype() {
            Some(sub) => format!("{}/{}", ct.ctype(), sub),
            None => ct.ctype().to_owned(),
        })
        .unwrap_or_else(|| "application/octet-stream".into())
        .to_ascii_lowercase();
    let text = match &part.body {
        PartType::Text(t) => Some(truncate(t, ATTACHMENT_TEXT_BYTES)),
        PartType::Html(h) => Some(truncate(&html_to_text(h), ATTACHMENT_TEXT_BYTES)),
        _ => None,
    };
    Attachment {
        name: part.attachment_name().map(one_line),
        content_type,
        size_bytes: part.len(),
        text: text.map(|t| normalize_newlines(&t)),
    }
}

/// Headers only list software adds (RFC 2919, RFC 2369, ezmlm).
const LIST_HEADERS: &[&str] = &[
    "List-Id",
    "List-Unsubscribe",
    "List-Post",
    "List-Help",
    "List-Subscribe",
    "List-Owner",
    "List-Archive",
    "Mailing-List",
    "X-Mailing-List",
];

/// Subject starts of auto-replies and out-of-office notices in English, German, French,
/// Spanish, Italian, Dutch and Portuguese, as mail clients and servers word them (helpdesk
/// practice; RFC 3834 senders should add Auto-Submitted, many do not). Compared lower case.
const AUTO_REPLY_SUBJECTS: &[&str] = &[
    // English
    "auto reply:",
    "autoreply:",
    "auto-reply:",
    "[auto-reply]",
    "[auto reply]",
    "[autoreply]",
    "automatic reply:",
    "auto response:",
    "autorespons",
    "out of office",
    "out of the office",
    "out-of-office",
    "ooo:",
    "ooo ",
    "[ooo]",
    "away from the office",
    // German
    "abwesenheitsnotiz",
    "abwesenheit",
    "abwesend:",
    "abwesend ",
    "automatische antwort",
    "nicht im büro",
    // French
    "réponse automatique",
    "reponse automatique",
    "absence du bureau",
    "message d'absence",
    "message d’absence",
    "absent du bureau",
    // Spanish
    "respuesta automática",
    "respuesta automatica",
    "fuera de la oficina",
    "fuera de oficina",
    "ausente:",
    // Italian
    "risposta automatica",
    "fuori sede",
    "fuori ufficio",
    "assente dall'ufficio",
    // Dutch
    "automatisch antwoord",
    "afwezig:",
    "afwezig ",
    "niet aanwezig",
    "buiten kantoor",
    // Portuguese
    "resposta automática",
    "resposta automatica",
    "ausência temporária",
    "fora do escritório",
    "fora do escritorio",
    "ausente do escritório",
];

/// Why this message looks like an auto-reply, if it does.
fn auto_reply_marker(m: &Message<'_>, raw: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    for header in ["X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-AutoReply-From", "X-Mail-Autoreply"]
    {
        if raw(header).is_some() {
            return Some(format!("{header} header"));
        }
    }
    if raw("X-Apple-Action").is_some_and(|v| v.contains("vacation")) {
        return Some("X-Apple-Action: VACATION".into());
    }
    if raw("X-Autogenerated").is_some_and(|v| v.contains("reply")) {
        return Some("X-Autogenerated: Reply".into());
    }
    if raw("X-Auto-Response-Suppress").is_some_and(|v| v.contains("oof")) {
        return Some("X-Auto-Response-Suppress: OOF (Exchange out-of-office)".into());
    }
    let subject = m.subject().map(|s| s.trim().to_lowercase()).unwrap_or_default();
    AUTO_REPLY_SUBJECTS.iter().find(|p| subject.starts_with(*p)).map(|p| format!("auto-reply subject {p:?}"))
}

fn signals(m: &Message<'_>) -> Signals {
    let raw = |name: &str| m.header_raw(name).map(|v| one_line(v).to_ascii_lowercase());
    let report_type = m
        .content_type()
        .filter(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct.subtype().is_some_and(|s| s.eq_ignore_ascii_case("report"))
        })
        .map(|ct| ct.attribute("report-type").unwrap_or("").to_ascii_lowercase());
    let return_path = raw("Return-Path");
    let null_return_path =
        return_path.is_some_and(|r| r.trim_matches(|c| c == '<' || c == '>' || c == ' ').is_empty());
    let from = m.from().and_then(|f| f.first()).and_then(|a| a.address()).unwrap_or("").to_ascii_lowercase();
    let local = from.split('@').next().unwrap_or("");
    let machine_sender = null_return_path || ["mailer-daemon", "mail-daemon", "postmaster"].contains(&local);
    let bounce =
        crate::mail::bounce::detect(m, report_type.as_deref(), machine_sender, m.subject().unwrap_or(""));
    Signals {
        auto_submitted: raw("Auto-Submitted"),
        null_return_path,
        report_type,
        precedence: raw("Precedence"),
        auto_reply: auto_reply_marker(m, &raw),
        list_header: LIST_HEADERS.iter().find(|h| raw(h).is_some()).map(|h| (*h).to_owned()),
        x_loop: raw("X-Loop"),
        bounce,
        authentication_results: m
            .headers()
            .iter()
            .filter(|h| h.name().eq_ignore_ascii_case("Authentication-Results"))
            .filter_map(|h| m.raw_message().get(h.offset_start() as usize..h.offset_end() as usize))
            .map(|v| one_line(&String::from_utf8_lossy(v)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn oversize_message_is_rejected_before_parsing() {
        let small = Limits { max_bytes: 10, ..limits() };
        assert_eq!(
            parse(b"Subject: x\r\n\r\nhello world", &small).expect_err("too large"),
            ParseError::TooLarge { size: 25, limit: 10 }
        );
    }

    #[test]
    fn empty_and_headerless_input_is_unparseable() {
        assert_eq!(parse(b"  \r\n", &limits()).expect_err("empty"), ParseError::Empty);
        assert_eq!(parse(b"\x00\x01 not mail at all", &limits()).expect_err("junk"), ParseError::NoHeaders);
        assert_eq!(
            parse(b"just some text\nover two lines", &limits()).expect_err("text"),
            ParseError::NoHeaders
        );
    }

    #[test]
    fn leading_blank_lines_and_cr_only_line_endings_are_repaired() {
        let padded =
            parse(b"\n   \r\nFrom: a@x.org\r\nSubject: padded\r\n\r\nhi", &limits()).expect("parses");
        assert_eq!(padded.email.subject, "padded");
        let mac =
            parse(b"From: a@x.org\rSubject: old mac\r\rline one\rline two\r", &limits()).expect("parses");
        assert_eq!(mac.email.subject, "old mac");
        assert_eq!(mac.email.body_text.lines().collect::<Vec<_>>(), ["line one", "line two"]);
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let mut raw = String::from("From: a@x.org\r\nSubject: deep\r\n");
        let depth = 30;
        for i in 0..depth {
            raw.push_str(&format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"));
        }
        raw.push_str("Content-Type: text/plain\r\n\r\nhi\r\n");
        for i in (0..depth).rev() {
            raw.push_str(&format!("--b{i}--\r\n"));
        }
        let err = parse(raw.as_bytes(), &limits()).expect_err("too deep");
        assert_eq!(err, ParseError::TooDeep { limit: 20 });
    }

    #[test]
    fn too_many_parts_are_rejected() {
        let mut raw = String::from("From: a@x.org\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
        for i in 0..50 {
            raw.push_str(&format!("--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"));
        }
        raw.push_str("--b--\r\n");
        let few = Limits { max_parts: 20, ..limits() };
        assert!(matches!(parse(raw.as_bytes(), &few), Err(ParseError::TooManyParts { .. })));
        assert!(parse(raw.as_bytes(), &limits()).is_ok());
    }

    #[test]
    fn hostile_shapes_at_full_size_are_quarantined_not_parsed_forever() {
        // 3 MB of multiparts nested inside each other, and of enclosed messages inside each other.
        let mut nested = String::from("From: a@x.org\r\n");
        let mut i = 0;
        while nested.len() < 3 * 1024 * 1024 {
            nested.push_str(&format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"));
            i += 1;
        }
        let verdict = parse(nested.as_bytes(), &limits()).map(|p| p.email.subject);
        assert!(
            matches!(verdict, Err(ParseError::TooDeep { .. } | ParseError::TooManyParts { .. })),
            "{verdict:?}"
        );
        let mut enclosed = String::from("From: a@x.org\r\n");
        while enclosed.len() < 3 * 1024 * 1024 {
            enclosed.push_str("Content-Type: message/rfc822\r\n\r\nFrom: b@x.org\r\n");
        }
        // mail-parser nests these without limit (and dropping them recursed out of the stack):
        // the walk before it stops at the depth limit.
        assert_eq!(parse(enclosed.as_bytes(), &limits()).map(|_| ()), Err(ParseError::TooDeep { limit: 20 }));
        // Side by side rather than nested: the count of enclosed messages is the limit.
        let mut siblings =
            String::from("From: a@x.org\r\nContent-Type: multipart/mixed; boundary=\"s\"\r\n\r\n");
        for _ in 0..=MAX_ENCLOSED {
            siblings.push_str("--s\r\nContent-Type: message/rfc822\r\n\r\nFrom: b@x.org\r\n\r\nhi\r\n");
        }
        siblings.push_str("--s--\r\n");
        assert_eq!(
            parse(siblings.as_bytes(), &limits()).map(|_| ()),
            Err(ParseError::TooManyEnclosed { limit: MAX_ENCLOSED })
        );
        // 20,000 parts.
        let mut many = String::from("From: a@x.org\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
        for i in 0..20_000 {
            many.push_str(&format!("--b\r\nContent-Type: text/plain\r\n\r\n{i}\r\n"));
        }
        many.push_str("--b--\r\n");
        assert!(matches!(parse(many.as_bytes(), &limits()), Err(ParseError::TooManyParts { .. })));
    }

    #[test]
    fn subject_with_encoded_newlines_becomes_one_line() {
        let raw = b"From: a@x.org\r\nSubject: =?utf-8?q?Hello=0D=0ABcc=3A_evil=40x.org?=\r\n\r\nbody";
        let p = parse(raw, &limits()).expect("parses");
        assert_eq!(p.email.subject, "Hello Bcc: evil@x.org");
    }

    #[test]
    fn invalid_message_ids_are_dropped_from_threading_fields() {
        let raw = b"From: a@x.org\r\nMessage-ID: not an id\r\nIn-Reply-To: <good@x.org>\r\nReferences: <a@x> <bad id> <b@y>\r\n\r\nhi";
        let p = parse(raw, &limits()).expect("parses");
        assert_eq!(p.email.message_id, None);
        assert_eq!(p.email.in_reply_to, vec!["good@x.org"]);
        assert!(p.email.references.iter().all(|r| MessageId::parse(r.as_str()).is_some()));
    }

    #[test]
    fn sender_without_angle_brackets_is_still_found() {
        let p = parse(b"From: Test test@example.com\r\nSubject: x\r\n\r\nhi", &limits()).expect("parses");
        assert_eq!(p.email.from.map(|f| f.address.to_string()).as_deref(), Some("test@example.com"));
        let p = parse(b"From: user2\r\nSubject: x\r\n\r\nhi", &limits()).expect("parses");
        assert_eq!(p.email.from, None);
    }

    #[test]
    fn multipart_without_its_boundary_is_read_as_a_text_body() {
        let raw =
            b"From: a@x.org\r\nContent-Type: multipart/alternative; boundary=nowhere\r\n\r\nJust text.\r\n";
        let p = parse(raw, &limits()).expect("parses");
        assert_eq!(p.email.body_text.trim(), "Just text.");
        assert!(p.email.attachments.is_empty());
    }

    #[test]
    fn automation_signals_are_read() {
        let raw = b"From: MAILER-DAEMON@x.org\r\nReturn-Path: <>\r\nAuto-Submitted: Auto-Replied\r\n\
            Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n";
        let s = parse(raw, &limits()).expect("parses").signals;
        assert_eq!(s.auto_submitted.as_deref(), Some("auto-replied"));
        assert!(s.null_return_path);
        assert_eq!(s.report_type.as_deref(), Some("delivery-status"));
    }
}
