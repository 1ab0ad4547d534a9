//! Enclosed messages (`message/rfc822`, `message/global`, and the parts of a `multipart/digest`,
//! which are `message/rfc822` by default, RFC 2046 §5.1.5), checked before mail-parser builds
//! them.
//!
//! mail-parser nests each enclosed message inside its parent without limit, decodes base64 and
//! quoted-printable ones three levels down, and builds and drops that structure recursively
//! (1-3 KiB of stack per level): 100,000 nested digests, or 10,000 enclosed messages hidden in
//! one base64 part, overflow the stack and abort the process. [`check`] walks a copy of the
//! message in which those type names are renamed (`message` → `xessage`, `digest` → `xigest`),
//! so mail-parser keeps every enclosed message as one flat leaf; it parses each enclosed message
//! itself, one level at a time, and refuses the message past the depth, part, enclosed-message
//! or decoded-size limit. Only a message that passes is given to mail-parser as it is.

use std::borrow::Cow;

use mail_parser::{Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// Most enclosed messages one message may hold, at any depth.
pub const MAX_ENCLOSED: usize = 256;

/// What [`check`] allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest nesting of parts, enclosed messages counted as a level each (as `max_depth` of
    /// `mail::parse::Limits`).
    pub max_depth: usize,
    /// Most parts, those of enclosed messages included.
    pub max_parts: usize,
    /// Most bytes decoded from base64 or quoted-printable enclosed messages, all together.
    pub max_decoded: usize,
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    TooDeep,
    TooManyParts(usize),
    TooManyEnclosed,
    /// The decoded enclosed messages came to this many bytes, over `max_decoded`.
    DecodedTooLarge(usize),
}

/// Checks the enclosed messages of `raw` against `limits`; `Ok` when it has none (the common
/// case costs one scan for the type names).
pub fn check(raw: &[u8], limits: Limits) -> Result<(), Refusal> {
    if !may_enclose(raw) {
        return Ok(());
    }
    let mut walk = Walk { limits, parts: 0, enclosed: 0, decoded: 0 };
    walk.message(&rename_types(raw), 1)
}

/// True when `raw` has something mail-parser could take for an enclosed message's type:
/// `message/rfc822`, `message/global` or `multipart/digest`'s `/digest`, any case, whitespace and
/// line folds allowed around the `/`, and any comment next to it counted as a match. Over-eager
/// on purpose (a false positive only costs the walk); anchored on `/`, which plain text has few of.
fn may_enclose(raw: &[u8]) -> bool {
    let starts_with =
        |s: &[u8], word: &[u8]| s.len() >= word.len() && s[..word.len()].eq_ignore_ascii_case(word);
    raw.iter().enumerate().filter(|(_, b)| **b == b'/').any(|(at, _)| {
        let before = raw[..at].trim_ascii_end();
        let after = raw[at + 1..].trim_ascii_start();
        let after = &after[..after.len().min(8)];
        let message = before.ends_with(b")")
            || (before.len() >= 7 && before[before.len() - 7..].eq_ignore_ascii_case(b"message"));
        (message
            && (starts_with(after, b"rfc822") || starts_with(after, b"global") || starts_with(after, b"(")))
            || starts_with(after, b"digest")
    })
}

/// A copy of `raw` in which every `message` and `digest` (any case) starts with `x` instead.
fn rename_types(raw: &[u8]) -> Vec<u8> {
    let mut out = raw.to_vec();
    let mut at = 0;
    while at < out.len() {
        let word: &[u8] = match out[at] | 0x20 {
            b'm' => b"message",
            b'd' => b"digest",
            _ => {
                at += 1;
                continue;
            }
        };
        if out.len() - at >= word.len() && out[at..at + word.len()].eq_ignore_ascii_case(word) {
            out[at] = b'x';
            at += word.len();
        } else {
            at += 1;
        }
    }
    out
}

fn is_type(part: &MessagePart<'_>, ctype: &str, subtypes: &[&str]) -> bool {
    part.content_type().is_some_and(|t| {
        t.ctype().eq_ignore_ascii_case(ctype)
            && t.subtype().is_some_and(|s| subtypes.iter().any(|want| s.eq_ignore_ascii_case(want)))
    })
}

struct Walk {
    limits: Limits,
    parts: usize,
    enclosed: usize,
    decoded: usize,
}

impl Walk {
    /// Parses one (renamed) message and walks it from its root part at `depth`.
    fn message(&mut self, renamed: &[u8], depth: usize) -> Result<(), Refusal> {
        match MessageParser::default().parse(renamed) {
            Some(message) => self.part(&message, 0, depth, false),
            None => Ok(()),
        }
    }

    fn part(&mut self, message: &Message<'_>, id: u32, depth: usize, in_digest: bool) -> Result<(), Refusal> {
        if depth > self.limits.max_depth {
            return Err(Refusal::TooDeep);
        }
        self.parts += 1;
        if self.parts > self.limits.max_parts {
            return Err(Refusal::TooManyParts(self.parts));
        }
        let Some(part) = message.part(id) else { return Ok(()) };
        let enclosed =
            is_type(part, "xessage", &["rfc822", "global"]) || (in_digest && part.content_type().is_none());
        match &part.body {
            PartType::Multipart(children) => {
                let digest = is_type(part, "multipart", &["xigest"]);
                for &child in children {
                    self.part(message, child, depth + 1, digest)?;
                }
                Ok(())
            }
            PartType::Message(inner) => self.part(inner, 0, depth + 1, false),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) if enclosed => {
                self.enclosed_message(bytes, matches!(bytes, Cow::Owned(_)), depth)
            }
            PartType::Text(text) | PartType::Html(text) if enclosed => {
                self.enclosed_message(text.as_bytes(), matches!(text, Cow::Owned(_)), depth)
            }
            _ => Ok(()),
        }
    }

    /// An enclosed message whose part is at `depth`: its root goes one level deeper. Bytes
    /// still borrowed from the parsed buffer are renamed already; `decoded` ones (transfer
    /// encoding or charset) are new and are renamed here.
    fn enclosed_message(&mut self, bytes: &[u8], decoded: bool, depth: usize) -> Result<(), Refusal> {
        self.enclosed += 1;
        if self.enclosed > MAX_ENCLOSED {
            return Err(Refusal::TooManyEnclosed);
        }
        if !decoded {
            return self.message(bytes, depth + 1);
        }
        self.decoded += bytes.len();
        if self.decoded > self.limits.max_decoded {
            return Err(Refusal::DecodedTooLarge(self.decoded));
        }
        self.message(&rename_types(bytes), depth + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_depth: 20, max_parts: 2_000, max_decoded: 25 * 1024 * 1024 };

    /// `innermost` enclosed base64-encoded in `levels` messages, each a `message/rfc822` part
    /// of a `multipart/mixed`.
    fn base64_nested(levels: usize, innermost: &str) -> Vec<u8> {
        use base64::Engine;
        let mut raw = innermost.as_bytes().to_vec();
        for level in 1..=levels {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&raw);
            let lines: Vec<&str> =
                encoded.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
            raw = format!(
                "From: a@x.org\r\nSubject: level {level}\r\nMIME-Version: 1.0\r\n\
                 Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
                 see attached\r\n--b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n\
                 {}\r\n--b--\r\n",
                lines.join("\r\n")
            )
            .into_bytes();
        }
        raw
    }

    /// A message enclosing `n` messages, each inside the last, unencoded.
    fn enclosing(n: usize) -> String {
        format!("From: a@x.org\r\n{}", "Content-Type: message/rfc822\r\n\r\nFrom: b@x.org\r\n".repeat(n))
    }

    /// `n` digests, each the only (default message/rfc822) part of the last.
    fn digests(n: usize) -> String {
        let mut raw = String::from("From: a@x.org\r\n");
        for i in 0..n {
            raw.push_str(&format!(
                "Content-Type: multipart/digest; boundary=\"d{i}\"\r\n\r\n--d{i}\r\n\r\nFrom: b@x.org\r\n"
            ));
        }
        raw
    }

    #[test]
    fn plain_mail_is_not_walked() {
        assert!(!may_enclose(b"From: a@x.org\r\nMessage-ID: <a@x>\r\n\r\nThis message is a digest of news."));
        assert!(!may_enclose(b"Content-Type: message/delivery-status\r\n\r\nsee https://x.org/a"));
        assert!(may_enclose(b"Content-Type: Message /\r\n rfc822"));
        assert!(may_enclose(b"Content-Type: message/(comment)global"));
        assert!(may_enclose(b"Content-Type: multipart/ DIGEST; boundary=x"));
    }

    #[test]
    fn encoded_nesting_counts_toward_the_depth_limit() {
        let plain = "From: a@x.org\r\nSubject: level 0\r\n\r\nhi\r\n";
        // Each level adds two (the multipart and the enclosed message): 12 levels are 25 deep.
        assert_eq!(check(&base64_nested(12, plain), LIMITS), Err(Refusal::TooDeep));
        assert_eq!(check(&base64_nested(4, plain), LIMITS), Ok(()));
    }

    #[test]
    fn enclosed_messages_hidden_by_an_encoding_are_counted() {
        let flat: String = (0..MAX_ENCLOSED + 1)
            .map(|_| "--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@x.org\r\n\r\nhi\r\n")
            .collect();
        let many =
            format!("From: a@x.org\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n{flat}--b--\r\n");
        assert_eq!(check(&base64_nested(1, &many), LIMITS), Err(Refusal::TooManyEnclosed));
        assert_eq!(check(&base64_nested(1, &enclosing(10_000)), LIMITS), Err(Refusal::TooDeep));
    }

    #[test]
    fn digest_parts_are_enclosed_messages_by_default() {
        assert_eq!(check(digests(100_000).as_bytes(), LIMITS), Err(Refusal::TooDeep));
        assert_eq!(check(digests(3).as_bytes(), LIMITS), Ok(()));
    }

    #[test]
    fn decoded_bytes_are_bounded() {
        let small = Limits { max_decoded: 1_000, ..LIMITS };
        let body = format!("From: a@x.org\r\n\r\n{}\r\n", "x".repeat(5_000));
        assert!(matches!(check(&base64_nested(1, &body), small), Err(Refusal::DecodedTooLarge(_))));
    }
}
