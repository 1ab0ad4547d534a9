//! `swarm-director backup PATH` while `serve` takes mail: the copy passes `integrity_check`
//! and `audit verify`, restores (copied into place as a new database) to one that the binary
//! opens and verifies, and holds every task committed before the backup began.

#[macro_use]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::{Db, TestApp};
use swarm_director::store::Store;

fn binary(dir: &std::path::Path, url: &str, args: &[&str]) -> std::process::Output {
    support::run_binary(dir, url, args, &[])
}

async fn task_ids(store: &Store) -> Vec<i64> {
    let overview = store.overview(100_000).await.expect("overview");
    overview.recent.iter().map(|t| t.id.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_with_every_task_committed_before_it() {
    let app = Arc::new(TestApp::spawn(Db::Sqlite, &[]).await);
    // Load: mail posted without pause while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicUsize::new(0));
    let load = {
        let (app, stop, posted) = (app.clone(), stop.clone(), posted.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let r = app.post_signed(&support::fleet::message(i), &format!("msg_b{i}")).await;
                assert_eq!(r.status(), 202);
                posted.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    support::wait_until(Duration::from_secs(10), || async {
        (posted.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await
    .expect("load running");
    let before = task_ids(&app.store).await;
    assert!(before.len() >= 20);

    let dir = app.dir.path().to_owned();
    let url = app.database_url.clone();
    let copy = dir.join("copy.db");
    let args = ["backup".to_owned(), copy.display().to_string()];
    let out = tokio::task::spawn_blocking({
        let (dir, url) = (dir.clone(), url.clone());
        move || binary(&dir, &url, &[&args[0], &args[1]])
    })
    .await
    .expect("backup ran");
    let during = posted.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    load.await.expect("load stopped");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("integrity_check: ok"), "{said}");
    assert!(said.contains("audit log intact:"), "{said}");
    assert!(during > before.len(), "mail kept arriving while the backup ran ({during} posted)");

    // Restore: the copy becomes the database file of a new instance.
    let restored = dir.join("restored.db");
    std::fs::copy(&copy, &restored).expect("restore");
    let restored_url = format!("sqlite://{}", restored.display());
    let verify = binary(&dir, &restored_url, &["audit", "verify"]);
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let store = Store::connect(&restored_url, &Default::default()).await.expect("restored opens");
    assert_eq!(store.integrity_check().await.expect("check"), Ok(()));
    let after = task_ids(&store).await;
    for id in &before {
        assert!(after.contains(id), "task {id} committed before the backup is in it");
    }

    // An existing target is refused; nothing is overwritten.
    let again = binary(&dir, &url, &["backup", &copy.display().to_string()]);
    assert_eq!(again.status.code(), Some(65), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"), "{again:?}");
    Arc::into_inner(app).expect("sole owner").stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_is_pointed_at_pg_dump() {
    if !support::pg::available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let url = support::pg::fresh_database().await;
    let out = binary(dir.path(), &url, &["backup", &dir.path().join("x.db").display().to_string()]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"), "{out:?}");
}
