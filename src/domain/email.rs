//! An inbound message as the rest of the system sees it once parsed: typed addresses and
//! Message-IDs (every one valid, or dropped at parse time), decoded one-line subject, text body.

use serde::{Deserialize, Serialize};

use super::{EmailAddress, MessageId};

/// A parsed inbound message, as stored with its task (JSON) and given to agents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InboundEmail {
    /// The Message-ID when the header holds a valid one (RFC 5322 §3.6.4).
    pub message_id: Option<MessageId>,
    pub from: Option<Mailbox>,
    /// First valid Reply-To address, if any.
    pub reply_to: Option<EmailAddress>,
    pub to: Vec<EmailAddress>,
    pub cc: Vec<EmailAddress>,
    /// Decoded, on one line (CR, LF and tabs turned into spaces).
    pub subject: String,
    /// The Date header as RFC 3339, when it parses.
    pub date: Option<String>,
    /// Valid Message-IDs only.
    pub in_reply_to: Vec<MessageId>,
    pub references: Vec<MessageId>,
    /// The whole text body; HTML converted to text when the message has no text part.
    pub body_text: String,
    /// The new text of a reply: `body_text` without quoted history or signature.
    pub new_text: String,
    /// True when `body_text` was converted from HTML.
    pub from_html: bool,
    pub attachments: Vec<Attachment>,
    /// Caller-supplied JSON object kept with the task (the task hook's `metadata`); never from mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl InboundEmail {
    /// The sender's address, when From holds a valid one.
    pub fn sender(&self) -> Option<&EmailAddress> {
        self.from.as_ref().map(|m| &m.address)
    }
}

/// A display name and an address (RFC 5322 §3.4 `mailbox`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: EmailAddress,
}

/// An attachment as agents see it: its name, type, size and, for text, its start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    pub name: Option<String>,
    /// `type/subtype`, lower case.
    pub content_type: String,
    /// Decoded size in bytes.
    pub size_bytes: usize,
    /// Start of the decoded text for text attachments (at most 64 KiB), for summaries.
    pub text: Option<String>,
}
