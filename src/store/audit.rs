//! The audit chain's rows: appending in the caller's transaction, reading and filtering them.

use super::error::{Result, StoreError};
use futures_util::TryStreamExt;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::dialect::{Dialect, timestamp};
use chrono::{DateTime, Utc};

use super::Store;
use crate::audit::{self, AuditEvent, AuditRecord};

/// Restricts an audit export; `None` means no bound. Times are RFC 3339.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub task: Option<i64>,
}

pub(super) fn audit_from_row(row: &AnyRow) -> Result<AuditRecord, sqlx::Error> {
    let details: String = row.try_get("details")?;
    Ok(AuditRecord {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        entity: row.try_get("entity")?,
        task_id: row.try_get("task_id")?,
        // A row whose details no longer parse was altered; keep the text so the hash check names it.
        details: serde_json::from_str(&details).unwrap_or(Value::String(details)),
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Appends `events` to the audit chain inside the caller's transaction, as its last step: reads
/// (on PostgreSQL: locks) the head, computes the hashes, then writes every record and the new
/// head. The head is held for as few round trips as possible, since it serializes all writers:
/// PostgreSQL does the writes in one statement (a data-modifying CTE), SQLite in two.
pub(super) async fn append_to_chain(
    conn: &mut AnyConnection,
    dialect: Dialect,
    at: &str,
    events: Vec<AuditEvent>,
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let (mut seq, mut hash): (i64, String) =
        sqlx::query_as(dialect.chain_head()).fetch_one(&mut *conn).await?;
    const COLUMNS: usize = 9;
    let rows: Vec<String> = (0..events.len())
        .map(|r| {
            let params: Vec<String> = (1..=COLUMNS).map(|c| format!("${}", r * COLUMNS + c)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let insert = format!(
        "INSERT INTO audit_log (seq, at, actor, action, entity, task_id, details, prev_hash, hash) VALUES {}",
        rows.join(", ")
    );
    let head_params = (events.len() * COLUMNS + 1, events.len() * COLUMNS + 2);
    let sql = match dialect {
        Dialect::Postgres => format!(
            "WITH appended AS ({insert} RETURNING seq) UPDATE audit_head SET seq = ${}, hash = ${} WHERE id = 1",
            head_params.0, head_params.1
        ),
        Dialect::Sqlite => insert,
    };
    // The statement text holds only placeholders; every value is bound.
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for event in events {
        let next = seq + 1;
        let next_hash = audit::chain_hash(
            &hash,
            next,
            at,
            &event.actor,
            event.action,
            &event.entity,
            event.task_id,
            &event.details,
        );
        query = query
            .bind(next)
            .bind(at.to_owned())
            .bind(event.actor)
            .bind(event.action)
            .bind(event.entity)
            .bind(event.task_id)
            .bind(event.details.to_string())
            .bind(hash)
            .bind(next_hash.clone());
        seq = next;
        hash = next_hash;
    }
    match dialect {
        Dialect::Postgres => {
            query.bind(seq).bind(hash).execute(&mut *conn).await?;
        }
        Dialect::Sqlite => {
            query.execute(&mut *conn).await?;
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(hash)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

impl Store {
    /// Calls `each` for every audit record matching `filter`, in `seq` order, streaming.
    ///
    /// `each` may fail with its own error type; a store failure is converted into it.
    pub async fn for_each_audit<E: From<StoreError>>(
        &self,
        filter: &AuditFilter,
        mut each: impl FnMut(AuditRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let sql = "SELECT seq, at, actor, action, entity, task_id, details, prev_hash, hash
                   FROM audit_log
                   WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at <= $2) AND ($3 IS NULL OR task_id = $3)
                   ORDER BY seq";
        let mut rows = sqlx::query(sql)
            .bind(filter.since.map(timestamp))
            .bind(filter.until.map(timestamp))
            .bind(filter.task)
            .fetch(&self.reader);
        while let Some(row) = rows.try_next().await.map_err(StoreError::from)? {
            each(audit_from_row(&row).map_err(StoreError::from)?)?;
        }
        Ok(())
    }

    /// The chain head: `(seq, hash)` of the newest record.
    pub async fn audit_head(&self) -> Result<(i64, String)> {
        Ok(sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&self.reader).await?)
    }
}
