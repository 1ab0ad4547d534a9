//! `GET /metrics`: Prometheus text exposition format 0.0.4, from the `metrics` crate's global
//! recorder (`metrics-exporter-prometheus`). Counters and histograms are recorded where things
//! happen (intake, steps, LLM calls, deliveries, HTTP requests); the gauges that describe the
//! shared database (tasks, deliveries, mailboxes) and this process (the LLM breaker) are read
//! when scraped, so every instance reports the same database figures.
//!
//! No label carries a sender, a subject or an address: sources are kinds (`imap`, `hook`),
//! reasons are rules ([`crate::domain::reason_rule`]), mailboxes are `host:port/folder`, routes
//! are axum's route templates (`/tasks/{id}`).

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::DateTime;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::{ApiError, AppState};
use crate::agents::llm::breaker::BreakerState;
use crate::domain::{DeliveryStatus, TaskStatus};

/// Bucket bounds (seconds) of every `*_seconds` histogram: 5 ms to 10 min.
const BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// The process's recorder, installed on first use. When another recorder was installed first
/// (an embedding program's), ours still renders, with only the scrape-time gauges in it.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed: /metrics shows gauges only");
        }
        describe();
        metrics::gauge!("swarm_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        handle
    })
}

/// The help text of every metric.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!("swarm_build_info", "Always 1; the version label names this build");
    describe_counter!(
        "swarm_messages_received_total",
        "Inbound messages committed, by source kind and outcome"
    );
    describe_counter!(
        "swarm_messages_ignored_total",
        "Messages that made no task, by the rule that ignored them"
    );
    describe_counter!("swarm_messages_quarantined_total", "Messages kept unparsed, by the rule");
    describe_counter!(
        "swarm_inbound_rejections_total",
        "Intake requests answered 4xx/5xx, by endpoint and status"
    );
    describe_gauge!("swarm_tasks", "Tasks in the database, by workflow and status");
    describe_histogram!("swarm_task_duration_seconds", "Time a worker ran a task, by workflow and outcome");
    describe_histogram!("swarm_step_duration_seconds", "Time an agent step took, by agent and outcome");
    describe_counter!("swarm_llm_calls_total", "HTTP calls to the LLM endpoint, by model and outcome");
    describe_counter!("swarm_llm_tokens_total", "LLM tokens, by model and kind (input, output)");
    describe_gauge!("swarm_llm_cost_usd_total", "LLM cost in USD spent by this process, by model");
    describe_gauge!("swarm_llm_breaker_state", "LLM circuit breaker: 0 closed, 1 half-open, 2 open");
    describe_gauge!("swarm_outbox_backlog", "Deliveries waiting to be sent (pending or sending)");
    describe_gauge!("swarm_deliveries", "Deliveries in the database, by status");
    describe_counter!("swarm_delivery_attempts_total", "Delivery attempts by this process, by result");
    describe_gauge!("swarm_imap_last_success_timestamp_seconds", "Unix time of a mailbox's last good poll");
    describe_gauge!("swarm_imap_consecutive_errors", "Failed polls of a mailbox since its last good one");
    describe_counter!("swarm_http_requests_total", "HTTP requests answered, by route, method and status");
    describe_histogram!("swarm_http_request_duration_seconds", "HTTP request latency, by route");
}

/// A mailbox key (`imap://user@host:port/Folder`) without its user: `host:port/Folder`.
pub fn mailbox_label(key: &str) -> String {
    match url::Url::parse(key) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or_default(),
            percent_encoding::percent_decode_str(u.path()).decode_utf8_lossy()
        ),
        Err(_) => "unknown".to_owned(),
    }
}

/// Sets the scrape-time gauges from the database and this process.
async fn refresh(state: &AppState) -> Result<(), ApiError> {
    let gauges = state.store.gauges().await?;
    let workflows: std::collections::BTreeSet<&str> = gauges.tasks.iter().map(|t| t.0.as_str()).collect();
    for workflow in workflows {
        for status in TaskStatus::ALL {
            let n =
                gauges.tasks.iter().find(|t| t.0 == workflow && t.1 == status.as_str()).map_or(0, |t| t.2);
            metrics::gauge!("swarm_tasks", "workflow" => workflow.to_owned(), "status" => status.as_str())
                .set(n as f64);
        }
    }
    let count = |status: &str| gauges.deliveries.iter().find(|d| d.0 == status).map_or(0, |d| d.1);
    for status in DeliveryStatus::ALL {
        metrics::gauge!("swarm_deliveries", "status" => status.as_str()).set(count(status.as_str()) as f64);
    }
    metrics::gauge!("swarm_outbox_backlog").set((count("pending") + count("sending")) as f64);
    for m in &gauges.mailboxes {
        let label = mailbox_label(&m.mailbox);
        let last_ok = m
            .last_ok_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or(0.0, |t| t.timestamp() as f64);
        metrics::gauge!("swarm_imap_last_success_timestamp_seconds", "mailbox" => label.clone()).set(last_ok);
        metrics::gauge!("swarm_imap_consecutive_errors", "mailbox" => label).set(m.consecutive_errors as f64);
    }
    if let Some(llm) = &state.llm {
        let value = match llm.breaker_state() {
            BreakerState::Closed { .. } => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open { .. } => 2.0,
        };
        metrics::gauge!("swarm_llm_breaker_state").set(value);
    }
    Ok(())
}

/// `GET /metrics` behind the admin token (`SWARM_METRICS_ADDR` serves it without one).
pub async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.authorize(&headers).await?;
    render(&state).await
}

/// The exposition text, gauges refreshed.
pub async fn render(state: &AppState) -> Result<Response, ApiError> {
    let handle = handle();
    refresh(state).await?;
    handle.run_upkeep();
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    Ok(([(CONTENT_TYPE, content_type)], handle.render()).into_response())
}

/// The route-and-status part of the HTTP metrics, called by the request layer once a response
/// is ready: `route` is axum's matched route template (`unmatched` for the fallback).
pub fn count_request(route: &str, method: &axum::http::Method, status: u16, seconds: f64) {
    use axum::http::Method;
    let method = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let status_text = status.to_string();
    metrics::counter!("swarm_http_requests_total", "route" => route.to_owned(), "method" => method,
        "status" => status_text.clone())
    .increment(1);
    metrics::histogram!("swarm_http_request_duration_seconds", "route" => route.to_owned()).record(seconds);
    if route.starts_with("/inbound") && status >= 400 {
        metrics::counter!("swarm_inbound_rejections_total", "endpoint" => route.to_owned(), "status" => status_text)
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_labels_leave_out_the_user() {
        assert_eq!(mailbox_label("imap://ann%40x.org@mail.example:993/INBOX"), "mail.example:993/INBOX");
        assert_eq!(mailbox_label("imap://bot@127.0.0.1:1143/Tickets"), "127.0.0.1:1143/Tickets");
        assert_eq!(mailbox_label("not a url"), "unknown");
    }
}
