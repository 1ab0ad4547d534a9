//! Backup benchmark: `cargo bench --bench backup`.
//!
//! Builds a SQLite database of 10,000 tasks through the real path (intake, orchestrator with the
//! built-in local workflow, outbox into `.eml` files), then times `backup` as the command does
//! it: `VACUUM INTO` a new file, then `integrity_check` and the audit chain verified on the
//! copy. Baseline, in the same run: copying the finished backup file with `std::fs::copy` (the
//! same bytes, no consistency). Median of 3 runs of each.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use swarm_director::app::App;
use swarm_director::config::Settings;
use swarm_director::intake::Source;
use swarm_director::reports::verify_audit;
use swarm_director::store::Store;

const TASKS: usize = 10_000;
const RUNS: usize = 3;

fn message(i: usize) -> Vec<u8> {
    format!(
        "From: User {i} <user{i}@example.org>\r\nTo: swarm@localhost\r\nSubject: Request {i}\r\n\
         Message-ID: <backup-{i}@example.org>\r\nDate: Fri, 20 Nov 2026 09:00:00 +0000\r\n\r\n\
         Hello,\r\n\r\nCould you send report number {i} by Friday? The numbers for region {i} are in.\r\n"
    )
    .into_bytes()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}/swarm.db", dir.path().display());
    let env: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", url.clone()),
        ("SWARM_OUTBOX_DIR", dir.path().join("outbox").display().to_string()),
        ("SWARM_LOG", "warn".to_owned()),
        ("SWARM_REPLY_CAP_RECIPIENT", "100000/10m".to_owned()),
    ]);
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).expect("settings");
    rt.block_on(async {
        let built = Instant::now();
        let app = App::build(settings.clone()).await.expect("app");
        for i in 0..TASKS {
            let source = Source::new("cli", None);
            app.intake.accept(&source, &message(i)).await.expect("accepted");
            if i % 500 == 499 {
                app.drain().await.expect("drained");
            }
        }
        app.drain().await.expect("drained");
        let o = app.store.overview(1).await.expect("overview");
        let done = o.tasks_by_status.iter().find(|(s, _)| s == "done").map_or(0, |(_, n)| *n);
        assert_eq!(done, TASKS as i64);
        println!("{TASKS} tasks built in {:.1} s", built.elapsed().as_secs_f64());

        let (mut backups, mut checks, mut copies) = (Vec::new(), Vec::new(), Vec::new());
        let mut bytes = 0;
        for run in 0..RUNS {
            let target = dir.path().join(format!("backup-{run}.db"));
            let t = Instant::now();
            app.store.backup_into(&target).await.expect("backup");
            backups.push(t.elapsed());
            bytes = std::fs::metadata(&target).expect("size").len();

            let t = Instant::now();
            let copy =
                Store::connect(&format!("sqlite://{}", target.display()), &settings.db).await.expect("copy");
            assert_eq!(copy.integrity_check().await.expect("check"), Ok(()));
            let records = verify_audit(&copy).await.expect("readable").expect("intact");
            checks.push(t.elapsed());
            assert!(records > TASKS as u64);

            let t = Instant::now();
            std::fs::copy(&target, dir.path().join(format!("plain-{run}.db"))).expect("copy");
            copies.push(t.elapsed());
        }
        let (backup, check, copy) = (median(backups), median(checks), median(copies));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("database {:.1} MiB; median of {RUNS} runs", bytes as f64 / (1024.0 * 1024.0));
        println!("{:<34} {:>9.1} ms {:>7.2}x", "plain file copy (baseline)", ms(copy), 1.0);
        println!("{:<34} {:>9.1} ms {:>7.2}x", "VACUUM INTO", ms(backup), ms(backup) / ms(copy));
        println!(
            "{:<34} {:>9.1} ms {:>7.2}x",
            "integrity_check + audit verify",
            ms(check),
            ms(check) / ms(copy)
        );
        let total = backup + check;
        println!(
            "{:<34} {:>9.1} ms {:>7.2}x",
            "backup command (copy + checks)",
            ms(total),
            ms(total) / ms(copy)
        );
    });
}
