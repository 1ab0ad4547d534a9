//! Intake endpoint benchmark: `cargo bench --bench inbound`.
//!
//! For each endpoint, a fresh release instance of `serve` on a fresh SQLite file with durable
//! commits (`SWARM_SQLITE_SYNCHRONOUS=full`, the default) takes 32 keep-alive connections on
//! loopback for 20 s, each sending its next request as soon as the last is answered (closed loop,
//! like `oha -c 32 -z 20s`). Every request is distinct and freshly signed (a unique webhook-id,
//! Mailgun token and Message-ID), which a replaying tool like oha or wrk cannot do; an answer
//! other than the expected 2xx counts as an error. `/health` is measured the same way in the same
//! run as the baseline: it is the cost of HTTP alone. Task workers run as in production, so
//! processing the accepted mail competes with intake for the same 2 cores. Rate limiting is off.
//!
//! Prints requests/s, p50 and p99 latency per endpoint, and ratios against `/health`.
//! `BENCH_SECONDS` (default 20) sets the time per endpoint, `BENCH_ONLY` picks one endpoint by a
//! part of its name (`health`, `raw`, `mailgun`), and `BENCH_BINARY` serves from another build of
//! `swarm-director` (to compare two builds with the same client).

#[path = "../tests/support/fleet.rs"]
mod fleet;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use swarm_director::intake::providers::mailgun;
use swarm_director::intake::webhook::decode_secret;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const MAILGUN_KEY: &str = "key-bench-mailgun-signing-key";
const CONNECTIONS: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Health,
    Raw,
    Mailgun,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Health => "GET /health",
            Target::Raw => "POST /inbound/raw",
            Target::Mailgun => "POST /inbound/mailgun",
        }
    }
}

struct Report {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Report {
    fn per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

const BOUNDARY: &str = "benchBoundary7MA4YWxkTrZu0gW";

/// A Mailgun parsed-fields POST for message `i`, signed now with a unique token.
fn mailgun_form(i: usize) -> Vec<u8> {
    let ts = chrono::Utc::now().timestamp().to_string();
    let token = format!("bench-token-{i}-{}", rand_suffix());
    let signature = mailgun::sign(MAILGUN_KEY.as_bytes(), &ts, &token);
    let headers = serde_json::json!([
        ["From", format!("User {i} <user{i}@example.org>")],
        ["To", "bot@mg.example.com"],
        ["Subject", format!("Request {i}")],
        ["Date", "Fri, 20 Nov 2026 09:00:00 +0000"],
        ["Message-Id", format!("<mg-load-{i}@example.org>")],
    ])
    .to_string();
    let text = format!(
        "Hello,\r\n\r\nCould you send report number {i} by Friday? The numbers for region {i} are in.\r\n"
    );
    let fields = [
        ("recipient", "bot@mg.example.com".to_owned()),
        ("sender", format!("user{i}@example.org")),
        ("from", format!("User {i} <user{i}@example.org>")),
        ("subject", format!("Request {i}")),
        ("body-plain", text.clone()),
        ("stripped-text", text),
        ("message-headers", headers),
        ("timestamp", ts),
        ("token", token),
        ("signature", signature),
    ];
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    body.into_bytes()
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

async fn one_request(http: &reqwest::Client, port: u16, target: Target, i: usize, key: &[u8]) -> bool {
    match target {
        Target::Health => {
            http.get(format!("http://127.0.0.1:{port}/health")).send().await.is_ok_and(|r| r.status() == 200)
        }
        Target::Raw => {
            let id = format!("bench_{i}");
            fleet::post_signed(http, port, key, &id, fleet::message(i)).await.is_ok_and(|s| s == 202)
        }
        Target::Mailgun => http
            .post(format!("http://127.0.0.1:{port}/inbound/mailgun"))
            .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
            .body(mailgun_form(i))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200),
    }
}

async fn measure(target: Target, duration: Duration) -> Report {
    let dir = tempfile::tempdir().expect("tmp");
    let binary = std::env::var_os("BENCH_BINARY").map(PathBuf::from);
    let binary = binary.as_deref().unwrap_or(Path::new(env!("CARGO_BIN_EXE_swarm-director")));
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let env = [
        ("SWARM_WEBHOOK_SECRETS", SECRET),
        ("MAILGUN_SIGNING_KEY", MAILGUN_KEY),
        ("SWARM_SQLITE_SYNCHRONOUS", "full"),
    ];
    let fleet = fleet::Fleet::start(binary, dir.path(), &url, 1, &env);
    let port = fleet.ports[0];
    let http = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().expect("client");
    let key = Arc::new(decode_secret(SECRET).expect("secret"));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (http, key, next) = (http.clone(), key.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    if one_request(&http, port, target, i, &key).await {
                        latencies.push(sent.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.expect("worker");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    drop(fleet);
    latencies.sort();
    let at = |q: f64| {
        latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
    };
    Report {
        requests: latencies.len(),
        errors,
        elapsed,
        p50: at(0.50).copied().unwrap_or_default(),
        p99: at(0.99).copied().unwrap_or_default(),
    }
}

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "{CONNECTIONS} connections, {seconds} s per endpoint, fresh instance and SQLite file (synchronous=FULL) each"
    );
    println!(
        "{:<22} {:>9} {:>7} {:>10} {:>10} {:>10} {:>12}",
        "endpoint", "requests", "errors", "req/s", "p50", "p99", "req/s ratio"
    );
    let mut baseline = None;
    // `BENCH_ONLY=health` (or raw, mailgun) measures one endpoint, e.g. to compare two builds.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let targets = [Target::Health, Target::Raw, Target::Mailgun];
    for target in targets.into_iter().filter(|t| only.is_empty() || t.name().contains(only.as_str())) {
        let r = rt.block_on(measure(target, Duration::from_secs(seconds)));
        let base = *baseline.get_or_insert(r.per_sec());
        println!(
            "{:<22} {:>9} {:>7} {:>10.0} {:>8.2}ms {:>8.2}ms {:>11.3}x",
            target.name(),
            r.requests,
            r.errors,
            r.per_sec(),
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0,
            r.per_sec() / base,
        );
    }
}
