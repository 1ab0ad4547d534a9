//! Attacks and bad days on 127.0.0.1, each bounded in time and count: forged requests refused
//! before their body is read, the shared body budget, peak memory under large forged posts, a
//! full disk, a database lock held too long, idle connections under a descriptor limit.

mod support;

use std::time::{Duration, Instant};

use support::{Db, TestApp};
use tokio::io::AsyncWriteExt;

/// 32 zero bytes in base64: a well-formed Standard Webhooks tag that matches nothing.
const ZERO_TAG: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// Sends `head` (a request head declaring a body) without any body, and returns the status line
/// of the answer, which must come within 5 s: the server did not wait for the body.
async fn answer_without_body(app: &TestApp, head: &str) -> String {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    stream.write_all(head.replace("{addr}", &addr).as_bytes()).await.expect("write");
    let answer = support::read_answer_head(&mut stream, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no answer within 5 s: the server waits for the body of {head:?}"));
    answer.lines().next().unwrap_or_default().to_owned()
}

fn raw_head(extra: &str) -> String {
    format!(
        "POST /inbound/raw HTTP/1.1\r\nHost: {{addr}}\r\nContent-Type: message/rfc822\r\n\
         Content-Length: 26000000\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn forged_requests_are_refused_before_their_body_is_read() {
    let app = TestApp::spawn(Db::Sqlite, &[]).await;
    let now = chrono::Utc::now().timestamp();
    let stale = now - 3600;
    let cases = [
        ("no signature headers", raw_head(""), "401"),
        (
            "a tag that is not 32 bytes",
            raw_head(&format!("webhook-id: a\r\nwebhook-timestamp: {now}\r\nwebhook-signature: v1,AAAA\r\n")),
            "401",
        ),
        (
            "a timestamp an hour old",
            raw_head(&format!(
                "webhook-id: b\r\nwebhook-timestamp: {stale}\r\nwebhook-signature: v1,{ZERO_TAG}\r\n"
            )),
            "401",
        ),
        (
            "a task hook without signature",
            "POST /hooks/crm HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 26000000\r\n\r\n"
                .to_owned(),
            "401",
        ),
    ];
    for (what, head, status) in cases {
        let line = answer_without_body(&app, &head).await;
        assert!(line.starts_with(&format!("HTTP/1.1 {status}")), "{what}: {line}");
    }
    // A webhook-id used before is refused without reading the replay's body.
    let first = app.post_signed(&support::fixture("action_request.eml"), "msg_once").await;
    assert_eq!(first.status(), 202);
    let replay = raw_head(&format!(
        "webhook-id: msg_once\r\nwebhook-timestamp: {now}\r\nwebhook-signature: v1,{ZERO_TAG}\r\n"
    ));
    let line = answer_without_body(&app, &replay).await;
    assert!(line.starts_with("HTTP/1.1 409"), "replay: {line}");
    app.stop().await;
}

/// Opens a signed-looking `/inbound/raw` request declaring `len` bytes and sends `sent` of them.
async fn open_request(app: &TestApp, id: &str, len: usize, sent: usize) -> tokio::net::TcpStream {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let now = chrono::Utc::now().timestamp();
    let head = format!(
        "POST /inbound/raw HTTP/1.1\r\nHost: {addr}\r\nContent-Type: message/rfc822\r\nContent-Length: {len}\r\n\
         webhook-id: {id}\r\nwebhook-timestamp: {now}\r\nwebhook-signature: v1,{ZERO_TAG}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    stream.write_all(&vec![b'x'; sent]).await.expect("write body");
    stream
}

async fn status_of(stream: &mut tokio::net::TcpStream) -> String {
    support::read_answer_head(stream, Duration::from_secs(10)).await.expect("an answer within 10 s")
}

#[tokio::test]
async fn bodies_beyond_the_shared_budget_wait_then_get_503_with_retry_after() {
    let app = TestApp::spawn(
        Db::Sqlite,
        &[("SWARM_MAX_REQUEST_BYTES", "100000"), ("SWARM_INBOUND_MAX_BUFFERED_BYTES", "300000")],
    )
    .await;
    // Three requests hold 250,000 of the 300,000 bytes while their bodies trickle in.
    let mut holder = open_request(&app, "hold", 100_000, 10).await;
    let mut second = open_request(&app, "hold2", 100_000, 10).await;
    let mut third = open_request(&app, "hold3", 50_000, 10).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let mut waiting = open_request(&app, "wait", 100_000, 100_000).await;
    let answer = status_of(&mut waiting).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited about a second first");
    // A small one still fits beside the holder (and fails its signature check: 401).
    let mut small = open_request(&app, "small", 1000, 1000).await;
    let answer = status_of(&mut small).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Once the holder is answered, its bytes are free again.
    holder.write_all(&vec![b'x'; 100_000 - 10]).await.expect("rest of the body");
    assert!(status_of(&mut holder).await.starts_with("HTTP/1.1 401"));
    for (stream, len) in [(&mut second, 100_000), (&mut third, 50_000)] {
        stream.write_all(&vec![b'x'; len - 10]).await.expect("rest of the body");
        assert!(status_of(stream).await.starts_with("HTTP/1.1 401"));
    }
    let mut again = open_request(&app, "again", 100_000, 100_000).await;
    assert!(status_of(&mut again).await.starts_with("HTTP/1.1 401"));
    app.stop().await;
}

#[test]
fn a_budget_below_the_request_cap_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_swarm-director"))
        .arg("serve")
        .current_dir(dir.path())
        .env("DATABASE_URL", format!("sqlite://{}/db.sqlite", dir.path().display()))
        .env("SWARM_HTTP_ADDR", "127.0.0.1:0")
        .env("SWARM_MAX_REQUEST_BYTES", "1000")
        .env("SWARM_INBOUND_MAX_BUFFERED_BYTES", "2999")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SWARM_INBOUND_MAX_BUFFERED_BYTES"), "{err}");
}

/// Peak resident memory of a process, from `VmHWM` in `/proc/PID/status`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

const MIB: u64 = 1024 * 1024;

/// `n` concurrent 26 MB posts to each of `/inbound/raw` and `/hooks/crm` with a bogus
/// signature and to `/inbound/mailgun` unsigned (its signature is inside the form); the
/// statuses seen (0 when the server closed the connection before answering).
async fn forged_posts(port: u16, n: usize) -> Vec<u16> {
    let body = bytes::Bytes::from(vec![b'x'; 26_000_000]);
    let boundary = "hardeningBoundary42";
    let mut form =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"body-plain\"\r\n\r\n").into_bytes();
    form.extend_from_slice(&body[..25_000_000]);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let form = bytes::Bytes::from(form);
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp().to_string();
    let mut posts = Vec::new();
    for i in 0..n {
        for target in ["inbound/raw", "hooks/crm", "inbound/mailgun"] {
            let (http, now) = (http.clone(), now.clone());
            let (body, content_type) = match target {
                "inbound/raw" => (body.clone(), "message/rfc822".to_owned()),
                "hooks/crm" => (body.clone(), "application/json".to_owned()),
                _ => (form.clone(), format!("multipart/form-data; boundary={boundary}")),
            };
            posts.push(tokio::spawn(async move {
                http.post(format!("http://127.0.0.1:{port}/{target}"))
                    .header("content-type", content_type)
                    .header("webhook-id", format!("evt_{i}"))
                    .header("webhook-timestamp", now)
                    .header("webhook-signature", "v1,bogus")
                    .body(body)
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16())
            }));
        }
    }
    let mut statuses = Vec::new();
    for p in posts {
        statuses.push(p.await.expect("post task"));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_memory_under_forged_26mb_posts_stays_within_the_budget() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());
    let budget = 128 * MIB;
    let budget_text = budget.to_string();
    let env = [
        ("SWARM_WEBHOOK_SECRETS", support::SECRET),
        ("MAILGUN_SIGNING_KEY", "key-hardening"),
        ("SWARM_INBOUND_MAX_BUFFERED_BYTES", budget_text.as_str()),
    ];
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_swarm-director"));
    let fleet = support::fleet::Fleet::start(binary, dir.path(), &url, 1, &env);
    let pid = fleet.pid(0).expect("running");
    let idle = peak_rss(pid);
    let statuses = forged_posts(fleet.ports[0], 40).await;
    assert!(!statuses.iter().any(|s| (200..300).contains(s)), "a forged post was accepted: {statuses:?}");
    let peak = peak_rss(pid);
    // The budget (which counts a form's parser copies too), plus the allocator's slack.
    assert!(
        peak < idle + budget + 32 * MIB,
        "peak RSS {} MiB (idle {} MiB) under 120 forged 26 MB posts, budget {} MiB",
        peak / MIB,
        idle / MIB,
        budget / MIB
    );
    eprintln!("peak RSS {} MiB, idle {} MiB, budget {} MiB", peak / MIB, idle / MIB, budget / MIB);
}

/// A small tmpfs mounted for the life of the value (the tests run as root, as in CI).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Self {
        let dir = tempfile::tempdir().expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root");
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Writes a filler file until the filesystem is full.
    fn fill(&self) {
        use std::io::Write;
        let mut filler = std::fs::File::create(self.path().join("filler")).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while filler.write_all(&block).is_ok() {}
        let small = [0u8; 512];
        while filler.write_all(&small).is_ok() {}
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).expect("remove filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn a_full_disk_fails_writes_and_the_next_write_after_freeing_space_succeeds() {
    let disk = SmallDisk::mount(16 * 1024 * 1024);
    let url = format!("sqlite://{}/db.sqlite", disk.path().display());
    let app = TestApp::spawn(Db::Sqlite, &[("DATABASE_URL", url.as_str())]).await;
    let health = || async { app.http.get(app.url("/health")).send().await.expect("health") };
    assert_eq!(health().await.status(), 200);
    let mut acknowledged = Vec::new();
    let post = |n: usize| {
        let id = format!("msg_disk_{n}");
        let mail = format!(
            "From: user{n}@example.org\r\nTo: bot@example.org\r\nSubject: Disk {n}\r\nMessage-ID: <disk{n}@example.org>\r\n\r\n{}\r\n",
            "Please summarise this. ".repeat(200)
        );
        let app = &app;
        async move {
            let r = app.post_signed(mail.as_bytes(), &id).await;
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (body["message"].as_i64(), status)
        }
    };
    for n in 0..5 {
        let (id, status) = post(n).await;
        assert_eq!(status, 202);
        acknowledged.push(id);
    }
    disk.fill();
    let mut refused = 0;
    for n in 5..40 {
        let (id, status) = post(n).await;
        if (200..300).contains(&status) {
            acknowledged.push(id);
        } else {
            assert!(status >= 500, "a full disk is a server error, not {status}");
            refused += 1;
        }
    }
    assert!(refused > 0, "no write failed on a full disk");
    let failing = health().await;
    assert_eq!(failing.status(), 503, "health says the database is failing while writes fail");
    assert_eq!(support::json(failing).await["database"], "failing");

    disk.free();
    let freed = Instant::now();
    let (id, status) = post(100).await;
    assert_eq!(status, 202, "the first write after space is freed succeeds");
    acknowledged.push(id);
    eprintln!("recovered {} ms after the space was freed", freed.elapsed().as_millis());
    let ok = health().await;
    assert_eq!(ok.status(), 200, "health is ok again once a write committed");

    let store = swarm_director::store::Store::connect(&url, &Default::default()).await.expect("store");
    for id in &acknowledged {
        let id = id.expect("a 2xx names its message");
        assert!(store.message(id).await.expect("read").is_some(), "acknowledged message {id} is lost");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_write_lock_held_past_the_busy_timeout_answers_503_with_retry_after() {
    use sqlx::Connection;
    let app = TestApp::spawn(Db::Sqlite, &[("SWARM_DB_STATEMENT_TIMEOUT_MS", "200")]).await;
    let url = format!("sqlite://{}/swarm.db", app.dir.path().display());
    let mut holder = sqlx::SqliteConnection::connect(&url).await.expect("second connection");
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.expect("take the write lock");
    let mail = support::fixture("action_request.eml");
    let busy = app.post_signed(&mail, "msg_busy_1").await;
    assert_eq!(busy.status(), 503, "a held lock is a retryable 503");
    assert_eq!(busy.headers()["retry-after"], "1");
    let body = support::json(busy).await;
    assert!(body["error"].as_str().is_some_and(|e| e.contains("busy")), "{body}");
    sqlx::query("COMMIT").execute(&mut holder).await.expect("release the lock");
    // The webhook sender retries (same webhook-id: the refused attempt left no nonce behind).
    assert_eq!(app.post_signed(&mail, "msg_busy_1").await.status(), 202, "the retry is taken");
    app.stop().await;
}

/// Open descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn idle_connections_cannot_lock_clients_out_under_a_1024_descriptor_limit() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}/db.sqlite", dir.path().display());
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let binary = env!("CARGO_BIN_EXE_swarm-director");
    let server = support::fleet::command(std::path::Path::new("prlimit"), dir.path(), &url, &[])
        .args(["--nofile=1024:1024", binary, "serve"])
        .env("SWARM_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("SWARM_HTTP_HEADER_TIMEOUT_SECS", "2")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("server starts under prlimit");
    let server = KillOnDrop(server);
    let health = format!("http://127.0.0.1:{port}/health");
    let http = reqwest::Client::new();
    let up = support::wait_until(Duration::from_secs(20), || async {
        http.get(&health).send().await.ok().filter(|r| r.status() == 200)
    })
    .await;
    assert!(up.is_some(), "the server did not come up");

    // 1,100 connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..1100 {
        let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
        if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
            idle.push(c);
        }
    }
    let held = open_fds(server.id());
    let started = Instant::now();
    let answered = support::wait_until(Duration::from_secs(8), || async {
        reqwest::Client::new()
            .get(&health)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200)
    })
    .await;
    assert!(answered.is_some(), "/health did not answer while 1,100 idle connections were open");
    assert!(held < 600, "the server held {held} descriptors: more than its connection cap");
    // The idle ones are closed by the head deadline: the server's descriptors fall back.
    let reaped =
        support::wait_until(Duration::from_secs(8), || async { (open_fds(server.id()) < 100).then_some(()) })
            .await;
    assert!(reaped.is_some(), "idle connections still open: {} descriptors", open_fds(server.id()));
    eprintln!(
        "held {held} descriptors with 1,100 idle connections; /health answered after {} ms",
        started.elapsed().as_millis()
    );
    drop(idle);
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
