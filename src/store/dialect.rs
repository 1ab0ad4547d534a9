//! The few statements that differ between SQLite and PostgreSQL, and the time format every
//! timestamp column uses (RFC 3339 UTC with microseconds, so text order is time order).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Formats a time the way every table stores it: RFC 3339, UTC, microseconds, `Z`.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// `d` after `now`; absurdly long durations (a mistyped setting) clamp to the last second of
/// year 9999, which still sorts correctly as text.
pub(super) fn later(now: DateTime<Utc>, d: Duration) -> String {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .filter(|t| t.timestamp() < 253_402_300_800)
        .map(timestamp)
        .unwrap_or_else(|| "9999-12-31T23:59:59.999999Z".to_owned())
}

/// Which SQL dialect a store speaks; private to this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Opens a write transaction. SQLite takes the write lock up front, so another process waits
    /// (busy timeout) instead of failing on a read-to-write upgrade.
    pub(super) fn begin(self) -> &'static str {
        match self {
            Self::Sqlite => "BEGIN IMMEDIATE",
            Self::Postgres => "BEGIN",
        }
    }

    /// Reads the audit chain head, locking it until commit on PostgreSQL.
    pub(super) fn chain_head(self) -> &'static str {
        match self {
            Self::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
            Self::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        }
    }

    /// Claims the oldest queued task, or one whose lease expired.
    pub(super) fn claim_task(self) -> &'static str {
        match self {
            Self::Sqlite => CLAIM_TASK_SQLITE,
            Self::Postgres => CLAIM_TASK_POSTGRES,
        }
    }

    /// Claims the next due delivery, or one whose lease expired.
    pub(super) fn claim_delivery(self) -> &'static str {
        match self {
            Self::Sqlite => CLAIM_DELIVERY_SQLITE,
            Self::Postgres => CLAIM_DELIVERY_POSTGRES,
        }
    }
}

// The claims differ only in the lock clause of the subquery; SQLite's single writer makes the
// UPDATE atomic already, PostgreSQL needs SKIP LOCKED so concurrent instances take different rows.
// NO KEY UPDATE (not UPDATE): the row's key never changes, and the weaker lock does not block the
// KEY SHARE locks that foreign-key checks take when the previous owner still writes its steps.
const CLAIM_TASK_SQLITE: &str = "UPDATE tasks
     SET status = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1,
         started_at = COALESCE(started_at, $3), updated_at = $3
     WHERE id = (SELECT id FROM tasks
                 WHERE status = 'queued' OR (status = 'running' AND lease_until < $3)
                 ORDER BY id LIMIT 1)
     RETURNING id, attempts, created_at, workflow, routing, sender, reply_to, subject, input, conversation_id";

const CLAIM_TASK_POSTGRES: &str = "UPDATE tasks
     SET status = 'running', lease_owner = $1, lease_until = $2, attempts = attempts + 1,
         started_at = COALESCE(started_at, $3), updated_at = $3
     WHERE id = (SELECT id FROM tasks
                 WHERE status = 'queued' OR (status = 'running' AND lease_until < $3)
                 ORDER BY id LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED)
     RETURNING id, attempts, created_at, workflow, routing, sender, reply_to, subject, input, conversation_id";

const CLAIM_DELIVERY_SQLITE: &str = "UPDATE outbox
     SET status = 'sending', lease_owner = $1, lease_until = $2, attempts = attempts + 1
     WHERE id = (SELECT id FROM outbox
                 WHERE (status = 'pending' AND next_attempt_at <= $3)
                    OR (status = 'sending' AND lease_until < $3)
                 ORDER BY next_attempt_at, id LIMIT 1)
     RETURNING id, task_id, message_id, envelope_from, envelope_to, payload, attempts, thread_key, cap_exempt";

const CLAIM_DELIVERY_POSTGRES: &str = "UPDATE outbox
     SET status = 'sending', lease_owner = $1, lease_until = $2, attempts = attempts + 1
     WHERE id = (SELECT id FROM outbox
                 WHERE (status = 'pending' AND next_attempt_at <= $3)
                    OR (status = 'sending' AND lease_until < $3)
                 ORDER BY next_attempt_at, id LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED)
     RETURNING id, task_id, message_id, envelope_from, envelope_to, payload, attempts, thread_key, cap_exempt";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_of_any_length_give_sortable_times() {
        let now = Utc::now();
        assert!(later(now, Duration::from_secs(60)) > timestamp(now));
        assert_eq!(later(now, Duration::from_secs(u64::MAX)), "9999-12-31T23:59:59.999999Z");
        assert!(
            later(now, Duration::from_secs(u64::MAX))
                > later(now, Duration::from_secs(3600 * 24 * 365 * 100))
        );
    }
}
