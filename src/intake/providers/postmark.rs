//! Postmark inbound webhook, per Postmark's "Inbound webhook" documentation: a JSON POST with
//! `From`, `FromFull`, `To`, `Cc`, `ReplyTo`, `Subject`, `MessageID` (Postmark's own id),
//! `Date`, `TextBody`, `HtmlBody`, `StrippedTextReply`, `MailboxHash`, `Headers` (a list of
//! `{Name, Value}`), `Attachments` (`{Name, Content (base64), ContentType, ContentLength}`) and,
//! when "include raw email content" is on, `RawEmail`. Authenticity is HTTP Basic credentials in
//! the webhook URL (checked by the handler). A 403 answer makes Postmark stop retrying.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::{FieldAttachment, FieldMessage, Rejection, unacceptable};
use crate::domain::MessageId;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Payload {
    from: Option<String>,
    from_full: Option<Person>,
    to: Option<String>,
    cc: Option<String>,
    reply_to: Option<String>,
    subject: Option<String>,
    #[serde(rename = "MessageID")]
    message_id: Option<String>,
    date: Option<String>,
    text_body: Option<String>,
    html_body: Option<String>,
    stripped_text_reply: Option<String>,
    #[serde(default)]
    headers: Vec<Header>,
    #[serde(default)]
    attachments: Vec<Attachment>,
    raw_email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Person {
    email: String,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Header {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Attachment {
    name: Option<String>,
    content: String,
    content_type: Option<String>,
}

/// The message of a Postmark inbound POST, and Postmark's reply text without quotes
/// (`StrippedTextReply`), a hint for quote stripping.
#[derive(Debug)]
pub struct Inbound {
    pub raw: Vec<u8>,
    pub stripped_text: Option<String>,
}

/// Parses the JSON body. `RawEmail` is used as is when present; otherwise the message is rebuilt
/// from the fields. Without a Message-ID header, Postmark's `MessageID` keeps redeliveries of the
/// same message one message.
pub fn message(body: &[u8]) -> Result<Inbound, Rejection> {
    let p: Payload = serde_json::from_slice(body)
        .map_err(|e| unacceptable(format!("not a Postmark inbound JSON payload: {e}")))?;
    let stripped_text = p.stripped_text_reply.filter(|t| !t.trim().is_empty());
    if let Some(raw) = p.raw_email.filter(|r| !r.trim().is_empty()) {
        return Ok(Inbound { raw: raw.into_bytes(), stripped_text });
    }
    let from = match (&p.from_full, &p.from) {
        (Some(Person { email, name: Some(name) }), _) if !name.trim().is_empty() => {
            Some(format!("\"{}\" <{email}>", name.replace(['"', '\\'], "")))
        }
        (Some(person), _) => Some(person.email.clone()),
        (None, from) => from.clone(),
    };
    let mut message = FieldMessage::default();
    message.add_header_if_missing("From", from.as_deref());
    if message.header("From").is_none() {
        return Err(unacceptable("no sender: From and FromFull are empty"));
    }
    message.add_header_if_missing("To", p.to.as_deref());
    message.add_header_if_missing("Cc", p.cc.as_deref());
    message.add_header_if_missing("Reply-To", p.reply_to.as_deref());
    message.add_header_if_missing("Subject", p.subject.as_deref());
    message.add_header_if_missing("Date", p.date.as_deref());
    for h in p.headers {
        // Postmark gives these as fields already; a copy in Headers would duplicate them.
        let singular = ["from", "to", "cc", "reply-to", "subject", "date"];
        if !(singular.contains(&h.name.to_ascii_lowercase().as_str()) && message.header(&h.name).is_some()) {
            message.headers.push((h.name, h.value));
        }
    }
    if let Some(id) = p.message_id.as_deref().map(str::trim).filter(|id| !id.is_empty()) {
        let safe: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        message.minted_id = Some(MessageId::synthetic("postmark", &safe));
    }
    message.text = p.text_body.filter(|t| !t.is_empty());
    message.html = p.html_body.filter(|t| !t.is_empty());
    for (i, a) in p.attachments.into_iter().enumerate() {
        let content = STANDARD
            .decode(a.content.trim())
            .map_err(|_| unacceptable(format!("attachment {} content is not base64", i + 1)))?;
        message.attachments.push(FieldAttachment {
            filename: a.name.unwrap_or_else(|| format!("attachment-{}", i + 1)),
            content_type: a.content_type.unwrap_or_else(|| "application/octet-stream".into()),
            content,
        });
    }
    Ok(Inbound { raw: message.to_rfc5322("postmark"), stripped_text })
}
