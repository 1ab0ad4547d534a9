//! What may make a new message the follow-up of an earlier task, and what became of it.
//! `mail::thread` holds the rule; the store records the outcome.

use super::MessageId;

/// How a message may continue an earlier task's conversation: it answers one of our replies (a
/// Message-ID in References/In-Reply-To, RFC 5322 §3.6.4) or carries a task's `[#id]` tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowUpHints {
    /// References then In-Reply-To.
    pub references: Vec<MessageId>,
    /// The `[#id]` in the subject.
    pub tag: Option<i64>,
}

/// The earlier task a message points at: the one whose reply it answers (the newest such), else
/// the one its tag names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierTask {
    pub task: i64,
    /// Its sender's address, as stored.
    pub sender: String,
    /// The first task of its conversation, when it is itself a follow-up.
    pub conversation: Option<i64>,
}

/// Whether a new task continues a conversation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FollowUp {
    /// It starts a conversation of its own.
    #[default]
    New,
    /// It joins `conversation` (its first task), answering task `follows`.
    Joins { conversation: i64, follows: i64 },
    /// It points at task `task` but may not join it, for this reason (recorded in the audit log).
    NotJoined { task: i64, why: String },
}
