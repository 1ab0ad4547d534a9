//! Scale-out: 3 instances of the binary (the release binary under `cargo test --release`) on one
//! PostgreSQL database. 500 signed messages are posted to /inbound/raw, each one to two different
//! instances; one instance is killed with SIGKILL midway and not restarted. Every message must
//! still become exactly one task with exactly one reply, no Message-ID twice, and the audit chain
//! must verify.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use support::{SECRET, pg, wait_until};
use swarm_director::intake::webhook::{decode_secret, sign};
use swarm_director::store::Store;

const MESSAGES: usize = 500;

/// The instances; killed when the test ends, however it ends.
struct Instances(Vec<Option<Child>>);

impl Drop for Instances {
    fn drop(&mut self) {
        for child in self.0.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn binary(dir: &Path, url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_swarm-director"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .env("SWARM_OUTBOX_DIR", dir.join("outbox"))
        .env("SWARM_WEBHOOK_SECRETS", SECRET)
        // A short lease, so the killed instance's work is taken over within seconds.
        .env("SWARM_LEASE_SECS", "3")
        .env("SWARM_POLL_INTERVAL_MS", "100")
        .env("SWARM_DB_POOL_SIZE", "8")
        .env("SWARM_LOG", "warn");
    cmd
}

fn message(i: usize) -> Vec<u8> {
    format!(
        "From: User {i} <user{i}@example.org>\r\nTo: swarm@localhost\r\nSubject: Request {i}\r\n\
         Message-ID: <load-{i}@example.org>\r\nDate: Fri, 20 Nov 2026 09:00:00 +0000\r\n\r\n\
         Hello,\r\n\r\nCould you send report number {i} by Friday? The numbers for region {i} are in.\r\n"
    )
    .into_bytes()
}

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
    let migrate = binary(d, &url).arg("migrate").output().expect("migrate runs");
    assert!(migrate.status.success(), "{}", String::from_utf8_lossy(&migrate.stderr));

    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut instances = Instances(
        ports
            .iter()
            .enumerate()
            .map(|(n, port)| {
                let log = std::fs::File::create(d.join(format!("instance-{n}.log"))).expect("log");
                let child = binary(d, &url)
                    .arg("serve")
                    .env("SWARM_HTTP_ADDR", format!("127.0.0.1:{port}"))
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .expect("instance starts");
                Some(child)
            })
            .collect(),
    );
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    for port in &ports {
        let healthy = wait_until(Duration::from_secs(20), || async {
            let r = http.get(format!("http://127.0.0.1:{port}/health")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        assert!(healthy.is_some(), "instance on {port} did not become healthy");
    }

    let key = Arc::new(decode_secret(SECRET).expect("secret"));
    let post = |port: u16, id: String, body: Vec<u8>| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            let ts = chrono::Utc::now().timestamp();
            http.post(format!("http://127.0.0.1:{port}/inbound/raw"))
                .header("content-type", "message/rfc822")
                .header("webhook-id", &id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sign(&key, &id, ts, &body))
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };

    // Post in batches of 20 messages (40 requests in flight); kill instance 0 halfway through.
    for batch in (0..MESSAGES).collect::<Vec<_>>().chunks(20) {
        if batch[0] == MESSAGES / 2 {
            let mut victim = instances.0[0].take().expect("instance 0");
            victim.kill().expect("SIGKILL");
            let _ = victim.wait();
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
    for n in 0..3 {
        let log = std::fs::read_to_string(d.join(format!("instance-{n}.log"))).expect("log");
        assert!(!log.contains("ERROR"), "instance {n} logged errors:\n{log}");
    }
    let verify = binary(d, &url).args(["audit", "verify"]).output().expect("verify runs");
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}
