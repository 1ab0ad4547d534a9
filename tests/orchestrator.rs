//! The task worker on a SQLite file: tasks that cannot succeed fail for good with the reason,
//! the rest of the queue keeps moving.

#[macro_use]
mod support;

use swarm_director::app::App;
use swarm_director::store::{Disposition, NewMessage, NewTask};

async fn queue_task(app: &App, key: &str, workflow: &str, input: &str) -> i64 {
    let outcome = app
        .store
        .accept_message(
            "test",
            NewMessage {
                source: "test",
                source_key: None,
                dedupe_key: key,
                message_id: None,
                sha256: key,
                raw: b"From: a@example.org\r\n\r\nx",
                sender: Some("a@example.org"),
                subject: Some("s"),
            },
            Disposition::Task(NewTask {
                sender: "a@example.org".into(),
                reply_to: "a@example.org".into(),
                subject: "s".into(),
                workflow: workflow.into(),
                input: input.into(),
                routed_by: "test".into(),
                routing: swarm_director::domain::Routing::Requested,
                follow_up: Default::default(),
            }),
            None,
        )
        .await
        .expect("stored");
    match outcome {
        swarm_director::domain::Outcome::Task { task, .. } => task.0,
        other => panic!("{other:?}"),
    }
}

matrix! {
async fn tasks_that_cannot_succeed_fail_with_their_reason_and_the_queue_moves_on(db: Db) {
    let dir = tempfile::tempdir().expect("tmp");
    let url = db.fresh_url(dir.path()).await;
    let app = App::build(support::settings(dir.path(), &url, &[])).await.expect("app");
    let email = swarm_director::mail::parse(&support::fixture("action_request.eml"), &Default::default())
        .expect("parses")
        .email;
    let valid_input = serde_json::to_string(&email).expect("json");
    let bad_workflow = queue_task(&app, "k1", "no-such-workflow", &valid_input).await;
    let bad_input = queue_task(&app, "k2", "default", "not json").await;
    app.drain().await.expect("drain");

    for (id, reason) in [(bad_workflow, "unknown workflow"), (bad_input, "not a stored email")] {
        let t = app.store.task(id).await.expect("query").expect("task");
        assert_eq!(t.status, "failed", "task {id}");
        assert!(t.error.as_deref().is_some_and(|e| e.contains(reason)), "task {id}: {:?}", t.error);
        assert!(app.store.task_deliveries(id).await.expect("query").is_empty(), "no reply for a failed task");
    }
    assert_eq!(app.store.pending_work().await.expect("pending"), (0, 0));
}
}
