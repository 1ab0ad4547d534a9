//! Two instances of the binary (the release binary under `cargo test --release`) on one
//! PostgreSQL database, reading one Dovecot mailbox: exactly one reads at a time, and when that
//! one is killed with SIGKILL in the middle of a batch, the other takes over when the lease
//! expires. Every message ends up as exactly one task with one reply, and acknowledged.

mod support;

use std::path::Path;
use std::time::Duration;

use support::fleet::{Fleet, message};
use support::imap::{self, append, flags};
use support::{pg, wait_until};
use swarm_director::store::Store;

const MESSAGES: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_a_mailbox_and_survive_the_reader_being_killed() {
    if !pg::available() || !imap::available() {
        return;
    }
    let server = imap::server().expect("dovecot");
    let user = server.new_user();
    let url = pg::fresh_database().await;
    let dir = tempfile::tempdir().expect("tmp");
    let imap_url = format!("imap://127.0.0.1:{}", server.port);
    let env = [
        ("IMAP_URL", imap_url.as_str()),
        ("IMAP_USERNAME", user.as_str()),
        ("IMAP_PASSWORD", imap::PASSWORD),
        ("IMAP_START", "all"),
        ("IMAP_LEASE_SECS", "3"),
        ("SWARM_LEASE_SECS", "3"),
        ("SWARM_POLL_INTERVAL_MS", "100"),
    ];
    let store = Store::connect(&url, &Default::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    let mut fleet = Fleet::start(Path::new(env!("CARGO_BIN_EXE_swarm-director")), dir.path(), &url, 2, &env);
    let key = format!("imap://{user}@127.0.0.1:{}/INBOX", server.port);

    // Which instance reads the mailbox: instance N holds its leases as `fleet-N`.
    let holder = wait_until(Duration::from_secs(20), || async {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&url).await.ok()?;
        let owner: Option<String> =
            sqlx::query_scalar("SELECT lease_owner FROM mailbox_state WHERE mailbox = $1")
                .bind(&key)
                .fetch_optional(&mut conn)
                .await
                .ok()??;
        let owner = owner?;
        (0..2).find(|&i| owner == format!("fleet-{i}"))
    })
    .await
    .expect("one instance holds the mailbox");

    let mut client = server.session(&user).await;
    for n in 0..MESSAGES {
        append(&mut client, "INBOX", &message(n), None).await;
    }
    // Kill the reader mid-batch, once some of the batch is committed.
    let started = wait_until(Duration::from_secs(20), || async {
        let n = store.overview(1).await.ok()?.messages_by_status.iter().map(|(_, n)| n).sum::<i64>();
        (n >= 5).then_some(n)
    })
    .await
    .expect("the reader started on the batch");
    fleet.kill(holder);
    eprintln!("killed instance {holder} after {started} messages were committed");

    let done = wait_until(Duration::from_secs(60), || async {
        let o = store.overview(1).await.ok()?;
        let done = o.tasks_by_status.iter().find(|(s, _)| s == "done").map_or(0, |(_, n)| *n);
        (done == MESSAGES as i64 && o.outbox_backlog == 0).then_some(o)
    })
    .await;
    let Some(overview) = done else {
        panic!("not every message became a finished task: {:?}", store.overview(1).await);
    };
    assert_eq!(
        overview.messages_by_status,
        vec![("accepted".to_owned(), MESSAGES as i64)],
        "each message stored once"
    );
    let seen = flags(&mut client, "INBOX").await;
    assert_eq!(seen.len(), MESSAGES);
    assert!(seen.iter().all(|(_, f)| f.iter().any(|f| f.contains("Seen"))), "every message acknowledged");
    let mut duplicates = 0;
    store
        .for_each_audit(&Default::default(), |r| -> anyhow::Result<()> {
            duplicates += usize::from(r.action == "message.duplicate");
            Ok(())
        })
        .await
        .expect("audit");
    eprintln!("re-fetched after the kill and recognized as duplicates: {duplicates}");
}
