//! Bounce (non-delivery report) detection.
//!
//! Standard reports are RFC 3464 delivery status notifications: `multipart/report;
//! report-type=delivery-status` (RFC 6522) with a `message/delivery-status` part holding
//! per-recipient `Action`, `Status` (RFC 3463 `class.subject.detail`), `Final-Recipient` and
//! `Diagnostic-Code` fields, and the returned message or its headers. Many systems send their own
//! formats instead (qmail, Exim, old Exchange, Notes, ...): those are recognized by a machine
//! sender or a bounce subject, with a failure status or SMTP reply code in the text.
//!
//! A bounce names the Message-IDs found in the returned message, so the caller can match it to the
//! outbox delivery it reports on. `5.x.x` (or a 5xx reply) is hard, `4.x.x` soft.

use std::sync::LazyLock;

use mail_parser::{Message, MessagePart, MimeHeaders, PartType};
use regex::Regex;
use serde::Serialize;

use crate::domain::{BounceNotice, MessageId};

/// What a bounce says about one failed delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bounce {
    /// Message-IDs of the returned message (bare), most specific first.
    pub original_message_ids: Vec<String>,
    /// The recipient that failed, when the report names one.
    pub recipient: Option<String>,
    /// RFC 3463 status (`5.1.1`) or, failing that, the SMTP reply code (`550`).
    pub status: Option<String>,
    /// Permanent failure: status class 5 (or a 5xx reply). Otherwise transient.
    pub hard: bool,
    /// The remote server's words, one line, at most 300 characters.
    pub diagnostic: Option<String>,
    /// `rfc3464` or `heuristic`.
    pub format: &'static str,
}

impl Bounce {
    /// `hard 5.1.1` / `soft 4.2.2` / `soft (no status)`.
    pub fn kind(&self) -> String {
        let class = if self.hard { "hard" } else { "soft" };
        match &self.status {
            Some(s) => format!("{class} {s}"),
            None => format!("{class} (no status)"),
        }
    }

    /// What the outbox makes of this report: the delivery's record and whether a hard failure
    /// suppresses the recipient.
    pub fn notice(&self) -> BounceNotice {
        let kind = self.kind();
        let detail = match &self.diagnostic {
            Some(d) => format!("{kind}: {d}"),
            None => kind.clone(),
        };
        BounceNotice {
            original_message_ids: self.original_message_ids.clone(),
            recipient: self.recipient.clone(),
            kind,
            detail,
            suppress: self.hard,
        }
    }
}

static ENHANCED_STATUS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([45])\.(\d{1,3})\.(\d{1,3})\b").expect("valid regex"));
static SMTP_REPLY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)(?:^|[\s(:])([45][0-5]\d)(?:[ -]|: )[A-Za-z#]").expect("valid regex"));
static MESSAGE_ID_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?im)^\s*(?:>\s*)?message-id:\s*(<[^>\s]+>)").expect("valid regex"));
static BOUNCE_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)undeliver|undelivered|returned mail|return(ed)? to sender|delivery (status notification|failure|has failed|failed|problem)|mail delivery (failed|failure|system)|failure notice|could not be delivered|non[- ]?delivery|nondeliverable|unzustellbar|mail system error|delivery notification|rejected",
    )
    .expect("valid regex")
});

/// Recognizes a bounce. `machine_sender`: From is MAILER-DAEMON/postmaster or Return-Path is
/// null. Returns `None` for ordinary mail and for reports that only say a delivery succeeded.
pub fn detect(
    m: &Message<'_>,
    report_type: Option<&str>,
    machine_sender: bool,
    subject: &str,
) -> Option<Bounce> {
    let has_status_part = m.parts.iter().any(is_delivery_status);
    if report_type == Some("delivery-status") || (has_status_part && report_type.is_none_or(str::is_empty)) {
        return rfc3464(m);
    }
    if report_type.is_some() {
        return None; // feedback reports, read receipts: automated, but no bounce
    }
    let bounce_subject = BOUNCE_SUBJECT.is_match(subject);
    if !machine_sender && !bounce_subject {
        return None;
    }
    let text = full_text(m);
    // A machine sender with a bounce subject is a bounce even when it gives no status; without
    // a status it counts as soft (no suppression).
    let (status, hard) = match status_in(&text) {
        Some((status, hard)) => (Some(status), hard),
        None if machine_sender && bounce_subject => (None, false),
        None => return None,
    };
    Some(Bounce {
        original_message_ids: returned_ids(m, &text),
        recipient: m
            .header_raw("X-Failed-Recipients")
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_ascii_lowercase()),
        status,
        hard,
        diagnostic: diagnostic_line(&text),
        format: "heuristic",
    })
}

fn is_delivery_status(p: &MessagePart<'_>) -> bool {
    p.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("message")
            && ct.subtype().is_some_and(|s| {
                s.eq_ignore_ascii_case("delivery-status") || s.eq_ignore_ascii_case("global-delivery-status")
            })
    })
}

/// Reads the `message/delivery-status` part: the first recipient whose Action is `failed` (or
/// `delayed`). `None` when every recipient was delivered, relayed or expanded.
fn rfc3464(m: &Message<'_>) -> Option<Bounce> {
    let status_part = m.parts.iter().find(|p| is_delivery_status(p));
    let text = full_text(m);
    let fields = status_part.map(part_text).unwrap_or_default();
    // Per-message fields, then one block per recipient, separated by blank lines (RFC 3464 §2.1).
    let blocks: Vec<Vec<(String, String)>> = fields
        .replace("\r\n", "\n")
        .split("\n\n")
        .map(|block| {
            let mut out: Vec<(String, String)> = Vec::new();
            for line in block.lines() {
                if line.starts_with([' ', '\t']) {
                    if let Some((_, v)) = out.last_mut() {
                        v.push(' ');
                        v.push_str(line.trim());
                    }
                } else if let Some((name, value)) = line.split_once(':') {
                    out.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
            out
        })
        .collect();
    let field = |block: &[(String, String)], name: &str| {
        block.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    };
    let recipients: Vec<&Vec<(String, String)>> = blocks
        .iter()
        .filter(|b| field(b, "action").is_some() || field(b, "final-recipient").is_some())
        .collect();
    let failed = recipients.iter().find(|b| {
        field(b, "action").is_some_and(|a| {
            let a = a.to_ascii_lowercase();
            a.starts_with("failed") || a.starts_with("delayed")
        })
    });
    let chosen = match failed {
        Some(b) => Some(*b),
        None if recipients.iter().any(|b| field(b, "action").is_some()) => return None,
        None => recipients.first().copied(),
    };
    let status_field = chosen.and_then(|b| field(b, "status")).filter(|s| ENHANCED_STATUS.is_match(s));
    let (status, hard) = match status_field {
        Some(s) => {
            let code = ENHANCED_STATUS.find(&s).map(|c| c.as_str().to_owned()).unwrap_or(s);
            let hard = code.starts_with('5');
            (code, hard)
        }
        None => status_in(&text).unwrap_or_else(|| ("5.0.0".into(), true)),
    };
    let strip_type = |v: String| v.split_once(';').map_or(v.clone(), |(_, a)| a.trim().to_owned());
    Some(Bounce {
        original_message_ids: returned_ids(m, &text),
        recipient: chosen
            .and_then(|b| field(b, "final-recipient").or_else(|| field(b, "original-recipient")))
            .map(strip_type)
            .map(|r| r.trim_matches(['<', '>']).to_ascii_lowercase()),
        status: Some(status),
        hard,
        diagnostic: chosen.and_then(|b| field(b, "diagnostic-code")).map(strip_type).map(|d| clip(&d)),
        format: "rfc3464",
    })
}

/// The status of a failure in free text: an RFC 3463 code, else an SMTP reply code.
fn status_in(text: &str) -> Option<(String, bool)> {
    if let Some(c) = ENHANCED_STATUS.captures_iter(text).find(|c| &c[1] == "5" || &c[1] == "4") {
        return Some((c[0].to_owned(), &c[1] == "5"));
    }
    SMTP_REPLY.captures(text).map(|c| (c[1].to_owned(), c[1].starts_with('5')))
}

/// The first line that carries the status, as the server's diagnostic.
fn diagnostic_line(text: &str) -> Option<String> {
    text.lines().find(|l| ENHANCED_STATUS.is_match(l) || SMTP_REPLY.is_match(l)).map(|l| clip(l.trim()))
}

fn clip(s: &str) -> String {
    let one = crate::domain::one_line(s);
    one.chars().take(300).collect()
}

/// Message-IDs of the returned message: from enclosed messages and header parts first, then any
/// `Message-ID:` line in the text (skipping the bounce's own).
fn returned_ids(m: &Message<'_>, text: &str) -> Vec<String> {
    let own = m.message_id().map(str::to_owned);
    let mut ids: Vec<String> = Vec::new();
    let mut push = |id: &str| {
        if let Some(id) = MessageId::parse(id).map(|i| i.as_str().to_owned())
            && Some(&id) != own.as_ref()
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    };
    for part in &m.parts {
        if let PartType::Message(inner) = &part.body
            && let Some(id) = inner.message_id()
        {
            push(id);
        }
    }
    for c in MESSAGE_ID_LINE.captures_iter(text) {
        push(&c[1]);
    }
    ids
}

/// All text of the message: text parts, headers-only parts and enclosed messages' text.
fn full_text(m: &Message<'_>) -> String {
    let mut out = String::new();
    for part in &m.parts {
        match &part.body {
            PartType::Text(t) => out.push_str(t),
            PartType::Html(h) => out.push_str(h),
            PartType::Binary(_) | PartType::InlineBinary(_) => out.push_str(&part_text(part)),
            PartType::Message(inner) => {
                if let Some(raw) = inner.raw_message.get(..inner.root_part().offset_body as usize) {
                    out.push_str(&String::from_utf8_lossy(raw));
                }
            }
            PartType::Multipart(_) => {}
        }
        out.push('\n');
        if out.len() > 256 * 1024 {
            break;
        }
    }
    out
}

fn part_text(part: &MessagePart<'_>) -> String {
    String::from_utf8_lossy(part.contents()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::MessageParser;

    fn bounce(raw: &str) -> Option<Bounce> {
        let m = MessageParser::default().parse(raw.as_bytes()).expect("parses");
        let report = m.content_type().and_then(|ct| ct.attribute("report-type")).map(str::to_ascii_lowercase);
        let from =
            m.from().and_then(|f| f.first()).and_then(|a| a.address()).unwrap_or("").to_ascii_lowercase();
        let machine = from.starts_with("mailer-daemon") || from.starts_with("postmaster");
        detect(&m, report.as_deref(), machine, m.subject().unwrap_or(""))
    }

    const DSN: &str = "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n\
        To: swarm@bot.example\r\nSubject: Undelivered Mail Returned to Sender\r\n\
        Message-ID: <dsn-1@mx.example.org>\r\n\
        Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
        --b\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n\
        --b\r\nContent-Type: message/delivery-status\r\n\r\n\
        Reporting-MTA: dns; mx.example.org\r\n\r\n\
        Final-Recipient: rfc822; Gone@Example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n\
        Diagnostic-Code: smtp; 550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown\r\n\r\n\
        --b\r\nContent-Type: text/rfc822-headers\r\n\r\n\
        From: swarm@bot.example\r\nTo: gone@example.net\r\nMessage-ID: <swarm.abc@bot.example>\r\nSubject: Re: x\r\n\r\n\
        --b--\r\n";

    #[test]
    fn rfc3464_report_names_the_recipient_status_and_original() {
        let b = bounce(DSN).expect("bounce");
        assert_eq!(b.original_message_ids, ["swarm.abc@bot.example"]);
        assert_eq!(b.recipient.as_deref(), Some("gone@example.net"));
        assert_eq!((b.status.as_deref(), b.hard, b.format), (Some("5.1.1"), true, "rfc3464"));
        assert!(b.diagnostic.as_deref().is_some_and(|d| d.contains("User unknown")));
        assert_eq!(b.kind(), "hard 5.1.1");
    }

    #[test]
    fn delayed_is_soft_and_delivered_is_no_bounce() {
        let delayed = DSN.replace("Action: failed\r\nStatus: 5.1.1", "Action: delayed\r\nStatus: 4.4.1");
        let b = bounce(&delayed).expect("bounce");
        assert_eq!((b.status.as_deref(), b.hard), (Some("4.4.1"), false));
        let delivered = DSN.replace("Action: failed\r\nStatus: 5.1.1", "Action: delivered\r\nStatus: 2.0.0");
        assert_eq!(bounce(&delivered), None);
    }

    #[test]
    fn non_standard_bounces_are_recognized_from_their_text() {
        let qmail = "From: MAILER-DAEMON@mail.example.com\r\nSubject: failure notice\r\n\r\n\
            Hi. This is the qmail-send program at mail.example.com.\r\n\
            I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\r\n\
            <nobody@example.com>:\r\n192.0.2.1 does not like recipient.\r\n\
            Remote host said: 550 sorry, no mailbox here by that name. (#5.1.1)\r\n\r\n\
            --- Below this line is a copy of the message.\r\n\r\n\
            Message-ID: <swarm.77@bot.example>\r\nSubject: Re: hi\r\n\r\nbody\r\n";
        let b = bounce(qmail).expect("bounce");
        assert_eq!(b.original_message_ids, ["swarm.77@bot.example"]);
        assert_eq!((b.status.as_deref(), b.hard, b.format), (Some("5.1.1"), true, "heuristic"));
        let ordinary =
            "From: ann@example.org\r\nSubject: Lunch?\r\n\r\nAre you free at 12? Room 550 please.\r\n";
        assert_eq!(bounce(ordinary), None);
    }
}
