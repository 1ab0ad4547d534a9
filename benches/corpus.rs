//! Corpus benchmark: `SWARM_CORPUS_DIR=../shared/corpus cargo bench --bench corpus`.
//!
//! Measures, in one run and on the same ~600 real messages:
//! - baseline: a bare mail-parser parse of every message (no storage, no agents);
//! - our parse (limits, quote stripping, HTML→text);
//! - `swarm-director ingest` of the whole corpus (release binary, fresh SQLite file): store,
//!   dedupe, guard, all agents, compose, `.eml` delivery;
//! - `swarm-director serve`: RSS when idle, then every message posted to /inbound/raw (signed,
//!   8 at a time) and processed to a delivered reply; throughput and RSS afterwards.
//!
//! Figures are printed as times, messages/s and ratios against the baseline.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/support/fleet.rs"]
mod fleet;

use swarm_director::intake::webhook::decode_secret;
use swarm_director::mail::parse::Limits;
use swarm_director::store::Store;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn corpus(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let index = std::fs::read_to_string(root.join("index.tsv")).expect("index.tsv");
    index
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next())
        .map(|p| {
            let path = root.join(p);
            let bytes = std::fs::read(&path).expect("corpus file");
            (path, bytes)
        })
        .collect()
}

/// (current RSS, peak RSS) of a process, in KiB, from /proc.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:>8.1} ms  {:>9.0} msg/s", d.as_secs_f64() * 1e3, n as f64 / d.as_secs_f64())
}

fn main() {
    let Some(root) = std::env::var_os("SWARM_CORPUS_DIR").map(PathBuf::from) else {
        eprintln!("set SWARM_CORPUS_DIR to the corpus folder (e.g. ../shared/corpus)");
        std::process::exit(2);
    };
    // Relative to the package root, as the doc line above writes it; the CLI runs elsewhere.
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let files = corpus(&root);
    let n = files.len();
    let bytes: usize = files.iter().map(|(_, b)| b.len()).sum();
    println!("corpus: {n} messages, {:.1} MiB", bytes as f64 / 1048576.0);

    // Baseline: mail-parser alone, best of 5.
    let best = |f: &dyn Fn()| {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let baseline = best(&|| {
        for (_, raw) in &files {
            std::hint::black_box(mail_parser::MessageParser::default().parse(raw));
        }
    });
    println!("baseline  mail-parser parse only          {}   1.0x", rate(n, baseline));
    let limits = Limits::default();
    let ours = best(&|| {
        for (_, raw) in &files {
            let _ = std::hint::black_box(swarm_director::mail::parse(raw, &limits));
        }
    });
    let ratio = |d: Duration| d.as_secs_f64() / baseline.as_secs_f64();
    println!("parse     swarm parse (limits, quotes, html){}  {:5.1}x", rate(n, ours), ratio(ours));

    let bin = Path::new(env!("CARGO_BIN_EXE_swarm-director"));
    let dir = tempfile::tempdir().expect("tmp");
    let sqlite = |d: &Path| format!("sqlite://{}/swarm.db", d.display());

    // The CLI over the whole corpus.
    let ingest_dir = dir.path().join("ingest");
    std::fs::create_dir_all(&ingest_dir).expect("mkdir");
    let mut cmd = fleet::command(bin, &ingest_dir, &sqlite(&ingest_dir), &[]);
    cmd.arg("ingest").args(files.iter().map(|(p, _)| p)).stdout(Stdio::null());
    let t = Instant::now();
    let status = cmd.status().expect("ingest runs");
    let ingest = t.elapsed();
    assert!(status.success(), "ingest failed");
    println!("ingest    CLI, store+agents+reply+.eml    {}  {:5.1}x", rate(n, ingest), ratio(ingest));

    // serve: idle RSS, then the corpus over HTTP.
    let serve_dir = dir.path().join("serve");
    std::fs::create_dir_all(&serve_dir).expect("mkdir");
    let store_url = sqlite(&serve_dir);
    let env = [("SWARM_WEBHOOK_SECRETS", SECRET), ("SWARM_POLL_INTERVAL_MS", "200")];
    let serve = fleet::Fleet::start(bin, &serve_dir, &store_url, 1, &env);
    let pid = serve.pid(0).expect("serve runs");
    let port = serve.ports[0];
    // Let start-up work (migrations, templates) settle before reading the idle figure.
    std::thread::sleep(Duration::from_millis(500));
    let (idle_rss, idle_peak) = rss_kib(pid);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let http = reqwest::Client::new();
    let key = Arc::new(decode_secret(SECRET).expect("secret"));
    let served = rt.block_on(async {
        let t = Instant::now();
        let gate = Arc::new(tokio::sync::Semaphore::new(8));
        let mut posts = Vec::with_capacity(n);
        for (i, (_, raw)) in files.iter().enumerate() {
            let (http, key, gate, raw) = (http.clone(), key.clone(), gate.clone(), raw.clone());
            posts.push(tokio::spawn(async move {
                let _permit = gate.acquire().await.expect("semaphore");
                let id = format!("bench_{i}");
                let status = fleet::post_signed(&http, port, &key, &id, raw).await.expect("post");
                assert_eq!(status, 202, "{id}");
            }));
        }
        for p in posts {
            p.await.expect("post task");
        }
        let store = Store::connect(&store_url, &Default::default()).await.expect("store");
        loop {
            let (tasks, deliveries) = store.pending_work().await.expect("pending");
            if tasks == 0 && deliveries == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        t.elapsed()
    });
    let (after_rss, after_peak) = rss_kib(pid);
    drop(serve);
    println!("serve     HTTP post + process + deliver    {}  {:5.1}x", rate(n, served), ratio(served));
    println!(
        "serve RSS idle {:.1} MiB (peak {:.1} MiB); after the corpus {:.1} MiB (peak {:.1} MiB)",
        idle_rss as f64 / 1024.0,
        idle_peak as f64 / 1024.0,
        after_rss as f64 / 1024.0,
        after_peak as f64 / 1024.0
    );
}
