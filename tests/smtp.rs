//! Delivery over SMTP to a real server on 127.0.0.1 (a scripted one, so it can say 451 or 550).

#[macro_use]
mod support;

use mail_parser::MessageParser;
use support::{DataReply, SmtpServer, TestApp, fixture, wait_until};

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
