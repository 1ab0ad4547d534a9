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

use crate::domain::{EmailAddress, InboundEmail, MessageId, TaskId, one_line};

/// Most Message-IDs copied into References: the first (thread root) and the newest ones.
pub const MAX_REFERENCES: usize = 10;
/// Lines of the original request quoted at the end of a reply.
const QUOTED_LINES: usize = 20;

const EMBEDDED: &[(&str, &str)] = &[
    ("reply.txt", include_str!("../../templates/reply.txt")),
    ("reply.html", include_str!("../../templates/reply.html")),
    ("refusal.txt", include_str!("../../templates/refusal.txt")),
];

/// The reply templates, loaded once at start.
pub struct Templates {
    env: minijinja::Environment<'static>,
}

impl Templates {
    /// Loads `reply.txt` and `reply.html` from `dir`, falling back to the embedded copies.
    ///
    /// Errors: a template that does not compile, naming the file and line.
    pub fn load(dir: &Path) -> Result<Self> {
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
        Ok(Self { env })
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
}

/// What the reply says; the template context.
#[derive(Debug, Clone, Serialize)]
pub struct ReplyContent {
    pub task_id: i64,
    pub subject: String,
    /// Executive summary bullets, shown first.
    pub summary: Vec<String>,
    pub sections: Vec<Section>,
    /// Attribution line for the quote, e.g. "On Fri, 20 Nov 2026 10:00 +0000, ann@x.org wrote:".
    pub quote_intro: String,
    /// The start of the original request (its new text), unquoted lines.
    pub quoted: Vec<String>,
    pub quote_truncated: bool,
}

impl ReplyContent {
    pub fn new(task: TaskId, original: &InboundEmail, summary: Vec<String>, sections: Vec<Section>) -> Self {
        // Quote the request itself (the new text), not the history it carried.
        let request =
            if original.new_text.trim().is_empty() { &original.body_text } else { &original.new_text };
        let lines: Vec<String> = request.lines().map(str::to_owned).collect();
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
            sections,
            quote_intro,
            quote_truncated: lines.len() > QUOTED_LINES,
            quoted: lines.into_iter().take(QUOTED_LINES).collect(),
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
    if s.is_empty() { "(no subject)".to_owned() } else { s }
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

#[derive(Clone)]
struct AutoSubmitted;

impl header::Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-replied".to_owned())
    }
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
/// Errors: an address lettre cannot put in a header, or a template that fails to render.
pub fn compose(
    templates: &Templates,
    from: &EmailAddress,
    to: &EmailAddress,
    original: &InboundEmail,
    task: TaskId,
    content: &ReplyContent,
    date: DateTime<Utc>,
) -> Result<ComposedReply> {
    let text = crlf(&templates.render("reply.txt", content)?);
    let html = crlf(&templates.render("reply.html", content)?);
    let (message_id, builder) =
        reply_builder(from, to, original, reply_subject(&original.subject, task), date)?;
    let message = builder
        .multipart(
            MultiPart::alternative()
                .singlepart(quoted_printable(ContentType::TEXT_PLAIN, text)?)
                .singlepart(quoted_printable(ContentType::TEXT_HTML, html)?),
        )
        .context("building the reply")?;
    Ok(ComposedReply { message_id, from: from.clone(), to: to.clone(), bytes: message.formatted() })
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
    Ok(ComposedReply { message_id, from: from.clone(), to: to.clone(), bytes: message.formatted() })
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
    let to_name = original.from.as_ref().filter(|m| m.address == to.as_str()).and_then(|m| m.name.clone());
    let mut builder = lettre::Message::builder()
        .from(Mailbox::new(Some("SwarmDirector".into()), from.as_str().parse().context("our From address")?))
        .to(Mailbox::new(to_name, to.as_str().parse().with_context(|| format!("reply address {to}"))?))
        .subject(subject)
        .message_id(Some(message_id.bracketed()))
        .date(std::time::SystemTime::from(date))
        .header(AutoSubmitted)
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
}
