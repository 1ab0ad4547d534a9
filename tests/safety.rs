//! Safety with real mail, end to end over HTTP: a bounce of one of our replies marks that
//! delivery bounced (hard or soft) and makes no task; a hard bounce suppresses the recipient, so
//! the next reply to them is not sent; the CLI lists and removes suppressions. Loop markers we
//! put on our replies stop a reply to our own reply.

#[macro_use]
mod support;

use support::mail::Mail;
use support::{TestApp, fixture, json, read_reply, wait_until};

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

/// Posts the fixture request and waits for its delivered reply: (task, reply Message-ID).
async fn answered_request(app: &TestApp, id: &str, raw: &[u8]) -> (i64, String) {
    let task = app.post_for_task(raw, id).await;
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
    let root = root.map(|r| format!("<{r}>"));
    let threading = root.as_deref().map(|r| [("References", r), ("In-Reply-To", r)]);
    Mail {
        from,
        subject: &format!("Request {n}"),
        message_id: &format!("cap-{n}@example.org"),
        headers: threading.as_ref().map_or(&[], |h| h.as_slice()),
        body: &format!("Could you send report {n} by Friday?\r\n"),
        ..Mail::default()
    }
    .bytes()
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

/// A DKIM key of `domain` (Ed25519, selector `s1`) published on `dns`; signs messages.
struct DkimKey {
    key: Vec<u8>,
    domain: String,
}

impl DkimKey {
    fn publish(dns: &support::dns::DnsServer, domain: &str) -> Self {
        use base64::Engine;
        use mail_auth::common::crypto::Ed25519Key;
        let key = Ed25519Key::generate_pkcs8().expect("key");
        let public = Ed25519Key::from_pkcs8_der(&key).expect("key").public_key();
        let public = base64::engine::general_purpose::STANDARD.encode(public);
        dns.txt(&format!("s1._domainkey.{domain}"), &format!("v=DKIM1; k=ed25519; p={public}"));
        Self { key, domain: domain.to_owned() }
    }

    /// `message` with a DKIM-Signature header over From, To, Subject, Message-ID and the body.
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        use mail_auth::common::crypto::Ed25519Key;
        use mail_auth::common::headers::HeaderWriter;
        let key = Ed25519Key::from_pkcs8_der(&self.key).expect("key");
        let signature = mail_auth::dkim::DkimSigner::from_key(key)
            .domain(&self.domain)
            .selector("s1")
            .headers(["From", "To", "Subject", "Message-ID"])
            .sign(message)
            .expect("signs");
        let mut signed = signature.to_header().into_bytes();
        signed.extend_from_slice(message);
        signed
    }
}

fn order(n: usize, from: &str) -> Vec<u8> {
    Mail {
        from,
        subject: &format!("Order {n}"),
        message_id: &format!("dns-{n}@example.org"),
        body: "Please approve the order by Friday.\r\n",
        ..Mail::default()
    }
    .bytes()
}

/// Posts `raw` and returns the outcome and its reason.
async fn outcome(app: &TestApp, raw: &[u8], id: &str) -> (String, String) {
    let body = json(app.post_signed(raw, id).await).await;
    let word = body["outcome"].as_str().unwrap_or_default().to_owned();
    (word, body["reason"].as_str().unwrap_or_default().to_owned())
}

/// No Authentication-Results to trust: the bot verifies DKIM and DMARC itself, against a real
/// name server on 127.0.0.1 that publishes the keys and policies generated here.
#[tokio::test]
async fn dmarc_is_verified_in_process_against_dns() {
    let dns = support::dns::DnsServer::start().await;
    let ours = DkimKey::publish(&dns, "example.org");
    dns.txt("_dmarc.example.org", "v=DMARC1; p=reject");
    let evil = DkimKey::publish(&dns, "evil.example");
    dns.txt("_dmarc.evil.example", "v=DMARC1; p=none");
    let no_policy = DkimKey::publish(&dns, "nopolicy.example");
    let resolver = dns.addr.to_string();
    let app = TestApp::spawn(
        support::Db::Sqlite,
        &[
            ("SWARM_ALLOWED_SENDERS", "@example.org,@nopolicy.example"),
            ("SWARM_DNS_RESOLVER", &resolver),
            ("SWARM_DNS_TIMEOUT_SECS", "2"),
        ],
    )
    .await;

    // Signed by the From domain, which publishes DMARC: obeyed.
    let (word, reason) = outcome(&app, &ours.sign(&order(1, "Anna <anna@example.org>")), "msg_d1").await;
    assert_eq!(word, "task", "{reason}");

    // Changed after signing; signed by another domain (not aligned); unsigned; signed, but the
    // domain publishes no DMARC record: stored, no task, and the reason gives the results.
    let mut tampered = ours.sign(&order(2, "anna@example.org"));
    let at = tampered.len() - "Friday.\r\n".len();
    tampered.splice(at..at + 6, b"Monday".iter().copied());
    let nopolicy_from = order(5, "ned@nopolicy.example");
    for (n, raw, why) in [
        (2, tampered, "body hash does not match"),
        (3, evil.sign(&order(3, "anna@example.org")), "dkim=pass header.d=evil.example"),
        (4, order(4, "anna@example.org"), "dkim=none"),
        (5, no_policy.sign(&nopolicy_from), "no DMARC record"),
    ] {
        let (word, reason) = outcome(&app, &raw, &format!("msg_d{n}")).await;
        assert_eq!(word, "ignored", "{n}: {reason}");
        assert!(reason.contains("DMARC did not pass") && reason.contains(why), "{n}: {reason}");
    }

    // A sender outside the allowlist is refused without a DNS question about it.
    let (word, reason) = outcome(&app, &evil.sign(&order(6, "eve@evil.example")), "msg_d6").await;
    assert_eq!(word, "ignored");
    assert!(reason.contains("SWARM_ALLOWED_SENDERS"), "{reason}");
    assert!(!dns.queries().iter().any(|q| q.starts_with("_dmarc.evil.example")), "{:?}", dns.queries());

    assert_eq!(app.store.overview(10).await.expect("overview").recent.len(), 1);
    app.stop().await;
}

/// SPF needs the SMTP peer: SendGrid reports it (`sender_ip`, `envelope`), so an unsigned
/// message passes DMARC through an aligned SPF pass, and fails it from an address SPF refuses.
#[tokio::test]
async fn spf_counts_when_the_provider_reports_the_smtp_peer() {
    let dns = support::dns::DnsServer::start().await;
    dns.txt("example.org", "v=spf1 ip4:192.0.2.10 -all");
    dns.txt("_dmarc.example.org", "v=DMARC1; p=reject");
    let resolver = dns.addr.to_string();
    let app = TestApp::spawn(
        support::Db::Sqlite,
        &[
            ("SWARM_ALLOWED_SENDERS", "@example.org"),
            ("SWARM_DNS_RESOLVER", &resolver),
            ("SENDGRID_INBOUND_BASIC_AUTH", "sendgrid:parse-secret"),
        ],
    )
    .await;
    let post = |n: usize, ip: &str| {
        let raw = String::from_utf8(order(10 + n, "anna@example.org")).expect("utf-8");
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("email", &raw)
            .append_pair("sender_ip", ip)
            .append_pair("envelope", r#"{"to":["swarm@localhost"],"from":"bounces@example.org"}"#)
            .finish();
        app.http
            .post(app.url("/inbound/sendgrid"))
            .basic_auth("sendgrid", Some("parse-secret"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let passed = json(post(1, "192.0.2.10").await.expect("request")).await;
    assert_eq!(passed["outcome"], "task", "{passed}");
    let failed = json(post(2, "198.51.100.7").await.expect("request")).await;
    assert_eq!(failed["outcome"], "ignored", "{failed}");
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("spf=fail smtp.mailfrom=example.org"), "{reason}");
    app.stop().await;
}

/// The `.eml` files the file transport wrote so far.
fn sent(app: &TestApp) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(app.dir.path().join("outbox")) else { return vec![] };
    entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect()
}

/// `SWARM_POLITE_REFUSAL`: a sender outside the allowlist whose DMARC passed gets one short
/// refusal; a forged or unverifiable sender, and automated mail, get nothing (no backscatter).
#[tokio::test]
async fn a_polite_refusal_goes_only_to_authenticated_senders() {
    let dns = support::dns::DnsServer::start().await;
    let outsider = DkimKey::publish(&dns, "outside.example");
    dns.txt("_dmarc.outside.example", "v=DMARC1; p=none");
    let resolver = dns.addr.to_string();
    let app = TestApp::spawn(
        support::Db::Sqlite,
        &[
            ("SWARM_ALLOWED_SENDERS", "@example.org"),
            ("SWARM_DNS_RESOLVER", &resolver),
            ("SWARM_POLITE_REFUSAL", "true"),
        ],
    )
    .await;

    let (word, reason) =
        outcome(&app, &outsider.sign(&order(21, "Olga <olga@outside.example>")), "msg_r1").await;
    assert_eq!(word, "ignored");
    assert!(reason.contains("SWARM_ALLOWED_SENDERS") && reason.contains("polite refusal queued"), "{reason}");

    // Forged (unsigned, so DMARC fails) and automated (authenticated, but an auto-reply).
    let (_, forged) = outcome(&app, &order(22, "olga@outside.example"), "msg_r2").await;
    assert!(!forged.contains("refusal"), "{forged}");
    let auto = [b"Auto-Submitted: auto-replied\r\n".as_slice(), &order(23, "olga@outside.example")].concat();
    let (_, automated) = outcome(&app, &outsider.sign(&auto), "msg_r3").await;
    assert!(automated.contains("Auto-Submitted"), "{automated}");

    let refusals = wait_until(std::time::Duration::from_secs(5), || async {
        let files = sent(&app);
        (!files.is_empty()).then_some(files)
    })
    .await
    .expect("the refusal is sent");
    // Every refusal is queued with its message; once the outbox is empty nothing more can come.
    wait_until(std::time::Duration::from_secs(5), || async {
        (app.store.pending_work().await.expect("pending") == (0, 0)).then_some(())
    })
    .await
    .expect("the outbox drains");
    assert_eq!(sent(&app).len(), 1, "exactly one refusal");
    let refusal = &refusals[0];
    for header in [
        "To: Olga <olga@outside.example>",
        "Subject: Re: Order 21",
        "In-Reply-To: <dns-21@example.org>",
        "Auto-Submitted: auto-replied",
    ] {
        assert!(refusal.contains(header), "{header} missing in:\n{refusal}");
    }
    assert!(refusal.contains("was not processed"), "{refusal}");
    assert!(!refusal.contains("example.org,") && !refusal.contains("SWARM_"), "no policy details leak");
    assert_eq!(app.store.overview(10).await.expect("overview").recent.len(), 0, "no task");
    app.stop().await;
}
