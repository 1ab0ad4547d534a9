//! The HTML pages: the live status page and the task pages.
//!
//! The status page renders its live part (`status_live.html`) on the server. `/static/status.js`
//! opens `GET /events?since=<mark>` (server-sent events, the mark being the audit-log head the
//! page was rendered at) and swaps in each `update` event's HTML; every state change appends to
//! the audit log, so a new head means something changed. Without JavaScript the page refreshes
//! itself every 30 s (`<noscript><meta http-equiv="refresh">`). Each event stream ends when the
//! server shuts down, so a graceful shutdown never waits on an open page.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::Stream;
use serde_json::{Value, json};

use super::{ApiError, AppState, parse_id};
use crate::reports::task_report;
use crate::store::StepSample;

/// How often an open event stream looks for a change, and re-sends regardless (for the times).
const CHECK_EVERY: Duration = Duration::from_secs(1);
const RESEND_EVERY: u32 = 30;

/// `GET /`.
pub async fn status_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Html<String>, ApiError> {
    state.authorize(&headers).await?;
    let live = live_context(&state).await?;
    state.render("status.html", live)
}

/// The script of the status page (the CSP allows scripts from this origin only).
pub async fn status_script() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("../../templates/web/status.js"))
}

#[derive(Debug, serde::Deserialize)]
pub struct Since {
    since: Option<i64>,
}

/// `GET /events?since=MARK`: `update` events carrying the live part of the status page,
/// whenever the audit head moves past `MARK` (and every 30 s); `text/event-stream`.
pub async fn status_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Since>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    state.authorize(&headers).await?;
    // A malformed `since` gets the JSON error body like every other error.
    let Query(q) = query.map_err(|e| ApiError::new(axum::http::StatusCode::BAD_REQUEST, e.body_text()))?;
    let start = match q.since {
        Some(mark) => mark,
        None => state.store.audit_head().await?.0,
    };
    let stream = futures_util::stream::unfold((state, start), |(state, mark)| async move {
        let mut closing = state.closing.clone();
        let mut quiet = 0;
        loop {
            // A sender that is gone without a word (a state built without a server) never closes.
            let closed = async {
                if closing.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => {}
                () = closed => return None,
            }
            quiet += 1;
            let Ok((head, _)) = state.store.audit_head().await else { continue };
            if head == mark && quiet < RESEND_EVERY {
                continue;
            }
            let Ok(html) = render_live(&state).await else { continue };
            let event = Event::default().event("update").id(head.to_string()).data(html);
            return Some((Ok(event), (state, head)));
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The live part alone, as the events carry it.
async fn render_live(state: &AppState) -> Result<String, ApiError> {
    let live = live_context(state).await?;
    Ok(state.render("status_live.html", live)?.0)
}

/// Everything the live part shows.
async fn live_context(state: &AppState) -> Result<Value, ApiError> {
    let store = &state.store;
    let now = store.clock().now();
    let overview = store.overview(20).await?;
    let (mark, _) = store.audit_head().await?;
    let day_ago = (now - chrono::Duration::hours(24)).to_rfc3339_opts(SecondsFormat::Micros, true);
    let month_ago = (now - chrono::Duration::days(30)).to_rfc3339_opts(SecondsFormat::Micros, true);
    let ignored: Vec<Value> = store
        .messages_with_status(crate::domain::MessageStatus::Ignored, 20)
        .await?
        .into_iter()
        .map(|m| {
            let rule = crate::domain::reason_rule(m.reason.as_deref().unwrap_or_default());
            json!({"message": m, "rule": rule})
        })
        .collect();
    let runs = store.last_job_runs().await?;
    let jobs: Vec<Value> = crate::scheduler::JOBS
        .iter()
        .map(|j| json!({"name": j.name, "about": j.about, "last": runs.iter().find(|r| r.job == j.name)}))
        .collect();
    Ok(json!({
        "mark": mark,
        "overview": overview,
        "durations": overview.recent.iter()
            .map(|t| duration_text(t.started_at.as_deref(), t.finished_at.as_deref()))
            .collect::<Vec<_>>(),
        "suppressions": store.suppressions().await?,
        "held": store.held_deliveries(50).await?,
        "quarantined": store.quarantined(20).await?,
        "ignored": ignored,
        "jobs": jobs,
        "chart": chart(&store.tasks_per_hour(&day_ago).await?, now),
        "agents": agent_stats(&store.step_samples(&month_ago).await?),
    }))
}

pub fn duration_text(start: Option<&str>, end: Option<&str>) -> String {
    match (
        start.and_then(|s| DateTime::parse_from_rfc3339(s).ok()),
        end.and_then(|s| DateTime::parse_from_rfc3339(s).ok()),
    ) {
        (Some(s), Some(e)) => format!("{} ms", (e - s).num_milliseconds()),
        _ => String::new(),
    }
}

/// Chart height in SVG units; each of the 24 hourly bars is 20 units wide.
const CHART_HEIGHT: i64 = 80;

/// The tasks-per-hour chart of the last 24 hours, oldest hour first: each bar's hour, counts and
/// its heights in SVG units (failures drawn over the total, from the bottom).
fn chart(rows: &[(String, String, i64)], now: DateTime<Utc>) -> Value {
    let hours: Vec<String> =
        (0..24).rev().map(|h| (now - chrono::Duration::hours(h)).format("%Y-%m-%dT%H").to_string()).collect();
    let count = |hour: &str, failed: bool| -> i64 {
        rows.iter().filter(|(h, s, _)| h == hour && (!failed || s == "failed")).map(|r| r.2).sum()
    };
    let peak = hours.iter().map(|h| count(h, false)).max().unwrap_or(0).max(1);
    let bars: Vec<Value> = hours
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let (total, failed) = (count(h, false), count(h, true));
            let height = |n: i64| if n == 0 { 0 } else { (n * CHART_HEIGHT / peak).max(2) };
            json!({
                "x": i * 20, "hour": format!("{}:00", &h[11..]), "label": format!("{} {}:00 UTC", &h[..10], &h[11..]),
                "total": total, "failed": failed,
                "h": height(total), "y": CHART_HEIGHT - height(total),
                "fh": height(failed), "fy": CHART_HEIGHT - height(failed),
            })
        })
        .collect();
    json!({"bars": bars, "peak": peak, "height": CHART_HEIGHT, "total": bars.iter().map(|b| b["total"].as_i64().unwrap_or(0)).sum::<i64>()})
}

/// Per-agent statistics: runs, failure rate, p50/p95 duration (nearest rank), tokens, cost.
fn agent_stats(samples: &[StepSample]) -> Vec<Value> {
    let mut by_agent: BTreeMap<&str, Vec<&StepSample>> = BTreeMap::new();
    for s in samples {
        by_agent.entry(s.agent.as_str()).or_default().push(s);
    }
    by_agent
        .into_iter()
        .map(|(agent, steps)| {
            let mut ms: Vec<i64> = steps.iter().filter_map(|s| s.duration_ms).collect();
            ms.sort_unstable();
            let rank = |p: f64| -> i64 {
                if ms.is_empty() {
                    return 0;
                }
                let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
                ms[i]
            };
            let failed = steps.iter().filter(|s| s.status == "failed").count();
            json!({
                "agent": agent,
                "runs": steps.len(),
                "failure_rate": format!("{:.1} %", 100.0 * failed as f64 / steps.len() as f64),
                "p50_ms": rank(0.50),
                "p95_ms": rank(0.95),
                "tokens": steps.iter().map(|s| s.tokens_in.unwrap_or(0) + s.tokens_out.unwrap_or(0)).sum::<i64>(),
                "cost_usd": format!("{:.4}", (steps.iter().filter_map(|s| s.cost_usd).sum::<f64>() + 0.0)),
            })
        })
        .collect()
}

/// `GET /tasks/{id}`: the task, its steps as a timeline of stages (steps started together ran
/// in parallel), its deliveries with their ids, and the reply as text.
pub async fn task_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Html<String>, ApiError> {
    state.authorize(&headers).await?;
    let id = parse_id(&id)?;
    let report = task_report(&state.store, id).await?;
    let mut report =
        report.ok_or_else(|| ApiError::new(axum::http::StatusCode::NOT_FOUND, format!("no task {id}")))?;
    let raw = report["reply"].as_str().map(str::to_owned);
    report["reply_text"] = json!(raw.as_deref().filter(|r| !r.is_empty()).map(reply_text));
    report["stages"] = stages(report["steps"].as_array().map(Vec::as_slice).unwrap_or_default());
    state.render("task.html", report)
}

/// A stored reply (RFC 5322) as a person reads it: the headers that matter, then the text part.
fn reply_text(raw: &str) -> Value {
    match mail_parser::MessageParser::default().parse(raw.as_bytes()) {
        Some(m) => json!({
            "subject": m.subject(),
            "to": m.to().and_then(|a| a.first()).and_then(|a| a.address()),
            "date": m.date().map(|d| d.to_rfc3339()),
            "text": m.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
        }),
        None => json!({"text": raw}),
    }
}

/// Steps grouped into stages: consecutive steps of one attempt started at the same time.
fn stages(steps: &[Value]) -> Value {
    let mut out: Vec<Value> = Vec::new();
    for step in steps {
        let key = (step["attempt"].clone(), step["started_at"].clone());
        match out.last_mut() {
            Some(stage) if (stage["attempt"].clone(), stage["started_at"].clone()) == key => {
                if let Some(list) = stage["steps"].as_array_mut() {
                    list.push(step.clone());
                }
            }
            _ => out.push(json!({"attempt": key.0, "started_at": key.1, "steps": [step]})),
        }
    }
    for stage in &mut out {
        let longest =
            stage["steps"].as_array().into_iter().flatten().filter_map(|s| s["duration_ms"].as_i64()).max();
        stage["duration_ms"] = json!(longest.unwrap_or(0));
        stage["parallel"] = json!(stage["steps"].as_array().is_some_and(|s| s.len() > 1));
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<StepSample> = (1..=100)
            .map(|i| StepSample {
                agent: "triage".into(),
                status: if i % 10 == 0 { "failed".into() } else { "ok".into() },
                duration_ms: Some(i),
                tokens_in: None,
                tokens_out: None,
                cost_usd: None,
            })
            .collect();
        let stats = agent_stats(&samples);
        assert_eq!(stats[0]["runs"], 100);
        assert_eq!(stats[0]["p50_ms"], 50);
        assert_eq!(stats[0]["p95_ms"], 95);
        assert_eq!(stats[0]["failure_rate"], "10.0 %");
    }

    #[test]
    fn steps_started_together_form_one_parallel_stage() {
        let step = |p: i64, at: &str, ms: i64| json!({"position": p, "attempt": 1, "started_at": at, "duration_ms": ms});
        let stages = stages(&[step(0, "t1", 5), step(1, "t2", 7), step(2, "t2", 9), step(3, "t3", 1)]);
        let sizes: Vec<usize> = stages
            .as_array()
            .expect("list")
            .iter()
            .map(|s| s["steps"].as_array().map_or(0, Vec::len))
            .collect();
        assert_eq!(sizes, [1, 2, 1]);
        assert_eq!(stages[1]["parallel"], true);
        assert_eq!(stages[1]["duration_ms"], 9);
    }

    #[test]
    fn the_chart_has_24_hours_with_failures_over_totals() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T10:30:00Z").expect("time").to_utc();
        let rows =
            vec![("2026-12-04T10".into(), "done".into(), 3), ("2026-12-04T10".into(), "failed".into(), 1)];
        let c = chart(&rows, now);
        let bars = c["bars"].as_array().expect("bars");
        assert_eq!(bars.len(), 24);
        let last = &bars[23];
        assert_eq!((last["total"].as_i64(), last["failed"].as_i64()), (Some(4), Some(1)));
        assert_eq!(last["h"], CHART_HEIGHT);
        assert_eq!(last["fh"], CHART_HEIGHT / 4);
        assert_eq!(bars[0]["total"], 0);
    }
}
