//! The built-in agents: no network, deterministic, each output explains itself.

mod action_items;
mod attachments;
pub mod dates;
mod exec_summary;
mod summarize;
mod triage;

pub use action_items::{ActionItem, ActionItems, ActionItemsOutput};
pub use attachments::{AttachmentInfo, Attachments, AttachmentsOutput};
pub use exec_summary::{ExecSummary, ExecSummaryOutput};
pub use summarize::{Summarize, SummaryOutput};
pub use triage::{Category, Triage, TriageOutput};

use chrono::{DateTime, NaiveDate};
use serde::{Deserialize, Serialize};

use super::{MAX_AGENT_TEXT_BYTES, TaskContext};
use crate::domain::truncate;

/// Input of the text agents (triage, summarize, action_items).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextInput {
    pub subject: String,
    /// The new text of the message (quotes and signature stripped), at most 32 KiB.
    pub text: String,
    /// Date relative deadlines resolve against: the message's Date in the sender's offset, or
    /// the day it was received (UTC) when it has none.
    pub base_date: NaiveDate,
}

impl TextInput {
    pub fn from_task(task: &TaskContext<'_>) -> Self {
        let base_date = task
            .email
            .date
            .as_deref()
            .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.date_naive())
            .unwrap_or_else(|| task.received_at.date_naive());
        Self {
            subject: task.email.subject.clone(),
            text: truncate(&task.email.new_text, MAX_AGENT_TEXT_BYTES),
            base_date,
        }
    }
}

/// Words that open a polite or direct request, and verbs that open an imperative sentence.
pub(crate) const REQUEST_PHRASES: &[&str] = &[
    "could you",
    "can you",
    "would you",
    "will you",
    "would you mind",
    "i need you to",
    "we need you to",
    "i'd like you to",
    "i would like you to",
    "you need to",
    "you must",
    "you should",
    "make sure",
    "don't forget to",
    "do not forget to",
    "remember to",
    "kindly",
    "let me know",
    "action required",
    "please",
];

/// "please" phrases that announce information rather than ask for something.
const NOT_REQUESTS: &[&str] =
    &["please find", "please note", "please see", "please ignore", "please disregard", "please be aware"];

pub(crate) const IMPERATIVE_VERBS: &[&str] = &[
    "send",
    "review",
    "prepare",
    "update",
    "schedule",
    "call",
    "book",
    "fix",
    "check",
    "confirm",
    "sign",
    "submit",
    "forward",
    "approve",
    "share",
    "provide",
    "complete",
    "finish",
    "draft",
    "write",
    "arrange",
    "order",
    "pay",
    "reply",
    "respond",
    "contact",
    "add",
    "remove",
    "create",
    "deploy",
    "investigate",
    "organize",
    "organise",
    "file",
    "renew",
    "cancel",
    "email",
    "ping",
    "ask",
];

/// The request phrase a sentence uses, if any: a polite request ("could you", "please") or an
/// imperative opening ("Send the ...").
pub(crate) fn request_phrase(sentence: &str) -> Option<String> {
    let lower = sentence.to_lowercase();
    let padded = format!(" {} ", lower.replace(|c: char| !c.is_alphanumeric() && c != '\'', " "));
    if NOT_REQUESTS.iter().any(|n| padded.contains(&format!(" {n} "))) {
        return None;
    }
    if let Some(p) = REQUEST_PHRASES.iter().find(|p| padded.contains(&format!(" {p} "))) {
        return Some((*p).to_owned());
    }
    // Imperative: the sentence (after an optional "Name," address) opens with an action verb.
    let body = lower
        .split_once(',')
        .filter(|(head, _)| head.split_whitespace().count() <= 2)
        .map_or(lower.as_str(), |(_, rest)| rest);
    let first = body.split_whitespace().next()?.trim_matches(|c: char| !c.is_alphanumeric());
    IMPERATIVE_VERBS.contains(&first).then(|| format!("imperative \"{first}\""))
}

#[cfg(test)]
mod tests {
    use super::request_phrase;

    #[test]
    fn request_phrases_are_found() {
        assert_eq!(request_phrase("Could you send me the slides?").as_deref(), Some("could you"));
        assert_eq!(request_phrase("Please review the draft.").as_deref(), Some("please"));
        assert_eq!(request_phrase("Send the invoice by Friday.").as_deref(), Some("imperative \"send\""));
        assert_eq!(request_phrase("Bob, check the logs.").as_deref(), Some("imperative \"check\""));
        assert_eq!(request_phrase("Please find the report attached."), None);
        assert_eq!(request_phrase("The build is green."), None);
    }
}
