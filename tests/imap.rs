//! IMAP intake against a real Dovecot on 127.0.0.1, on both database backends: messages
//! APPENDed by an IMAP client become tasks and replies, mail a human already read is processed,
//! acknowledgements follow the commit, a re-fetch after a crash or a new UIDVALIDITY makes no
//! duplicate, and oversize mail is quarantined without being downloaded.

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use support::imap::{self, append, flags};
use support::{Db, TestApp, fixture, wait_until};
use swarm_director::app::App;
use swarm_director::domain::ManualClock;
use swarm_director::intake::imap::PollReport;

/// The bot on a fresh database, reading `user`'s mailbox on the test Dovecot.
async fn bot(db: Db, dir: &std::path::Path, user: &str, extra: &[(&str, &str)]) -> App {
    let server = imap::server().expect("dovecot");
    let url = db.fresh_url(dir).await;
    let imap_url = format!("imap://127.0.0.1:{}", server.port);
    let mut env: Vec<(&str, &str)> =
        vec![("IMAP_URL", &imap_url), ("IMAP_USERNAME", user), ("IMAP_PASSWORD", imap::PASSWORD)];
    env.extend_from_slice(extra);
    App::build(support::settings(dir, &url, &env)).await.expect("app")
}

/// `serve` on a fresh database, reading `user`'s INBOX on `server`; and that mailbox's key.
async fn serve(db: Db, server: &imap::Dovecot, user: &str, extra: &[(&str, &str)]) -> (TestApp, String) {
    let imap_url = format!("imap://127.0.0.1:{}", server.port);
    let mut env =
        vec![("IMAP_URL", imap_url.as_str()), ("IMAP_USERNAME", user), ("IMAP_PASSWORD", imap::PASSWORD)];
    env.extend_from_slice(extra);
    let app = TestApp::spawn(db, &env).await;
    (app, format!("imap://{user}@127.0.0.1:{}/INBOX", server.port))
}

async fn poll(app: &App) -> PollReport {
    app.imap.first().expect("imap configured").poll_once().await.expect("poll")
}

fn numbered(n: usize) -> Vec<u8> {
    support::fleet::message(n)
}

matrix! {
    async fn appended_mail_becomes_tasks_even_when_already_read(db: Db) {
        if !imap::available() { return; }
        let server = imap::server().expect("dovecot");
        let user = server.new_user();
        let dir = tempfile::tempdir().expect("tmp");
        let app = bot(db, dir.path(), &user, &[]).await;
        assert_eq!(poll(&app).await, PollReport::default(), "an empty INBOX");

        let mut client = server.session(&user).await;
        append(&mut client, "INBOX", &fixture("action_request.eml"), None).await;
        append(&mut client, "INBOX", &fixture("latin1_attachments.eml"), Some("(\\Seen)")).await;
        let report = poll(&app).await;
        assert_eq!((report.taken, report.tasks), (2, 2), "a message a human already read is still taken");
        app.drain().await.expect("drain");
        let overview = app.store.overview(10).await.expect("overview");
        assert_eq!(overview.tasks_by_status, vec![("done".to_owned(), 2)]);
        assert!(overview.last_inbound.iter().any(|(source, _)| source.starts_with("imap://")));
        for (uid, f) in flags(&mut client, "INBOX").await {
            assert!(f.iter().any(|f| f.contains("Seen")), "UID {uid} acknowledged after the commit: {f:?}");
        }
        assert_eq!(poll(&app).await.taken, 0, "nothing taken twice");
    }

    async fn mail_present_before_the_first_poll_is_left_alone_by_default(db: Db) {
        if !imap::available() { return; }
        let server = imap::server().expect("dovecot");
        let user = server.new_user();
        let mut client = server.session(&user).await;
        append(&mut client, "INBOX", &numbered(1), None).await;
        let dir = tempfile::tempdir().expect("tmp");
        let app = bot(db, dir.path(), &user, &[]).await;
        assert_eq!(poll(&app).await.taken, 0, "IMAP_START=new skips old mail");
        append(&mut client, "INBOX", &numbered(2), None).await;
        assert_eq!(poll(&app).await.taken, 1);

        let other = server.new_user();
        let mut client = server.session(&other).await;
        append(&mut client, "INBOX", &numbered(3), None).await;
        let dir = tempfile::tempdir().expect("tmp");
        let all = bot(db, dir.path(), &other, &[("IMAP_START", "all")]).await;
        assert_eq!(poll(&all).await.taken, 1, "IMAP_START=all takes it");
    }

    async fn a_message_fetched_again_after_a_crash_makes_one_task(db: Db) {
        if !imap::available() { return; }
        let server = imap::server().expect("dovecot");
        let user = server.new_user();
        let dir = tempfile::tempdir().expect("tmp");
        let app = bot(db, dir.path(), &user, &[("IMAP_START", "all")]).await;
        let mut client = server.session(&user).await;
        append(&mut client, "INBOX", &numbered(1), None).await;
        assert_eq!(poll(&app).await.tasks, 1);

        // The state a crash after the commit leaves: not acknowledged on the server, position not moved.
        client.select("INBOX").await.expect("select");
        let _: Vec<_> = futures_util::TryStreamExt::try_collect(client.uid_store("1:*", "-FLAGS (\\Seen)").await.expect("store"))
            .await
            .expect("flags");
        let key = app.imap.first().expect("imap").settings().key();
        let state = app.store.mailbox_state(&key).await.expect("state").expect("stored");
        app.store.save_mailbox_position(&key, state.uidvalidity, 0).await.expect("rewind");

        let again = poll(&app).await;
        assert_eq!((again.taken, again.tasks, again.duplicates), (1, 0, 1));
        let overview = app.store.overview(10).await.expect("overview");
        assert_eq!(overview.recent.len(), 1, "one task");
        assert!(flags(&mut client, "INBOX").await[0].1.iter().any(|f| f.contains("Seen")), "acknowledged now");
    }

    async fn a_recreated_mailbox_with_a_new_uidvalidity_gives_no_duplicates(db: Db) {
        if !imap::available() { return; }
        let server = imap::server().expect("dovecot");
        let user = server.new_user();
        let mut client = server.session(&user).await;
        client.create("Bot").await.expect("create");
        for n in 0..3 {
            append(&mut client, "Bot", &numbered(n), None).await;
        }
        let dir = tempfile::tempdir().expect("tmp");
        let app = bot(db, dir.path(), &user, &[("IMAP_MAILBOX", "Bot"), ("IMAP_START", "all")]).await;
        assert_eq!(poll(&app).await.tasks, 3);

        client.delete("Bot").await.expect("delete");
        client.create("Bot").await.expect("create again");
        for n in 0..3 {
            append(&mut client, "Bot", &numbered(n), None).await;
        }
        let again = poll(&app).await;
        assert_eq!((again.taken, again.tasks, again.duplicates), (3, 0, 3));
        let mut resyncs = 0;
        app.store
            .for_each_audit(&Default::default(), |r| -> anyhow::Result<()> {
                resyncs += usize::from(r.action == "mailbox.resync");
                Ok(())
            })
            .await
            .expect("audit");
        assert_eq!(resyncs, 1, "the UIDVALIDITY change is audited");
    }

    async fn oversize_mail_is_quarantined_without_being_downloaded(db: Db) {
        if !imap::available() { return; }
        let server = imap::server().expect("dovecot");
        let user = server.new_user();
        let mut client = server.session(&user).await;
        client.create("Quarantine").await.expect("create");
        let dir = tempfile::tempdir().expect("tmp");
        let app = bot(
            db,
            dir.path(),
            &user,
            &[("SWARM_MAX_MESSAGE_BYTES", "2000"), ("IMAP_QUARANTINE_MAILBOX", "Quarantine"), ("IMAP_START", "all")],
        )
        .await;
        let mut big = numbered(1);
        big.extend(std::iter::repeat_n(b'x', 5000));
        append(&mut client, "INBOX", &big, None).await;
        append(&mut client, "INBOX", &numbered(2), None).await;

        let report = poll(&app).await;
        assert_eq!((report.taken, report.oversize, report.tasks), (2, 1, 1));
        let m = app.store.message(1).await.expect("query").expect("recorded");
        assert_eq!(m.status, "quarantined");
        assert!(m.reason.as_deref().is_some_and(|r| r.contains("over the limit of 2000 bytes")), "{:?}", m.reason);
        assert_eq!(app.store.message_raw(1).await.expect("query").expect("row"), b"", "never downloaded");
        let quarantined = flags(&mut client, "Quarantine").await;
        assert_eq!(quarantined.len(), 1, "moved to the quarantine mailbox");
        assert!(!quarantined[0].1.iter().any(|f| f.contains("Seen")), "not marked read");
        assert_eq!(flags(&mut client, "INBOX").await.len(), 1);
    }

    async fn with_idle_a_new_message_becomes_a_task_within_two_seconds(db: Db) {
        if !imap::available() { return; }
        let server = imap::server().expect("dovecot");
        let user = server.new_user();
        let (app, key) = serve(db, server, &user, &[("IMAP_MODE", "idle")]).await;
        // The bot is idling once it has recorded its first successful look at the mailbox.
        let ready = wait_until(Duration::from_secs(10), || async {
            app.store.mailbox_state(&key).await.ok().flatten().and_then(|st| st.last_ok_at)
        })
        .await;
        assert!(ready.is_some(), "IMAP intake did not start");
        let health: serde_json::Value =
            app.http.get(app.url("/health")).send().await.expect("health").json().await.expect("json");
        assert_eq!(health["status"], "ok", "{health}");

        let mut client = server.session(&user).await;
        for n in 0..3 {
            append(&mut client, "INBOX", &numbered(n), None).await;
            let started = std::time::Instant::now();
            let task = wait_until(Duration::from_secs(2), || async {
                let recent = app.store.overview(10).await.ok()?.recent;
                (recent.len() == n + 1).then_some(())
            })
            .await;
            assert!(task.is_some(), "message {n} did not become a task within 2 s");
            eprintln!("APPEND to task: {:?}", started.elapsed());
        }
        let store = app.store.clone();
        app.stop().await;
        let taken_over = store.claim_mailbox(&key, "another-instance", Duration::from_secs(60)).await.expect("claim");
        assert!(taken_over, "a graceful shutdown releases the mailbox at once");
    }

    async fn two_instances_never_read_one_mailbox_at_the_same_time(db: Db) {
        if !imap::available() { return; }
        let server = imap::server().expect("dovecot");
        let user = server.new_user();
        let dir = tempfile::tempdir().expect("tmp");
        let url = db.fresh_url(dir.path()).await;
        let imap_url = format!("imap://127.0.0.1:{}", server.port);
        let env = [
            ("IMAP_URL", imap_url.as_str()),
            ("IMAP_USERNAME", user.as_str()),
            ("IMAP_PASSWORD", imap::PASSWORD),
            ("IMAP_START", "all"),
            ("IMAP_LEASE_SECS", "2"),
        ];
        let clock = Arc::new(ManualClock::starting_now());
        let build = |clock: Arc<ManualClock>| App::build_with_clock(support::settings(dir.path(), &url, &env), clock);
        let first = build(clock.clone()).await.expect("first");
        let second = build(clock.clone()).await.expect("second");
        let mut client = server.session(&user).await;
        for n in 0..10 {
            append(&mut client, "INBOX", &numbered(n), None).await;
        }
        let (a, b) = tokio::join!(poll(&first), poll(&second));
        assert!(a.not_ours != b.not_ours, "exactly one instance reads the mailbox: {a:?} {b:?}");
        assert_eq!(a.taken + b.taken, 10);
        for n in 10..15 {
            append(&mut client, "INBOX", &numbered(n), None).await;
        }
        let (holder, other) = if a.not_ours { (&second, &first) } else { (&first, &second) };
        assert!(poll(other).await.not_ours, "the lease is still held");
        // The holder goes quiet; once its lease has expired the other instance takes over.
        clock.advance(Duration::from_millis(1900));
        assert!(poll(other).await.not_ours, "the lease holds until it expires");
        clock.advance(Duration::from_millis(300));
        let takeover = poll(other).await;
        assert_eq!((takeover.not_ours, takeover.taken), (false, 5));
        assert!(poll(holder).await.not_ours);
        assert_eq!(first.store.overview(50).await.expect("overview").recent.len(), 15, "each message once");
    }

    async fn several_mailboxes_are_read_each_with_its_own_position(db: Db) {
        if !imap::available() { return; }
        let server = imap::server().expect("dovecot");
        let user = server.new_user();
        let mut client = server.session(&user).await;
        client.create("Support").await.expect("create");
        let dir = tempfile::tempdir().expect("tmp");
        let app = bot(db, dir.path(), &user, &[("IMAP_MAILBOX", "INBOX,Support"), ("IMAP_START", "all")]).await;
        assert_eq!(app.imap.len(), 2);
        append(&mut client, "INBOX", &numbered(1), None).await;
        append(&mut client, "Support", &numbered(2), None).await;
        append(&mut client, "Support", &numbered(3), None).await;
        let taken: Vec<usize> = futures_util::future::join_all(app.imap.iter().map(|m| async move {
            m.poll_once().await.expect("poll").tasks
        }))
        .await;
        assert_eq!(taken, vec![1, 2]);
        let states = app.store.mailbox_states().await.expect("states");
        assert_eq!(states.len(), 2);
        assert!(states.iter().all(|st| st.last_ok_at.is_some()));
    }

    async fn the_bot_recovers_when_the_imap_server_restarts_and_loses_nothing(db: Db) {
        if !imap::available() { return; }
        let server = imap::dedicated();
        let user = server.new_user();
        // A dead connection is noticed within one IDLE cycle (lease/3) plus the command timeout:
        // keep both short so the outage shows quickly even on a loaded machine.
        let (app, key) = serve(
            db,
            &server,
            &user,
            &[("IMAP_START", "all"), ("IMAP_LEASE_SECS", "6"), ("IMAP_COMMAND_TIMEOUT", "5")],
        )
        .await;
        let tasks = |n: usize| {
            let store = app.store.clone();
            async move {
                wait_until(Duration::from_secs(30), || async {
                    (store.overview(50).await.ok()?.recent.len() == n).then_some(())
                })
                .await
                .is_some()
            }
        };
        let mut client = server.session(&user).await;
        append(&mut client, "INBOX", &numbered(1), None).await;
        assert!(tasks(1).await, "before the restart");

        // The server goes away under the idling bot; mail arrives right after it comes back.
        server.stop();
        let failed = wait_until(Duration::from_secs(30), || async {
            app.store.mailbox_state(&key).await.ok().flatten().filter(|st| st.consecutive_errors > 0)
        })
        .await;
        assert!(failed.is_some(), "the outage is recorded on the mailbox");
        server.restart();
        let mut client = server.session(&user).await;
        for n in 2..5 {
            append(&mut client, "INBOX", &numbered(n), None).await;
        }
        assert!(tasks(4).await, "every message after the restart became a task");
        let healthy = wait_until(Duration::from_secs(10), || async {
            app.store.mailbox_state(&key).await.ok().flatten().filter(|st| st.consecutive_errors == 0)
        })
        .await;
        assert!(healthy.is_some(), "the mailbox is healthy again");
        app.stop().await;
        server.stop();
    }

    async fn processed_mail_is_moved_when_a_folder_is_set(db: Db) {
        if !imap::available() { return; }
        let server = imap::server().expect("dovecot");
        let user = server.new_user();
        let mut client = server.session(&user).await;
        client.create("Done").await.expect("create");
        let dir = tempfile::tempdir().expect("tmp");
        let app = bot(db, dir.path(), &user, &[("IMAP_PROCESSED_MAILBOX", "Done"), ("IMAP_START", "all")]).await;
        append(&mut client, "INBOX", &numbered(1), None).await;
        append(&mut client, "INBOX", &numbered(2), None).await;
        assert_eq!(poll(&app).await.tasks, 2);
        assert!(flags(&mut client, "INBOX").await.is_empty());
        assert_eq!(flags(&mut client, "Done").await.len(), 2);
    }
}

matrix! {
    async fn a_mailbox_that_cannot_be_read_is_reported_not_silent(db: Db) {
        if !imap::available() { return; }
        let server = imap::server().expect("dovecot");
        let user = server.new_user();
        let (app, key) = serve(
            db,
            server,
            &user,
            &[("IMAP_PASSWORD", "wrong"), ("IMAP_MODE", "poll"), ("SWARM_ADMIN_TOKEN", "admin-token")],
        )
        .await;
        let state = wait_until(Duration::from_secs(10), || async {
            app.store.mailbox_state(&key).await.ok().flatten().filter(|st| st.consecutive_errors >= 2)
        })
        .await
        .expect("failures are recorded, and retried");
        assert!(state.last_error.as_deref().is_some_and(|e| e.contains("login")), "{:?}", state.last_error);
        assert!(state.last_ok_at.is_none());

        let health: serde_json::Value = app
            .http
            .get(app.url("/health"))
            .bearer_auth("admin-token")
            .send()
            .await
            .expect("health")
            .json()
            .await
            .expect("json");
        assert_eq!(health["status"], "degraded");
        assert_eq!(health["details"]["mailboxes"][0]["mailbox"], key.as_str());
        assert!(health["details"]["mailboxes"][0]["consecutive_errors"].as_i64().is_some_and(|n| n >= 2));
        let page = app.http.get(app.url("/")).bearer_auth("admin-token").send().await.expect("page");
        let page = page.text().await.expect("text");
        assert!(page.contains("AUTHENTICATIONFAILED"), "the status page shows the last error");
        app.stop().await;
    }
}

/// Reads `user`'s INBOX on a TLS-enabled server through `imap_url`, trusting `ca` when given.
async fn over_tls(
    server: &imap::Dovecot,
    imap_url: &str,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<PollReport> {
    let user = server.new_user();
    // The test's own client logs in without TLS (allowed on loopback).
    let mut client = server.session(&user).await;
    append(&mut client, "INBOX", &numbered(1), None).await;
    let dir = tempfile::tempdir().expect("tmp");
    let url = Db::Sqlite.fresh_url(dir.path()).await;
    let ca = ca.map(|p| p.display().to_string());
    let mut env = vec![
        ("IMAP_URL", imap_url),
        ("IMAP_USERNAME", user.as_str()),
        ("IMAP_PASSWORD", imap::PASSWORD),
        ("IMAP_START", "all"),
    ];
    if let Some(ca) = &ca {
        env.push(("IMAP_CA_FILE", ca));
    }
    let app = App::build(support::settings(dir.path(), &url, &env)).await.expect("app");
    app.imap.first().expect("imap").poll_once().await
}

#[tokio::test]
async fn imaps_and_starttls_connect_with_the_configured_ca_and_refuse_an_untrusted_certificate() {
    if !imap::available() {
        return;
    }
    let server = imap::dedicated_tls();
    let (imaps_port, cert) = server.tls.clone().expect("tls");

    let implicit =
        over_tls(&server, &format!("imaps://127.0.0.1:{imaps_port}"), Some(&cert)).await.expect("imaps");
    assert_eq!(implicit.tasks, 1);
    let starttls =
        over_tls(&server, &format!("imap://localhost:{}", server.port), Some(&cert)).await.expect("starttls");
    assert_eq!(starttls.tasks, 1);
    let log = std::fs::read_to_string(server.dir.join("dovecot.log")).unwrap_or_default();
    // The test's own client logs in without TLS; the bot's two logins (IMAPS, STARTTLS) must show TLS.
    let tls_logins = log.lines().filter(|l| l.contains("Login:") && l.contains(", TLS,")).count();
    assert_eq!(tls_logins, 2, "the bot logged in over TLS both times:\n{log}");

    let untrusted = over_tls(&server, &format!("imaps://127.0.0.1:{imaps_port}"), None).await;
    let err =
        format!("{:#}", untrusted.expect_err("a certificate from an unknown CA is not trusted by default"));
    assert!(err.contains("TLS handshake") && err.to_lowercase().contains("certificate"), "{err}");
    server.stop();
}

/// An RFC 7662 introspection endpoint on 127.0.0.1 that knows one token, for `user`.
async fn introspection(user: String, good_token: &'static str) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/introspect",
        post(move |body: String| {
            let user = user.clone();
            async move {
                let active = body.split('&').any(|kv| kv == format!("token={good_token}"));
                axum::Json(serde_json::json!({"active": active, "username": user}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("introspection server") });
    format!("http://{addr}/introspect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xoauth2_logs_in_with_the_token_the_command_prints() {
    if !imap::available() {
        return;
    }
    let user = "user0@example.test".to_owned();
    let url = introspection(user.clone(), "good-token-123").await;
    let server = imap::dedicated_oauth2(&url);
    let mut client = server.session(&user).await;
    append(&mut client, "INBOX", &numbered(1), None).await;
    let imap_url = format!("imap://127.0.0.1:{}", server.port);
    let reader = |command: &'static str| {
        let (imap_url, user) = (imap_url.clone(), user.clone());
        async move {
            let dir = tempfile::tempdir().expect("tmp");
            let url = Db::Sqlite.fresh_url(dir.path()).await;
            let env = [
                ("IMAP_URL", imap_url.as_str()),
                ("IMAP_USERNAME", user.as_str()),
                ("IMAP_OAUTH2_TOKEN_COMMAND", command),
                ("IMAP_START", "all"),
            ];
            let app = App::build(support::settings(dir.path(), &url, &env)).await.expect("app");
            app.imap.first().expect("imap").poll_once().await
        }
    };
    assert_eq!(reader("echo good-token-123").await.expect("XOAUTH2 login").tasks, 1);
    let rejected = format!("{:#}", reader("echo expired-token").await.expect_err("a bad token is refused"));
    assert!(rejected.contains("login") && !rejected.contains("expired-token"), "{rejected}");
    let broken =
        format!("{:#}", reader("echo no token here >&2; exit 3").await.expect_err("the command failed"));
    assert!(
        broken.contains("IMAP_OAUTH2_TOKEN_COMMAND failed") && broken.contains("no token here"),
        "{broken}"
    );
    server.stop();
}
