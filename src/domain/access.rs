//! API access: the scopes a token grants and the tokens themselves. A token is shown once, when
//! it is made; only its SHA-256 is stored, so the database never holds a usable credential.

use std::fmt;

use sha2::{Digest, Sha256};

/// What a token may do. `read` sees everything that shows mail content (tasks, messages,
/// deliveries, the audit log, the pages); `operate` retries, cancels, releases, reprocesses
/// and creates tasks; `approve` decides held drafts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Read,
    Operate,
    Approve,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Operate, Scope::Approve];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Operate => "operate",
            Scope::Approve => "approve",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes, written `read,operate` (sorted, no duplicates).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidScopes {
    #[error("unknown scope {0:?}; scopes are read, operate and approve")]
    Unknown(String),
    #[error("a token needs at least one scope (read, operate, approve)")]
    Empty,
}

impl Scopes {
    pub const ALL: Scopes = Scopes(0b111);

    fn bit(scope: Scope) -> u8 {
        1 << (scope as u8)
    }

    /// Parses `read,operate,approve` (any order, spaces allowed).
    ///
    /// Errors: an unknown word, or no scope at all.
    pub fn parse(list: &str) -> Result<Self, InvalidScopes> {
        let mut bits = 0;
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let scope = Scope::ALL
                .into_iter()
                .find(|s| s.as_str().eq_ignore_ascii_case(word))
                .ok_or_else(|| InvalidScopes::Unknown(word.to_owned()))?;
            bits |= Self::bit(scope);
        }
        if bits == 0 { Err(InvalidScopes::Empty) } else { Ok(Self(bits)) }
    }

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & Self::bit(scope) != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&words.join(","))
    }
}

/// Token names: 1-64 of `a-z`, `0-9`, `-`, `_` (they appear in audit actors and URLs).
pub fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Prefix of every API token, so a leaked one is recognisable (secret scanners).
pub const TOKEN_PREFIX: &str = "sdt_";

/// A new token: `sdt_` and 43 characters of base64url (32 random bytes).
pub fn new_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What the database keeps of a token: the lower-case hex SHA-256 of its text.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A lifetime such as `90d`, `12h`, `30m` or `3600s`, in seconds.
///
/// Errors: a missing or unknown unit, a zero or unparsable number.
pub fn parse_lifetime(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a lifetime like 90d, 12h or 30m"))?;
    let unit = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(format!("{text:?}: the unit must be d, h, m or s")),
    };
    if n == 0 {
        return Err("a lifetime must be longer than zero".into());
    }
    n.checked_mul(unit).ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print_sorted() {
        let s = Scopes::parse("approve, read").expect("valid");
        assert_eq!(s.to_string(), "read,approve");
        assert!(s.contains(Scope::Read) && !s.contains(Scope::Operate));
        assert_eq!(Scopes::ALL.to_string(), "read,operate,approve");
        assert_eq!(Scopes::parse("read,write"), Err(InvalidScopes::Unknown("write".into())));
        assert_eq!(Scopes::parse(" , "), Err(InvalidScopes::Empty));
    }

    #[test]
    fn tokens_are_long_random_and_stored_as_hashes() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 43, "{a}");
        assert_eq!(token_hash(&a).len(), 64);
        assert!(!token_hash(&a).contains(&a[4..]));
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("90d"), Ok(90 * 86_400));
        assert_eq!(parse_lifetime("12h"), Ok(43_200));
        assert!(parse_lifetime("0d").is_err());
        assert!(parse_lifetime("5 weeks").is_err());
        assert!(parse_lifetime("d").is_err());
    }

    #[test]
    fn token_names() {
        assert!(valid_token_name("crm-prod_2"));
        assert!(!valid_token_name("CRM") && !valid_token_name("") && !valid_token_name("a.b"));
    }
}
