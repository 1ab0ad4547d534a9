//! Orchestration benchmark: `cargo bench --bench llm`.
//!
//! A fake OpenAI-compatible server on 127.0.0.1 (the test one: axum, the real wire format)
//! answers every role. In-process app on a SQLite file; tasks are accepted through the real
//! intake, then timed through the real orchestrator (director, steps, fallbacks, accounting,
//! step records, reply composed and queued).
//!
//! 1. Throughput, 300 tasks, 4 workers: the local workflow (no LLM: the baseline), and the
//!    built-in LLM workflow (director + 5 steps, 5 LLM calls per task) with a zero-latency fake,
//!    so what is measured is our overhead per call.
//! 2. Latency with 300 ms per LLM call, one task at a time (median of 9): director, then
//!    analyst + drafter + reviewer in one parallel group, then the LLM summary (3 calls deep, 5
//!    calls), against the same five agents one after another (5 deep).

#[path = "../tests/support/llm.rs"]
#[allow(dead_code)]
mod llm;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use swarm_director::app::App;
use swarm_director::config::Settings;
use swarm_director::intake::Source;

const TASKS: usize = 300;
const WORKERS: usize = 4;
const LATENCY_RUNS: usize = 9;

fn message(i: usize) -> Vec<u8> {
    format!(
        "From: Ann Example <ann@example.org>\r\nTo: swarm@localhost\r\nSubject: Q3 numbers {i}\r\n\
         Message-ID: <bench-{i}@example.org>\r\nDate: Mon, 16 Nov 2026 09:00:00 +0000\r\n\r\n\
         Hi, could you send me the Q3 numbers by Friday? Also check the invoice from ACME.\r\n\
         Thanks, Ann\r\n"
    )
    .into_bytes()
}

async fn app(dir: &std::path::Path, extra: &[(&str, String)]) -> App {
    let mut map: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), format!("sqlite://{}/swarm.db", dir.display())),
        ("SWARM_OUTBOX_DIR".into(), dir.join("outbox").display().to_string()),
        ("SWARM_TEMPLATES_DIR".into(), dir.join("templates").display().to_string()),
        ("SWARM_LOG".into(), "error".into()),
    ]);
    for (k, v) in extra {
        map.insert((*k).into(), v.clone());
    }
    let settings = Settings::from_lookup(|k| map.get(k).cloned()).expect("settings");
    App::build(settings).await.expect("app")
}

async fn accept(app: &App, range: std::ops::Range<usize>) {
    for i in range {
        app.intake.accept(&Source::new("bench", None), &message(i)).await.expect("accepted");
    }
}

/// Runs every queued task with `workers` concurrent workers; the time it took.
async fn run_all(app: &App, workers: usize) -> Duration {
    let started = Instant::now();
    let runs: Vec<_> = (0..workers)
        .map(|_| {
            let orchestrator = app.orchestrator.clone();
            tokio::spawn(async move { while orchestrator.run_next().await.expect("task run") {} })
        })
        .collect();
    for r in runs {
        r.await.expect("worker");
    }
    started.elapsed()
}

async fn throughput(fake: Option<&llm::FakeLlm>) -> f64 {
    let dir = tempfile::tempdir().expect("tmp");
    let extra: Vec<(&str, String)> = match fake {
        Some(f) => vec![("LLM_BASE_URL", f.base_url()), ("LLM_MODEL", "fake".into())],
        None => vec![],
    };
    let app = app(dir.path(), &extra).await;
    accept(&app, 0..TASKS).await;
    let took = run_all(&app, WORKERS).await;
    let o = app.store.overview(1).await.expect("overview");
    let done = o.tasks_by_status.iter().find(|(s, _)| s == "done").map_or(0, |(_, n)| *n);
    assert_eq!(done, TASKS as i64, "every task done");
    TASKS as f64 / took.as_secs_f64()
}

const PARALLEL: &str = r#"
[workflow.parallel]
summary = "llm_exec_summary"
[[workflow.parallel.step]]
agent = "analyst"
group = "middle"
[[workflow.parallel.step]]
agent = "drafter"
group = "middle"
[[workflow.parallel.step]]
agent = "reviewer"
group = "middle"
[[workflow.parallel.step]]
agent = "llm_exec_summary"
"#;

const SEQUENTIAL: &str = r#"
[workflow.sequential]
summary = "llm_exec_summary"
[[workflow.sequential.step]]
agent = "analyst"
[[workflow.sequential.step]]
agent = "drafter"
[[workflow.sequential.step]]
agent = "reviewer"
[[workflow.sequential.step]]
agent = "llm_exec_summary"
"#;

/// Median wall time of one task through `workflows` (director on), one task at a time.
async fn latency(fake: &llm::FakeLlm, workflows: &str) -> Duration {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("workflows.toml");
    std::fs::write(&file, format!("director = true\n{workflows}")).expect("write");
    let extra = vec![
        ("LLM_BASE_URL", fake.base_url()),
        ("LLM_MODEL", "fake".to_owned()),
        ("SWARM_WORKFLOWS", file.display().to_string()),
    ];
    let app = app(dir.path(), &extra).await;
    let mut times = Vec::with_capacity(LATENCY_RUNS);
    for i in 0..LATENCY_RUNS {
        accept(&app, i..i + 1).await;
        times.push(run_all(&app, 1).await);
    }
    times.sort();
    times[LATENCY_RUNS / 2]
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let fake = llm::FakeLlm::start().await;
        println!("throughput: {TASKS} tasks, {WORKERS} workers, SQLite file, zero-latency fake LLM");
        let local = throughput(None).await;
        println!("  local workflow (no LLM)      {local:>8.0} tasks/s  1.00x");
        let calls_before = fake.seen().len();
        let with_llm = throughput(Some(&fake)).await;
        let calls = (fake.seen().len() - calls_before) as f64 / TASKS as f64;
        println!(
            "  LLM workflow ({calls:.0} calls/task)  {with_llm:>8.0} tasks/s  {:.2}x  ({:.0} LLM calls/s)",
            with_llm / local,
            with_llm * calls
        );

        fake.script(|role, _| llm::Reply::Slow(Duration::from_millis(300), Box::new(llm::good_answer(role))));
        println!("latency: 300 ms per LLM call, median of {LATENCY_RUNS} single tasks");
        let sequential = latency(&fake, SEQUENTIAL).await;
        println!(
            "  director + 4 in sequence (5 deep)         {:>6.0} ms  1.00x",
            sequential.as_secs_f64() * 1e3
        );
        let parallel = latency(&fake, PARALLEL).await;
        println!(
            "  director + 3 parallel + summary (3 deep)  {:>6.0} ms  {:.2}x",
            parallel.as_secs_f64() * 1e3,
            parallel.as_secs_f64() / sequential.as_secs_f64()
        );
    });
}
