//! Full-stack tests: the app on port 0, signed mail posted over real HTTP, replies read back.

#[macro_use]
mod support;

use mail_parser::{MessageParser, MimeHeaders};
use support::{Db, ROTATED, SECRET, TestApp, fixture, json, read_reply};

matrix! {
    async fn signed_mail_becomes_a_task_and_a_threaded_reply(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let r = app.post_signed(&fixture("action_request.eml"), "msg_a1").await;
        assert_eq!(r.status(), 202);
        let body = json(r).await;
        assert_eq!(body["outcome"], "task");
        let task = body["task_id"].as_i64().expect("task id");

        app.wait_finished(task).await;
        let deliveries = app.store.task_deliveries(task).await.expect("deliveries");
        assert_eq!(deliveries.len(), 1);
        assert_eq!(deliveries[0].status, "delivered");
        let raw = read_reply(deliveries[0].location.as_deref().expect("location"));

        let reply = MessageParser::default().parse(&raw).expect("reply parses");
        assert_eq!(reply.subject(), Some(format!("Re: Q4 budget review [#{task}]").as_str()));
        assert_eq!(reply.in_reply_to().as_text(), Some("budget-q4-001@example.org"));
        assert_eq!(reply.references().as_text(), Some("budget-q4-001@example.org"));
        assert_eq!(reply.header_raw("Auto-Submitted").map(str::trim), Some("auto-replied"));
        let own_id = reply.message_id().expect("own Message-ID");
        assert!(own_id.ends_with("@localhost"), "{own_id}");
        assert_eq!(deliveries[0].message_id, own_id);
        let to = reply.to().and_then(|a| a.first()).and_then(|a| a.address()).expect("to");
        assert_eq!(to, "anna@example.org");

        let text = reply.body_text(0).expect("text part");
        assert!(text.starts_with("Executive summary"), "{text}");
        assert!(text.contains("Action request"), "{text}");
        // Date is Friday 2026-11-20: "by Monday" → 2026-11-23, "before end of the week" → that Friday.
        assert!(text.contains("(asked: Bob) (due 2026-11-23)"), "{text}");
        assert!(text.contains("earliest due 2026-11-20"), "{text}");
        let lf = text.replace("\r\n", "\n");
        assert!(lf.contains("On Fri, 20 Nov 2026 09:15 +0100, anna@example.org wrote:\n> Hi team,"), "{text}");
        assert!(text.contains("> Bob, could you check"), "the request is quoted: {text}");
        assert!(reply.body_html(0).is_some_and(|h| h.contains("<li>")));
        for part in reply.parts.iter().filter(|p| p.is_text()) {
            assert_eq!(part.content_transfer_encoding(), Some("quoted-printable"));
        }
        app.stop().await;
    }

    async fn reply_goes_to_reply_to_and_threads_under_the_whole_chain(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let body = json(app.post_signed(&fixture("gmail_reply.eml"), "msg_g1").await).await;
        let task = body["task_id"].as_i64().expect("task");
        app.wait_finished(task).await;
        let d = &app.store.task_deliveries(task).await.expect("deliveries")[0];
        assert_eq!(d.envelope_to, "ops-team@example.com");
        let raw = read_reply(d.location.as_deref().expect("location"));
        let reply = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(reply.subject(), Some(format!("Re: Database migration [#{task}]").as_str()));
        let refs: Vec<&str> =
            reply.references().as_text_list().expect("list").iter().map(|c| c.as_ref()).collect();
        assert_eq!(
            refs,
            ["root-thread-1@example.com", "swarm.0badc0ffee@localhost", "CAF=xyz-reply-2@mail.gmail.com"]
        );
        let text = reply.body_text(0).expect("text");
        assert!(text.contains("> Can you confirm that the backup job"), "{text}");
        assert!(!text.contains("> > The migration is planned"), "quoted history must not be re-quoted: {text}");
        app.stop().await;
    }

    async fn hostile_headers_never_break_our_headers(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let body = json(app.post_signed(&fixture("hostile_headers.eml"), "msg_h1").await).await;
        let task = body["task_id"].as_i64().expect("task");
        app.wait_finished(task).await;
        let d = &app.store.task_deliveries(task).await.expect("deliveries")[0];
        let raw = read_reply(d.location.as_deref().expect("location"));
        let header_end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("header section");
        let headers = String::from_utf8_lossy(&raw[..header_end]);
        assert!(!headers.lines().any(|l| l.to_ascii_lowercase().starts_with("bcc:")), "{headers}");
        let reply = MessageParser::default().parse(&raw).expect("parses");
        assert!(reply.bcc().is_none());
        assert_eq!(reply.in_reply_to().as_text(), None, "the original's invalid Message-ID is dropped");
        let refs = reply.references().as_text_list().expect("refs");
        assert!(refs.len() <= 10, "References are capped: {}", refs.len());
        assert!(reply.subject().is_some_and(|s| !s.contains('\n') && s.starts_with("Re: Hello Bcc:")));
        app.stop().await;
    }

    async fn missing_or_bad_signatures_get_401_and_store_nothing(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let body = fixture("action_request.eml");
        let now = chrono::Utc::now().timestamp();

        let unsigned = app
            .http
            .post(app.url("/inbound/raw"))
            .header("content-type", "message/rfc822")
            .body(body.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(unsigned.status(), 401);
        assert!(json(unsigned).await["error"].as_str().is_some_and(|e| e.contains("webhook-id")));

        let wrong_secret = app.post_signed_with(&body, "msg_b1", ROTATED, now).await;
        assert_eq!(wrong_secret.status(), 401);
        let old = app.post_signed_with(&body, "msg_b2", SECRET, now - 600).await;
        assert_eq!(old.status(), 401);
        let future = app.post_signed_with(&body, "msg_b3", SECRET, now + 600).await;
        assert_eq!(future.status(), 401);

        let truncated = app
            .http
            .post(app.url("/inbound/raw"))
            .header("content-type", "message/rfc822")
            .header("webhook-id", "msg_b4")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", "v1,")
            .body(body.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(truncated.status(), 401);
        assert_eq!(app.message_count().await, 0, "nothing stored for refused requests");
        app.stop().await;
    }

    async fn reused_webhook_id_is_rejected(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        assert_eq!(app.post_signed(&fixture("action_request.eml"), "msg_r1").await.status(), 202);
        let replay = app.post_signed(&fixture("html_only.eml"), "msg_r1").await;
        assert_eq!(replay.status(), 409);
        assert_eq!(app.message_count().await, 1);
        app.stop().await;
    }

    async fn rotated_secrets_are_both_accepted(db: Db) {
        let app = TestApp::spawn(db, &[("SWARM_WEBHOOK_SECRETS", &format!("{SECRET},{ROTATED}"))]).await;
        let now = chrono::Utc::now().timestamp();
        assert_eq!(
            app.post_signed_with(&fixture("action_request.eml"), "msg_k1", ROTATED, now).await.status(),
            202
        );
        assert_eq!(app.post_signed_with(&fixture("html_only.eml"), "msg_k2", SECRET, now).await.status(), 202);
        app.stop().await;
    }

    async fn same_message_twice_over_http_makes_one_task_and_one_reply(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let first = json(app.post_signed(&fixture("action_request.eml"), "msg_d1").await).await;
        let second = json(app.post_signed(&fixture("action_request.eml"), "msg_d2").await).await;
        assert_eq!(first["outcome"], "task");
        assert_eq!(second["outcome"], "duplicate");
        assert_eq!(second["task_id"], first["task_id"]);
        let task = first["task_id"].as_i64().expect("task");
        app.wait_finished(task).await;
        let overview = app.store.overview(20).await.expect("overview");
        assert_eq!(overview.recent.len(), 1);
        assert_eq!(app.store.task_deliveries(task).await.expect("deliveries").len(), 1);
        app.stop().await;
    }

    async fn endpoint_is_404_without_secrets(db: Db) {
        let app = TestApp::spawn(db, &[("SWARM_WEBHOOK_SECRETS", "")]).await;
        assert_eq!(app.post_signed(&fixture("action_request.eml"), "msg_n1").await.status(), 404);
        app.stop().await;
    }

    async fn wrong_media_type_and_oversize_bodies_are_refused(db: Db) {
        let app = TestApp::spawn(db, &[("SWARM_MAX_MESSAGE_BYTES", "2000")]).await;
        let now = chrono::Utc::now().timestamp();
        let body = b"From: a@example.org\r\n\r\nhi".to_vec();
        let sig = swarm_director::intake::webhook::sign(
            &swarm_director::intake::webhook::decode_secret(SECRET).expect("secret"),
            "msg_t1",
            now,
            &body,
        );
        let r = app
            .http
            .post(app.url("/inbound/raw"))
            .header("content-type", "application/json")
            .header("webhook-id", "msg_t1")
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 415);
        let big = vec![b'a'; 5000];
        assert_eq!(app.post_signed(&big, "msg_t2").await.status(), 413);
        assert_eq!(app.message_count().await, 0);
        app.stop().await;
    }

    async fn health_reports_the_database(db: Db) {
        let app = TestApp::spawn(
            db,
            &[("LLM_BASE_URL", "http://user:s3cret@127.0.0.1:9/v1?api_key=k2y"), ("SWARM_ADMIN_TOKEN", "admin-token")],
        )
        .await;
        let r = app.http.get(app.url("/health")).bearer_auth("admin-token").send().await.expect("request");
        assert_eq!(r.status(), 200);
        let health = json(r).await;
        assert_eq!(health["database"], "ok");
        assert_eq!(health["details"]["llm"]["endpoint"], "http://127.0.0.1:9/v1", "{health}");
        let text = health.to_string();
        assert!(!text.contains("s3cret") && !text.contains("k2y"), "{text}");
        app.stop().await;
    }

    async fn pages_escape_mail_derived_strings(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let body = json(app.post_signed(&fixture("hostile_headers.eml"), "msg_x1").await).await;
        let task = body["task_id"].as_i64().expect("task");
        app.wait_finished(task).await;
        for path in ["/".to_owned(), format!("/tasks/{task}")] {
            let page = app.http.get(app.url(&path)).send().await.expect("request").text().await.expect("text");
            assert!(page.contains("&lt;script&gt;"), "{path} shows the escaped subject");
            assert!(!page.contains("<script>"), "{path} must not contain raw mail HTML");
        }
        let api = json(app.http.get(app.url(&format!("/api/tasks/{task}"))).send().await.expect("request")).await;
        assert_eq!(api["task"]["status"], "done");
        assert_eq!(api["steps"].as_array().map(Vec::len), Some(5));
        assert_eq!(api["steps"][0]["output"]["category"], "question");
        assert!(api["reply"].as_str().is_some_and(|r| r.contains("Auto-Submitted: auto-replied")));
        app.stop().await;
    }

    async fn admin_token_guards_mail_content_and_enables_the_csv_export(db: Db) {
        let open = TestApp::spawn(db, &[]).await;
        assert_eq!(open.http.get(open.url("/audit.csv")).send().await.expect("request").status(), 404);
        open.stop().await;

        let app = TestApp::spawn(db, &[("SWARM_ADMIN_TOKEN", "s3cret-token")]).await;
        let body = json(app.post_signed(&fixture("action_request.eml"), "msg_z1").await).await;
        let task = body["task_id"].as_i64().expect("task");
        app.wait_finished(task).await;
        for path in ["/", "/api/tasks/1", "/tasks/1", "/audit.csv"] {
            let r = app.http.get(app.url(path)).send().await.expect("request");
            assert_eq!(r.status(), 401, "{path} without token");
            let r = app.http.get(app.url(path)).bearer_auth("wrong").send().await.expect("request");
            assert_eq!(r.status(), 401, "{path} with a wrong token");
            let r = app.http.get(app.url(path)).bearer_auth("s3cret-token").send().await.expect("request");
            assert_eq!(r.status(), 200, "{path} with the token");
        }
        let browser =
            app.http.get(app.url("/")).basic_auth("admin", Some("s3cret-token")).send().await.expect("request");
        assert_eq!(browser.status(), 200);
        let open_health = app.http.get(app.url("/health")).send().await.expect("request");
        assert_eq!(open_health.status(), 200, "health stays open");
        let open_health = json(open_health).await;
        assert_eq!(open_health["status"], "ok", "{open_health}");
        assert!(open_health.get("details").is_none(), "details need the token: {open_health}");
        let full = json(app.http.get(app.url("/health")).bearer_auth("s3cret-token").send().await.expect("request")).await;
        let bad_query =
            app.http.get(app.url("/audit.csv?task=abc")).bearer_auth("s3cret-token").send().await.expect("request");
        assert_eq!(bad_query.status(), 400);
        let bad_query = json(bad_query).await;
        assert!(bad_query["error"].as_str().is_some_and(|e| e.contains("task")), "{bad_query}");
        assert!(bad_query["request_id"].is_string(), "{bad_query}");
        assert!(full["details"]["mailboxes"].is_array(), "{full}");

        let csv = app
            .http
            .get(app.url(&format!("/audit.csv?task={task}")))
            .bearer_auth("s3cret-token")
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("text");
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        assert_eq!(reader.headers().expect("header").iter().collect::<Vec<_>>()[..3], ["seq", "at", "actor"]);
        let actions: Vec<String> = reader.records().map(|r| r.expect("row")[3].to_owned()).collect();
        for expected in [
            "task.created",
            "step.started",
            "step.finished",
            "task.completed",
            "reply.queued",
            "delivery.delivered",
        ] {
            assert!(actions.iter().any(|a| a == expected), "{expected} missing from {actions:?}");
        }
        let bad = app
            .http
            .get(app.url("/audit.csv?since=yesterday"))
            .bearer_auth("s3cret-token")
            .send()
            .await
            .expect("request");
        assert_eq!(bad.status(), 400);
        app.stop().await;
    }

    async fn templates_in_the_folder_override_the_embedded_ones(db: Db) {
        let dir = tempfile::tempdir().expect("tmp");
        let templates = dir.path().join("custom");
        std::fs::create_dir_all(&templates).expect("mkdir");
        std::fs::write(
            templates.join("reply.txt"),
            "Custom reply for task {{ task_id }}: {{ summary | length }} bullets\n",
        )
        .expect("write");
        let app = TestApp::spawn(db, &[("SWARM_TEMPLATES_DIR", &templates.display().to_string())]).await;
        let body = json(app.post_signed(&fixture("action_request.eml"), "msg_tpl").await).await;
        let task = body["task_id"].as_i64().expect("task");
        app.wait_finished(task).await;
        let d = &app.store.task_deliveries(task).await.expect("deliveries")[0];
        let reply = read_reply(d.location.as_deref().expect("location"));
        let reply = MessageParser::default().parse(&reply).expect("parses");
        let text = reply.body_text(0).expect("text");
        assert!(text.starts_with(&format!("Custom reply for task {task}: ")), "{text}");
        assert!(
            reply.body_html(0).is_some_and(|h| h.contains("Executive summary")),
            "reply.html falls back to the embedded copy"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_broken_template_stops_start_up_with_its_name() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("reply.html"), "{% for x in %}").expect("write");
    let url = Db::Sqlite.fresh_url(dir.path()).await;
    let settings =
        support::settings(dir.path(), &url, &[("SWARM_TEMPLATES_DIR", &dir.path().display().to_string())]);
    let err = swarm_director::app::App::build(settings).await.err().expect("start-up fails");
    assert!(format!("{err:#}").contains("reply.html"), "{err:#}");
}
