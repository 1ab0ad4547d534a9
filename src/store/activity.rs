//! What the live status page lists beyond the counts: held replies, tasks per hour, and the
//! step samples behind the per-agent statistics.

use serde::Serialize;
use sqlx::FromRow;

use super::error::Result;
use super::{DeliveryRow, Store};

/// One finished step, for the per-agent statistics.
#[derive(Debug, Clone, FromRow, Serialize)]
pub struct StepSample {
    pub agent: String,
    /// `ok` or `failed`.
    pub status: String,
    pub duration_ms: Option<i64>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub cost_usd: Option<f64>,
}

impl Store {
    /// Replies a reply cap held until a person releases them (`outbox release ID`), oldest first.
    pub async fn held_deliveries(&self, limit: i64) -> Result<Vec<DeliveryRow>> {
        Ok(sqlx::query_as(
            "SELECT id, task_id, kind, message_id, envelope_to, status, attempts, created_at, delivered_at,
                    location, last_error
             FROM outbox WHERE status = 'held' ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }

    /// `(hour, status, count)` of tasks created at or after `since` (RFC 3339), the hour as its
    /// first 13 characters (`2026-12-04T02`).
    pub async fn tasks_per_hour(&self, since: &str) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT SUBSTR(created_at, 1, 13) AS hour, status, COUNT(*) FROM tasks
             WHERE created_at >= $1 GROUP BY SUBSTR(created_at, 1, 13), status",
        )
        .bind(since)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Every finished step started at or after `since`, for statistics by agent.
    pub async fn step_samples(&self, since: &str) -> Result<Vec<StepSample>> {
        Ok(sqlx::query_as(
            "SELECT agent, status, duration_ms, tokens_in, tokens_out, cost_usd FROM task_steps
             WHERE started_at >= $1 AND status IN ('ok', 'failed')",
        )
        .bind(since)
        .fetch_all(&self.reader)
        .await?)
    }
}
