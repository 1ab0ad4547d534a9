//! Delivery over SMTP to a real server on 127.0.0.1 (a scripted one, so it can say 451 or 550).

#[macro_use]
mod support;

use mail_parser::MessageParser;
use support::smtp::{DataReply, SmtpServer, SmtpTls};
use support::{TestApp, fixture, wait_until};

matrix! {
    async fn reply_is_delivered_over_smtp_with_the_right_envelope(db: Db) {
        let smtp = SmtpServer::start(DataReply::Accept).await;
        let app = TestApp::spawn(db, &[("SMTP_URL", &smtp.url()), ("SWARM_FROM_ADDRESS", "bot@swarm.example")]).await;
        let body: serde_json::Value =
            app.post_signed(&fixture("action_request.eml"), "msg_s1").await.json().await.expect("json");
        let task = body["task_id"].as_i64().expect("task");
        app.wait_finished(task).await;

        let d = &app.store.task_deliveries(task).await.expect("deliveries")[0];
        assert_eq!(d.status, "delivered");
        assert!(d.location.as_deref().is_some_and(|l| l.starts_with("smtp 250")), "{:?}", d.location);
        let got = smtp.messages();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].mail_from, "bot@swarm.example");
        assert_eq!(got[0].rcpt_to, ["anna@example.org"]);
        let reply = MessageParser::default().parse(&got[0].data).expect("parses");
        assert_eq!(reply.message_id(), Some(d.message_id.as_str()));
        assert!(d.message_id.ends_with("@swarm.example"));
        assert!(
            !std::fs::exists(app.dir.path().join("outbox")).unwrap_or(false),
            "no .eml files when SMTP is set"
        );
        app.stop().await;
    }

    async fn transient_smtp_failure_is_scheduled_for_a_later_retry(db: Db) {
        let smtp = SmtpServer::start(DataReply::Transient).await;
        let app = TestApp::spawn(db, &[("SMTP_URL", &smtp.url())]).await;
        let body: serde_json::Value =
            app.post_signed(&fixture("action_request.eml"), "msg_s2").await.json().await.expect("json");
        let task = body["task_id"].as_i64().expect("task");
        let d = wait_until(std::time::Duration::from_secs(5), || async {
            app.store.task_deliveries(task).await.ok()?.into_iter().find(|d| d.last_error.is_some())
        })
        .await
        .expect("a failed attempt is recorded");
        assert_eq!(d.status, "pending", "4xx is retried later");
        assert_eq!(d.attempts, 1);
        assert!(d.last_error.as_deref().is_some_and(|e| e.contains("451")), "{:?}", d.last_error);
        assert!(smtp.messages().is_empty());
        app.stop().await;
    }

    async fn permanent_smtp_failure_fails_the_delivery_at_once(db: Db) {
        let smtp = SmtpServer::start(DataReply::Reject).await;
        let app = TestApp::spawn(db, &[("SMTP_URL", &smtp.url())]).await;
        let body: serde_json::Value =
            app.post_signed(&fixture("action_request.eml"), "msg_s3").await.json().await.expect("json");
        let task = body["task_id"].as_i64().expect("task");
        app.wait_finished(task).await;
        let d = &app.store.task_deliveries(task).await.expect("deliveries")[0];
        assert_eq!(d.status, "failed");
        assert_eq!(d.attempts, 1);
        assert!(d.last_error.as_deref().is_some_and(|e| e.contains("550")), "{:?}", d.last_error);
        app.stop().await;
    }
}

/// Posts `raw` and returns its task id.
/// The Message-ID of a received copy.
fn message_id_of(data: &[u8]) -> String {
    MessageParser::default().parse(data).and_then(|m| m.message_id().map(str::to_owned)).expect("Message-ID")
}

#[tokio::test]
async fn credentials_in_smtp_url_are_sent_with_auth() {
    let smtp = SmtpServer::start(DataReply::Accept).await;
    let url = format!("smtp://bot%40swarm.example:p%40ss%3Aword@127.0.0.1:{}", smtp.port);
    let app = TestApp::spawn(support::Db::Sqlite, &[("SMTP_URL", &url)]).await;
    let task = app.post_for_task(&fixture("action_request.eml"), "msg_auth").await;
    app.wait_finished(task).await;
    assert_eq!(app.store.task_deliveries(task).await.expect("d")[0].status, "delivered");
    assert_eq!(*smtp.logins.lock().expect("lock"), ["bot@swarm.example:p@ss:word"]);
    app.stop().await;
}

#[tokio::test]
async fn smtp_urls_are_checked_at_start() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}/x.db", dir.path().display());
    for bad in ["pop3://mail.example.org", "smtp://", "smtp://host:port", "smtp://user@host"] {
        let settings = support::settings(dir.path(), &url, &[("SMTP_URL", bad)]);
        assert!(swarm_director::mail::transport::Transport::from_settings(&settings.smtp).is_err(), "{bad}");
    }
    for good in ["smtps://user:pw@smtp.example.org", "smtp://smtp.example.org:587", "smtp://127.0.0.1:2525"] {
        let settings = support::settings(dir.path(), &url, &[("SMTP_URL", good)]);
        assert!(swarm_director::mail::transport::Transport::from_settings(&settings.smtp).is_ok(), "{good}");
    }
}

matrix! {
    async fn a_451_then_250_delivers_exactly_once_in_two_attempts(db: Db) {
        let smtp = SmtpServer::script(vec![DataReply::Transient, DataReply::Accept]).await;
        let app = TestApp::spawn(db, &[("SMTP_URL", &smtp.url()), ("SMTP_RETRY_SCHEDULE", "1s")]).await;
        let task = app.post_for_task(&fixture("action_request.eml"), "msg_r1").await;
        app.wait_finished(task).await;
        let d = &app.store.task_deliveries(task).await.expect("deliveries")[0];
        assert_eq!((d.status.as_str(), d.attempts), ("delivered", 2));
        let got = smtp.messages();
        assert_eq!(got.len(), 1, "exactly one copy");
        assert_eq!(message_id_of(&got[0].data), d.message_id);
        let api: serde_json::Value =
            app.http.get(app.url(&format!("/api/tasks/{task}"))).send().await.expect("api").json().await.expect("json");
        let attempts: Vec<&str> = api["delivery_attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .filter_map(|a| a["action"].as_str())
            .collect();
        assert_eq!(attempts, ["delivery.retry", "delivery.delivered"], "every attempt is on the task page");
        let page = app.http.get(app.url(&format!("/tasks/{task}"))).send().await.expect("page").text().await.expect("html");
        assert!(page.contains("Delivery attempts") && page.contains("451"), "{page}");
        app.stop().await;
    }

    async fn transient_failures_stop_after_the_schedule(db: Db) {
        let smtp = SmtpServer::start(DataReply::Transient).await;
        let app = TestApp::spawn(db, &[("SMTP_URL", &smtp.url()), ("SMTP_RETRY_SCHEDULE", "1s,1s")]).await;
        let task = app.post_for_task(&fixture("action_request.eml"), "msg_r2").await;
        let d = wait_until(std::time::Duration::from_secs(10), || async {
            app.store.task_deliveries(task).await.ok()?.into_iter().find(|d| d.status == "failed")
        })
        .await
        .expect("fails for good after the schedule");
        assert_eq!(d.attempts, 3, "the first attempt and one per schedule entry");
        assert!(smtp.messages().is_empty());
        app.stop().await;
    }

    async fn a_relay_that_is_down_for_a_while_gets_the_reply_when_back(db: Db) {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let url = format!("smtp://127.0.0.1:{port}");
        let app = TestApp::spawn(db, &[("SMTP_URL", &url), ("SMTP_RETRY_SCHEDULE", "1s,1s,1s,1s,1s")]).await;
        let task = app.post_for_task(&fixture("action_request.eml"), "msg_r3").await;
        wait_until(std::time::Duration::from_secs(5), || async {
            app.store.task_deliveries(task).await.ok()?.into_iter().find(|d| d.attempts >= 1 && d.last_error.is_some())
        })
        .await
        .expect("a refused connection is recorded");
        let smtp = SmtpServer::script_on(port, vec![DataReply::Accept]).await;
        app.wait_finished_within(task, std::time::Duration::from_secs(10)).await;
        let d = &app.store.task_deliveries(task).await.expect("deliveries")[0];
        assert_eq!(d.status, "delivered");
        assert!(d.attempts >= 2);
        assert_eq!(smtp.messages().len(), 1);
        app.stop().await;
    }

    async fn a_connection_lost_after_data_is_retried_under_the_same_message_id(db: Db) {
        let smtp = SmtpServer::script(vec![DataReply::Drop, DataReply::Accept]).await;
        let app = TestApp::spawn(db, &[("SMTP_URL", &smtp.url()), ("SMTP_RETRY_SCHEDULE", "1s")]).await;
        let task = app.post_for_task(&fixture("action_request.eml"), "msg_r4").await;
        app.wait_finished(task).await;
        let d = &app.store.task_deliveries(task).await.expect("deliveries")[0];
        assert_eq!((d.status.as_str(), d.attempts), ("delivered", 2));
        let got = smtp.messages();
        assert_eq!(got.len(), 2, "the relay may have kept the first copy: at most one duplicate");
        assert!(got.iter().all(|m| message_id_of(&m.data) == d.message_id), "same Message-ID");
        let mut events: Vec<(String, String)> = Vec::new();
        let filter = swarm_director::store::AuditFilter { task: Some(task), ..Default::default() };
        app.store
            .for_each_audit(&filter, |r| -> anyhow::Result<()> {
                events.push((r.action, r.details.to_string()));
                Ok(())
            })
            .await
            .expect("audit");
        assert!(
            events.iter().any(|(action, details)| action == "delivery.retry" && details.contains("outcome unknown")),
            "{events:?}"
        );
        app.stop().await;
    }

    async fn smtp_commands_in_a_body_stay_text(db: Db) {
        let smtp = SmtpServer::start(DataReply::Accept).await;
        let app = TestApp::spawn(db, &[("SMTP_URL", &smtp.url())]).await;
        for (i, eol) in ["\r\n", "\n", "\r"].iter().enumerate() {
            let raw = format!(
                "From: Anna <anna@example.org>\r\nTo: swarm@localhost\r\nSubject: Smuggling {i}\r\n\
                 Message-ID: <smuggle-{i}@example.org>\r\n\r\nPlease look at this:{eol}.{eol}MAIL FROM:<x@y>{eol}RCPT TO:<victim@example.net>{eol}DATA{eol}Thanks{eol}"
            );
            let task = app.post_for_task(raw.as_bytes(), &format!("msg_d{i}")).await;
            app.wait_finished(task).await;
        }
        let got = smtp.messages();
        assert_eq!(got.len(), 3, "one message per reply, no smuggled transaction");
        for m in &got {
            assert_eq!(m.mail_from, "swarm@localhost");
            assert_eq!(m.rcpt_to, ["anna@example.org"]);
            let reply = MessageParser::default().parse(&m.data).expect("parses");
            let text = reply.body_text(0).expect("text").replace("\r\n", "\n");
            assert!(text.contains("MAIL FROM:<x@y>"), "{text}");
        }
        app.stop().await;
    }
}

/// The process is SIGKILLed while the relay holds its DATA unanswered; another instance takes the
/// delivery over when the lease expires. The relay may now have two copies, never more, and both
/// carry the same Message-ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_during_delivery_causes_at_most_one_duplicate_with_the_same_message_id() {
    use swarm_director::intake::webhook::decode_secret;
    let smtp = SmtpServer::script(vec![DataReply::Hang, DataReply::Accept]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}/swarm.db", dir.path().display());
    let smtp_url = smtp.url();
    let env = [
        ("SWARM_WEBHOOK_SECRETS", support::SECRET),
        ("SMTP_URL", smtp_url.as_str()),
        ("SWARM_LEASE_SECS", "2"),
        ("SWARM_POLL_INTERVAL_MS", "100"),
    ];
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_swarm-director"));
    let mut first = support::fleet::Fleet::start(binary, dir.path(), &url, 1, &env);
    let key = decode_secret(support::SECRET).expect("secret");
    let http = reqwest::Client::new();
    let status =
        support::fleet::post_signed(&http, first.ports[0], &key, "msg_kill", fixture("action_request.eml"))
            .await
            .expect("post");
    assert_eq!(status, 202);
    wait_until(std::time::Duration::from_secs(10), || async { (smtp.messages().len() == 1).then_some(()) })
        .await
        .expect("the relay got the first copy and holds its answer");
    first.kill(0);

    let _second = support::fleet::Fleet::start(binary, dir.path(), &url, 1, &env);
    let store = swarm_director::store::Store::connect(&url, &Default::default()).await.expect("store");
    let d = wait_until(std::time::Duration::from_secs(15), || async {
        store.task_deliveries(1).await.ok()?.into_iter().find(|d| d.status == "delivered")
    })
    .await
    .expect("the second instance delivers");
    let got = smtp.messages();
    assert_eq!(got.len(), 2, "at most one duplicate");
    assert!(got.iter().all(|m| message_id_of(&m.data) == d.message_id), "both under the same Message-ID");
    assert_eq!(d.attempts, 2);
}

/// A test CA and a server certificate in a temp folder, and an acceptor for it.
fn tls_material() -> (tempfile::TempDir, tokio_rustls::TlsAcceptor) {
    let dir = tempfile::tempdir().expect("tmp");
    support::tls::test_ca(dir.path()).expect("openssl makes the test CA");
    let acceptor = SmtpTls::acceptor(dir.path());
    (dir, acceptor)
}

#[tokio::test]
async fn replies_go_over_implicit_tls_and_starttls_checked_against_the_ca() {
    let (certs, acceptor) = tls_material();
    let ca = certs.path().join("ca.pem").display().to_string();
    let implicit = SmtpServer::with_tls(SmtpTls::Implicit(acceptor.clone())).await;
    let starttls = SmtpServer::with_tls(SmtpTls::StartTls(acceptor)).await;
    for (n, (server, scheme)) in [(&implicit, "smtps"), (&starttls, "smtp")].into_iter().enumerate() {
        let url = format!("{scheme}://bot:secret@localhost:{}", server.port);
        let app = TestApp::spawn(support::Db::Sqlite, &[("SMTP_URL", &url), ("SMTP_CA_FILE", &ca)]).await;
        let task = app.post_for_task(&fixture("action_request.eml"), &format!("msg_tls{n}")).await;
        app.wait_finished(task).await;
        let d = &app.store.task_deliveries(task).await.expect("d")[0];
        assert_eq!(d.status, "delivered", "{scheme}: {:?}", d.last_error);
        let got = server.messages();
        assert_eq!(got.len(), 1);
        assert!(got[0].tls, "{scheme}: the message went over TLS");
        assert_eq!(*server.logins.lock().expect("lock"), ["bot:secret"], "{scheme}: AUTH inside TLS");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_relay_certificate_from_an_unknown_ca_is_refused() {
    let (_certs, acceptor) = tls_material();
    let server = SmtpServer::with_tls(SmtpTls::Implicit(acceptor)).await;
    let url = format!("smtps://localhost:{}", server.port);
    let app = TestApp::spawn(support::Db::Sqlite, &[("SMTP_URL", &url)]).await;
    let task = app.post_for_task(&fixture("action_request.eml"), "msg_ca").await;
    let d = wait_until(std::time::Duration::from_secs(5), || async {
        app.store.task_deliveries(task).await.ok()?.into_iter().find(|d| d.last_error.is_some())
    })
    .await
    .expect("the attempt fails");
    assert_ne!(d.status, "delivered");
    assert!(server.messages().is_empty(), "nothing was sent to an unverified relay");
    app.stop().await;
}
