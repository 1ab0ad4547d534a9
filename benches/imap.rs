//! IMAP benchmark: `cargo bench --bench imap` (as root, with Debian's dovecot-imapd).
//!
//! 0. Baseline: APPEND until a bare IDLE client of the same mailbox is notified (the server's part).
//! 1. APPEND-to-reply latency with IDLE: the release binary `serve`s one Dovecot mailbox; 50
//!    messages are APPENDed one at a time, each timed until its reply is delivered. p50 and p95.
//! 2. Poll time for 10 new messages in a mailbox that already holds 1,000 messages (the baseline)
//!    and one that holds 50,000 (bulk-imported with doveadm into Dovecot's indexed sdbox format):
//!    connect, SELECT, take the 10, commit, acknowledge, LOGOUT. Median of 5 rounds each; the
//!    ratio shows whether poll time grows with the mailbox.

#[path = "../tests/support/fleet.rs"]
mod fleet;
#[path = "../tests/support/imap.rs"]
mod imap;
#[path = "../tests/support/tls.rs"]
mod tls;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use swarm_director::app::App;
use swarm_director::config::Settings;
use swarm_director::store::Store;

fn settings(dir: &Path, url: &str, env: &[(&str, &str)]) -> Settings {
    let mut map: std::collections::HashMap<String, String> =
        env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    map.insert("DATABASE_URL".into(), url.into());
    map.insert("SWARM_OUTBOX_DIR".into(), dir.join("outbox").display().to_string());
    Settings::from_lookup(|k| map.get(k).cloned()).expect("settings")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Writes `n` messages as maildir files and bulk-imports them into the user's INBOX.
async fn fill(server: &imap::Dovecot, user: &str, n: usize) {
    let source = tempfile::tempdir().expect("tmp");
    let maildir = source.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
    }
    for i in 0..n {
        let name = format!("{}.M{i}P1.bench:2,S", 1_700_000_000 + i);
        std::fs::write(maildir.join("cur").join(name), fleet::message(1_000_000 + i)).expect("message file");
    }
    // doveadm runs as the mail user and writes its uidlist into the source maildir.
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    assert!(ok(Command::new("chmod").arg("755").arg(source.path())));
    assert!(ok(Command::new("chown").arg("-R").arg("65534:65534").arg(&maildir)));
    let started = Instant::now();
    server.import_maildir(user, &maildir);
    eprintln!("imported {n} messages in {:?}", started.elapsed());
    let mut session = server.session(user).await;
    let mailbox = session.select("INBOX").await.expect("select");
    assert_eq!(mailbox.exists as usize, n);
    let _ = session.logout().await;
}

async fn poll_time(server: &imap::Dovecot, existing: usize) -> Vec<Duration> {
    let user = server.new_user();
    fill(server, &user, existing).await;
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}/swarm.db", dir.path().display());
    let imap_url = format!("imap://127.0.0.1:{}", server.port);
    let app = App::build(settings(
        dir.path(),
        &url,
        &[
            ("IMAP_URL", &imap_url),
            ("IMAP_USERNAME", &user),
            ("IMAP_PASSWORD", imap::PASSWORD),
            ("IMAP_MODE", "poll"),
        ],
    ))
    .await
    .expect("app");
    let reader = app.imap.first().expect("imap");
    assert_eq!(reader.poll_once().await.expect("first poll").taken, 0, "IMAP_START=new leaves old mail");
    let mut client = server.session(&user).await;
    let mut times = Vec::new();
    for round in 0..5 {
        for i in 0..10 {
            imap::append(&mut client, "INBOX", &fleet::message(round * 10 + i), None).await;
        }
        let started = Instant::now();
        let report = reader.poll_once().await.expect("poll");
        times.push(started.elapsed());
        assert_eq!(report.tasks, 10);
    }
    times.sort();
    times
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = match imap::server() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Dovecot is needed for this benchmark: {e}");
            std::process::exit(2);
        }
    };

    // 0. Baseline: APPEND until a bare IDLE client of the same mailbox is told about it.
    let baseline = rt.block_on(async {
        let user = server.new_user();
        let mut writer = server.session(&user).await;
        let mut waiter = server.session(&user).await;
        waiter.select("INBOX").await.expect("select");
        let mut times = Vec::new();
        for n in 0..20 {
            let mut idle = waiter.idle();
            idle.init().await.expect("IDLE");
            let started = Instant::now();
            let (wait, _stop) = idle.wait_with_timeout(Duration::from_secs(10));
            let (notified, ()) = tokio::join!(wait, async {
                imap::append(&mut writer, "INBOX", &fleet::message(n), None).await;
            });
            notified.expect("IDLE notification");
            times.push(started.elapsed());
            waiter = idle.done().await.expect("DONE");
        }
        times.sort();
        times
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "baseline, APPEND until a bare IDLE client is notified, 20 messages: p50 {:.0} ms, p95 {:.0} ms",
        ms(percentile(&baseline, 0.5)),
        ms(percentile(&baseline, 0.95))
    );

    // 1. APPEND → reply with IDLE, through the release binary.
    let user = server.new_user();
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}/swarm.db", dir.path().display());
    let imap_url = format!("imap://127.0.0.1:{}", server.port);
    let env = [
        ("IMAP_URL", imap_url.as_str()),
        ("IMAP_USERNAME", user.as_str()),
        ("IMAP_PASSWORD", imap::PASSWORD),
    ];
    let binary = Path::new(env!("CARGO_BIN_EXE_swarm-director"));
    let _fleet = fleet::Fleet::start(binary, dir.path(), &url, 1, &env);
    let latencies = rt.block_on(async {
        let store = Store::connect(&url, &Default::default()).await.expect("store");
        let key = format!("imap://{user}@127.0.0.1:{}/INBOX", server.port);
        while store.mailbox_state(&key).await.ok().flatten().and_then(|s| s.last_ok_at).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut client = server.session(&user).await;
        let mut latencies = Vec::new();
        for n in 0..50 {
            let started = Instant::now();
            imap::append(&mut client, "INBOX", &fleet::message(n), None).await;
            loop {
                let delivered = store.overview(1).await.expect("overview").outbox_backlog == 0
                    && store
                        .task_deliveries(n as i64 + 1)
                        .await
                        .expect("deliveries")
                        .iter()
                        .any(|d| d.status == "delivered");
                if delivered {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            latencies.push(started.elapsed());
        }
        latencies.sort();
        latencies
    });
    println!(
        "IDLE, APPEND to delivered reply, 50 messages: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.95)),
        ms(latencies[latencies.len() - 1])
    );

    // 2. Poll time against mailbox size.
    let small = rt.block_on(poll_time(server, 1_000));
    let large = rt.block_on(poll_time(server, 50_000));
    let (small, large) = (small[2], large[2]);
    println!("poll, 10 new messages, mailbox of  1,000: {:.1} ms (1.00x)", ms(small));
    println!(
        "poll, 10 new messages, mailbox of 50,000: {:.1} ms ({:.2}x)",
        ms(large),
        large.as_secs_f64() / small.as_secs_f64()
    );
}
