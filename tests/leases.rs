//! Leases on real databases: a task that runs for several lease periods keeps its lease by
//! heartbeat and runs once, also with two instances sharing the database; a restarted instance
//! takes back the claims of its previous run at once, and a stranger does not; a shutdown hands
//! unfinished work on after its grace period; a single `serve` killed with SIGKILL and restarted
//! answers every IMAP message within 5 s of the restart.

#[macro_use]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::fleet::{Fleet, message};
use support::imap::{self, append};
use support::llm::{FakeLlm, Reply, good_answer};
use support::{Db, TestApp, wait_until};
use swarm_director::app::App;
use swarm_director::domain::{TaskId, TaskStatus};
use swarm_director::intake::{Outcome, Source};
use swarm_director::store::{AuditFilter, Store};

/// A fake LLM whose analyst takes `delay` to answer.
async fn slow_analyst(delay: Duration) -> FakeLlm {
    let fake = FakeLlm::start().await;
    fake.script(move |role, _| match role {
        "analyst" => Reply::Slow(delay, Box::new(good_answer(role))),
        _ => good_answer(role),
    });
    fake
}

fn llm_settings(base: &str) -> Vec<(&'static str, String)> {
    vec![
        ("LLM_BASE_URL", base.to_owned()),
        ("LLM_MODEL", "fake-model".to_owned()),
        ("LLM_TIMEOUT_SECS", "30".to_owned()),
        ("SWARM_LEASE_SECS", "1".to_owned()),
    ]
}

fn request(n: usize) -> Vec<u8> {
    format!(
        "From: ann@example.org\r\nTo: swarm@localhost\r\nSubject: Q3 numbers {n}\r\n\
         Message-ID: <lease-{n}@example.org>\r\n\r\nCould you send me the Q3 numbers by Friday?\r\n"
    )
    .into_bytes()
}

/// How often `task` was claimed, from the audit log.
async fn claims(store: &Store, task: i64) -> usize {
    let mut n = 0;
    store
        .for_each_audit(&AuditFilter { task: Some(task), ..Default::default() }, |r| -> anyhow::Result<()> {
            n += usize::from(r.action == "task.claimed");
            Ok(())
        })
        .await
        .expect("audit");
    n
}

matrix! {
    async fn a_task_running_for_three_lease_periods_keeps_its_lease_and_runs_once(db: Db) {
        let fake = slow_analyst(Duration::from_millis(3_300)).await;
        let settings = llm_settings(&fake.base_url());
        let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let app = TestApp::spawn(db, &extra).await;
        let (task, report) = app.post_and_wait(&request(1), "msg_lease_1", Duration::from_secs(40)).await;
        assert_eq!(report["task"]["status"], "done");
        assert_eq!(report["task"]["attempts"], 1);
        assert_eq!(fake.count("analyst"), 1, "the second worker did not take the task over");
        assert_eq!(claims(&app.store, task).await, 1);
        app.stop().await;
    }

    async fn two_instances_never_hold_the_same_lease(db: Db) {
        let fake = slow_analyst(Duration::from_millis(3_300)).await;
        let settings = llm_settings(&fake.base_url());
        let first = {
            let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
            TestApp::spawn(db, &extra).await
        };
        // The second instance on the first one's database.
        let url = first.database_url.clone();
        let mut extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        extra.push(("DATABASE_URL", &url));
        let second = TestApp::spawn(db, &extra).await;
        let mut tasks = Vec::new();
        for n in 0..4 {
            let app = if n % 2 == 0 { &first } else { &second };
            tasks.push(app.post_for_task(&request(10 + n), &format!("msg_pair_{n}")).await);
        }
        for &task in &tasks {
            assert_eq!(first.wait_finished_within(task, Duration::from_secs(60)).await, TaskStatus::Done);
        }
        assert_eq!(fake.count("analyst"), tasks.len(), "each task's analyst ran once");
        for &task in &tasks {
            assert_eq!(claims(&first.store, task).await, 1, "task {task} was claimed twice");
        }
        second.stop().await;
        first.stop().await;
    }
}

/// Makes request `n` a task in the database at `url` and claims it as `owner` for 30 s, as a
/// run that then died would have left it.
async fn claimed_task(dir: &Path, url: &str, n: usize, owner: &str) -> TaskId {
    let app = App::build(support::settings(dir, url, &[])).await.expect("app");
    let outcome = app.intake.accept(&Source::new("test", None), &request(n)).await.expect("accept");
    let Outcome::Task { task, .. } = outcome else { panic!("a task: {outcome:?}") };
    let claim = app.store.claim_task(owner, Duration::from_secs(30)).await.expect("claim");
    assert_eq!(claim.map(|c| c.id), Some(task));
    task
}

#[tokio::test]
async fn a_restarted_instance_takes_back_its_own_claims_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}/swarm.db", dir.path().display());
    let mine = claimed_task(dir.path(), &url, 100, "inst-a").await;
    let strangers = claimed_task(dir.path(), &url, 101, "inst-b").await;

    let started = Instant::now();
    let app = TestApp::spawn(Db::Sqlite, &[("DATABASE_URL", &url), ("SWARM_INSTANCE_ID", "inst-a")]).await;
    let done = wait_until(Duration::from_secs(10), || async {
        (app.store.task_status(mine).await.ok()?? == TaskStatus::Done).then_some(())
    })
    .await;
    assert!(done.is_some(), "its own claimed task was not resumed");
    eprintln!("own claimed task done {} ms after the restart", started.elapsed().as_millis());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Another instance's claim runs until its lease ends.
    assert_eq!(app.store.task_status(strangers).await.expect("status"), Some(TaskStatus::Running));
    app.stop().await;
}

#[tokio::test]
async fn a_shutdown_hands_on_unfinished_work_after_its_grace_period() {
    let fake = slow_analyst(Duration::from_secs(30)).await;
    let settings = llm_settings(&fake.base_url());
    let mut extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    extra.extend([("SWARM_LEASE_SECS", "30"), ("SWARM_SHUTDOWN_GRACE_SECS", "1")]);
    let app = TestApp::spawn(Db::Sqlite, &extra).await;
    let task = app.post_for_task(&request(200), "msg_grace").await;
    wait_until(Duration::from_secs(10), || async { (fake.count("analyst") == 1).then_some(()) })
        .await
        .expect("the slow step started");
    let store = app.store.clone();
    let stopping = Instant::now();
    app.stop().await;
    let took = stopping.elapsed();
    eprintln!("shutdown took {} ms with a 1 s grace period", took.as_millis());
    assert!(took < Duration::from_secs(5), "the shutdown waited {took:?}");
    // Another instance may claim the task at once, not after its 30 s lease.
    let claim = store.claim_task("another-instance", Duration::from_secs(30)).await.expect("claim");
    assert_eq!(claim.map(|c| c.id), Some(TaskId(task)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_serve_answers_every_imap_message_within_5_s() {
    if !imap::available() {
        return;
    }
    const MESSAGES: usize = 31;
    let server = imap::server().expect("dovecot");
    let user = server.new_user();
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}/swarm.db", dir.path().display());
    let imap_url = format!("imap://127.0.0.1:{}", server.port);
    // Default leases (30 s); the instance name is the derived default, stable across the restart.
    let env = [
        ("IMAP_URL", imap_url.as_str()),
        ("IMAP_USERNAME", user.as_str()),
        ("IMAP_PASSWORD", imap::PASSWORD),
        ("IMAP_START", "all"),
        ("SWARM_POLL_INTERVAL_MS", "100"),
        ("SWARM_INSTANCE_ID", ""),
    ];
    let store = Store::connect(&url, &Default::default()).await.expect("store");
    store.migrate().await.expect("migrate");
    let mut fleet = Fleet::start(Path::new(env!("CARGO_BIN_EXE_swarm-director")), dir.path(), &url, 1, &env);
    let mut client = server.session(&user).await;
    for n in 0..MESSAGES {
        append(&mut client, "INBOX", &message(n), None).await;
    }
    let committed = wait_until(Duration::from_secs(20), || async {
        let n = store.overview(1).await.ok()?.messages_by_status.iter().map(|(_, n)| n).sum::<i64>();
        (n >= 3).then_some(n)
    })
    .await
    .expect("the instance started on the batch");
    fleet.kill(0);
    let restarted = Instant::now();
    fleet.restart(0);
    eprintln!("killed after {committed} of {MESSAGES} messages were committed");
    let answered = wait_until(Duration::from_secs(60), || async {
        let o = store.overview(1).await.ok()?;
        let done = o.tasks_by_status.iter().find(|(s, _)| s == "done").map_or(0, |(_, n)| *n);
        (done == MESSAGES as i64 && o.outbox_backlog == 0).then_some(())
    })
    .await;
    let elapsed = restarted.elapsed();
    assert!(answered.is_some(), "not every message was answered: {:?}", store.overview(1).await);
    eprintln!("every IMAP message answered {} ms after the restart", elapsed.as_millis());
    assert!(elapsed <= Duration::from_secs(5), "took {elapsed:?}");
}
