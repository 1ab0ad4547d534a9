//! What a delivery failure report means for our outbox, in the words the audit log and the
//! suppression list use. The report itself is read by `mail::bounce`.

use serde::Serialize;

/// A bounce as the store applies it: which of our messages it returns, and what follows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BounceNotice {
    /// Message-IDs of the returned message (bare), most specific first.
    pub original_message_ids: Vec<String>,
    /// The recipient that failed, when the report names one.
    pub recipient: Option<String>,
    /// `hard 5.1.1` / `soft 4.2.2` / `soft (no status)`.
    pub kind: String,
    /// What the delivery row records: the kind, and the remote server's words when given.
    pub detail: String,
    /// Put the recipient on the suppression list: a permanent failure (RFC 3463 class 5).
    pub suppress: bool,
}

/// The outbox delivery a bounce was matched to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BouncedDelivery {
    pub id: i64,
    pub task_id: Option<i64>,
    pub envelope_to: String,
}

impl BounceNotice {
    /// The stored message's reason: what it bounced, or that it names none of our replies.
    pub fn reason(&self, delivery: Option<&BouncedDelivery>) -> String {
        match delivery {
            Some(d) => format!(
                "bounce ({}) of our reply to {} (delivery {}{})",
                self.kind,
                d.envelope_to,
                d.id,
                d.task_id.map(|t| format!(", task {t}")).unwrap_or_default()
            ),
            None => format!("bounce ({}) of a message that is not one of our replies", self.kind),
        }
    }

    /// The suppression list's reason for the recipient of a hard bounce.
    pub fn suppression_reason(&self) -> String {
        format!("hard bounce {}", self.detail)
    }
}
