//! Scale-out benchmark: `cargo bench --bench scale` (needs Debian's postgresql package).
//!
//! The same workload for each setup: 500 distinct signed messages posted to /inbound/raw, 16 in
//! flight, spread round-robin over the instances; timed from the first post until every task is
//! done and every reply delivered (`.eml` files into one shared folder). Setups: 1 instance on
//! SQLite (the baseline), 1 instance on PostgreSQL, 3 instances on one PostgreSQL database. Each
//! setup runs 5 times on a fresh database; the median is reported, as tasks/s and as a ratio to
//! the baseline. Everything (PostgreSQL included) shares this machine's cores.

#[path = "../tests/support/fleet.rs"]
mod fleet;
#[path = "../tests/support/pg.rs"]
mod pg;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use swarm_director::intake::webhook::decode_secret;
use swarm_director::store::Store;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const MESSAGES: usize = 500;
const IN_FLIGHT: usize = 16;
const RUNS: usize = 5;
const ENV: &[(&str, &str)] = &[("SWARM_WEBHOOK_SECRETS", SECRET), ("SWARM_POLL_INTERVAL_MS", "100")];

async fn run_once(url: &str, instances: usize) -> Duration {
    let dir = tempfile::tempdir().expect("tmp");
    let binary = Path::new(env!("CARGO_BIN_EXE_swarm-director"));
    let fleet = fleet::Fleet::start(binary, dir.path(), url, instances, ENV);
    let http = reqwest::Client::new();
    let key = Arc::new(decode_secret(SECRET).expect("secret"));
    let store = Store::connect(url, &Default::default()).await.expect("store");
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));

    let started = Instant::now();
    let mut posts = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let (http, key, gate) = (http.clone(), key.clone(), gate.clone());
        let port = fleet.ports[i % instances];
        posts.push(tokio::spawn(async move {
            let _slot = gate.acquire().await.expect("semaphore");
            let status = fleet::post_signed(&http, port, &key, &format!("b{i}"), fleet::message(i)).await;
            assert_eq!(status.expect("post"), 202);
        }));
    }
    for p in posts {
        p.await.expect("post task");
    }
    loop {
        let (tasks, deliveries) = store.pending_work().await.expect("pending");
        let o = store.overview(1).await.expect("overview");
        let done = o.tasks_by_status.iter().find(|(s, _)| s == "done").map_or(0, |(_, n)| *n);
        if tasks == 0 && deliveries == 0 && done == MESSAGES as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    drop(fleet);
    took
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    if let Err(e) = pg::cluster() {
        eprintln!("PostgreSQL is needed for this benchmark: {e}");
        std::process::exit(2);
    }
    let setups: [(&str, usize); 3] =
        [("sqlite, 1 instance", 1), ("postgres, 1 instance", 1), ("postgres, 3 instances", 3)];
    let mut baseline = None;
    println!("{MESSAGES} messages, {IN_FLIGHT} in flight; median of {RUNS} runs");
    for (n, (name, instances)) in setups.iter().enumerate() {
        let mut times: Vec<Duration> = (0..RUNS)
            .map(|_| {
                rt.block_on(async {
                    let dir = tempfile::tempdir().expect("tmp");
                    let url = if n == 0 {
                        format!("sqlite://{}/swarm.db", dir.path().display())
                    } else {
                        pg::fresh_database().await
                    };
                    run_once(&url, *instances).await
                })
            })
            .collect();
        times.sort();
        let median = times[RUNS / 2];
        let rate = MESSAGES as f64 / median.as_secs_f64();
        let base = *baseline.get_or_insert(rate);
        println!(
            "{name:<24} {:>8.0} ms {:>8.0} tasks/s {:>6.2}x",
            median.as_secs_f64() * 1e3,
            rate,
            rate / base
        );
    }
}
