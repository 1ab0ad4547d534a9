//! The live status page over real HTTP: what it lists (held replies with ids, quarantined mail
//! with reasons, ignored mail with the rule, job runs, the 24-hour chart, per-agent statistics),
//! its event stream, the no-JavaScript fallback, the task page (reply as text, stage timeline,
//! delivery ids), the audit exports (`/audit.jsonl`, `audit export --format jsonl|pdf`) and
//! `SWARM_TRUSTED_PROXIES` for the rate limit. The browser test is `tests/browser.rs`.

#[macro_use]
mod support;

use std::time::Duration;

use support::{Db, TestApp, fixture, json};
use swarm_director::audit::AuditRecord;

fn sender(i: usize, to_self: &str) -> Vec<u8> {
    format!(
        "From: Repeat Sender <repeat@example.org>\r\nTo: {to_self}\r\nSubject: Ask {i}\r\n\
         Message-ID: <page-{i}@example.org>\r\nDate: Fri, 20 Nov 2026 09:00:00 +0000\r\n\r\nPlease look at item {i}.\r\n"
    )
    .into_bytes()
}

matrix! {
    async fn the_status_page_lists_held_quarantined_ignored_and_jobs(db: Db) {
        let app = TestApp::spawn(db, &[("SWARM_REPLY_CAP_RECIPIENT", "1/10m")]).await;
        let first = app.post_for_task(&sender(1, "swarm@localhost"), "msg_p1").await;
        app.wait_finished(first).await;
        let second = app.post_for_task(&sender(2, "swarm@localhost"), "msg_p2").await;
        app.wait_finished(second).await;
        let held = app.store.task_deliveries(second).await.expect("deliveries");
        assert_eq!(held[0].status, "held");
        let ignored = json(app.post_signed(&fixture("out_of_office.eml"), "msg_p3").await).await;
        assert_eq!(ignored["outcome"], "ignored");
        let quarantined = json(app.post_signed(b"no header section here", "msg_p4").await).await;
        assert_eq!(quarantined["outcome"], "quarantined", "{quarantined}");
        assert!(app.store.claim_job_run("retention", "2026-12-04T03:30:00Z", "schedule", "t").await.expect("claim"));
        app.store.finish_job_run("retention", "2026-12-04T03:30:00Z", true, "0 messages purged").await.expect("finish");

        let r = app.http.get(app.url("/")).send().await.expect("page");
        assert_eq!(r.status(), 200);
        let csp = r.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.headers().contains_key("referrer-policy"));
        let page = r.text().await.expect("text");
        for want in [
            "<meta name=\"viewport\"",
            "<noscript><meta http-equiv=\"refresh\" content=\"30\"></noscript>",
            "<script src=\"/static/status.js\" defer></script>",
            "<caption>Held replies, waiting for a person (1)",
            &format!("<tr><td>{}</td><td><a href=\"/tasks/{second}\">#{second}</a></td>", held[0].id.0),
            "<caption>Quarantined messages",
            "unparseable: no RFC 5322 header section found",
            "<caption>Recently ignored mail",
            "<td>auto-submitted</td>",
            "<td>retention</td>",
            "0 messages purged",
            "<svg class=\"chart\"",
            "<caption>Agents over the last 30 days</caption>",
            "<td>triage</td>",
            " UTC (",
        ] {
            assert!(page.contains(want), "{want} missing from the status page:\n{page}");
        }
        let script = app.http.get(app.url("/static/status.js")).send().await.expect("script");
        assert!(script.headers()["content-type"].to_str().expect("ascii").starts_with("text/javascript"));
        assert!(script.text().await.expect("text").contains("new EventSource(\"/events?since=\""));

        // The task page: the reply as text, stages, delivery ids.
        let task = app.http.get(app.url(&format!("/tasks/{first}"))).send().await.expect("task").text().await.expect("text");
        assert!(task.contains("<pre id=\"reply-text\">Executive summary"), "{task}");
        assert!(!task.contains("Content-Transfer-Encoding"), "not raw MIME: {task}");
        assert!(task.contains("steps in parallel"), "{task}");
        let delivery = app.store.task_deliveries(first).await.expect("deliveries")[0].id.0;
        assert!(task.contains(&format!("<tr><td>{delivery}</td><td>&lt;")), "{task}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_sends_the_new_live_part_when_a_task_arrives() {
    let app = TestApp::spawn(Db::Sqlite, &[]).await;
    let (mark, _) = app.store.audit_head().await.expect("head");
    let r = app.http.get(app.url(&format!("/events?since={mark}"))).send().await.expect("events");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));
    let mut body = r;
    let bad = app.http.get(app.url("/events?since=yesterday")).send().await.expect("events");
    assert_eq!(bad.status(), 400);
    assert!(json(bad).await["error"].as_str().is_some_and(|e| e.contains("since")));
    let task = app.post_for_task(&sender(7, "swarm@localhost"), "msg_e1").await;
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = body.chunk().await.expect("chunk") {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("event: update") && seen.contains(&format!("href=\"/tasks/{task}\"")) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "an update naming task {task}: {seen}");
    drop(body);
    // Shutdown is not held up by an open stream.
    let r = app.http.get(app.url("/events")).send().await.expect("events");
    let stopped = tokio::time::timeout(Duration::from_secs(10), app.stop()).await;
    assert!(stopped.is_ok(), "shutdown with an open event stream");
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_exports_as_json_lines_and_a_task_pdf() {
    let app = TestApp::spawn(Db::Sqlite, &[("SWARM_ADMIN_TOKEN", "t0k3n")]).await;
    let task = app.post_for_task(&fixture("action_request.eml"), "msg_x1").await;
    app.wait_finished(task).await;
    let r = app
        .http
        .get(app.url(&format!("/audit.jsonl?task={task}")))
        .bearer_auth("t0k3n")
        .send()
        .await
        .expect("jsonl");
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().expect("ascii").starts_with("application/jsonl"));
    let text = r.text().await.expect("text");
    let records: Vec<AuditRecord> =
        text.lines().map(|l| serde_json::from_str(l).expect("a record")).collect();
    assert!(records.len() >= 3 && records.iter().all(|r| r.task_id == Some(task)), "{text}");
    assert_eq!(app.http.get(app.url("/audit.jsonl")).send().await.expect("jsonl").status(), 401);

    let run = |args: &[&str]| support::run_binary(app.dir.path(), &app.database_url, args, &[]);
    let out = run(&["audit", "export", "--format", "jsonl"]);
    assert!(out.status.success());
    let all: Vec<AuditRecord> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    assert!(all.len() > records.len());
    let pdf = run(&["audit", "export", "--format", "pdf", "--task", &task.to_string()]);
    assert!(pdf.status.success(), "{}", String::from_utf8_lossy(&pdf.stderr));
    assert!(pdf.stdout.starts_with(b"%PDF-"));
    let body = String::from_utf8_lossy(&pdf.stdout);
    for r in &records {
        assert!(body.contains(&r.hash), "record {} hash in the PDF", r.seq);
    }
    assert!(body.contains(&format!("task #{task}")), "titled by its task");
    assert!(body.contains("chain:      intact"), "the chain check is in the report");
    std::fs::create_dir_all("target").expect("target dir");
    std::fs::write("target/audit-report-sample.pdf", &pdf.stdout).expect("sample");
    let no_task = run(&["audit", "export", "--format", "pdf"]);
    assert!(!no_task.status.success());
    assert!(String::from_utf8_lossy(&no_task.stderr).contains("--task"), "{no_task:?}");
    let missing = run(&["audit", "export", "--format", "pdf", "--task", "999"]);
    assert_eq!(missing.status.code(), Some(66));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client_the_rate_limit_counts() {
    let limits = [("SWARM_INBOUND_RATE_PER_SEC", "1"), ("SWARM_INBOUND_RATE_BURST", "1")];
    let post = |app: &TestApp, id: &str, client: &str| {
        let body = format!(
            "From: a@example.org\r\nTo: swarm@localhost\r\nSubject: {id}\r\nMessage-ID: <{id}@example.org>\r\n\r\nHi\r\n"
        );
        let ts = chrono::Utc::now().timestamp();
        app.signed_raw(body.as_bytes(), id, support::SECRET, ts).header("x-forwarded-for", client).send()
    };
    // Behind a trusted proxy (the test client is 127.0.0.1), two clients have two budgets.
    let mut env = limits.to_vec();
    env.push(("SWARM_TRUSTED_PROXIES", "127.0.0.1/32"));
    let app = TestApp::spawn(Db::Sqlite, &env).await;
    assert_eq!(post(&app, "msg_t1", "198.51.100.1").await.expect("post").status(), 202);
    assert_eq!(post(&app, "msg_t2", "198.51.100.2").await.expect("post").status(), 202);
    assert_eq!(post(&app, "msg_t3", "198.51.100.2").await.expect("post").status(), 429);
    app.stop().await;
    // Without it the header is ignored: one client, one budget.
    let app = TestApp::spawn(Db::Sqlite, &limits).await;
    assert_eq!(post(&app, "msg_u1", "198.51.100.1").await.expect("post").status(), 202);
    assert_eq!(post(&app, "msg_u2", "198.51.100.2").await.expect("post").status(), 429);
    app.stop().await;
}
