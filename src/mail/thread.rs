//! Threading of follow-ups: which earlier task a message points at, and the rule for joining
//! its conversation. A message joins only when its sender is that task's sender (addresses
//! compared case-insensitively); anyone else's mail starts a task of its own, so a leaked or
//! guessed `[#id]` tag or Message-ID cannot read or steer someone else's conversation.

use crate::domain::{EarlierTask, FollowUp, FollowUpHints, InboundEmail};
use crate::mail::compose::task_tag;

/// What in `email` may point at an earlier task: its References and In-Reply-To, and the
/// `[#id]` tag of its subject.
pub fn hints(email: &InboundEmail) -> FollowUpHints {
    FollowUpHints {
        references: email.references.iter().chain(&email.in_reply_to).cloned().collect(),
        tag: task_tag(&email.subject),
    }
}

/// Whether a message from `sender` that points at `earlier` joins its conversation.
pub fn follow_up(earlier: Option<&EarlierTask>, sender: &str) -> FollowUp {
    match earlier {
        None => FollowUp::New,
        Some(e) if e.sender.eq_ignore_ascii_case(sender) => {
            FollowUp::Joins { conversation: e.conversation.unwrap_or(e.task), follows: e.task }
        }
        Some(e) => FollowUp::NotJoined { task: e.task, why: "the sender is not that task's sender".into() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn earlier(sender: &str, conversation: Option<i64>) -> EarlierTask {
        EarlierTask { task: 5, sender: sender.into(), conversation }
    }

    #[test]
    fn only_the_same_sender_joins_a_conversation() {
        assert_eq!(follow_up(None, "ann@example.org"), FollowUp::New);
        assert_eq!(
            follow_up(Some(&earlier("Ann@Example.org", None)), "ann@example.org"),
            FollowUp::Joins { conversation: 5, follows: 5 }
        );
        assert_eq!(
            follow_up(Some(&earlier("ann@example.org", Some(2))), "ann@example.org"),
            FollowUp::Joins { conversation: 2, follows: 5 },
            "a conversation is named by its first task"
        );
        assert!(matches!(
            follow_up(Some(&earlier("ann@example.org", None)), "mallory@example.org"),
            FollowUp::NotJoined { task: 5, .. }
        ));
    }
}
