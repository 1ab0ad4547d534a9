//! The generic task hook, `POST /hooks/{name}`: any system that can sign a Standard Webhooks
//! request creates a task without sending mail. The JSON body
//! `{"from", "subject", "text", "reply_to", "workflow"?, "metadata"?}` becomes a plain text
//! RFC 5322 message whose Message-ID is derived from the hook name and the exact `webhook-id`
//! ([`message_id`]), so a redelivery of the same webhook (same id) is the same message and makes
//! no second task, and no other webhook-id or mail can take its place.

use serde::Deserialize;
use serde_json::Value;

use super::{FieldMessage, Rejection, one_line, unacceptable};
use sha2::{Digest, Sha256};

use crate::domain::{EmailAddress, MessageId};
use crate::mail::compose::reply_address;

/// Longest hook name: lower-case letters, digits, `-` and `_`.
pub const MAX_NAME: usize = 64;

/// The body of a task hook request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    /// The requester, `addr@example.org` or `Name <addr@example.org>`.
    pub from: String,
    #[serde(default)]
    pub subject: String,
    pub text: String,
    /// Where the reply is mailed.
    pub reply_to: String,
    /// A workflow by name; the default one when absent.
    pub workflow: Option<String>,
    /// Any JSON object, kept with the task.
    pub metadata: Option<Value>,
}

/// A hook name is a path segment we also put in a Message-ID: keep it plain.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The Message-ID of hook `name`'s request `webhook_id`:
/// `<hook.NAME.SHA256-HEX-OF-THE-EXACT-WEBHOOK-ID@inbound.invalid>`. Distinct webhook-ids never
/// share one, and no mail can carry it (intake renames synthetic ids it did not mint), so the
/// `mid:` dedupe key it gives is the hook's own namespace.
pub fn message_id(name: &str, webhook_id: &str) -> MessageId {
    MessageId::synthetic(&format!("hook.{name}"), &hex::encode(Sha256::digest(webhook_id.as_bytes())))
}

/// `"Name" <addr>` (RFC 5322 §3.4, the name a quoted-string without `"` or `\\`), or the bare
/// address when there is no name.
fn display_mailbox(name: &str, address: &EmailAddress) -> String {
    let name: String = name.chars().filter(|c| *c != '"' && *c != '\\').collect();
    if name.trim().is_empty() { address.to_string() } else { format!("\"{}\" <{address}>", name.trim()) }
}

/// Parses and checks the body, and writes the message, dated `received` (its `Date`).
/// `webhook_id` must already be verified.
pub fn message(
    name: &str,
    webhook_id: &str,
    body: &[u8],
    received: chrono::DateTime<chrono::Utc>,
) -> Result<(TaskRequest, Vec<u8>), Rejection> {
    let request: TaskRequest =
        serde_json::from_slice(body).map_err(|e| unacceptable(format!("invalid task request JSON: {e}")))?;
    let (from_name, from_address) = match request.from.rsplit_once('<') {
        Some((name, rest)) => {
            (one_line(name.trim().trim_matches('"')), rest.trim_end().trim_end_matches('>'))
        }
        None => (String::new(), request.from.as_str()),
    };
    let from = reply_address(from_address.trim()).map_err(|e| unacceptable(format!("from: {e}")))?;
    let reply_to = reply_address(&request.reply_to).map_err(|e| unacceptable(format!("reply_to: {e}")))?;
    if request.text.trim().is_empty() {
        return Err(unacceptable("text is empty"));
    }
    if request.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(unacceptable("metadata must be a JSON object"));
    }
    let mut message = FieldMessage {
        headers: vec![
            ("From".into(), display_mailbox(&from_name, &from)),
            ("Reply-To".into(), reply_to.to_string()),
            ("Subject".into(), one_line(&request.subject)),
        ],
        text: Some(request.text.clone()),
        minted_id: Some(message_id(name, webhook_id)),
        ..Default::default()
    };
    message.add_header_if_missing("Date", Some(&received.to_rfc2822()));
    Ok((request, message.to_rfc5322("hook")))
}
