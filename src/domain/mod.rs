//! The floor of the crate: newtypes and enums every layer shares, the parsed [`InboundEmail`],
//! text helpers, usage figures and the [`Clock`]. Each newtype has one fallible constructor, so a
//! value that exists is a valid one ("parse, don't validate"). Imports nothing of the crate and
//! does no I/O (the system clock aside).

mod access;
mod bounce;
mod clock;
mod email;
mod followup;
mod net;
mod proxy;
mod rules;
mod text;
mod usage;

pub use access::{InvalidScopes, Scope, Scopes, new_token, parse_lifetime, token_hash, valid_token_name};
pub use bounce::{BounceNotice, BouncedDelivery};
pub use clock::{Clock, ManualClock, SystemClock};
pub use email::{Attachment, InboundEmail, Mailbox};
pub use followup::{EarlierTask, FollowUp, FollowUpHints};
pub use net::{is_loopback, redacted_url, url_host};
pub use proxy::{InvalidIpNet, IpNet, client_addr};
pub use rules::{reason_rule, source_kind};
pub use text::{one_line, truncate};
pub use usage::Usage;

use std::fmt;

use serde::{Deserialize, Serialize};

/// An addr-spec (`local@domain`, RFC 5322 §3.4.1), lower-cased domain, no display name.
///
/// Accepts what real mail carries, rejects what would break a header or an SMTP envelope:
/// empty parts, whitespace, control characters, `<>()[],;:"\` outside a quoted local part, or
/// more than 254 bytes (RFC 5321 §4.5.3.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid email address {0:?}")]
pub struct InvalidEmailAddress(pub String);

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, InvalidEmailAddress> {
        let s = input.trim();
        let bad = || InvalidEmailAddress(input.chars().take(80).collect());
        if s.len() > 254 {
            return Err(bad());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        if local.is_empty() || local.len() > 64 || domain.is_empty() {
            return Err(bad());
        }
        let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
        let local_ok = local
            .chars()
            .all(|c| !c.is_control() && (quoted || !(c.is_whitespace() || "<>()[],;:\\\"@".contains(c))));
        let domain_ok =
            domain.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_')
            }) || (domain.starts_with('[') && domain.ends_with(']') && !domain.contains(char::is_whitespace));
        if !local_ok || !domain_ok {
            return Err(bad());
        }
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `@`, lower case.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }

    /// The part before the last `@`, as written.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(l, _)| l)
    }
}

impl PartialEq<&str> for EmailAddress {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = InvalidEmailAddress;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<EmailAddress> for String {
    fn from(a: EmailAddress) -> Self {
        a.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The domain of the Message-IDs our intake mints for messages that carry none (provider fields,
/// task hooks). `.invalid` is reserved (RFC 2606 §2), so no real mail system uses it; a mail
/// arriving with such an id from elsewhere gets renamed ([`MessageId::untrusted`]).
pub const SYNTHETIC_DOMAIN: &str = "inbound.invalid";

/// A msg-id (RFC 5322 §3.6.4) stored without its angle brackets: `id-left@id-right`.
///
/// `parse` accepts the bracketed or bare form. Rejected: no `@`, empty sides, whitespace, control
/// characters, `<>` inside, or more than 250 bytes. Such ids are dropped from our threading headers
/// rather than copied into them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid Message-ID {0:?}")]
pub struct InvalidMessageId(pub String);

impl TryFrom<String> for MessageId {
    type Error = InvalidMessageId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or_else(|| InvalidMessageId(s.chars().take(80).collect()))
    }
}

impl From<MessageId> for String {
    fn from(id: MessageId) -> Self {
        id.0
    }
}

impl PartialEq<&str> for MessageId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl MessageId {
    pub fn parse(input: &str) -> Option<Self> {
        let s = input.trim();
        let s = s.strip_prefix('<').unwrap_or(s);
        let s = s.strip_suffix('>').unwrap_or(s);
        if s.is_empty() || s.len() > 250 {
            return None;
        }
        let (left, right) = s.rsplit_once('@')?;
        let clean = |part: &str| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
        };
        (clean(left) && clean(right)).then(|| Self(s.to_owned()))
    }

    /// Builds a new id for mail we send: `<unique>@<domain>`.
    pub fn generate(domain: &str) -> Self {
        let random: u128 = rand::random();
        let domain = if domain.is_empty() { "localhost" } else { domain };
        Self(format!("swarm.{:032x}@{domain}", random))
    }

    /// An id our intake mints: `<kind>.<key>@`[`SYNTHETIC_DOMAIN`]. `kind` and `key` must be
    /// plain (letters, digits, `.`, `-`, `_`); other characters become `_`.
    pub fn synthetic(kind: &str, key: &str) -> Self {
        let plain = |s: &str| -> String {
            s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
        };
        Self(truncate_id(format!("{}.{}", plain(kind), plain(key))) + "@" + SYNTHETIC_DOMAIN)
    }

    /// The id given to a message that arrived carrying a [`SYNTHETIC_DOMAIN`] id it did not get
    /// from us: `untrusted.<sha256 hex of its raw bytes>@inbound.invalid`, so it can neither
    /// take the place of a hook's or provider message's identity nor lose its own.
    pub fn untrusted(raw_sha256_hex: &str) -> Self {
        Self::synthetic("untrusted", raw_sha256_hex)
    }

    /// True for ids under [`SYNTHETIC_DOMAIN`] (any case).
    pub fn is_synthetic(&self) -> bool {
        self.domain().eq_ignore_ascii_case(SYNTHETIC_DOMAIN)
    }

    /// The bare id, without angle brackets.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The header form, `<id-left@id-right>`.
    pub fn bracketed(&self) -> String {
        format!("<{}>", self.0)
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.0)
    }
}

/// The left side of a minted id, short enough that the whole id stays within 250 bytes.
fn truncate_id(left: String) -> String {
    let max = 250 - 1 - SYNTHETIC_DOMAIN.len();
    if left.len() <= max { left } else { left[..max].to_owned() }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl From<i64> for $name {
            fn from(id: i64) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// Database id of a task; shown to users as `#<id>` in reply subjects.
    TaskId
);
id_type!(
    /// Database id of an outbox delivery.
    DeliveryId
);
id_type!(
    /// Database id of a stored inbound message.
    MessageRowId
);

/// What became of one inbound message once intake committed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Task {
        message: MessageRowId,
        task: TaskId,
    },
    /// Already received: nothing new stored; the first copy's ids (its task, if it made one).
    Duplicate {
        message: MessageRowId,
        task: Option<TaskId>,
    },
    Ignored {
        message: MessageRowId,
        reason: String,
    },
    Quarantined {
        message: MessageRowId,
        reason: String,
    },
    /// The request's nonce was seen before; nothing stored.
    Replayed,
}

impl Outcome {
    /// The one word the CLI prints.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Task { .. } => "task",
            Self::Duplicate { .. } => "duplicate",
            Self::Ignored { .. } => "ignored",
            Self::Quarantined { .. } => "quarantined",
            Self::Replayed => "replayed",
        }
    }
}

/// A stored text that names no variant of the enum it should be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{value:?} is not a {kind}")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownValue;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s).ok_or(UnknownValue { kind: stringify!($name), value: s })
            }
        }
    };
}

text_enum!(
    /// Life cycle of a task: `queued` → `running` (leased by a worker) → `done` | `failed`;
    /// `queued` → `cancelled` by an operator; `failed` → `queued` when retried.
    TaskStatus {
        Queued => "queued",
        Running => "running",
        Done => "done",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// What became of an inbound message once stored.
    MessageStatus { Accepted => "accepted", Ignored => "ignored", Quarantined => "quarantined" }
);

text_enum!(
    /// Life cycle of an outbox delivery.
    DeliveryStatus {
        Pending => "pending",
        Sending => "sending",
        Delivered => "delivered",
        Failed => "failed",
        Bounced => "bounced",
        Held => "held",
    }
);

text_enum!(
    /// How a task's workflow was chosen, stored with the task: a routing rule matched, no rule
    /// matched (the default), the director is to choose when the task runs, the director chose,
    /// the caller asked for it, or list mail opted in (`SWARM_LIST_MAIL_WORKFLOW`).
    Routing {
        Rule => "rule",
        Default => "default",
        AskDirector => "ask_director",
        Director => "director",
        Requested => "requested",
        ListMail => "list_mail",
    }
);

text_enum!(
    /// Outcome of a workflow step.
    StepStatus { Running => "running", Ok => "ok", Failed => "failed" }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_address_keeps_local_part_and_lowercases_domain() {
        let a = EmailAddress::parse(" Jane.Doe+tag@Example.COM ").expect("valid");
        assert_eq!(a.as_str(), "Jane.Doe+tag@example.com");
        assert_eq!(a.domain(), "example.com");
    }

    #[test]
    fn email_address_rejects_header_breaking_input() {
        for bad in
            ["", "no-at", "@x.org", "a@", "a b@x.org", "a@x.org\r\nBcc: e@vil", "a@x..org", "<a@x.org>"]
        {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn message_id_accepts_bracketed_and_bare_forms() {
        let id = MessageId::parse("<abc.123@mail.example.com>").expect("valid");
        assert_eq!(id.as_str(), "abc.123@mail.example.com");
        assert_eq!(id.bracketed(), "<abc.123@mail.example.com>");
        assert_eq!(MessageId::parse("abc@x").expect("valid").as_str(), "abc@x");
    }

    #[test]
    fn message_id_rejects_invalid_ids() {
        for bad in ["", "<>", "no-at-sign", "<a b@x>", "<a@>", "<@x>", "<a@x>\r\nBcc: y", "<a<b@x>"] {
            assert!(MessageId::parse(bad).is_none(), "{bad:?} accepted");
        }
        assert!(MessageId::parse(&format!("<{}@x>", "a".repeat(300))).is_none());
    }

    #[test]
    fn generated_message_ids_are_unique_and_valid() {
        let a = MessageId::generate("example.org");
        let b = MessageId::generate("example.org");
        assert_ne!(a, b);
        assert_eq!(MessageId::parse(&a.bracketed()), Some(a.clone()));
        assert_eq!(a.domain(), "example.org");
    }

    #[test]
    fn status_enums_round_trip_through_text() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(MessageStatus::parse("nope"), None);
    }
}
