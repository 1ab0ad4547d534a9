//! What a store call can fail with, typed for the callers that branch on it: the web edge maps
//! [`StoreError::NotFound`] to 404 and [`StoreError::Conflict`] to 409, the CLI to sysexits(3)
//! exit codes (see `cli::exit_code`); everything else is an internal error, logged and never
//! shown.

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist, e.g. "no message 42".
    #[error("{0}")]
    NotFound(String),
    /// The row exists but is not in a state that allows the change, e.g. "message 42 is
    /// accepted, not quarantined".
    #[error("{0}")]
    Conflict(String),
    /// The caller's lease on the row ran out and another owner may hold it; nothing was written.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// The database failed or refused the statement.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// True when the database was too busy to take the statement in time, so a retry soon may
    /// succeed: no pool connection within the acquire timeout; SQLite `SQLITE_BUSY` or
    /// `SQLITE_LOCKED` (any extended code) after the busy timeout; PostgreSQL `55P03`
    /// lock_not_available or `57014` query_canceled (statement_timeout). The web edge answers
    /// 503 with `Retry-After` (RFC 9110 §15.6.4).
    pub fn is_busy(&self) -> bool {
        let Self::Database(e) = self else { return false };
        match e {
            sqlx::Error::PoolTimedOut => true,
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("55P03" | "57014") => true,
                Some(code) => code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6)),
                None => false,
            },
            _ => false,
        }
    }
}

/// The result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
