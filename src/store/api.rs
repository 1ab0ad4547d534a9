//! What the API lists and changes beyond the workers' own statements: tasks by filter in pages,
//! retrying and cancelling tasks, deliveries by status, the audit log in pages.
//!
//! Pages are keyset pages, newest first for tasks (`id < cursor`) and oldest first for the audit
//! log (`seq > cursor`): rows added while a client pages through never shift the pages, so every
//! row that existed at the first page is returned exactly once.

use serde_json::json;

use super::audit::audit_from_row;
use super::error::{Result, StoreError};
use super::{DeliveryRow, Store, TaskRow};
use crate::audit::{AuditEvent, AuditRecord};
use crate::domain::{DeliveryStatus, TaskStatus};

/// Which tasks `GET /api/v1/tasks` lists; `None` means any. Times are stored RFC 3339 text.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub workflow: Option<String>,
    /// The sender's address, compared without regard to case.
    pub sender: Option<String>,
    /// Created at or after.
    pub since: Option<String>,
    /// Created at or before.
    pub until: Option<String>,
    /// Text the subject contains (case-insensitive for ASCII).
    pub subject: Option<String>,
    /// Only tasks with a smaller id (the previous page's last id).
    pub before_id: Option<i64>,
}

/// Which audit records `GET /api/v1/audit` lists.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub since: Option<String>,
    pub until: Option<String>,
    pub task: Option<i64>,
    pub action: Option<String>,
    /// Only records after this sequence number (the previous page's last one).
    pub after_seq: Option<i64>,
}

/// `%`, `_` and `\` escaped for a `LIKE ... ESCAPE '\'` pattern.
fn like_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Store {
    /// Up to `limit` tasks matching `filter`, newest first.
    pub async fn list_tasks(&self, filter: &TaskFilter, limit: i64) -> Result<Vec<TaskRow>> {
        Ok(sqlx::query_as(select_task_rows!(
            "WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR workflow = $2)
               AND ($3 IS NULL OR LOWER(sender) = $3) AND ($4 IS NULL OR created_at >= $4)
               AND ($5 IS NULL OR created_at <= $5) AND ($6 IS NULL OR LOWER(subject) LIKE $6 ESCAPE '\\')
               AND ($7 IS NULL OR id < $7)
             ORDER BY id DESC LIMIT $8"
        ))
        .bind(filter.status.map(TaskStatus::as_str))
        .bind(filter.workflow.as_deref())
        .bind(filter.sender.as_deref().map(str::to_lowercase))
        .bind(filter.since.as_deref())
        .bind(filter.until.as_deref())
        .bind(filter.subject.as_deref().map(like_pattern))
        .bind(filter.before_id)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Queues a failed task to run again from its first step with a fresh attempt budget
    /// (audited `task.retried`, with the error it failed with). Its earlier steps stay.
    ///
    /// Errors: [`StoreError::NotFound`], or [`StoreError::Conflict`] unless it is `failed`.
    pub async fn retry_task(&self, id: i64, actor: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let before: Option<(Option<String>, i64)> =
            sqlx::query_as("SELECT error, attempts FROM tasks WHERE id = $1 AND status = 'failed'")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((error, attempts)) = before else {
            drop(tx);
            return Err(self.not_in_state(id, "failed").await);
        };
        // Checked again by the update: another instance may have retried it meanwhile.
        let queued = sqlx::query(
            "UPDATE tasks SET status = 'queued', error = NULL, finished_at = NULL, lease_owner = NULL,
                              lease_until = NULL, attempts = 0, updated_at = $1
             WHERE id = $2 AND status = 'failed'",
        )
        .bind(&now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if queued == 0 {
            drop(tx);
            return Err(self.not_in_state(id, "failed").await);
        }
        let event = AuditEvent::new(actor, "task.retried", format!("task:{id}"))
            .task(id)
            .details(json!({"previous_error": error, "previous_attempts": attempts}));
        self.commit_audited(tx, vec![event]).await
    }

    /// Cancels a queued task: it never runs and nothing is sent for it (audited
    /// `task.cancelled`). A running task cannot be cancelled (its worker holds it).
    ///
    /// Errors: [`StoreError::NotFound`], or [`StoreError::Conflict`] unless it is `queued`.
    pub async fn cancel_task(&self, id: i64, actor: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let cancelled = sqlx::query(
            "UPDATE tasks SET status = 'cancelled', finished_at = $1, updated_at = $1
             WHERE id = $2 AND status = 'queued' AND (lease_until IS NULL OR lease_until < $1)",
        )
        .bind(&now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if cancelled == 0 {
            drop(tx);
            return Err(self.not_in_state(id, "queued").await);
        }
        self.commit_audited(tx, vec![AuditEvent::new(actor, "task.cancelled", format!("task:{id}")).task(id)])
            .await
    }

    /// The error for a task change refused because task `id` is missing or not `wanted`.
    async fn not_in_state(&self, id: i64, wanted: &str) -> StoreError {
        match self.task(id).await {
            Ok(Some(task)) => StoreError::Conflict(format!("task {id} is {}, not {wanted}", task.status)),
            Ok(None) => StoreError::NotFound(format!("no task {id}")),
            Err(e) => e,
        }
    }

    /// Up to `limit` deliveries in `status`, newest first, before delivery `before_id` if given.
    pub async fn deliveries_with_status(
        &self,
        status: DeliveryStatus,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>> {
        Ok(sqlx::query_as(
            "SELECT id, task_id, kind, message_id, envelope_to, status, attempts, created_at,
                    delivered_at, location, last_error
             FROM outbox WHERE status = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(status.as_str())
        .bind(before_id)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Up to `limit` audit records matching `page`, oldest first.
    pub async fn audit_page(&self, page: &AuditPage, limit: i64) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, at, actor, action, entity, task_id, details, prev_hash, hash FROM audit_log
             WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at <= $2) AND ($3 IS NULL OR task_id = $3)
               AND ($4 IS NULL OR action = $4) AND ($5 IS NULL OR seq > $5)
             ORDER BY seq LIMIT $6",
        )
        .bind(page.since.as_deref())
        .bind(page.until.as_deref())
        .bind(page.task)
        .bind(page.action.as_deref())
        .bind(page.after_seq)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.iter().map(audit_from_row).collect::<std::result::Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_patterns_match_the_text_literally() {
        assert_eq!(like_pattern("50%_Off\\"), "%50\\%\\_off\\\\%");
    }
}
