//! Read-only reports the web pages, the API and the CLI share: a task with its steps, reply,
//! deliveries and delivery attempts; one line about what became of an ingested message; the
//! time bounds of audit queries.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::audit::ChainVerifier;
use crate::domain::{DeliveryStatus, Outcome};
use crate::store::{AuditFilter, Result, Store, StoreError};

/// Task `id` as JSON: `{task, llm, steps, reply, deliveries, delivery_attempts}`; `None` when
/// there is no such task. `llm` sums tokens and cost over every step of every attempt.
pub async fn task_report(store: &Store, id: i64) -> Result<Option<Value>> {
    let Some(task) = store.task(id).await? else { return Ok(None) };
    let steps = store.task_steps(id).await?;
    let deliveries = store.task_deliveries(id).await?;
    let reply = store.task_reply(id).await?.map(|b| String::from_utf8_lossy(&b).into_owned());
    // Every delivery attempt and its outcome, from the audit log.
    let mut delivery_attempts = Vec::new();
    store
        .for_each_audit(&AuditFilter { task: Some(id), ..AuditFilter::default() }, |r| {
            if r.action.starts_with("delivery.") {
                delivery_attempts.push(json!({"at": r.at, "action": r.action, "details": r.details}));
            }
            Ok::<_, StoreError>(())
        })
        .await?;
    let llm = json!({
        "tokens_in": steps.iter().filter_map(|s| s.tokens_in).sum::<i64>(),
        "tokens_out": steps.iter().filter_map(|s| s.tokens_out).sum::<i64>(),
        "cost_usd": (steps.iter().filter_map(|s| s.cost_usd).sum::<f64>() + 0.0),
        "llm_steps": steps.iter().filter(|s| s.model.is_some()).count(),
    });
    Ok(Some(json!({
        "task": task,
        "llm": llm,
        "steps": steps,
        "reply": reply,
        "deliveries": deliveries,
        "delivery_attempts": delivery_attempts,
    })))
}

/// What became of one message, on one line: `task=7 status=done reply=<where>`,
/// `duplicate_of_task=3`, `message=9 reason=<why>`, `replayed`.
pub async fn outcome_details(store: &Store, outcome: &Outcome) -> Result<String> {
    Ok(match outcome {
        Outcome::Task { task, .. } => {
            let status = store.task(task.0).await?.map_or("", |t| t.status.as_str());
            let delivery = store.task_deliveries(task.0).await?.into_iter().next();
            let reply = match delivery {
                Some(d) if d.status == DeliveryStatus::Delivered => {
                    format!("reply={}", d.location.unwrap_or_default())
                }
                Some(d) => format!("reply={} ({})", d.status, d.last_error.unwrap_or_default()),
                None => "reply=none".into(),
            };
            format!("task={task} status={status} {reply}")
        }
        Outcome::Duplicate { task, message } => match task {
            Some(t) => format!("duplicate_of_task={t}"),
            None => format!("duplicate_of_message={message}"),
        },
        Outcome::Ignored { message, reason } => format!("message={message} reason={reason}"),
        Outcome::Quarantined { message, reason } => format!("message={message} reason={reason}"),
        Outcome::Replayed => "replayed".into(),
    })
}

/// Walks the whole audit chain and checks it against its head: `Ok(Ok(records))` when intact,
/// `Ok(Err(what))` naming the first bad record, `Err` when the database cannot be read.
pub async fn verify_audit(store: &Store) -> Result<Result<u64, String>> {
    let mut verifier = ChainVerifier::default();
    let mut broken = None;
    store
        .for_each_audit(&AuditFilter::default(), |r| {
            if broken.is_none() {
                broken = verifier.push(&r).err();
            }
            Ok::<_, StoreError>(())
        })
        .await?;
    let (head_seq, head_hash) = store.audit_head().await?;
    Ok(match broken {
        Some(e) => Err(e.to_string()),
        None => verifier.finish(head_seq, &head_hash).map_err(|e| e.to_string()),
    })
}

/// The audit report of task `id` as a PDF (see [`crate::audit::export::pdf_report`]): the
/// task's head lines, whether the whole chain verifies as of now, and every record of the
/// task with its hashes. `None` when there is no such task.
pub async fn task_audit_pdf(store: &Store, id: i64, generated: DateTime<Utc>) -> Result<Option<Vec<u8>>> {
    let Some(task) = store.task(id).await? else { return Ok(None) };
    let mut records = Vec::new();
    store
        .for_each_audit(&AuditFilter { task: Some(id), ..AuditFilter::default() }, |r| {
            records.push(r);
            Ok::<_, StoreError>(())
        })
        .await?;
    let (head_seq, head_hash) = store.audit_head().await?;
    let chain = match verify_audit(store).await? {
        Ok(n) => format!("intact: {n} records verified up to the head"),
        Err(e) => format!("BROKEN: {e}"),
    };
    let head = crate::audit::export::ReportHead {
        title: format!("SwarmDirector audit report - task #{id}: {}", task.subject),
        lines: vec![
            format!("sender:     {}", task.sender),
            format!("workflow:   {}", task.workflow),
            format!("status:     {}", task.status),
            format!("created:    {}", task.created_at),
            format!("finished:   {}", task.finished_at.as_deref().unwrap_or("-")),
            format!("generated:  {}", generated.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            format!("chain head: seq {head_seq}, hash {head_hash}"),
            format!("chain:      {chain}"),
            "Each record's hash is SHA-256 over the previous hash and the record's canonical JSON;".into(),
            "`swarm-director audit verify` checks the whole chain.".into(),
        ],
    };
    Ok(Some(crate::audit::export::pdf_report(&head, &records)))
}

/// An optional RFC 3339 bound of an audit query (`since`, `until`); the error names `name`.
pub fn parse_bound(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, String> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|d| d.to_utc())
                .map_err(|_| format!("{name} must be an RFC 3339 time, e.g. 2026-11-22T00:00:00Z"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_bounds_are_rfc3339_times() {
        assert_eq!(parse_bound("since", None), Ok(None));
        assert!(parse_bound("since", Some("2026-11-22T00:00:00Z")).is_ok_and(|b| b.is_some()));
        let err = parse_bound("until", Some("yesterday")).expect_err("not a time");
        assert!(err.starts_with("until must be an RFC 3339 time"), "{err}");
    }
}
