//! Storage conformance, on both backends: leases, concurrent claims, dedupe under concurrency,
//! and the audit chain with concurrent writers. Separate `Store` handles stand in for separate
//! processes (each has its own pool and connections).

#[macro_use]
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use swarm_director::audit::ChainVerifier;
use swarm_director::domain::{ManualClock, Outcome};
use swarm_director::store::{AuditFilter, Disposition, NewDelivery, NewMessage, NewTask, Store};

async fn open(url: &str) -> Store {
    let store = Store::connect(url, &Default::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// [`open`], reading time from a manual clock the test advances.
async fn open_clocked(url: &str) -> (Store, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::starting_now());
    (open(url).await.with_clock(clock.clone()), clock)
}

async fn accept(store: &Store, n: usize) -> Outcome {
    let key = format!("mid:msg-{n}@example.org");
    store
        .accept_message(
            "test",
            NewMessage {
                source: "test",
                source_key: None,
                dedupe_key: &key,
                message_id: Some(&key[4..]),
                sha256: "0",
                raw: b"From: a@example.org\r\n\r\nhi",
                sender: Some("a@example.org"),
                subject: Some("hi"),
            },
            Disposition::Task(NewTask {
                sender: "a@example.org".into(),
                reply_to: "a@example.org".into(),
                subject: "hi".into(),
                workflow: "default".into(),
                input: "{}".into(),
                routed_by: "test".into(),
                routing: swarm_director::domain::Routing::Requested,
                follow_up: Default::default(),
            }),
            None,
        )
        .await
        .expect("accept")
}

async fn verify_chain(store: &Store) -> u64 {
    let mut verifier = ChainVerifier::default();
    store
        .for_each_audit(&AuditFilter::default(), |r| -> anyhow::Result<()> { Ok(verifier.push(&r)?) })
        .await
        .expect("chain intact");
    let (seq, hash) = store.audit_head().await.expect("head");
    verifier.finish(seq, &hash).expect("head matches")
}

const LONG: Duration = Duration::from_secs(60);

matrix! {
    async fn an_expired_lease_hands_the_task_to_another_worker(db: Db) {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, clock) = open_clocked(&db.fresh_url(dir.path()).await).await;
        accept(&store, 1).await;

        let first = store.claim_task("dead-worker", Duration::from_secs(30)).await.expect("claim").expect("a task");
        assert_eq!(first.attempts, 1);
        clock.advance(Duration::from_secs(29));
        assert!(store.claim_task("live-worker", LONG).await.expect("claim").is_none(), "the lease still holds");
        clock.advance(Duration::from_secs(2));
        let second = store.claim_task("live-worker", LONG).await.expect("claim").expect("taken over");
        assert_eq!((second.id, second.attempts), (first.id, 2), "same task, attempt counted");
        assert!(store.claim_task("third-worker", LONG).await.expect("claim").is_none(), "a live lease is respected");

        let reply = NewDelivery { message_id: "r1@x.org", envelope_from: "s@x.org", envelope_to: "a@x.org", payload: b"x", thread_key: "t@x.org" };
        assert!(!store.complete_task(first.id, "dead-worker", reply).await.expect("complete"), "the old owner lost its lease");
        let reply = NewDelivery { message_id: "r1@x.org", envelope_from: "s@x.org", envelope_to: "a@x.org", payload: b"x", thread_key: "t@x.org" };
        assert!(store.complete_task(second.id, "live-worker", reply).await.expect("complete"));
        verify_chain(&store).await;
    }

    async fn an_expired_delivery_lease_is_retried_with_the_same_message_id(db: Db) {
        let dir = tempfile::tempdir().expect("tmp");
        let (store, clock) = open_clocked(&db.fresh_url(dir.path()).await).await;
        accept(&store, 1).await;
        let task = store.claim_task("w", LONG).await.expect("claim").expect("task");
        let reply = NewDelivery { message_id: "reply-1@x.org", envelope_from: "s@x.org", envelope_to: "a@x.org", payload: b"x", thread_key: "t@x.org" };
        assert!(store.complete_task(task.id, "w", reply).await.expect("complete"));

        let first = store.claim_delivery("dead", Duration::from_secs(30)).await.expect("claim").expect("delivery");
        clock.advance(Duration::from_secs(29));
        assert!(store.claim_delivery("live", LONG).await.expect("claim").is_none(), "the lease still holds");
        clock.advance(Duration::from_secs(2));
        let second = store.claim_delivery("live", LONG).await.expect("claim").expect("taken over");
        assert_eq!((second.id, second.attempts), (first.id, 2));
        assert_eq!(second.message_id, "reply-1@x.org");
        store.delivery_succeeded(&first, "dead", "late").await.expect("ignored");
        store.delivery_succeeded(&second, "live", "outbox/x.eml").await.expect("recorded");
        let d = &store.task_deliveries(task.id).await.expect("deliveries")[0];
        assert_eq!((d.status.as_str(), d.location.as_deref()), ("delivered", Some("outbox/x.eml")));
    }

    async fn concurrent_workers_never_claim_the_same_task(db: Db) {
        const TASKS: usize = 150;
        let dir = tempfile::tempdir().expect("tmp");
        let url = db.fresh_url(dir.path()).await;
        let store = open(&url).await;
        for n in 0..TASKS {
            accept(&store, n).await;
        }
        let mut workers = Vec::new();
        for w in 0..12 {
            let handle = open(&url).await;
            workers.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(t) = handle.claim_task(&format!("worker-{w}"), LONG).await.expect("claim") {
                    mine.push((t.id, t.attempts));
                }
                mine
            }));
        }
        let mut seen = HashSet::new();
        for w in workers {
            for (id, attempts) in w.await.expect("worker") {
                assert!(seen.insert(id), "task {id} claimed twice");
                assert_eq!(attempts, 1, "task {id} was claimed before");
            }
        }
        assert_eq!(seen.len(), TASKS);
    }

    async fn the_same_message_accepted_concurrently_makes_one_task_and_one_chain(db: Db) {
        let dir = tempfile::tempdir().expect("tmp");
        let url = db.fresh_url(dir.path()).await;
        let store = open(&url).await;
        let mut handles = Vec::new();
        for w in 0..4 {
            let s = open(&url).await;
            handles.push(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for n in 0..25 {
                    // Every handle offers the same 25 messages, in a different order.
                    outcomes.push(accept(&s, (n * (w + 1)) % 25).await);
                }
                outcomes
            }));
        }
        let mut tasks = 0;
        let mut duplicates = 0;
        for h in handles {
            for o in h.await.expect("join") {
                match o {
                    Outcome::Task { .. } => tasks += 1,
                    Outcome::Duplicate { task: Some(_), .. } => duplicates += 1,
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!((tasks, duplicates), (25, 75));
        assert_eq!(verify_chain(&store).await, 25 * 2 + 75, "received + created per task, one record per duplicate");
    }
}
