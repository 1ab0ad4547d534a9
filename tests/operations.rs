//! The operator's side: `/livez`, `/readyz`, `/metrics` (on the main port behind the admin
//! token, and on `SWARM_METRICS_ADDR`), the scheduled jobs (retention with the audit chain
//! still verifying, once-per-time claims, the digest and alert mails) and `job list` / `job run`
//! from the real binary. Backups are in `tests/backup.rs`.

#[macro_use]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::{Db, TestApp, fixture, json, run_binary};
use swarm_director::domain::{Clock, ManualClock};
use swarm_director::scheduler::{JobContext, JobSettings, run_now};
use swarm_director::store::{AuditFilter, Store};

const TOKEN: &str = "ops-token";

/// The actions of the audit log, in order, with their details.
async fn audit(store: &Store) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    store
        .for_each_audit(&AuditFilter::default(), |r| {
            out.push((r.action, r.details));
            Ok::<_, swarm_director::store::StoreError>(())
        })
        .await
        .expect("audit");
    out
}

/// A job context over `store` (whose clock the test drives).
fn jobs(store: &Store, settings: JobSettings) -> JobContext {
    JobContext {
        store: store.clone(),
        settings,
        owner: "test-instance".into(),
        llm_open: None,
        outbox_wake: Arc::default(),
    }
}

matrix! {
    async fn probes_answer_with_the_version_and_details_need_the_token(db: Db) {
        let app = TestApp::spawn(db, &[("SWARM_ADMIN_TOKEN", TOKEN)]).await;
        let version = env!("CARGO_PKG_VERSION");
        let live = app.http.get(app.url("/livez")).send().await.expect("livez");
        assert_eq!(live.status(), 200);
        assert_eq!(json(live).await, serde_json::json!({"status": "ok", "version": version}));
        let ready = support::wait_until(Duration::from_secs(5), || async {
            let r = app.http.get(app.url("/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(r)
        })
        .await
        .expect("ready once the workers run");
        let ready = json(ready).await;
        assert_eq!(ready["status"], "ready", "{ready}");
        assert_eq!(ready["version"], version);
        assert_eq!(ready["checks"], serde_json::json!({"database": "ok", "migrations": "ok", "workers": "ok"}));

        let open = json(app.http.get(app.url("/health")).send().await.expect("health")).await;
        assert_eq!(open["version"], version);
        assert!(open.get("details").is_none(), "{open}");
        let full = app.http.get(app.url("/health")).bearer_auth(TOKEN).send().await.expect("health");
        assert!(json(full).await["details"]["mailboxes"].is_array());

        // A migration the binary knows but the database lacks: not ready.
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&app.database_url).await.expect("db");
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 9").execute(&mut conn).await.expect("forget");
        let r = app.http.get(app.url("/readyz")).send().await.expect("readyz");
        assert_eq!(r.status(), 503);
        let body = json(r).await;
        assert_eq!(body["status"], "not ready");
        assert!(body["checks"]["migrations"].as_str().is_some_and(|m| m.starts_with("pending")), "{body}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_without_naming_anyone() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let metrics_addr = free.local_addr().expect("addr").to_string();
    drop(free);
    let app =
        TestApp::spawn(Db::Sqlite, &[("SWARM_ADMIN_TOKEN", TOKEN), ("SWARM_METRICS_ADDR", &metrics_addr)])
            .await;
    let (task, _) =
        app.post_and_wait(&fixture("action_request.eml"), "msg_m1", Duration::from_secs(10)).await;
    assert!(task > 0);
    let ignored = json(app.post_signed(&fixture("out_of_office.eml"), "msg_m2").await).await;
    assert_eq!(ignored["outcome"], "ignored", "{ignored}");
    let rule = swarm_director::domain::reason_rule(ignored["reason"].as_str().unwrap_or_default());
    assert_ne!(rule, "other", "{ignored}");
    let ignored_line = format!("swarm_messages_ignored_total{{rule=\"{rule}\"}}");
    let missing = app.http.get(app.url("/tasks/999")).bearer_auth(TOKEN).send().await.expect("404");
    assert_eq!(missing.status(), 404);
    let forged = app
        .post_signed_with(
            &fixture("action_request.eml"),
            "msg_m3",
            support::ROTATED,
            chrono::Utc::now().timestamp(),
        )
        .await;
    assert_eq!(forged.status(), 401, "signed with a key we do not hold");

    assert_eq!(app.http.get(app.url("/metrics")).send().await.expect("metrics").status(), 401);
    let r = app.http.get(app.url("/metrics")).bearer_auth(TOKEN).send().await.expect("metrics");
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().expect("ascii").to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = r.text().await.expect("text");
    std::fs::create_dir_all("target").expect("target dir");
    std::fs::write("target/metrics-sample.txt", &text).expect("sample written");
    for want in [
        "swarm_build_info{version=\"",
        "swarm_messages_received_total{source=\"webhook\",outcome=\"task\"}",
        "swarm_messages_received_total{source=\"webhook\",outcome=\"ignored\"}",
        &ignored_line,
        "swarm_tasks{workflow=\"default\",status=\"done\"} 1",
        "swarm_task_duration_seconds_bucket{workflow=\"default\",outcome=\"done\",le=\"",
        "swarm_step_duration_seconds_bucket{agent=\"triage\",outcome=\"ok\",le=\"",
        "swarm_deliveries{status=\"delivered\"} 1",
        "swarm_outbox_backlog 0",
        "swarm_delivery_attempts_total{result=\"delivered\"}",
        "swarm_http_requests_total{route=\"/inbound/raw\",method=\"POST\",status=\"202\"}",
        "swarm_http_requests_total{route=\"/tasks/{id}\",method=\"GET\",status=\"404\"}",
        "swarm_http_request_duration_seconds_bucket{route=\"/inbound/raw\",le=\"",
        "swarm_inbound_rejections_total{endpoint=\"/inbound/raw\",status=\"401\"} 1",
        "# HELP swarm_messages_received_total",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    for private in ["anna@example.org", "sam@example.org", "Q4 budget", "Automatic reply", "swarm@localhost"]
    {
        assert!(!text.contains(private), "{private} appears in /metrics");
    }

    // The metrics listener serves it without the token, and nothing else.
    let open = app.http.get(format!("http://{metrics_addr}/metrics")).send().await.expect("metrics port");
    assert_eq!(open.status(), 200);
    assert!(open.text().await.expect("text").contains("swarm_build_info"));
    let other = app.http.get(format!("http://{metrics_addr}/")).send().await.expect("metrics port");
    assert_eq!(other.status(), 404);
    app.stop().await;
}

matrix! {
    async fn retention_purges_old_content_and_the_audit_chain_still_verifies(db: Db) {
        let clock = Arc::new(ManualClock::starting_now());
        let app = TestApp::spawn_with_clock(db, &[], clock.clone()).await;
        let (task, _) = app.post_and_wait(&fixture("action_request.eml"), "msg_r1", Duration::from_secs(10)).await;
        let store = app.store.clone().with_clock(clock.clone() as Arc<dyn Clock>);
        let ctx = jobs(&store, JobSettings::for_tests());

        // Nothing is old enough yet.
        let note = run_now(&ctx, "retention").await.expect("retention runs");
        assert!(note.contains("0 messages, 0 task inputs, 0 steps, 0 replies"), "{note}");
        let report = swarm_director::reports::task_report(&store, task).await.expect("report").expect("task");
        assert!(report["reply"].as_str().is_some_and(|r| r.contains("Executive summary")));

        clock.advance(Duration::from_secs(91 * 24 * 3600));
        // A message that arrives now is not purged with the old ones.
        let body = support::fleet::message(1);
        let posted = app.post_signed_with(&body, "msg_r2", support::SECRET, clock.now().timestamp()).await;
        let fresh = json(posted).await["task_id"].as_i64().expect("a task");
        app.wait_finished(fresh).await;
        let note = run_now(&ctx, "retention").await.expect("retention runs");
        assert!(note.contains(": 1 messages, 1 task inputs, "), "{note}");
        let old = store.message_raw(1).await.expect("raw");
        assert_eq!(old.as_deref(), Some(&b""[..]), "raw bytes purged");
        let report = swarm_director::reports::task_report(&store, task).await.expect("report").expect("task");
        assert_eq!(report["reply"], "", "the rendered reply is purged: {report}");
        assert!(report["steps"].as_array().is_some_and(|s| s.iter().all(|s| s["output"].is_null())), "{report}");
        assert_eq!(report["task"]["status"], "done", "the task itself stays");
        let kept = swarm_director::reports::task_report(&store, fresh).await.expect("report").expect("task");
        assert!(kept["reply"].as_str().is_some_and(|r| !r.is_empty()), "the new task keeps its reply");

        let records = audit(&store).await;
        let (_, purged) = records.iter().rev().find(|(a, _)| a == "retention.purged").expect("audited");
        assert_eq!(purged["purged"]["messages"], 1, "{purged}");
        assert_eq!(purged["purged"]["replies"], 1, "{purged}");
        let verified = swarm_director::reports::verify_audit(&store).await.expect("readable");
        assert!(verified.is_ok(), "audit verify after a purge: {verified:?}");
        app.stop().await;
    }

    async fn each_scheduled_time_runs_once_across_instances(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let other = Store::connect(&app.database_url, &Default::default()).await.expect("second instance");
        let at = "2026-12-04T03:30:00Z";
        assert!(app.store.claim_job_run("retention", at, "schedule", "a").await.expect("claim"));
        assert!(!other.claim_job_run("retention", at, "schedule", "b").await.expect("claim"), "claimed once");
        assert!(other.claim_job_run("retention", "2026-12-05T03:30:00Z", "schedule", "b").await.expect("next"));
        app.store.finish_job_run("retention", at, true, "done").await.expect("finish");
        let last = app.store.last_job_runs().await.expect("runs");
        assert_eq!(last.len(), 1);
        assert_eq!((last[0].scheduled_at.as_str(), last[0].owner.as_str()), ("2026-12-05T03:30:00Z", "b"));
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_mailed_once_per_condition_and_recovery_is_mailed() {
    let clock = Arc::new(ManualClock::starting_now());
    let app = TestApp::spawn_with_clock(Db::Sqlite, &[], clock.clone()).await;
    let store = app.store.clone().with_clock(clock.clone() as Arc<dyn Clock>);
    let mut settings = JobSettings::for_tests();
    settings.alert_to =
        Some(swarm_director::domain::EmailAddress::parse("ops@example.org").expect("address"));
    let open = Arc::new(AtomicBool::new(true));
    let mut ctx = jobs(&store, settings);
    let flag = open.clone();
    ctx.llm_open = Some(Arc::new(move || flag.load(Ordering::SeqCst).then(|| "breaker open".to_owned())));
    let mut notes = Vec::new();
    for minutes in [0, 5, 10, 15] {
        if minutes == 15 {
            open.store(false, Ordering::SeqCst);
        }
        clock.advance(Duration::from_secs(5 * 60));
        notes.push(run_now(&ctx, "alerts").await.expect("alerts run"));
    }
    assert!(notes[0].contains("0 alerts"), "one open check is not yet an alert: {notes:?}");
    assert!(notes[1].contains("1 firing; 1 alerts"), "{notes:?}");
    assert!(notes[2].contains("1 firing; 0 alerts"), "no second alert in the period: {notes:?}");
    assert!(notes[3].contains("0 firing; 0 alerts and 1 recoveries"), "{notes:?}");
    let actions: Vec<String> =
        audit(&store).await.into_iter().map(|(a, _)| a).filter(|a| a.starts_with("alert.")).collect();
    assert_eq!(actions, ["alert.raised", "alert.recovered"]);
    // Both went out through the outbox as mail.
    let sent = support::wait_until(Duration::from_secs(5), || async {
        let files: Vec<_> = std::fs::read_dir(app.dir.path().join("outbox")).ok()?.flatten().collect();
        let texts: Vec<String> = files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f.path()).ok())
            .filter(|t| t.contains("ops@example.org"))
            .collect();
        (texts.len() == 2).then_some(texts)
    })
    .await
    .expect("two notices delivered");
    assert!(sent.iter().any(|t| t.contains("ALERT: llm-breaker")), "{sent:?}");
    assert!(sent.iter().any(|t| t.contains("recovered: llm-breaker")), "{sent:?}");
    assert!(sent.iter().all(|t| t.contains("Auto-Submitted: auto-generated")), "{sent:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_list_and_job_run_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}/swarm.db", dir.path().display());
    let a = dir.path().join("a.eml");
    std::fs::write(&a, fixture("action_request.eml")).expect("write");
    let ingest = run_binary(dir.path(), &url, &["ingest", &a.display().to_string()], &[]);
    assert!(ingest.status.success(), "{ingest:?}");

    let list = run_binary(dir.path(), &url, &["job", "list"], &[("SWARM_SCHEDULE_RETENTION", "0 0 1 * * *")]);
    assert!(list.status.success(), "{list:?}");
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(names, ["retention", "webhook-nonces", "digest", "alerts"], "{text}");
    assert_eq!(rows[0][1], "0 0 1 * * *", "the setting replaces the schedule");
    assert_eq!(rows[2][2], "off: SWARM_DIGEST_TO is unset");
    assert_eq!(rows[0][3], "-", "never ran");

    let bad = run_binary(dir.path(), &url, &["job", "list"], &[("SWARM_SCHEDULE_DIGEST", "daily")]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SWARM_SCHEDULE_DIGEST"), "{bad:?}");

    let digest =
        run_binary(dir.path(), &url, &["job", "run", "digest"], &[("SWARM_DIGEST_TO", "ops@example.org")]);
    assert!(digest.status.success(), "{digest:?}");
    let said = String::from_utf8_lossy(&digest.stdout).into_owned();
    assert!(said.starts_with("digest: digest of 1 tasks queued as delivery"), "{said}");
    let mail = std::fs::read_dir(dir.path().join("outbox"))
        .expect("outbox")
        .flatten()
        .filter_map(|f| std::fs::read_to_string(f.path()).ok())
        .find(|t| t.contains("To: ops@example.org"))
        .expect("the digest was delivered");
    for want in ["Tasks: 1 done", "anna@example.org", "Quarantined: 0", "Status page: http://127.0.0.1:8080/"]
    {
        assert!(mail.contains(want), "{want} in:\n{mail}");
    }

    let nonces = run_binary(dir.path(), &url, &["job", "run", "webhook-nonces"], &[]);
    assert_eq!(String::from_utf8_lossy(&nonces.stdout).trim(), "webhook-nonces: 0 expired nonces purged");
    let list = run_binary(dir.path(), &url, &["job", "list"], &[]);
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    let digest_row = text.lines().find(|l| l.starts_with("digest\t")).expect("digest row");
    assert!(digest_row.contains("\tok "), "last run shown: {digest_row}");
    let unknown = run_binary(dir.path(), &url, &["job", "run", "nope"], &[]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no job \"nope\""), "{unknown:?}");
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_we_export() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/grafana-dashboard.json")).expect("dashboard"),
    )
    .expect("valid JSON");
    let exported = std::fs::read_to_string(root.join("src/web/metrics.rs")).expect("metrics module");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for panel in panels {
        let expr = panel["targets"][0]["expr"].as_str().expect("a query");
        for name in
            expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("swarm_"))
        {
            let base = name.trim_end_matches("_bucket");
            assert!(
                exported.contains(&format!("\"{base}\"")),
                "{name} in {:?} is not exported",
                panel["title"]
            );
        }
    }
}

#[test]
fn serve_warns_when_open_to_the_network_without_an_admin_token() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tmp");
    let start = |extra: &[(&str, &str)]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_swarm-director"))
            .arg("serve")
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", format!("sqlite://{}/swarm.db", dir.path().display()))
            .env("SWARM_OUTBOX_DIR", dir.path().join("outbox"))
            .env("SWARM_LOG_FORMAT", "text")
            .envs(extra.iter().copied())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("serve starts");
        let mut lines = Vec::new();
        for line in BufReader::new(child.stderr.take().expect("stderr")).lines() {
            let line = line.expect("a log line");
            let done = line.contains("serving") && !line.contains("/metrics");
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        lines.join("\n")
    };
    let open = start(&[("SWARM_HTTP_ADDR", "0.0.0.0:0")]);
    assert!(open.contains("WARN") && open.contains("SWARM_ADMIN_TOKEN is unset"), "{open}");
    let guarded = start(&[("SWARM_HTTP_ADDR", "0.0.0.0:0"), ("SWARM_ADMIN_TOKEN", TOKEN)]);
    assert!(!guarded.contains("SWARM_ADMIN_TOKEN is unset"), "{guarded}");
    let local = start(&[("SWARM_HTTP_ADDR", "127.0.0.1:0")]);
    assert!(!local.contains("SWARM_ADMIN_TOKEN is unset"), "{local}");
}

matrix! {
    async fn a_silent_mailbox_alerts_with_its_last_error_and_recovers(db: Db) {
        let dir = tempfile::tempdir().expect("tmp");
        let url = db.fresh_url(dir.path()).await;
        let clock = Arc::new(ManualClock::starting_now());
        let store = Store::connect(&url, &Default::default()).await.expect("store").with_clock(clock.clone() as Arc<dyn Clock>);
        store.migrate().await.expect("migrate");
        let mut settings = JobSettings::for_tests();
        settings.alert_to = Some(swarm_director::domain::EmailAddress::parse("ops@example.org").expect("address"));
        let ctx = jobs(&store, settings);
        let key = "imap://bot@mail.example:993/INBOX";
        store.save_mailbox_position(key, 7, 10).await.expect("a good poll");
        assert!(run_now(&ctx, "alerts").await.expect("alerts").starts_with("0 firing"));

        clock.advance(Duration::from_secs(11 * 60));
        store.record_mailbox_error(key, "LOGIN failed: AUTHENTICATIONFAILED").await.expect("error");
        let note = run_now(&ctx, "alerts").await.expect("alerts");
        assert!(note.starts_with("1 firing; 1 alerts"), "{note}");
        clock.advance(Duration::from_secs(5 * 60));
        assert!(run_now(&ctx, "alerts").await.expect("alerts").starts_with("1 firing; 0 alerts"));
        store.save_mailbox_position(key, 7, 11).await.expect("good again");
        clock.advance(Duration::from_secs(60));
        assert!(run_now(&ctx, "alerts").await.expect("alerts").contains("1 recoveries"));

        let records = audit(&store).await;
        let raised = records.iter().find(|(a, _)| a == "alert.raised").expect("raised");
        let detail = raised.1["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("AUTHENTICATIONFAILED"), "the last error is in the alert: {detail}");
        let alerts = store.alerts().await.expect("alerts");
        let mailbox = alerts.iter().find(|a| a.condition.starts_with("mailbox:")).expect("stored");
        assert!(!mailbox.condition.contains("bot@"), "no user in the condition name: {}", mailbox.condition);
        assert!(!mailbox.firing);
    }
}
