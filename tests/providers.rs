//! Provider inbound webhooks over real HTTP on port 0: Mailgun (parsed and MIME), SendGrid
//! Inbound Parse (parsed with a Latin-1 charset, raw; Basic auth and ECDSA signatures), Postmark
//! (JSON, Basic auth), and the signed task hook. Payloads are the fixtures in
//! `fixtures/providers/`, written from each provider's documentation.

#[macro_use]
mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mail_parser::MessageParser;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::EncodePublicKey;
use serde_json::Value;
use support::{Db, TestApp, json, read_reply};
use swarm_director::intake::providers::mailgun;

const MAILGUN_KEY: &str = "key-mailgun-test-signing-key-0001";
const SENDGRID_AUTH: &str = "sendgrid:parse-secret";
const POSTMARK_AUTH: &str = "postmark:inbound-secret";

fn provider_fixture(name: &str) -> Vec<u8> {
    support::fixture(&format!("providers/{name}"))
}

/// The boundary of a `.form` fixture (its first line is `--boundary`).
fn boundary(form: &[u8]) -> String {
    let first = form.split(|b| *b == b'\r').next().expect("first line");
    String::from_utf8_lossy(first.strip_prefix(b"--").expect("starts with a boundary")).into_owned()
}

/// The fixture with `extra` text fields appended before its closing boundary.
fn form_with(fixture: &[u8], extra: &[(&str, &str)]) -> Vec<u8> {
    let b = boundary(fixture);
    let close = format!("--{b}--\r\n");
    let mut body = fixture.strip_suffix(close.as_bytes()).expect("closing boundary").to_vec();
    for (name, value) in extra {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(close.as_bytes());
    body
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A Mailgun-signed copy of the fixture: timestamp, token and signature fields.
fn mailgun_form(fixture: &[u8], token: &str, timestamp: i64, key: &str) -> Vec<u8> {
    let ts = timestamp.to_string();
    let signature = mailgun::sign(key.as_bytes(), &ts, token);
    form_with(fixture, &[("timestamp", &ts), ("token", token), ("signature", &signature)])
}

fn basic(credentials: &str) -> String {
    format!("Basic {}", STANDARD.encode(credentials))
}

async fn post_form(app: &TestApp, path: &str, body: Vec<u8>, auth: Option<&str>) -> reqwest::Response {
    let b = boundary(&body);
    let mut request = app
        .http
        .post(app.url(path))
        .header("content-type", format!("multipart/form-data; boundary={b}"))
        .body(body);
    if let Some(auth) = auth {
        request = request.header("authorization", basic(auth));
    }
    request.send().await.expect("request")
}

async fn status_and_json(r: reqwest::Response) -> (u16, Value) {
    (r.status().as_u16(), json(r).await)
}

/// The task's stored input (the parsed email).
async fn input(app: &TestApp, task: i64) -> Value {
    let text = app.store.task_input(task).await.expect("query").expect("task exists");
    serde_json::from_str(&text).expect("json")
}

/// The delivered reply of a finished task, and where it went.
async fn reply_of(app: &TestApp, task: i64) -> (Vec<u8>, String) {
    app.wait_finished(task).await;
    let d = app.store.task_deliveries(task).await.expect("deliveries").remove(0);
    (read_reply(d.location.as_deref().expect("location")), d.envelope_to)
}

fn mailgun_app_settings() -> Vec<(&'static str, &'static str)> {
    vec![("MAILGUN_SIGNING_KEY", MAILGUN_KEY)]
}

matrix! {
    async fn mailgun_parsed_fields_become_a_task_with_a_threaded_reply(db: Db) {
        let app = TestApp::spawn(db, &mailgun_app_settings()).await;
        // Mailgun's stripped-text is used as the new text; make it differ from what our own quote
        // stripping of body-plain gives, so the test sees which one won.
        let fixture = provider_fixture("mailgun_parsed.form");
        let from: &[u8] = b"name=\"stripped-text\"\r\n\r\nHi,";
        let at = fixture.windows(from.len()).position(|w| w == from).expect("stripped-text field");
        let fixture = [&fixture[..at], b"name=\"stripped-text\"\r\n\r\nHello,", &fixture[at + from.len()..]].concat();
        let body = mailgun_form(&fixture, "tok-parsed-1", now(), MAILGUN_KEY);
        let (status, body) = status_and_json(post_form(&app, "/inbound/mailgun", body, None).await).await;
        assert_eq!((status, body["outcome"].as_str()), (200, Some("task")), "{body}");
        let task = body["task_id"].as_i64().expect("task");

        let email = input(&app, task).await;
        assert_eq!(email["message_id"], "CAF-mailgun-fixture-1@mail.example.org");
        assert_eq!(email["subject"], "Re: Supplier contract renewal");
        assert_eq!(email["from"]["address"], "lena@example.org");
        assert_eq!(
            email["new_text"],
            "Hello,\n\nPlease review the attached draft and send comments by Monday.\nJonas, could you check the price table?",
            "Mailgun's stripped-text is the new text"
        );
        let names: Vec<&str> = email["attachments"].as_array().expect("list").iter().filter_map(|a| a["name"].as_str()).collect();
        assert_eq!(names, ["renewal-draft.txt", "logo.png"]);
        assert!(email["attachments"][0]["text"].as_str().is_some_and(|t| t.contains("Term: 24 months")));

        let (raw, to) = reply_of(&app, task).await;
        assert_eq!(to, "lena@example.org");
        let reply = MessageParser::default().parse(&raw).expect("reply parses");
        assert_eq!(reply.in_reply_to().as_text(), Some("CAF-mailgun-fixture-1@mail.example.org"));
        let refs = reply.references().as_text_list().expect("references");
        assert_eq!(refs.iter().map(|r| r.as_ref()).collect::<Vec<&str>>(), ["contract-thread-1@example.com", "CAF-mailgun-fixture-1@mail.example.org"]);
        app.stop().await;
    }

    async fn mailgun_mime_route_takes_body_mime(db: Db) {
        let app = TestApp::spawn(db, &mailgun_app_settings()).await;
        let body = mailgun_form(&provider_fixture("mailgun_mime.form"), "tok-mime-1", now(), MAILGUN_KEY);
        let (status, body) = status_and_json(post_form(&app, "/inbound/mailgun/mime", body, None).await).await;
        assert_eq!((status, body["outcome"].as_str()), (200, Some("task")), "{body}");
        let task = body["task_id"].as_i64().expect("task");
        let email = input(&app, task).await;
        assert_eq!(email["message_id"], "weekly-numbers-47@example.net");
        assert_eq!(email["attachments"][0]["name"], "week47.csv");
        let (_, to) = reply_of(&app, task).await;
        assert_eq!(to, "omar@example.net");
        app.stop().await;
    }

    async fn mailgun_refuses_bad_keys_timestamps_and_signatures_and_stores_nothing(db: Db) {
        let app = TestApp::spawn(db, &mailgun_app_settings()).await;
        let fixture = provider_fixture("mailgun_parsed.form");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("wrong key", mailgun_form(&fixture, "tok-a", now(), "key-some-other-key")),
            ("too old", mailgun_form(&fixture, "tok-b", now() - 301, MAILGUN_KEY)),
            ("too far in the future", mailgun_form(&fixture, "tok-c", now() + 301, MAILGUN_KEY)),
            ("empty signature", form_with(&fixture, &[("timestamp", &now().to_string()), ("token", "tok-d"), ("signature", "")])),
            ("no signature fields", fixture.clone()),
            ("truncated signature", {
                let ts = now().to_string();
                let sig = mailgun::sign(MAILGUN_KEY.as_bytes(), &ts, "tok-e");
                form_with(&fixture, &[("timestamp", &ts), ("token", "tok-e"), ("signature", &sig[..40])])
            }),
        ];
        for (case, body) in cases {
            let (status, body) = status_and_json(post_form(&app, "/inbound/mailgun", body, None).await).await;
            assert_eq!(status, 401, "{case}: {body}");
            let error = body["error"].as_str().expect("error message");
            assert!(!error.contains(MAILGUN_KEY), "{case}: the key is never echoed");
        }
        assert_eq!(app.message_count().await, 0);
        app.stop().await;
    }

    async fn replayed_mailgun_token_with_another_body_is_refused(db: Db) {
        let app = TestApp::spawn(db, &mailgun_app_settings()).await;
        let ts = now();
        let first = mailgun_form(&provider_fixture("mailgun_parsed.form"), "tok-replay", ts, MAILGUN_KEY);
        assert_eq!(post_form(&app, "/inbound/mailgun", first, None).await.status(), 200);
        // The signature covers timestamp + token only: an attacker can swap the body.
        let swapped = mailgun_form(&provider_fixture("mailgun_mime.form"), "tok-replay", ts, MAILGUN_KEY);
        let (status, body) = status_and_json(post_form(&app, "/inbound/mailgun/mime", swapped, None).await).await;
        assert_eq!(status, 406, "{body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("token")));
        assert_eq!(app.message_count().await, 1);
        app.stop().await;
    }

    async fn the_same_email_via_mailgun_and_inbound_raw_makes_one_task(db: Db) {
        let app = TestApp::spawn(db, &mailgun_app_settings()).await;
        let body = mailgun_form(&provider_fixture("mailgun_parsed.form"), "tok-both", now(), MAILGUN_KEY);
        let first = json(post_form(&app, "/inbound/mailgun", body, None).await).await;
        assert_eq!(first["outcome"], "task");
        let second = json(app.post_signed(&provider_fixture("mailgun_original.eml"), "msg_both").await).await;
        assert_eq!(second["outcome"], "duplicate", "{second}");
        assert_eq!(second["task_id"], first["task_id"]);
        app.stop().await;
    }

    async fn sendgrid_parsed_mode_decodes_each_field_in_its_charset(db: Db) {
        let app = TestApp::spawn(db, &[("SENDGRID_INBOUND_BASIC_AUTH", SENDGRID_AUTH)]).await;
        let form = provider_fixture("sendgrid_parsed.form");
        let (status, body) = status_and_json(post_form(&app, "/inbound/sendgrid", form, Some(SENDGRID_AUTH)).await).await;
        assert_eq!((status, body["outcome"].as_str()), (200, Some("task")), "{body}");
        let task = body["task_id"].as_i64().expect("task");
        let email = input(&app, task).await;
        assert_eq!(email["subject"], "Rechnung März");
        assert_eq!(email["from"]["name"], "Jürgen Müller");
        assert_eq!(email["message_id"], "rechnung-maerz-2026@example.de");
        let text = email["body_text"].as_str().expect("text");
        assert!(text.contains("bitte prüfen Sie die Rechnung für März"), "{text}");
        assert_eq!(email["attachments"][0]["name"], "rechnung-märz.txt");
        assert!(email["attachments"][0]["text"].as_str().is_some_and(|t| t.contains("1.250,00 EUR")));
        let (raw, to) = reply_of(&app, task).await;
        assert_eq!(to, "juergen@example.de");
        let reply = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(reply.in_reply_to().as_text(), Some("rechnung-maerz-2026@example.de"));
        app.stop().await;
    }

    async fn sendgrid_raw_mode_and_basic_auth(db: Db) {
        let app = TestApp::spawn(db, &[("SENDGRID_INBOUND_BASIC_AUTH", SENDGRID_AUTH)]).await;
        let form = provider_fixture("sendgrid_raw.form");
        let missing = post_form(&app, "/inbound/sendgrid", form.clone(), None).await;
        assert_eq!(missing.status(), 401);
        assert!(missing.headers().get("www-authenticate").is_some());
        let wrong = post_form(&app, "/inbound/sendgrid", form.clone(), Some("sendgrid:guess")).await;
        assert_eq!(wrong.status(), 401);
        assert_eq!(app.message_count().await, 0);
        let (status, body) = status_and_json(post_form(&app, "/inbound/sendgrid", form, Some(SENDGRID_AUTH)).await).await;
        assert_eq!((status, body["outcome"].as_str()), (200, Some("task")), "{body}");
        let email = input(&app, body["task_id"].as_i64().expect("task")).await;
        assert_eq!(email["message_id"], "onboarding-checklist-3@example.in");
        assert_eq!(email["attachments"][0]["name"], "checklist.txt");
        app.stop().await;
    }

    async fn sendgrid_signatures_are_verified_over_timestamp_and_body(db: Db) {
        let signing = SigningKey::from_slice(&[42u8; 32]).expect("key");
        let public = STANDARD.encode(signing.verifying_key().to_public_key_der().expect("der").as_bytes());
        let app = TestApp::spawn(db, &[("SENDGRID_VERIFICATION_KEY", &public)]).await;
        let form = provider_fixture("sendgrid_raw.form");
        let post = |body: Vec<u8>, ts: String, sig: Option<String>| {
            let app = &app;
            async move {
                let mut request = app
                    .http
                    .post(app.url("/inbound/sendgrid"))
                    .header("content-type", format!("multipart/form-data; boundary={}", boundary(&body)))
                    .header("x-twilio-email-event-webhook-timestamp", ts)
                    .body(body);
                if let Some(sig) = sig {
                    request = request.header("x-twilio-email-event-webhook-signature", sig);
                }
                request.send().await.expect("request").status().as_u16()
            }
        };
        let signed = |ts: &str, body: &[u8]| {
            let mut payload = ts.as_bytes().to_vec();
            payload.extend_from_slice(body);
            let sig: Signature = signing.sign(&payload);
            STANDARD.encode(sig.to_der().as_bytes())
        };
        let ts = now().to_string();
        let good = signed(&ts, &form);
        let mut altered = form.clone();
        let at = altered.len() - 20;
        altered[at] ^= 1;
        assert_eq!(post(altered, ts.clone(), Some(good.clone())).await, 401, "altered body");
        assert_eq!(post(form.clone(), ts.clone(), None).await, 401, "missing signature");
        assert_eq!(post(form.clone(), ts.clone(), Some(String::new())).await, 401, "empty signature");
        assert_eq!(post(form.clone(), ts.clone(), Some(good[..good.len() / 2].to_owned())).await, 401, "truncated");
        let old = (now() - 600).to_string();
        assert_eq!(post(form.clone(), old.clone(), Some(signed(&old, &form))).await, 401, "too old");
        let ahead = (now() + 600).to_string();
        assert_eq!(post(form.clone(), ahead.clone(), Some(signed(&ahead, &form))).await, 401, "too far ahead");
        assert_eq!(app.message_count().await, 0);
        assert_eq!(post(form, ts, Some(good)).await, 200);
        assert_eq!(app.message_count().await, 1);
        app.stop().await;
    }

    async fn postmark_json_becomes_a_task_with_a_threaded_reply(db: Db) {
        let app = TestApp::spawn(db, &[("POSTMARK_INBOUND_BASIC_AUTH", POSTMARK_AUTH)]).await;
        let payload = provider_fixture("postmark_inbound.json");
        let post = |body: Vec<u8>, auth: Option<&'static str>| {
            let app = &app;
            async move {
                let mut request =
                    app.http.post(app.url("/inbound/postmark")).header("content-type", "application/json").body(body);
                if let Some(auth) = auth {
                    request = request.header("authorization", basic(auth));
                }
                request.send().await.expect("request")
            }
        };
        assert_eq!(post(payload.clone(), None).await.status(), 401);
        assert_eq!(post(payload.clone(), Some("postmark:wrong")).await.status(), 401);
        let (status, body) = status_and_json(post(b"{\"From\": 12".to_vec(), Some(POSTMARK_AUTH)).await).await;
        assert_eq!(status, 403, "Postmark stops retrying on 403: {body}");
        assert_eq!(app.message_count().await, 0);

        let (status, body) = status_and_json(post(payload.clone(), Some(POSTMARK_AUTH)).await).await;
        assert_eq!((status, body["outcome"].as_str()), (200, Some("task")), "{body}");
        let task = body["task_id"].as_i64().expect("task");
        let email = input(&app, task).await;
        assert_eq!(email["message_id"], "conference-travel-9@example.it");
        assert_eq!(email["from"]["name"], "Carla Rossi");
        assert_eq!(
            email["new_text"],
            "Ciao,\n\nplease book the hotel for the conference and send me the invoice by Tuesday."
        );
        assert_eq!(email["attachments"].as_array().map(Vec::len), Some(2));
        let (raw, to) = reply_of(&app, task).await;
        assert_eq!(to, "carla@example.it");
        let reply = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(reply.in_reply_to().as_text(), Some("conference-travel-9@example.it"));

        // Postmark retries until it sees a 200: a redelivery is a duplicate, still 200.
        let (status, again) = status_and_json(post(payload, Some(POSTMARK_AUTH)).await).await;
        assert_eq!((status, again["outcome"].as_str(), &again["task_id"]), (200, Some("duplicate"), &body["task_id"]));
        app.stop().await;
    }

    async fn task_hook_creates_a_task_replied_to_reply_to(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let payload = provider_fixture("hook_task.json");
        let (status, body) = status_and_json(app.post_hook("ci", "evt_1", &payload, now()).await).await;
        assert_eq!((status, body["outcome"].as_str()), (202, Some("task")), "{body}");
        let task = body["task_id"].as_i64().expect("task");
        let email = input(&app, task).await;
        assert_eq!(email["metadata"]["build"], 4711);
        assert_eq!(email["subject"], "Nightly build failed on main");
        let (raw, to) = reply_of(&app, task).await;
        assert_eq!(to, "dev-team@example.com");
        let reply = MessageParser::default().parse(&raw).expect("parses");
        assert_eq!(reply.subject(), Some(format!("Re: Nightly build failed on main [#{task}]").as_str()));

        // A sender retrying the same webhook-id (fresh timestamp and signature) gets the same task.
        let (status, again) = status_and_json(app.post_hook("ci", "evt_1", &payload, now()).await).await;
        assert_eq!((status, again["outcome"].as_str(), &again["task_id"]), (202, Some("duplicate"), &body["task_id"]));
        app.stop().await;
    }

    async fn task_hook_refuses_bad_requests(db: Db) {
        let app = TestApp::spawn(db, &[]).await;
        let good = provider_fixture("hook_task.json");
        let mut request: Value = serde_json::from_slice(&good).expect("json");
        request["workflow"] = "no-such-workflow".into();
        let unknown = serde_json::to_vec(&request).expect("json");
        let (status, body) = status_and_json(app.post_hook("ci", "evt_w", &unknown, now()).await).await;
        assert_eq!(status, 422);
        assert!(body["error"].as_str().is_some_and(|e| e.contains("no-such-workflow") && e.contains("default")));
        request["workflow"] = Value::Null;
        request["reply_to"] = "not an address".into();
        let bad_to = serde_json::to_vec(&request).expect("json");
        assert_eq!(app.post_hook("ci", "evt_r", &bad_to, now()).await.status(), 422);
        assert_eq!(app.post_hook("ci", "evt_j", b"{\"from\":", now()).await.status(), 422);
        assert_eq!(app.post_hook("Bad.Name", "evt_n", &good, now()).await.status(), 404);
        assert_eq!(app.post_hook("ci", "evt_o", &good, now() - 600).await.status(), 401);
        let unsigned = app.http.post(app.url("/hooks/ci")).header("content-type", "application/json").body(good).send().await.expect("request");
        assert_eq!(unsigned.status(), 401);
        assert_eq!(app.message_count().await, 0);
        app.stop().await;
    }
}

#[tokio::test]
async fn endpoints_without_their_secret_or_disabled_answer_404() {
    let app = TestApp::spawn(Db::Sqlite, &[("SWARM_WEBHOOK_SECRETS", "")]).await;
    for path in [
        "/inbound/mailgun",
        "/inbound/mailgun/mime",
        "/inbound/sendgrid",
        "/inbound/postmark",
        "/hooks/ci",
        "/inbound/raw",
    ] {
        let r = app.http.post(app.url(path)).body("x").send().await.expect("request");
        assert_eq!(r.status(), 404, "{path}");
        assert!(
            json(r).await["error"].as_str().is_some_and(|e| e.contains("set ")),
            "{path} says what to set"
        );
    }
    app.stop().await;
    let app = TestApp::spawn(
        Db::Sqlite,
        &[("MAILGUN_SIGNING_KEY", MAILGUN_KEY), ("SWARM_INBOUND_DISABLED", "mailgun,hooks")],
    )
    .await;
    let body = mailgun_form(&provider_fixture("mailgun_parsed.form"), "tok-off", now(), MAILGUN_KEY);
    assert_eq!(post_form(&app, "/inbound/mailgun", body, None).await.status(), 404);
    let hook = app.post_hook("ci", "evt_off", &provider_fixture("hook_task.json"), now()).await;
    assert_eq!(hook.status(), 404);
    assert_eq!(
        app.post_signed(&support::fixture("action_request.eml"), "msg_on").await.status(),
        202,
        "raw stays on"
    );
    app.stop().await;
}

#[tokio::test]
async fn malformed_multipart_and_oversize_bodies_are_refused() {
    let app = TestApp::spawn(
        Db::Sqlite,
        &[
            ("MAILGUN_SIGNING_KEY", MAILGUN_KEY),
            ("SENDGRID_INBOUND_BASIC_AUTH", SENDGRID_AUTH),
            ("SWARM_MAX_REQUEST_BYTES", "20000"),
        ],
    )
    .await;
    let good = mailgun_form(&provider_fixture("mailgun_parsed.form"), "tok-m", now(), MAILGUN_KEY);
    let truncated = good[..good.len() / 2].to_vec();
    let (status, body) =
        status_and_json(post_form(&app, "/inbound/mailgun", truncated.clone(), None).await).await;
    assert_eq!(status, 406, "Mailgun stops retrying on 406: {body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("multipart")), "{body}");
    let (status, _) =
        status_and_json(post_form(&app, "/inbound/sendgrid", truncated, Some(SENDGRID_AUTH)).await).await;
    assert_eq!(status, 400);
    let no_boundary = app
        .http
        .post(app.url("/inbound/mailgun"))
        .header("content-type", "multipart/form-data")
        .body(good.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(no_boundary.status(), 406);

    let mut big = provider_fixture("mailgun_parsed.form");
    big = form_with(&big, &[("padding", &"x".repeat(30_000))]);
    let (status, body) = status_and_json(post_form(&app, "/inbound/mailgun", big, None).await).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(app.message_count().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn each_client_is_rate_limited_with_retry_after() {
    let app =
        TestApp::spawn(Db::Sqlite, &[("SWARM_INBOUND_RATE_PER_SEC", "1"), ("SWARM_INBOUND_RATE_BURST", "2")])
            .await;
    let body = provider_fixture("hook_task.json");
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(app.post_hook("ci", &format!("evt_rate_{i}"), &body, now()).await);
    }
    let codes: Vec<u16> = statuses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(codes, [202, 202, 429]);
    let limited = statuses.pop().expect("third");
    let retry_after: u64 =
        limited.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(json(limited).await["error"].as_str().is_some_and(|e| e.contains("too many requests")));
    // Other endpoints have their own budget.
    assert_eq!(app.post_signed(&support::fixture("action_request.eml"), "msg_rate").await.status(), 202);
    app.stop().await;
}

/// 32 zero bytes in base64: a well-formed Standard Webhooks tag that matches nothing.
const ZERO_TAG: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

#[tokio::test]
async fn a_body_that_never_arrives_times_out_with_408() {
    use tokio::io::AsyncWriteExt;
    let app = TestApp::spawn(Db::Sqlite, &[("SWARM_INBOUND_READ_TIMEOUT_SECS", "1")]).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    // Well-formed signature headers (the tag is checked once the body is in): the body is read.
    let now = chrono::Utc::now().timestamp();
    let head = format!(
        "POST /inbound/raw HTTP/1.1\r\nHost: {addr}\r\nContent-Type: message/rfc822\r\nContent-Length: 1000\r\n\
         webhook-id: msg_slow\r\nwebhook-timestamp: {now}\r\nwebhook-signature: v1,{ZERO_TAG}\r\n\r\nFrom: slow"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let text = support::read_answer_head(&mut stream, std::time::Duration::from_secs(10))
        .await
        .expect("an answer within 10 s");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_with_its_own_secrets_is_verified_with_those_alone() {
    // crm has its own secret and a second one while rotating; other hooks share the list.
    let crm = "whsec_Y3JtLW93bi1zZWNyZXQta2V5LWZvci10ZXN0cw==";
    let env = [("SWARM_HOOK_SECRETS", format!("crm={crm},crm={}", support::ROTATED))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn(Db::Sqlite, &env).await;
    let body = provider_fixture("hook_task.json");
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(app.post_hook_with("crm", "evt_own_1", &body, now(), crm).await), 202);
    assert_eq!(
        status(app.post_hook_with("crm", "evt_own_2", &body, now(), support::ROTATED).await),
        202,
        "rotation"
    );
    let shared = app.post_hook("crm", "evt_own_3", &body, now()).await;
    assert_eq!(shared.status(), 401, "the shared secret no longer opens crm");
    assert_eq!(status(app.post_hook("billing", "evt_shared_1", &body, now()).await), 202, "others share");
    assert_eq!(status(app.post_hook_with("billing", "evt_shared_2", &body, now(), crm).await), 401);
    app.stop().await;
}
