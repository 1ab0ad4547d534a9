//! Scale-out: 3 instances of the binary (the release binary under `cargo test --release`) on one
//! PostgreSQL database. 500 signed messages are posted to /inbound/raw, each one to two different
//! instances; one instance is killed with SIGKILL midway and not restarted. Every message must
//! still become exactly one task with exactly one reply, no Message-ID twice, and the audit chain
//! must verify.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use support::fleet::{Fleet, command, message, post_signed};
use support::{SECRET, pg, wait_until};
use swarm_director::intake::webhook::decode_secret;
use swarm_director::store::Store;

const BINARY: &str = env!("CARGO_BIN_EXE_swarm-director");
/// A short lease, so the killed instance's work is taken over within seconds.
const ENV: &[(&str, &str)] = &[
    ("SWARM_WEBHOOK_SECRETS", SECRET),
    ("SWARM_LEASE_SECS", "3"),
    ("SWARM_POLL_INTERVAL_MS", "100"),
    ("SWARM_DB_POOL_SIZE", "8"),
];

const MESSAGES: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_one_killed_handle_every_message_exactly_once() {
    if !pg::available() {
        return;
    }
    if cfg!(debug_assertions) {
        eprintln!("NOTICE: running the debug binary; `cargo test --release` runs the release binary");
    }
    let url = pg::fresh_database().await;
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let migrate = command(Path::new(BINARY), d, &url, ENV).arg("migrate").output().expect("migrate runs");
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));
    let mut fleet = Fleet::start(Path::new(BINARY), d, &url, 3, ENV);
    let ports = fleet.ports.clone();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");

    let key = Arc::new(decode_secret(SECRET).expect("secret"));
    let post = |port: u16, id: String, body: Vec<u8>| {
        let (http, key) = (http.clone(), key.clone());
        async move { post_signed(&http, port, &key, &id, body).await }
    };

    // Post in batches of 20 messages (40 requests in flight); kill instance 0 halfway through.
    for batch in (0..MESSAGES).collect::<Vec<_>>().chunks(20) {
        if batch[0] == MESSAGES / 2 {
            fleet.kill(0);
        }
        let mut handles = Vec::new();
        for &i in batch {
            let (a, b) = (ports[i % 3], ports[(i + 1) % 3]);
            let first = tokio::spawn(post(a, format!("m{i}-a"), message(i)));
            let second = tokio::spawn(post(b, format!("m{i}-b"), message(i)));
            handles.push((i, first, second));
        }
        for (i, first, second) in handles {
            let results = [first.await.expect("join"), second.await.expect("join")];
            for status in results.iter().flatten() {
                assert_eq!(*status, 202, "message {i}: unexpected status");
            }
            assert!(
                results.iter().any(|r| r.is_ok()),
                "message {i}: neither instance accepted it: {results:?}"
            );
        }
    }

    let store = Store::connect(&url, &Default::default()).await.expect("store");
    let settled = wait_until(Duration::from_secs(120), || async {
        let o = store.overview(1).await.ok()?;
        let done = o.tasks_by_status.iter().find(|(s, _)| s == "done").map_or(0, |(_, n)| *n);
        (done == MESSAGES as i64 && o.outbox_backlog == 0).then_some(o)
    })
    .await;
    let Some(overview) = settled else {
        panic!("not all tasks finished in time: {:?}", store.overview(1).await);
    };
    assert_eq!(overview.tasks_by_status, vec![("done".to_owned(), MESSAGES as i64)]);
    assert_eq!(
        overview.messages_by_status,
        vec![("accepted".to_owned(), MESSAGES as i64)],
        "one stored message each"
    );

    // Exactly one reply per task, each with its own Message-ID, delivered once into the shared folder.
    let mut ids = HashSet::new();
    for task in 1..=MESSAGES as i64 {
        let deliveries = store.task_deliveries(task).await.expect("deliveries");
        assert_eq!(deliveries.len(), 1, "task {task}");
        assert_eq!(deliveries[0].status, "delivered", "task {task}");
        assert!(
            ids.insert(deliveries[0].message_id.clone()),
            "Message-ID used twice: {}",
            deliveries[0].message_id
        );
    }
    let mut file_ids = HashSet::new();
    for entry in std::fs::read_dir(d.join("outbox")).expect("outbox") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "eml") {
            let raw = std::fs::read(&path).expect("reply");
            let reply = mail_parser::MessageParser::default().parse(&raw).expect("reply parses");
            let id = reply.message_id().expect("Message-ID").to_owned();
            assert!(file_ids.insert(id.clone()), "two reply files carry {id}");
        }
    }
    assert_eq!(file_ids, ids, "the reply files are exactly the delivered replies");

    // Retries would hide lock trouble (deadlocks, timeouts); the instances must not have logged any.
    for (n, path) in fleet.logs.iter().enumerate() {
        let log = std::fs::read_to_string(path).expect("log");
        assert!(!log.contains("ERROR"), "instance {n} logged errors:\n{log}");
    }
    let verify =
        command(Path::new(BINARY), d, &url, ENV).args(["audit", "verify"]).output().expect("verify runs");
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}
