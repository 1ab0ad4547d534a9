//! HTTP: the status page, task pages, `/health`, the JSON API, the audit CSV export and the
//! intake endpoints (signed raw MIME, Mailgun, SendGrid, Postmark, task hooks; see [`inbound`]). Every mail-derived string is escaped (minijinja auto-escape on
//! `.html` templates). Client errors say what was wrong; internal details are logged only.

mod access;
mod error;
pub mod inbound;
mod layers;
pub mod metrics;
mod pages;
pub mod serve;

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::DateTime;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::Notify;

pub use access::Principal;
pub use error::ApiError;
pub use inbound::Inbound;

use crate::audit::CsvExport;
use crate::audit::export::JsonlExport;
use crate::intake::Intake;
use crate::reports::{parse_bound, task_report};
use crate::store::{AuditFilter, Store};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub intake: Arc<Intake>,
    /// The intake endpoints' secrets and limits.
    pub inbound: Arc<Inbound>,
    pub admin_token: Option<SecretString>,
    /// Wakes the task worker after a new task is committed.
    pub task_wake: Arc<Notify>,
    /// A mailbox whose last successful poll is older than this is reported degraded.
    pub imap_max_age: Option<std::time::Duration>,
    /// The LLM endpoint, for its circuit breaker's state in `/health`.
    pub llm: Option<crate::agents::llm::LlmClient>,
    /// Set once the workers run (`/readyz`).
    pub workers_started: Arc<std::sync::atomic::AtomicBool>,
    /// Turns true when the server starts shutting down: open event streams end.
    pub closing: tokio::sync::watch::Receiver<bool>,
    pages: Arc<minijinja::Environment<'static>>,
}

impl AppState {
    /// Now, in Unix seconds, from the store's clock (signature timestamp windows).
    pub fn now(&self) -> i64 {
        self.store.clock().now().timestamp()
    }

    pub fn new(
        store: Store,
        intake: Arc<Intake>,
        inbound: Inbound,
        admin_token: Option<SecretString>,
        task_wake: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let mut env = minijinja::Environment::new();
        for (name, text) in [
            ("layout.html", include_str!("../../templates/web/layout.html")),
            ("status.html", include_str!("../../templates/web/status.html")),
            ("status_live.html", include_str!("../../templates/web/status_live.html")),
            ("task.html", include_str!("../../templates/web/task.html")),
        ] {
            env.add_template(name, text).with_context(|| format!("page template {name}"))?;
        }
        let clock = store.clock().clone();
        env.add_filter("when", move |t: Option<String>| readable_time(t.as_deref(), clock.now()));
        Ok(Self {
            store,
            intake,
            inbound: Arc::new(inbound),
            admin_token,
            task_wake,
            imap_max_age: None,
            llm: None,
            workers_started: Arc::default(),
            closing: tokio::sync::watch::channel(false).1,
            pages: Arc::new(env),
        })
    }

    fn render(&self, name: &str, ctx: Value) -> Result<Html<String>, ApiError> {
        let template = self.pages.get_template(name).map_err(ApiError::internal)?;
        Ok(Html(template.render(ctx).map_err(ApiError::internal)?))
    }
}

/// Every route: pages and API under a deadline, the intake endpoints, all under the request id,
/// trace and panic layers.
pub fn router(state: AppState) -> Router {
    let pages = Router::new()
        .route("/", get(pages::status_page))
        .route("/events", get(pages::status_events))
        .route("/static/status.js", get(pages::status_script))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/tasks/{id}", get(pages::task_page))
        .route("/api/tasks/{id}", get(task_api))
        .route("/audit.csv", get(audit_csv))
        .route("/audit.jsonl", get(audit_jsonl));
    layers::around(
        Router::new()
            .merge(layers::with_deadline(pages))
            .merge(inbound::routes())
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page") })
            .with_state(state),
    )
}

/// The version of this build, in `/livez`, `/readyz` and `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /livez`: 200 `{"status": "ok", "version"}` while the process answers HTTP at all
/// (Kubernetes' liveness probe: restart me when this fails). Reads nothing.
async fn livez() -> Json<Value> {
    Json(json!({"status": "ok", "version": VERSION}))
}

/// `GET /readyz`: 200 `{"status": "ready", "version", "checks": {"database", "migrations",
/// "workers"}}` when the database answers a read, holds every migration this binary embeds, and
/// the workers run; else 503 `"status": "not ready"` with the failing check(s) not `"ok"`
/// (Kubernetes' readiness probe: send me no traffic yet).
async fn readyz(State(state): State<AppState>) -> Response {
    let (database, migrations) = match state.store.migrations_current().await {
        Ok(true) => ("ok", "ok"),
        Ok(false) => ("ok", "pending: run `swarm-director migrate`"),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "readiness: database unreachable");
            ("unreachable", "unknown")
        }
    };
    let started = state.workers_started.load(std::sync::atomic::Ordering::Acquire);
    let workers = if started { "ok" } else { "starting" };
    let ready = database == "ok" && migrations == "ok" && started;
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "version": VERSION,
        "checks": {"database": database, "migrations": migrations, "workers": workers},
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// The router of `SWARM_METRICS_ADDR`: `/metrics` without the admin token (bind it where only
/// the scraper reaches), under the same layers.
pub fn metrics_router(state: AppState) -> Router {
    let open = |State(state): State<AppState>| async move { metrics::render(&state).await };
    layers::around(
        Router::new()
            .route("/metrics", get(open))
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "only /metrics is served here") })
            .with_state(state),
    )
}

/// `{"status": "ok" | "degraded" | "failing", "database": "ok" | "failing", "mailboxes": "ok" |
/// "degraded", "llm": "ok" | "degraded" | null}`: 200 unless the database fails (503), which it
/// does while it cannot be read or while its last write failed (a full disk) and until a write
/// commits again. A mailbox is degraded when it has never been read successfully or its last
/// success is older than `IMAP_HEALTH_MAX_AGE`; the LLM is degraded while its breaker is not
/// closed; `version` names the build. With the admin token (configured and presented)
/// `details` adds each mailbox's state and last error, the LLM endpoint (without credentials or
/// query) and breaker, and the database error; without it nothing but those words is shown.
async fn health(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let details = matches!(state.principal(&headers).await, Ok(Some(p)) if p.scopes.contains(crate::domain::Scope::Read));
    // Reading the mailbox states is also the read check: one query, not a ping and a read.
    let (mailboxes, database_error) = match state.store.mailbox_states().await {
        Ok(m) => (m, state.store.write_failure()),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "health check: database unreachable");
            (Vec::new(), Some(format!("unreachable: {e}")))
        }
    };
    let now = state.store.clock().now();
    let stale = |m: &crate::store::MailboxState| {
        let age = m
            .last_ok_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| now - t.to_utc());
        match (age, state.imap_max_age) {
            (None, _) => true,
            (Some(age), Some(max)) => age.to_std().is_ok_and(|a| a > max),
            (Some(_), None) => false,
        }
    };
    let mailboxes_degraded = mailboxes.iter().any(stale);
    // An open breaker means LLM steps run their local fallbacks: degraded, not down.
    let breaker = state.llm.as_ref().map(|c| c.breaker_state());
    let llm_degraded = breaker
        .as_ref()
        .is_some_and(|b| !matches!(b, crate::agents::llm::breaker::BreakerState::Closed { .. }));
    let word = |bad: bool, what: &'static str| if bad { what } else { "ok" };
    let status = if database_error.is_some() {
        "failing"
    } else {
        word(mailboxes_degraded || llm_degraded, "degraded")
    };
    let mut body = json!({
        "status": status,
        "version": VERSION,
        "database": word(database_error.is_some(), "failing"),
        "mailboxes": word(mailboxes_degraded, "degraded"),
        "llm": breaker.as_ref().map(|_| word(llm_degraded, "degraded")),
    });
    if details {
        let mailboxes: Vec<Value> = mailboxes
            .iter()
            .map(|m| {
                json!({
                    "mailbox": m.mailbox,
                    "last_ok_at": m.last_ok_at,
                    "consecutive_errors": m.consecutive_errors,
                    "last_error": m.last_error,
                    "degraded": stale(m),
                })
            })
            .collect();
        let llm = state.llm.as_ref().map(
            |c| json!({"endpoint": crate::domain::redacted_url(&c.settings().base_url), "breaker": breaker}),
        );
        body["details"] = json!({"database_error": database_error, "mailboxes": mailboxes, "llm": llm});
    }
    let code = if database_error.is_some() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(body)).into_response()
}

/// An RFC 3339 time as people read it: `2026-12-04 02:13:05 UTC (5 min ago)`; empty for none.
fn readable_time(t: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    let Some(at) = t.and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.to_utc()) else {
        return t.unwrap_or_default().to_owned();
    };
    let secs = (now - at).num_seconds();
    let ago = match secs {
        s if s < 0 => "in the future".to_owned(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    };
    format!("{} ({ago})", at.format("%Y-%m-%d %H:%M:%S UTC"))
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "task id must be a number"))
}

async fn task_api(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers).await?;
    let id = parse_id(&id)?;
    let report = task_report(&state.store, id).await?;
    report.map(Json).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no task {id}")))
}

#[derive(Debug, serde::Deserialize)]
struct AuditQuery {
    since: Option<String>,
    until: Option<String>,
    task: Option<i64>,
}

async fn audit_csv(
    state: State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    audit_export(state, headers, query, false).await
}

async fn audit_jsonl(
    state: State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    audit_export(state, headers, query, true).await
}

/// `GET /audit.csv` and `GET /audit.jsonl` (`since`, `until`, `task`): the audit log as RFC
/// 4180 CSV or JSON Lines, for a token with `read`; 404 while no token is configured.
async fn audit_export(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
    jsonl: bool,
) -> Result<Response, ApiError> {
    if !state.access_configured().await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "the audit export is disabled: set SWARM_ADMIN_TOKEN or create a token to enable it",
        ));
    }
    state.require(&headers, crate::domain::Scope::Read).await?;
    // A malformed query string gets the JSON error body like every other error.
    let axum::extract::Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, m);
    let filter = AuditFilter {
        since: parse_bound("since", q.since.as_deref()).map_err(bad)?,
        until: parse_bound("until", q.until.as_deref()).map_err(bad)?,
        task: q.task,
    };
    let (body, content_type, name) = if jsonl {
        let mut out = JsonlExport::new(Vec::new());
        state
            .store
            .for_each_audit(&filter, |r| out.write(&r).map_err(anyhow::Error::from))
            .await
            .map_err(ApiError::from_failure)?;
        (out.finish().map_err(ApiError::internal)?, "application/jsonl; charset=utf-8", "audit.jsonl")
    } else {
        let mut csv = CsvExport::new(Vec::new()).map_err(ApiError::internal)?;
        state
            .store
            .for_each_audit(&filter, |r| csv.write(&r).map_err(anyhow::Error::from))
            .await
            .map_err(ApiError::from_failure)?;
        (csv.finish().map_err(ApiError::internal)?, "text/csv; charset=utf-8; header=present", "audit.csv")
    };
    let disposition = format!("attachment; filename=\"{name}\"");
    Ok((
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                axum::http::header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).map_err(ApiError::internal)?,
            ),
        ],
        body,
    )
        .into_response())
}
