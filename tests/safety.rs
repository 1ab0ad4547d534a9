//! Safety with real mail, end to end over HTTP: a bounce of one of our replies marks that
//! delivery bounced (hard or soft) and makes no task; a hard bounce suppresses the recipient, so
//! the next reply to them is not sent; the CLI lists and removes suppressions. Loop markers we
//! put on our replies stop a reply to our own reply.

#[macro_use]
mod support;

use serde_json::Value;
use support::{TestApp, fixture, read_reply, wait_until};

/// An RFC 3464 report about `message_id` sent to `recipient`, with `status` (`5.1.1`, `4.2.2`).
fn dsn(n: usize, message_id: &str, recipient: &str, status: &str) -> Vec<u8> {
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.org>\r\n\
         To: swarm@localhost\r\nSubject: Undelivered Mail Returned to Sender\r\n\
         Message-ID: <dsn-{n}@mx.example.org>\r\nReturn-Path: <>\r\nAuto-Submitted: auto-replied\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not be delivered.\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n\
         Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n\
         Diagnostic-Code: smtp; 550 {status} <{recipient}>: Recipient address rejected: User unknown\r\n\r\n\
         --b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: swarm@localhost\r\nTo: {recipient}\r\n\
         Message-ID: <{message_id}>\r\nSubject: Re: something\r\n\r\n--b--\r\n"
    )
    .into_bytes()
}

async fn json(r: reqwest::Response) -> Value {
    r.json().await.expect("json")
}

/// Posts the fixture request and waits for its delivered reply: (task, reply Message-ID).
async fn answered_request(app: &TestApp, id: &str, raw: &[u8]) -> (i64, String) {
    let body = json(app.post_signed(raw, id).await).await;
    let task = body["task_id"].as_i64().unwrap_or_else(|| panic!("a task: {body}"));
    app.wait_finished(task).await;
    let d = app.store.task_deliveries(task).await.expect("deliveries").remove(0);
    assert_eq!(d.status, "delivered");
    (task, d.message_id)
}

matrix! {
    async fn a_hard_bounce_marks_the_delivery_and_suppresses_the_recipient(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let (task, reply_id) = answered_request(&app, "msg_s1", &fixture("action_request.eml")).await;

        let body = json(app.post_signed(&dsn(1, &reply_id, "anna@example.org", "5.1.1"), "msg_s2").await).await;
        assert_eq!(body["outcome"], "ignored", "{body}");
        let reason = body["reason"].as_str().expect("reason");
        assert!(reason.contains("hard 5.1.1") && reason.contains(&format!("task {task}")), "{reason}");

        let d = app.store.task_deliveries(task).await.expect("deliveries").remove(0);
        assert_eq!(d.status, "bounced");
        let suppressed = app.store.suppression("Anna@Example.org").await.expect("query").expect("suppressed");
        assert!(suppressed.reason.contains("5.1.1") && suppressed.reason.contains("User unknown"), "{}", suppressed.reason);

        // The next request from the suppressed address is processed, but its reply is not sent.
        let raw = String::from_utf8(fixture("action_request.eml")).expect("utf-8")
            .replace("budget-q4-001@example.org", "budget-q4-002@example.org");
        let body = json(app.post_signed(raw.as_bytes(), "msg_s3").await).await;
        let second = body["task_id"].as_i64().expect("task");
        app.wait_finished(second).await;
        let d = app.store.task_deliveries(second).await.expect("deliveries").remove(0);
        assert_eq!(d.status, "failed");
        assert!(d.last_error.as_deref().is_some_and(|e| e.contains("suppression list")), "{:?}", d.last_error);
        assert!(d.location.is_none(), "nothing was written");

        let page = app.http.get(app.url("/")).send().await.expect("status page").text().await.expect("html");
        assert!(page.contains("Suppressed addresses (1)") && page.contains("anna@example.org"), "{page}");

        assert!(app.store.remove_suppression("anna@example.org", "test").await.expect("remove"));
        assert!(app.store.suppression("anna@example.org").await.expect("query").is_none());
        app.stop().await;
    }

    async fn a_soft_bounce_marks_the_delivery_without_suppressing(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let (task, reply_id) = answered_request(&app, "msg_t1", &fixture("action_request.eml")).await;
        let body = json(app.post_signed(&dsn(2, &reply_id, "anna@example.org", "4.2.2"), "msg_t2").await).await;
        assert!(body["reason"].as_str().is_some_and(|r| r.contains("soft 4.2.2")), "{body}");
        assert_eq!(app.store.task_deliveries(task).await.expect("d")[0].status, "bounced");
        assert!(app.store.suppression("anna@example.org").await.expect("query").is_none());
        app.stop().await;
    }

    async fn a_bounce_of_mail_we_never_sent_suppresses_nobody(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let body = json(app.post_signed(&dsn(3, "not-ours@elsewhere.example", "victim@example.net", "5.1.1"), "msg_u1").await).await;
        assert_eq!(body["outcome"], "ignored");
        assert!(body["reason"].as_str().is_some_and(|r| r.contains("not one of our replies")), "{body}");
        assert!(app.store.suppressions().await.expect("list").is_empty());
        app.stop().await;
    }

    async fn our_own_reply_coming_back_gets_no_reply(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let (task, _) = answered_request(&app, "msg_l1", &fixture("action_request.eml")).await;
        let d = app.store.task_deliveries(task).await.expect("deliveries").remove(0);
        let reply = read_reply(d.location.as_deref().expect("location"));
        assert!(String::from_utf8_lossy(&reply).contains("X-Loop: swarm@localhost"));
        // As if a forwarding rule sent it back, under a new Message-ID and another From.
        let text = String::from_utf8_lossy(&reply)
            .replace(&d.message_id, "forwarded-1@example.org")
            .replace("From: SwarmDirector <swarm@localhost>", "From: Anna <anna@example.org>");
        let text = text.replace("Auto-Submitted: auto-replied\r\n", "");
        let body = json(app.post_signed(text.as_bytes(), "msg_l2").await).await;
        assert_eq!(body["outcome"], "ignored", "{body}");
        assert!(body["reason"].as_str().is_some_and(|r| r.contains("X-Loop")), "{body}");
        app.stop().await;
    }
}

/// A request from `from`, distinct by `n`, in the conversation rooted at `root` when given.
fn request(n: usize, from: &str, root: Option<&str>) -> Vec<u8> {
    let refs = root.map(|r| format!("References: <{r}>\r\nIn-Reply-To: <{r}>\r\n")).unwrap_or_default();
    format!(
        "From: {from}\r\nTo: swarm@localhost\r\nSubject: Request {n}\r\nMessage-ID: <cap-{n}@example.org>\r\n{refs}\r\n\
         Could you send report {n} by Friday?\r\n"
    )
    .into_bytes()
}

matrix! {
    async fn replies_beyond_the_recipient_cap_are_held_not_sent(db: Db) {
        let app = TestApp::spawn(db, &[("SWARM_REPLY_CAP_RECIPIENT", "2/10m")]).await;
        let mut statuses = Vec::new();
        for n in 0..3 {
            let body = json(app.post_signed(&request(n, "anna@example.org", None), &format!("msg_c{n}")).await).await;
            let task = body["task_id"].as_i64().expect("task");
            app.wait_finished(task).await;
            statuses.push(app.store.task_deliveries(task).await.expect("d").remove(0));
        }
        let words: Vec<&str> = statuses.iter().map(|d| d.status.as_str()).collect();
        assert_eq!(words, ["delivered", "delivered", "held"]);
        let held = &statuses[2];
        assert!(held.last_error.as_deref().is_some_and(|e| e.contains("cap of 2")), "{:?}", held.last_error);
        assert!(held.location.is_none(), "not written");
        // Another recipient is not affected.
        let body = json(app.post_signed(&request(9, "bob@example.org", None), "msg_c9").await).await;
        let task = body["task_id"].as_i64().expect("task");
        app.wait_finished(task).await;
        assert_eq!(app.store.task_deliveries(task).await.expect("d")[0].status, "delivered");
        let page = app.http.get(app.url("/")).send().await.expect("page").text().await.expect("html");
        assert!(page.contains("status-held"), "the status page shows held replies");
        // A person releases it: sent despite the cap.
        assert!(app.store.release_delivery(held.id, "test").await.expect("release"));
        assert!(!app.store.release_delivery(held.id, "test").await.expect("again"), "only held ones");
        let sent = wait_until(std::time::Duration::from_secs(5), || async {
            app.store.task_deliveries(held.task_id?).await.ok()?.into_iter().find(|d| d.status == "delivered")
        })
        .await;
        assert!(sent.is_some(), "the released reply is delivered");
        app.stop().await;
    }

    async fn replies_beyond_the_thread_cap_are_held(db: Db) {
        let app = TestApp::spawn(db, &[("SWARM_REPLY_CAP_THREAD", "1/10m")]).await;
        let mut words = Vec::new();
        for (n, from) in ["anna@example.org", "bob@example.org"].iter().enumerate() {
            let raw = request(20 + n, from, Some("loop-root@example.org"));
            let body = json(app.post_signed(&raw, &format!("msg_th{n}")).await).await;
            let task = body["task_id"].as_i64().expect("task");
            app.wait_finished(task).await;
            words.push(app.store.task_deliveries(task).await.expect("d").remove(0).status);
        }
        assert_eq!(words, ["delivered", "held"]);
        app.stop().await;
    }
}

matrix! {
    async fn only_allowed_senders_with_a_trusted_dmarc_pass_are_obeyed(db: Db) {
        let app = TestApp::spawn(
            db,
            &[("SWARM_ALLOWED_SENDERS", "@example.org"), ("SWARM_TRUSTED_AUTHSERV_ID", "mx.ours.example")],
        )
        .await;
        let with = |n: usize, results: &str, from: &str| {
            format!(
                "{results}From: {from}\r\nTo: swarm@localhost\r\nSubject: Order {n}\r\nMessage-ID: <policy-{n}@x.example>\r\n\r\n\
                 Please approve the order by Friday.\r\n"
            )
            .into_bytes()
        };
        let pass = "Authentication-Results: mx.ours.example; dkim=pass header.d=example.org; dmarc=pass header.from=example.org\r\n";
        let body = json(app.post_signed(&with(1, pass, "anna@example.org"), "msg_p1").await).await;
        assert_eq!(body["outcome"], "task", "{body}");

        // A forged From with no proof, a forged proof under a header from another server, a
        // sender outside the allowlist: stored, no task, the reason says why.
        let forged_top = format!("Authentication-Results: mx.evil.example; dmarc=pass header.from=example.org\r\n{pass}");
        for (n, raw, why) in [
            (2, with(2, "", "anna@example.org"), "no Authentication-Results"),
            (3, with(3, &forged_top, "anna@example.org"), "mx.evil.example"),
            (4, with(4, &pass.replace("dmarc=pass", "dmarc=fail"), "anna@example.org"), "DMARC fail"),
            (5, with(5, pass, "eve@evil.example"), "SWARM_ALLOWED_SENDERS"),
        ] {
            let body = json(app.post_signed(&raw, &format!("msg_p{n}")).await).await;
            assert_eq!(body["outcome"], "ignored", "{n}: {body}");
            assert!(body["reason"].as_str().is_some_and(|r| r.contains(why)), "{n}: {body}");
        }
        let overview = app.store.overview(10).await.expect("overview");
        assert_eq!(overview.recent.len(), 1, "only the authenticated request became a task");
        app.stop().await;
    }
}
