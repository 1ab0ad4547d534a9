//! Short, bounded names for why a message made no task and where it came from: what metrics
//! labels and the status page show instead of the full reason, which can name a sender.

/// The rule behind an ignored or quarantined message's reason (the texts of `mail::guard`,
/// `mail::policy`, `mail::parse` and intake), as one of a fixed set of words; `other` for a
/// reason no rule here names. Never contains an address or a subject.
pub fn reason_rule(reason: &str) -> &'static str {
    const RULES: &[(&str, &str)] = &[
        ("bulk mail", "bulk"),
        ("mailing-list", "list"),
        ("automated mail", "auto-submitted"),
        ("report or bounce", "report"),
        ("bounce or notification", "null-return-path"),
        ("bounce (", "bounce"),
        ("auto-reply", "auto-reply"),
        ("mail loop", "loop"),
        ("automated sender", "automated-sender"),
        ("no valid sender", "no-sender"),
        ("sender policy", "sender-policy"),
        ("duplicate of", "duplicate"),
        ("message is empty", "empty"),
        ("message is ", "too-large"),
        ("its encoded enclosed", "too-large"),
        ("unparseable", "unparseable"),
        ("mime nesting", "too-deep"),
        ("more than", "too-many-parts"),
    ];
    let lower = reason.trim_start().to_ascii_lowercase();
    RULES.iter().find(|(prefix, _)| lower.starts_with(prefix)).map_or("other", |(_, rule)| rule)
}

/// The kind of an intake source name: `imap` for `imap://user@host/INBOX`, `hook` for
/// `hook:orders`, `webhook` for `webhook:raw`, the name itself for `mailgun` or `cli`. Bounded
/// by the code, not by the mail: safe as a metrics label.
pub fn source_kind(name: &str) -> &'static str {
    const KINDS: &[&str] = &["imap", "hook", "api", "webhook", "mailgun", "sendgrid", "postmark", "cli"];
    let head = name.split(':').next().unwrap_or_default();
    KINDS.iter().find(|k| **k == head).copied().unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_to_rules_without_their_details() {
        for (reason, rule) in [
            ("bulk mail: Precedence: bulk", "bulk"),
            ("automated sender noreply@x.org", "automated-sender"),
            ("sender policy: ann@x.org is not in SWARM_ALLOWED_SENDERS", "sender-policy"),
            ("message is 30000000 bytes, over the limit of 25000000 bytes", "too-large"),
            ("message is empty", "empty"),
            ("MIME nesting deeper than 20 levels", "too-deep"),
            ("bounce (hard)", "bounce"),
            ("mail loop: X-Loop: swarm", "loop"),
            ("something new", "other"),
        ] {
            assert_eq!(reason_rule(reason), rule, "{reason}");
        }
    }

    #[test]
    fn source_kinds_drop_the_mailbox_and_hook_names() {
        assert_eq!(source_kind("imap://ann@mail.example:993/INBOX"), "imap");
        assert_eq!(source_kind("hook:orders"), "hook");
        assert_eq!(source_kind("webhook:raw"), "webhook");
        assert_eq!(source_kind("mailgun"), "mailgun");
        assert_eq!(source_kind("ann@x.org"), "other");
    }
}
