//! Every message of the real-world corpus (`SWARM_CORPUS_DIR`, listed in its `index.tsv`) goes
//! through the same intake path as any inbound mail: no panic, every file gets an outcome,
//! quarantined ones keep their exact bytes, every task finishes with a delivered reply, and the
//! audit chain verifies. Skipped with a notice when `SWARM_CORPUS_DIR` is unset.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use swarm_director::app::App;
use swarm_director::audit::ChainVerifier;
use swarm_director::intake::{Outcome, Source};
use swarm_director::store::AuditFilter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_message_gets_an_outcome() {
    let Some(root) = std::env::var_os("SWARM_CORPUS_DIR").map(PathBuf::from) else {
        eprintln!("NOTICE: SWARM_CORPUS_DIR is unset; skipping the corpus test");
        return;
    };
    let index = std::fs::read_to_string(root.join("index.tsv")).expect("corpus index.tsv");
    let files: Vec<PathBuf> =
        index.lines().skip(1).filter_map(|l| l.split('\t').next()).map(|p| root.join(p)).collect();
    assert!(files.len() >= 500, "corpus index lists {} files", files.len());

    let dir = tempfile::tempdir().expect("tmp");
    let app = App::build(support::settings(dir.path(), &[])).await.expect("app");
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for path in &files {
        let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let key = path.display().to_string();
        let outcome = app
            .intake
            .accept(&Source { name: "cli", key: Some(&key), nonce: None }, &raw)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:#}"));
        if let Outcome::Quarantined { message, .. } = &outcome {
            let stored = app.store.message_raw(message.0).await.expect("query").expect("row");
            assert_eq!(stored, raw, "{key}: quarantined bytes must be kept exactly");
        }
        *counts.entry(outcome.word()).or_default() += 1;
    }
    app.drain().await.expect("all tasks and deliveries run");

    let total: usize = counts.values().sum();
    eprintln!("corpus: {total} files: {counts:?}");
    assert_eq!(total, files.len());

    let overview = app.store.overview(1).await.expect("overview");
    let tasks: BTreeMap<String, i64> = overview.tasks_by_status.into_iter().collect();
    eprintln!("tasks by status: {tasks:?}");
    assert_eq!(tasks.get("queued"), None, "no task left queued");
    assert_eq!(tasks.get("running"), None, "no task left running");
    assert_eq!(tasks.get("done").copied().unwrap_or(0) as usize, counts.get("task").copied().unwrap_or(0));
    assert_eq!(overview.outbox_backlog, 0, "every reply delivered");

    let mut verifier = ChainVerifier::default();
    app.store
        .for_each_audit(&AuditFilter::default(), |r| Ok(verifier.push(&r)?))
        .await
        .expect("chain intact");
    let (seq, hash) = app.store.audit_head().await.expect("head");
    let records = verifier.finish(seq, &hash).expect("head matches");
    eprintln!("audit records: {records}");
}
