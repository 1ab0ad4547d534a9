//! IMAP intake against a real Dovecot on 127.0.0.1, on both database backends: messages
//! APPENDed by an IMAP client become tasks and replies, mail a human already read is processed,
//! acknowledgements follow the commit, a re-fetch after a crash or a new UIDVALIDITY makes no
//! duplicate, and oversize mail is quarantined without being downloaded.

#[macro_use]
mod support;

use support::imap::{self, append, flags};
use support::{Db, fixture};
use swarm_director::app::App;
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

async fn poll(app: &App) -> PollReport {
    app.imap.as_ref().expect("imap configured").poll_once().await.expect("poll")
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
        let key = app.imap.as_ref().expect("imap").settings().key();
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
            .for_each_audit(&Default::default(), |r| {
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

#[tokio::test]
async fn a_wrong_password_is_recorded_on_the_mailbox() {
    if !imap::available() {
        return;
    }
    let server = imap::server().expect("dovecot");
    let user = server.new_user();
    let dir = tempfile::tempdir().expect("tmp");
    let url = Db::Sqlite.fresh_url(dir.path()).await;
    let imap_url = format!("imap://127.0.0.1:{}", server.port);
    let settings = support::settings(
        dir.path(),
        &url,
        &[("IMAP_URL", &imap_url), ("IMAP_USERNAME", &user), ("IMAP_PASSWORD", "wrong")],
    );
    let app = App::build(settings).await.expect("app");
    let imap = app.imap.as_ref().expect("imap");
    assert!(imap.poll_once().await.is_err());
    assert!(imap.poll_once().await.is_err());
    let state = app.store.mailbox_state(&imap.settings().key()).await.expect("query").expect("recorded");
    assert_eq!(state.consecutive_errors, 2);
    assert!(state.last_error.as_deref().is_some_and(|e| e.contains("LOGIN")), "{:?}", state.last_error);
    assert!(state.last_ok_at.is_none());
}
