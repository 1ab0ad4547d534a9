//! The generic task hook, `POST /hooks/{name}`: any system that can sign a Standard Webhooks
//! request creates a task without sending mail. The JSON body
//! `{"from", "subject", "text", "reply_to", "workflow"?, "metadata"?}` becomes a plain text
//! RFC 5322 message whose Message-ID is derived from the hook name and `webhook-id`, so a
//! redelivery of the same webhook (same id) is the same message and makes no second task.

use serde::Deserialize;
use serde_json::Value;

use super::{FieldMessage, Rejection, one_line, unacceptable};
use crate::domain::EmailAddress;

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
    let from_address = match request.from.rsplit_once('<') {
        Some((_, rest)) => rest.trim_end().trim_end_matches('>'),
        None => request.from.as_str(),
    };
    EmailAddress::parse(from_address.trim())
        .map_err(|e| unacceptable(format!("from is not an email address: {e}")))?;
    EmailAddress::parse(request.reply_to.trim())
        .map_err(|e| unacceptable(format!("reply_to is not an email address: {e}")))?;
    if request.text.trim().is_empty() {
        return Err(unacceptable("text is empty"));
    }
    if request.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(unacceptable("metadata must be a JSON object"));
    }
    let id: String = webhook_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
        .collect();
    let mut message = FieldMessage {
        headers: vec![
            ("From".into(), one_line(&request.from)),
            ("Reply-To".into(), request.reply_to.trim().to_owned()),
            ("Subject".into(), one_line(&request.subject)),
            ("Message-ID".into(), format!("<hook.{name}.{id}@inbound.invalid>")),
        ],
        text: Some(request.text.clone()),
        ..Default::default()
    };
    message.add_header_if_missing("Date", Some(&received.to_rfc2822()));
    Ok((request, message.to_rfc5322("hook")))
}
