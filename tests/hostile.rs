//! Hostile input over real HTTP on port 0, end to end: replies stay within their size cap and
//! every composed header line within RFC 5322's 998 octets whatever the request carried; hook
//! identities cannot collide or be taken by a mail; request addresses the reply path cannot use
//! are refused at request time; MIME nesting that crashed the parser is quarantined.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Db, TestApp, read_reply};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The status and JSON body of an answer.
async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// The delivered reply of a finished task.
async fn reply_of(app: &TestApp, task: i64) -> Vec<u8> {
    let deliveries = app.store.task_deliveries(task).await.expect("deliveries");
    read_reply(deliveries[0].location.as_deref().expect("a delivered reply"))
}

/// Octets of the longest header line of `message` (without its CRLF).
fn longest_header_line(message: &[u8]) -> usize {
    let head_end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(message.len());
    message[..head_end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
        .max()
        .unwrap_or(0)
}

/// The stored Message-ID of the message row `id` names.
async fn message_id_of(app: &TestApp, id: &Value) -> Option<String> {
    let id = id.as_i64().expect("a message id");
    app.store.message(id).await.expect("read").expect("the row").message_id
}

fn hook(text: &str, reply_to: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "from": "CI <ci@builds.example.com>", "subject": "Build", "text": text, "reply_to": reply_to,
    }))
    .expect("json")
}

#[tokio::test]
async fn a_huge_one_line_mail_and_a_huge_hook_get_replies_within_the_cap() {
    let app = TestApp::spawn(Db::Sqlite, &[]).await;
    let cap = 1024 * 1024;
    // A 4 MB single-line body and a 1 MiB subject without a space.
    let mail = format!(
        "From: ann@example.org\r\nTo: bot@example.org\r\nSubject: {}\r\nMessage-ID: <huge@example.org>\r\n\r\n{}\r\n",
        "S".repeat(1 << 20),
        "word ".repeat(800_000)
    );
    let (task, _) = app.post_and_wait(mail.as_bytes(), "msg_huge", Duration::from_secs(60)).await;
    let reply = reply_of(&app, task).await;
    eprintln!(
        "4 MB one-line mail: {}-byte reply, longest header line {}",
        reply.len(),
        longest_header_line(&reply)
    );
    assert!(reply.len() <= cap, "a {}-byte reply", reply.len());
    assert!(longest_header_line(&reply) <= 998, "a {}-octet header line", longest_header_line(&reply));

    // A 20 MB hook text, answered to its reply_to.
    let (status, body) = answer(
        app.post_hook("ci", "evt_huge", &hook(&"data ".repeat(4_000_000), "dev@example.com"), now()).await,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let task = body["task_id"].as_i64().expect("task");
    app.wait_finished_within(task, Duration::from_secs(120)).await;
    let reply = reply_of(&app, task).await;
    eprintln!("20 MB hook text: {}-byte reply", reply.len());
    assert!(reply.len() <= cap, "a {}-byte reply", reply.len());
    app.stop().await;
}

#[tokio::test]
async fn hook_identities_are_exact_and_out_of_reach_of_mail() {
    let app = TestApp::spawn(Db::Sqlite, &[]).await;
    let payload = hook("Please check the build.", "dev@example.com");
    // Once mapped to the same Message-ID.
    let (_, first) = answer(app.post_hook("ci", "evt/1", &payload, now()).await).await;
    let (_, second) = answer(app.post_hook("ci", "evt:1", &payload, now()).await).await;
    assert_eq!((first["outcome"].as_str(), second["outcome"].as_str()), (Some("task"), Some("task")));
    assert_ne!(first["task_id"], second["task_id"]);

    // A mail that carries the Message-ID the next hook will get does not take its place.
    let next = swarm_director::intake::providers::hook::message_id("ci", "evt_2");
    let squatter = format!(
        "From: mallory@example.org\r\nTo: bot@example.org\r\nSubject: squat\r\nMessage-ID: {}\r\n\r\nhello\r\n",
        next.bracketed()
    );
    let (status, squatted) = answer(app.post_signed(squatter.as_bytes(), "msg_squat").await).await;
    assert_eq!((status, squatted["outcome"].as_str()), (202, Some("task")), "{squatted}");
    let (_, hooked) = answer(app.post_hook("ci", "evt_2", &payload, now()).await).await;
    assert_eq!(hooked["outcome"].as_str(), Some("task"), "the hook is not a duplicate of the mail: {hooked}");

    // The mail was renamed on intake; the hook kept its own id.
    let renamed = message_id_of(&app, &squatted["message"]).await.expect("an id");
    assert!(renamed.starts_with("untrusted.") && renamed.ends_with("@inbound.invalid"), "{renamed}");
    assert_eq!(message_id_of(&app, &hooked["message"]).await.as_deref(), Some(next.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn request_addresses_the_reply_path_cannot_use_are_refused_with_422() {
    let app = TestApp::spawn(Db::Sqlite, &[]).await;
    for (i, (reply_to, why)) in [
        ("\"dev team\"@example.com", "quoted local part"),
        ("dev@[192.0.2.1]", "domain literal"),
        ("dev..team@example.com", "not an address our mail transport accepts"),
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) =
            answer(app.post_hook("ci", &format!("evt_addr_{i}"), &hook("Hi.", reply_to), now()).await).await;
        assert_eq!(status, 422, "{reply_to}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("reply_to") && e.contains(why)), "{body}");
    }
    let quoted_from = serde_json::to_vec(&json!({
        "from": "\"a b\"@example.com", "text": "Hi.", "reply_to": "dev@example.com",
    }))
    .expect("json");
    assert_eq!(app.post_hook("ci", "evt_from", &quoted_from, now()).await.status(), 422);
    assert_eq!(app.message_count().await, 0, "nothing refused was stored");

    // The address it can use is answered exactly there.
    let (status, body) =
        answer(app.post_hook("ci", "evt_ok", &hook("Hi.", " Dev@Example.COM "), now()).await).await;
    assert_eq!(status, 202, "{body}");
    let task = body["task_id"].as_i64().expect("task");
    app.wait_finished(task).await;
    let delivery = &app.store.task_deliveries(task).await.expect("deliveries")[0];
    assert_eq!(delivery.envelope_to, "Dev@example.com");
    app.stop().await;
}

#[tokio::test]
async fn nesting_that_overflowed_the_parsers_stack_is_quarantined_and_the_server_lives_on() {
    let app = TestApp::spawn(Db::Sqlite, &[]).await;
    // 100,000 digests, each the only (default message/rfc822) part of the last: 9 MB.
    let mut digests = String::from("From: a@example.org\r\nSubject: digests\r\n");
    for i in 0..100_000 {
        digests.push_str(&format!(
            "Content-Type: multipart/digest; boundary=\"d{i}\"\r\n\r\n--d{i}\r\n\r\nFrom: b@example.org\r\n"
        ));
    }
    // 10,000 enclosed messages hidden in one base64 part.
    use base64::Engine;
    let inner = format!(
        "From: b@example.org\r\n{}",
        "Content-Type: message/rfc822\r\n\r\nFrom: c@example.org\r\n".repeat(10_000)
    );
    let hidden = format!(
        "From: a@example.org\r\nSubject: hidden\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        base64::engine::general_purpose::STANDARD.encode(inner)
    );
    for (id, raw) in [("msg_digests", digests), ("msg_hidden", hidden)] {
        let (status, body) = answer(app.post_signed(raw.as_bytes(), id).await).await;
        assert_eq!((status, body["outcome"].as_str()), (202, Some("quarantined")), "{id}: {body}");
        assert!(body["reason"].as_str().is_some_and(|r| r.contains("nesting deeper")), "{body}");
    }
    assert_eq!(app.http.get(app.url("/health")).send().await.expect("health").status(), 200);
    app.stop().await;
}
