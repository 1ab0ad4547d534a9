//! Composing replies: subject, threading headers (RFC 5322 §3.6.4), `Auto-Submitted: auto-replied`
//! (RFC 3834 §5.1), our own Message-ID, and a multipart/alternative text + HTML body rendered
//! from minijinja templates.
//!
//! Templates come from `SWARM_TEMPLATES_DIR` (`reply.txt`, `reply.html`, and `refusal.txt` for the
//! optional polite refusal); an embedded copy is used
//! for any file missing there, so replies can be edited without recompiling. `.html` templates
//! are auto-escaped. Bodies are sent quoted-printable with CRLF line endings (lettre 0.11.23 lacks
//! the RUSTSEC-2026-0561 dot-stuffing fix for bare CR/LF).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use lettre::message::header::{self, ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Body, Mailbox, MultiPart, SinglePart};
use serde::Serialize;

use crate::domain::{EmailAddress, InboundEmail, MessageId, TaskId, one_line, truncate};

/// Most Message-IDs copied into References: the first (thread root) and the newest ones.
pub const MAX_REFERENCES: usize = 10;
/// Lines of the original request quoted at the end of a reply.
pub const QUOTE_MAX_LINES: usize = 20;
/// Bytes (UTF-8) of the original request quoted at the end of a reply.
pub const QUOTE_MAX_BYTES: usize = 4 * 1024;
/// Lines of one agent section (and of the executive summary).
pub const SECTION_MAX_LINES: usize = 200;
/// Bytes (UTF-8) of one agent section (and of the executive summary), before the whole-reply cap
/// shrinks them further.
pub const SECTION_MAX_BYTES: usize = 64 * 1024;
/// Bytes of the original subject kept in the reply's `Subject:` (then `...`).
pub const SUBJECT_MAX_BYTES: usize = 200;
/// Bytes of the sender's display name kept in the reply's `To:`.
pub const DISPLAY_NAME_MAX_BYTES: usize = 64;
/// Longest header line we write, without its CRLF (RFC 5322 §2.1.1).
pub const MAX_HEADER_LINE: usize = 998;
/// Default of `SWARM_MAX_REPLY_BYTES`: the most a composed reply may weigh, headers included.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 1024 * 1024;
/// The smallest `SWARM_MAX_REPLY_BYTES` accepted: room for headers, templates and a quote.
pub const MIN_MAX_REPLY_BYTES: usize = 32 * 1024;

const EMBEDDED: &[(&str, &str)] = &[
    ("reply.txt", include_str!("../../templates/reply.txt")),
    ("reply.html", include_str!("../../templates/reply.html")),
    ("refusal.txt", include_str!("../../templates/refusal.txt")),
];

/// The reply templates, loaded once at start, and the size cap of what they render.
pub struct Templates {
    env: minijinja::Environment<'static>,
    max_reply_bytes: usize,
}

impl Templates {
    /// Loads `reply.txt` and `reply.html` from `dir`, falling back to the embedded copies; replies
    /// composed with them weigh at most `max_reply_bytes` (whole message, headers included).
    ///
    /// Errors: a template that does not compile, naming the file and line.
    pub fn load(dir: &Path, max_reply_bytes: usize) -> Result<Self> {
        let dir: PathBuf = dir.to_owned();
        let mut env = minijinja::Environment::new();
        env.set_loader(move |name| {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(text) => return Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(minijinja::Error::new(
                        minijinja::ErrorKind::InvalidOperation,
                        format!("reading template {name}: {e}"),
                    ));
                }
            }
            Ok(EMBEDDED.iter().find(|(n, _)| *n == name).map(|(_, t)| (*t).to_owned()))
        });
        for (name, _) in EMBEDDED {
            env.get_template(name).with_context(|| format!("loading template {name}"))?;
        }
        Ok(Self { env, max_reply_bytes })
    }

    fn render(&self, name: &str, ctx: &impl Serialize) -> Result<String> {
        let template = self.env.get_template(name)?;
        template.render(ctx).with_context(|| format!("rendering template {name}"))
    }
}

/// One agent's section of the reply.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    pub title: String,
    pub lines: Vec<String>,
    pub failed: bool,
    /// True when lines were dropped or cut to fit the section's byte or line cap.
    pub truncated: bool,
}

impl Section {
    /// A section of `lines`, capped at [`SECTION_MAX_LINES`] and [`SECTION_MAX_BYTES`].
    pub fn new(title: String, lines: Vec<String>, failed: bool) -> Self {
        let mut section = Self { title, lines, failed, truncated: false };
        section.cap(SECTION_MAX_LINES, SECTION_MAX_BYTES);
        section
    }

    fn cap(&mut self, max_lines: usize, max_bytes: usize) {
        self.truncated |= cap_lines(&mut self.lines, max_lines, max_bytes);
    }
}

/// Keeps the first lines of `lines` that fit in `max_lines` and `max_bytes` (the line that
/// crosses the byte cap cut on a character boundary). True when anything was dropped.
fn cap_lines(lines: &mut Vec<String>, max_lines: usize, max_bytes: usize) -> bool {
    let mut left = max_bytes;
    let mut keep = 0;
    let mut cut = false;
    for line in lines.iter_mut().take(max_lines) {
        if line.len() > left {
            if left > 0 {
                *line = truncate(line, left);
                keep += 1;
            }
            cut = true;
            break;
        }
        left -= line.len();
        keep += 1;
    }
    let dropped = keep < lines.len();
    lines.truncate(keep);
    cut || dropped
}

/// What the reply says; the template context.
#[derive(Debug, Clone, Serialize)]
pub struct ReplyContent {
    pub task_id: i64,
    pub subject: String,
    /// Executive summary bullets, shown first (capped like a section).
    pub summary: Vec<String>,
    pub summary_truncated: bool,
    pub sections: Vec<Section>,
    /// Attribution line for the quote, e.g. "On Fri, 20 Nov 2026 10:00 +0000, ann@x.org wrote:".
    pub quote_intro: String,
    /// The start of the original request (its new text), unquoted lines, at most
    /// [`QUOTE_MAX_LINES`] and [`QUOTE_MAX_BYTES`].
    pub quoted: Vec<String>,
    pub quote_truncated: bool,
}

impl ReplyContent {
    /// The reply to `original`: `summary` and every section capped at [`SECTION_MAX_LINES`] and
    /// [`SECTION_MAX_BYTES`], the quote at [`QUOTE_MAX_LINES`] and [`QUOTE_MAX_BYTES`].
    pub fn new(
        task: TaskId,
        original: &InboundEmail,
        mut summary: Vec<String>,
        sections: Vec<Section>,
    ) -> Self {
        // Quote the request itself (the new text), not the history it carried.
        let request =
            if original.new_text.trim().is_empty() { &original.body_text } else { &original.new_text };
        // A line kept one character over the cap (4 bytes at most) still shows it was cut.
        let mut quoted: Vec<String> =
            request.lines().take(QUOTE_MAX_LINES + 1).map(|l| truncate(l, QUOTE_MAX_BYTES + 4)).collect();
        let quote_truncated = cap_lines(&mut quoted, QUOTE_MAX_LINES, QUOTE_MAX_BYTES);
        let summary_truncated = cap_lines(&mut summary, SECTION_MAX_LINES, SECTION_MAX_BYTES);
        let sender = original.from.as_ref().map_or("you", |m| m.address.as_str());
        // The date as the sender's clock showed it, the way mail clients write attributions.
        let date = original.date.as_deref().and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok());
        let quote_intro = match date {
            Some(d) => format!("On {}, {sender} wrote:", d.format("%a, %d %b %Y %H:%M %z")),
            None => format!("{sender} wrote:"),
        };
        Self {
            task_id: task.0,
            subject: original.subject.clone(),
            summary,
            summary_truncated,
            sections,
            quote_intro,
            quoted,
            quote_truncated,
        }
    }

    /// Cuts the summary and every section to `max_bytes` each (the whole-reply cap's lever).
    fn shrink_sections(&mut self, max_bytes: usize) {
        self.summary_truncated |= cap_lines(&mut self.summary, SECTION_MAX_LINES, max_bytes);
        for section in &mut self.sections {
            section.cap(SECTION_MAX_LINES, max_bytes);
        }
    }
}

/// A reply ready for the outbox.
#[derive(Debug, Clone)]
pub struct ComposedReply {
    pub message_id: MessageId,
    pub from: EmailAddress,
    pub to: EmailAddress,
    /// The complete RFC 5322 message, CRLF line endings.
    pub bytes: Vec<u8>,
}

/// Why an address cannot be replied to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnusableAddress {
    #[error("{0}")]
    Invalid(#[from] crate::domain::InvalidEmailAddress),
    #[error("{0:?} has a quoted local part; replies go to plain addresses only")]
    QuotedLocalPart(String),
    #[error("{0:?} has a domain literal; replies go to domain names only")]
    DomainLiteral(String),
    #[error("{0:?} is not an address our mail transport accepts")]
    Transport(String),
}

/// `input` as an address a reply can go to: an [`EmailAddress`] (RFC 5322 §3.4.1 addr-spec)
/// with a dot-atom local part and a domain name, which is what `To:` and the SMTP envelope of
/// [`compose`] take. Parse request addresses with this once, at request time, so a task never
/// fails (or answers someone else) later over an address it was given.
///
/// Errors: not an address, a quoted local part, a `[domain literal]`, or one lettre refuses.
pub fn reply_address(input: &str) -> Result<EmailAddress, UnusableAddress> {
    let address = EmailAddress::parse(input)?;
    if address.local_part().starts_with('"') {
        return Err(UnusableAddress::QuotedLocalPart(address.to_string()));
    }
    if address.domain().starts_with('[') {
        return Err(UnusableAddress::DomainLiteral(address.to_string()));
    }
    if address.as_str().parse::<lettre::Address>().is_err() {
        return Err(UnusableAddress::Transport(address.to_string()));
    }
    Ok(address)
}

/// `Re: <subject> [#<task>]`, without stacking `Re:` prefixes or old task tags; one line.
pub fn reply_subject(original: &str, task: TaskId) -> String {
    format!("Re: {} [#{task}]", bare_subject(original))
}

/// The subject without `Re:`-style prefixes and task tags, on one line; `(no subject)` if empty.
fn bare_subject(original: &str) -> String {
    let mut s = one_line(original);
    loop {
        let lower = s.to_ascii_lowercase();
        let stripped = ["re:", "aw:", "sv:", "antw:"]
            .iter()
            .find_map(|p| lower.starts_with(p).then(|| s[p.len()..].trim_start().to_owned()));
        match stripped {
            Some(rest) => s = rest,
            None => break,
        }
    }
    let s = strip_task_tags(&s);
    if s.is_empty() {
        "(no subject)".to_owned()
    } else if s.len() > SUBJECT_MAX_BYTES {
        format!("{}...", truncate(&s, SUBJECT_MAX_BYTES))
    } else {
        s
    }
}

/// The task id of the last `[#<digits>]` tag in a subject, as our replies carry it.
pub fn task_tag(subject: &str) -> Option<i64> {
    subject.rmatch_indices("[#").find_map(|(at, _)| {
        let after = &subject[at + 2..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        (digits > 0 && after[digits..].starts_with(']')).then(|| after[..digits].parse().ok()).flatten()
    })
}

fn strip_task_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("[#") {
        let after = &rest[start + 2..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(']') {
            out.push_str(&rest[..start]);
            rest = &after[digits + 1..];
        } else {
            out.push_str(&rest[..start + 2]);
            rest = after;
        }
    }
    out.push_str(rest);
    one_line(&out)
}

/// References for a reply: the original's References plus its Message-ID, at most
/// [`MAX_REFERENCES`], keeping the first (the thread root) and the newest (RFC 5322 §3.6.4).
pub fn references(original: &InboundEmail) -> Vec<MessageId> {
    let mut ids: Vec<MessageId> =
        original.references.iter().chain(original.message_id.iter()).cloned().collect();
    ids.dedup();
    if ids.len() > MAX_REFERENCES {
        let tail = ids.split_off(ids.len() - (MAX_REFERENCES - 1));
        ids.truncate(1);
        ids.extend(tail);
    }
    ids
}

/// `Auto-Submitted` (RFC 3834 §5): `auto-replied` on replies, `auto-generated` on notices.
#[derive(Clone)]
struct AutoSubmitted(&'static str);

impl header::Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(value: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(if value.starts_with("auto-generated") { "auto-generated" } else { "auto-replied" }))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.to_owned())
    }
}

/// A plain-text notice to an operator (the daily digest, a liveness alert): From us, To `to`,
/// a new Message-ID, `Auto-Submitted: auto-generated` (RFC 3834 §5) and `X-Loop`, the text
/// quoted-printable with CRLF line endings. Errors when a header cannot be built.
pub fn compose_notice(
    from: &EmailAddress,
    to: &EmailAddress,
    subject: &str,
    text: &str,
    date: DateTime<Utc>,
) -> Result<ComposedReply> {
    let message_id = MessageId::generate(from.domain());
    let message = lettre::Message::builder()
        .from(Mailbox::new(Some("SwarmDirector".into()), from.as_str().parse().context("our From address")?))
        .to(Mailbox::new(None, to.as_str().parse().with_context(|| format!("notice address {to}"))?))
        .subject(truncate(subject, SUBJECT_MAX_BYTES))
        .message_id(Some(message_id.bracketed()))
        .date(std::time::SystemTime::from(date))
        .header(AutoSubmitted("auto-generated"))
        .header(XLoop(from.as_str().to_owned()))
        .singlepart(quoted_printable(ContentType::TEXT_PLAIN, crlf(text))?)
        .context("building the notice")?;
    let bytes = message.formatted();
    check_header_lines(&bytes)?;
    Ok(ComposedReply { message_id, from: from.clone(), to: to.clone(), bytes })
}

/// `X-Loop: <our address>`: the loop marker helpdesks and procmail recipes check; our guard
/// refuses any mail carrying one.
#[derive(Clone)]
struct XLoop(String);

impl header::Header for XLoop {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Loop")
    }

    fn parse(value: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(value.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

fn crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n").replace('\n', "\r\n")
}

/// Builds the reply to `original` for task `task`, addressed to `to`, dated `date`.
///
/// The message weighs at most the templates' `max_reply_bytes`: when it would be larger, the
/// summary and every section are cut to a quarter of their byte cap and the reply is rendered
/// again, down to empty sections (each marked `truncated`). Every header line is at most
/// [`MAX_HEADER_LINE`] octets.
///
/// Errors: an address lettre cannot put in a header, a template that fails to render, or
/// templates whose output alone exceeds the cap.
pub fn compose(
    templates: &Templates,
    from: &EmailAddress,
    to: &EmailAddress,
    original: &InboundEmail,
    task: TaskId,
    content: &ReplyContent,
    date: DateTime<Utc>,
) -> Result<ComposedReply> {
    let subject = reply_subject(&original.subject, task);
    let mut content = std::borrow::Cow::Borrowed(content);
    let mut section_bytes = SECTION_MAX_BYTES;
    loop {
        let text = crlf(&templates.render("reply.txt", &*content)?);
        let html = crlf(&templates.render("reply.html", &*content)?);
        let (message_id, builder) = reply_builder(from, to, original, subject.clone(), date)?;
        let message = builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(quoted_printable(ContentType::TEXT_PLAIN, text)?)
                    .singlepart(quoted_printable(ContentType::TEXT_HTML, html)?),
            )
            .context("building the reply")?;
        let bytes = message.formatted();
        if bytes.len() <= templates.max_reply_bytes {
            check_header_lines(&bytes)?;
            return Ok(ComposedReply { message_id, from: from.clone(), to: to.clone(), bytes });
        }
        anyhow::ensure!(
            section_bytes > 0,
            "the reply weighs {} bytes with every section emptied, over SWARM_MAX_REPLY_BYTES ({}): \
             the templates are too large for the cap",
            bytes.len(),
            templates.max_reply_bytes
        );
        section_bytes /= 4;
        content.to_mut().shrink_sections(section_bytes);
    }
}

/// Refuses a message with a header line longer than [`MAX_HEADER_LINE`] octets (RFC 5322
/// §2.1.1): the caps above keep every input short enough, this keeps it so.
fn check_header_lines(message: &[u8]) -> Result<()> {
    let head_end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(message.len());
    let longest =
        message[..head_end].split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l).len()).max();
    match longest {
        Some(n) if n > MAX_HEADER_LINE => {
            anyhow::bail!("composed a {n}-octet header line, over RFC 5322's {MAX_HEADER_LINE}")
        }
        _ => Ok(()),
    }
}

/// What the refusal template sees.
#[derive(Debug, Serialize)]
struct RefusalContent<'a> {
    subject: &'a str,
    address: &'a str,
}

/// The polite refusal to an authenticated sender the bot does not serve (`refusal.txt`, plain
/// text): threaded under `original`, `Auto-Submitted: auto-replied`, no task tag.
///
/// Errors: as [`compose`].
pub fn compose_refusal(
    templates: &Templates,
    from: &EmailAddress,
    to: &EmailAddress,
    original: &InboundEmail,
    date: DateTime<Utc>,
) -> Result<ComposedReply> {
    let subject = bare_subject(&original.subject);
    let content = RefusalContent { subject: &subject, address: from.as_str() };
    let text = crlf(&templates.render("refusal.txt", &content)?);
    let (message_id, builder) = reply_builder(from, to, original, format!("Re: {subject}"), date)?;
    let message = builder
        .singlepart(quoted_printable(ContentType::TEXT_PLAIN, text)?)
        .context("building the refusal")?;
    let bytes = message.formatted();
    check_header_lines(&bytes)?;
    Ok(ComposedReply { message_id, from: from.clone(), to: to.clone(), bytes })
}

/// The headers of every reply: From, To, Subject, a new Message-ID on our domain, Date,
/// `Auto-Submitted: auto-replied`, `X-Loop`, and In-Reply-To/References under `original`.
fn reply_builder(
    from: &EmailAddress,
    to: &EmailAddress,
    original: &InboundEmail,
    subject: String,
    date: DateTime<Utc>,
) -> Result<(MessageId, lettre::message::MessageBuilder)> {
    let message_id = MessageId::generate(from.domain());
    let to_name = original
        .from
        .as_ref()
        .filter(|m| m.address == to.as_str())
        .and_then(|m| m.name.as_deref())
        .map(|name| truncate(name, DISPLAY_NAME_MAX_BYTES));
    let mut builder = lettre::Message::builder()
        .from(Mailbox::new(Some("SwarmDirector".into()), from.as_str().parse().context("our From address")?))
        .to(Mailbox::new(to_name, to.as_str().parse().with_context(|| format!("reply address {to}"))?))
        .subject(subject)
        .message_id(Some(message_id.bracketed()))
        .date(std::time::SystemTime::from(date))
        .header(AutoSubmitted("auto-replied"))
        .header(XLoop(from.as_str().to_owned()));
    if let Some(parent) = &original.message_id {
        builder = builder.in_reply_to(parent.bracketed());
    }
    let refs = references(original);
    if !refs.is_empty() {
        builder = builder.references(refs.iter().map(MessageId::bracketed).collect::<Vec<_>>().join(" "));
    }
    Ok((message_id, builder))
}

/// A body part sent quoted-printable (CRLF line endings already normalized by the caller).
fn quoted_printable(content_type: ContentType, body: String) -> Result<SinglePart> {
    let body = Body::new_with_encoding(body, ContentTransferEncoding::QuotedPrintable)
        .map_err(|_| anyhow::anyhow!("body cannot be quoted-printable encoded"))?;
    Ok(SinglePart::builder().header(content_type).body(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_gets_one_re_and_the_task_tag() {
        assert_eq!(reply_subject("Budget", TaskId(7)), "Re: Budget [#7]");
        assert_eq!(reply_subject("RE: Re: Budget [#3]", TaskId(7)), "Re: Budget [#7]");
        assert_eq!(reply_subject("", TaskId(7)), "Re: (no subject) [#7]");
        assert_eq!(reply_subject("Line\r\nBcc: x@y", TaskId(1)), "Re: Line Bcc: x@y [#1]");
        assert_eq!(reply_subject("Array [#x] and [#12]", TaskId(2)), "Re: Array [#x] and [#2]");
    }

    #[test]
    fn reply_addresses_are_plain_addr_specs() {
        assert_eq!(reply_address(" Dev@Example.COM ").map(|a| a.to_string()), Ok("Dev@example.com".into()));
        assert!(matches!(reply_address("\"a b\"@example.com"), Err(UnusableAddress::QuotedLocalPart(_))));
        assert!(matches!(reply_address("a@[192.0.2.1]"), Err(UnusableAddress::DomainLiteral(_))));
        assert!(matches!(reply_address("not an address"), Err(UnusableAddress::Invalid(_))));
        assert!(matches!(reply_address("a..b@example.com"), Err(UnusableAddress::Transport(_))));
    }

    #[test]
    fn task_tags_are_read_from_subjects() {
        assert_eq!(task_tag("Re: Budget [#12]"), Some(12));
        assert_eq!(task_tag("Re: [#x] Budget [#3] and [#4]"), Some(4));
        assert_eq!(task_tag("Budget [#] [12]"), None);
    }

    fn email(refs: usize) -> InboundEmail {
        InboundEmail {
            message_id: MessageId::parse("orig@x.org"),
            from: None,
            reply_to: None,
            to: vec![],
            cc: vec![],
            subject: "s".into(),
            date: None,
            in_reply_to: vec![],
            references: (0..refs).filter_map(|i| MessageId::parse(&format!("r{i}@x.org"))).collect(),
            body_text: String::new(),
            new_text: String::new(),
            from_html: false,
            attachments: vec![],
            metadata: None,
        }
    }

    #[test]
    fn references_are_capped_keeping_root_and_newest() {
        let refs = references(&email(30));
        assert_eq!(refs.len(), MAX_REFERENCES);
        assert_eq!(refs[0].as_str(), "r0@x.org");
        assert_eq!(refs[MAX_REFERENCES - 1].as_str(), "orig@x.org");
        assert_eq!(refs[MAX_REFERENCES - 2].as_str(), "r29@x.org");
        assert_eq!(references(&email(2)).len(), 3);
    }

    fn templates(max: usize) -> Templates {
        Templates::load(Path::new("/nonexistent"), max).expect("embedded templates")
    }

    fn compose_for(original: &InboundEmail, sections: Vec<Section>, max: usize) -> Result<ComposedReply> {
        let content = ReplyContent::new(TaskId(9), original, vec!["summary".into()], sections);
        let from = EmailAddress::parse("swarm@bot.example").expect("address");
        let to = EmailAddress::parse("ann@x.org").expect("address");
        compose(&templates(max), &from, &to, original, TaskId(9), &content, Utc::now())
    }

    fn head_lines(message: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(message);
        let head = text.split("\r\n\r\n").next().unwrap_or_default().to_owned();
        head.split("\r\n").map(str::to_owned).collect()
    }

    #[test]
    fn the_quote_is_capped_in_bytes_as_well_as_lines() {
        let mut original = email(0);
        original.body_text = "y".repeat(4 << 20);
        let content = ReplyContent::new(TaskId(1), &original, vec![], vec![]);
        assert_eq!(content.quoted.iter().map(String::len).sum::<usize>(), QUOTE_MAX_BYTES);
        assert!(content.quote_truncated);
        original.body_text = "é\n".repeat(30);
        let content = ReplyContent::new(TaskId(1), &original, vec![], vec![]);
        assert_eq!((content.quoted.len(), content.quote_truncated), (QUOTE_MAX_LINES, true));
        original.body_text = "short\nrequest".into();
        let content = ReplyContent::new(TaskId(1), &original, vec![], vec![]);
        assert_eq!((content.quoted.len(), content.quote_truncated), (2, false));
    }

    #[test]
    fn sections_are_capped_in_bytes_and_lines_on_character_boundaries() {
        let wide = Section::new("t".into(), vec!["é".repeat(SECTION_MAX_BYTES)], false);
        assert!(wide.truncated && wide.lines[0].len() == SECTION_MAX_BYTES);
        let long = Section::new("t".into(), vec!["line".into(); SECTION_MAX_LINES * 2], false);
        assert_eq!((long.lines.len(), long.truncated), (SECTION_MAX_LINES, true));
        let fits = Section::new("t".into(), vec!["a".into(), "b".into()], false);
        assert_eq!((fits.lines.len(), fits.truncated), (2, false));
    }

    #[test]
    fn a_reply_never_exceeds_the_cap_whatever_came_in() {
        let mut original = email(0);
        original.body_text = "z".repeat(4 << 20);
        // Ten sections at their cap, non-ASCII (quoted-printable triples it) and HTML-escaped.
        let sections: Vec<Section> = (0..10)
            .map(|i| {
                Section::new(format!("agent {i}"), vec!["<é&>".repeat(SECTION_MAX_BYTES / 6); 40], false)
            })
            .collect();
        for max in [DEFAULT_MAX_REPLY_BYTES, MIN_MAX_REPLY_BYTES] {
            let reply = compose_for(&original, sections.clone(), max).expect("composed");
            assert!(reply.bytes.len() <= max, "{} > {max}", reply.bytes.len());
            let text = String::from_utf8_lossy(&reply.bytes);
            assert!(text.contains("[... shortened]"), "the cut is said");
        }
        // A small reply is left alone.
        let reply = compose_for(
            &email(0),
            vec![Section::new("a".into(), vec!["fine".into()], false)],
            MIN_MAX_REPLY_BYTES,
        )
        .expect("composed");
        assert!(!String::from_utf8_lossy(&reply.bytes).contains("shortened"));
    }

    #[test]
    fn templates_too_large_for_the_cap_are_an_error_not_an_oversize_reply() {
        let dir = std::env::temp_dir().join(format!("swarm-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("reply.txt"), "x".repeat(2 * MIN_MAX_REPLY_BYTES)).expect("write");
        let templates = Templates::load(&dir, MIN_MAX_REPLY_BYTES).expect("loads");
        let original = email(0);
        let content = ReplyContent::new(TaskId(1), &original, vec![], vec![]);
        let from = EmailAddress::parse("swarm@bot.example").expect("address");
        let err = compose(&templates, &from, &from, &original, TaskId(1), &content, Utc::now())
            .expect_err("over the cap");
        assert!(err.to_string().contains("SWARM_MAX_REPLY_BYTES"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn every_header_line_fits_rfc_5322_whatever_the_original_carried() {
        let ids = |tag: &str| -> Vec<MessageId> {
            (0..30)
                .filter_map(|i| MessageId::parse(&format!("{}{i}@{}", tag.repeat(120), "d".repeat(120))))
                .collect()
        };
        for subject in ["s".repeat(1 << 20), "ü".repeat(100_000), format!("a {}", "b".repeat(5_000))] {
            let mut original = email(0);
            original.subject = subject.clone();
            original.message_id = MessageId::parse(&format!("{}@x.org", "m".repeat(240)));
            original.references = ids("r");
            original.from = Some(crate::domain::Mailbox {
                name: Some("N".repeat(10_000)),
                address: EmailAddress::parse("ann@x.org").expect("address"),
            });
            let reply = compose_for(&original, vec![], DEFAULT_MAX_REPLY_BYTES).expect("composed");
            let lines = head_lines(&reply.bytes);
            let longest = lines.iter().map(String::len).max().unwrap_or(0);
            assert!(longest <= MAX_HEADER_LINE, "a {longest}-octet header line");
            assert!(lines.iter().any(|l| l.starts_with("References:")));
        }
        assert_eq!(
            reply_subject(&"s".repeat(1 << 20), TaskId(3)),
            format!("Re: {}... [#3]", "s".repeat(SUBJECT_MAX_BYTES))
        );
    }

    #[test]
    fn an_overlong_header_line_is_refused() {
        let long = format!("Subject: {}\r\n\r\nbody", "x".repeat(MAX_HEADER_LINE));
        assert!(check_header_lines(long.as_bytes()).is_err());
        let body_line = format!("Subject: ok\r\n\r\n{}", "x".repeat(5_000));
        assert!(check_header_lines(body_line.as_bytes()).is_ok());
    }
}
