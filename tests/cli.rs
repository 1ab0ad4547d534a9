//! The `swarm-director` binary: ingest output, dedupe, quarantine, audit verify and export,
//! task show. Each test runs the real binary against a fresh database of each backend.

#[macro_use]
mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{Db, fixture};
use swarm_director::store::Store;

/// A temp dir with its own fresh database, and the binary run against it.
struct Cli {
    dir: tempfile::TempDir,
    url: String,
}

impl Cli {
    async fn new(db: Db) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let url = db.fresh_url(dir.path()).await;
        Self { dir, url }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_swarm-director"))
            .args(args)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.url)
            .env("SWARM_OUTBOX_DIR", self.path().join("outbox"))
            .env("SWARM_LOG", "warn")
            .envs(env.iter().copied())
            .output()
            .expect("binary runs")
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path.display().to_string()
    }

    async fn store(&self) -> Store {
        Store::connect(&self.url, &Default::default()).await.expect("store")
    }

    /// Changes the database behind the application's back, as someone with access could.
    async fn tamper(&self, sql: &'static str) -> u64 {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.url).await.expect("open");
        sqlx::query(sql).execute(&mut conn).await.expect("tamper").rows_affected()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Splits ingest output into (path, outcome word, details) per line.
fn lines(out: &str) -> Vec<(String, String, String)> {
    out.lines()
        .map(|l| {
            let mut cols = l.splitn(3, '\t');
            let mut next = || cols.next().unwrap_or_default().to_owned();
            (next(), next(), next())
        })
        .collect()
}

matrix! {
    async fn ingest_prints_one_outcome_per_file_and_writes_replies(db: Db) {
        let cli = Cli::new(db).await;
        let d = cli.path();
        let request = cli.write("request.eml", &fixture("action_request.eml"));
        let again = cli.write("again.eml", &fixture("action_request.eml"));
        let ooo = cli.write("ooo.eml", &fixture("out_of_office.eml"));
        let junk = cli.write("junk.eml", b"\x00\x01 this is not a mail message at all");

        let out = cli.run(&["ingest", &request, &again, &ooo, &junk]);
        assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        let rows = lines(&stdout(&out));
        assert_eq!(rows.len(), 4, "{rows:?}");
        assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), (request.as_str(), "task"));
        assert!(rows[0].2.starts_with("task=1 status=done reply="), "{}", rows[0].2);
        let reply_path = rows[0].2.rsplit_once("reply=").map(|(_, p)| p.to_owned()).expect("reply location");
        assert!(Path::new(&reply_path).exists(), "{reply_path}");
        assert_eq!((rows[1].1.as_str(), rows[1].2.as_str()), ("duplicate", "duplicate_of_task=1"));
        assert_eq!(rows[2].1, "ignored");
        assert!(rows[2].2.contains("Auto-Submitted: auto-replied"), "{}", rows[2].2);
        assert_eq!(rows[3].1, "quarantined");
        assert!(rows[3].2.contains("reason="), "{}", rows[3].2);
        let replies = std::fs::read_dir(d.join("outbox")).expect("outbox").count();
        assert_eq!(replies, 1, "one reply: none for the duplicate, the auto-reply or the junk");
    }

    async fn message_without_message_id_is_deduped_by_its_bytes(db: Db) {
        let cli = Cli::new(db).await;
        let raw = b"From: Pat <pat@example.org>\r\nSubject: no id\r\n\r\nCan you call me back?\r\n";
        let a = cli.write("a.eml", raw);
        let b = cli.write("b.eml", raw);
        let mut other = raw.to_vec();
        other.extend_from_slice(b"PS: tomorrow works too.\r\n");
        let c = cli.write("c.eml", &other);
        let rows = lines(&stdout(&cli.run(&["ingest", &a, &b, &c])));
        let words: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(words, ["task", "duplicate", "task"]);
    }

    async fn unreadable_file_is_a_system_error_but_others_are_still_processed(db: Db) {
        let cli = Cli::new(db).await;
        let ok = cli.write("ok.eml", &fixture("html_only.eml"));
        let out = cli.run(&["ingest", "missing.eml", &ok]);
        assert!(!out.status.success());
        let rows = lines(&stdout(&out));
        assert_eq!(rows[0].1, "error");
        assert_eq!(rows[1].1, "task");
    }

    async fn quarantined_message_keeps_its_raw_bytes_and_reason(db: Db) {
        let cli = Cli::new(db).await;
        let mut deep = String::from("From: a@example.org\r\nSubject: deep\r\n");
        for i in 0..40 {
            deep.push_str(&format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"));
        }
        deep.push_str("Content-Type: text/plain\r\n\r\nhi\r\n");
        let path = cli.write("deep.eml", deep.as_bytes());
        let rows = lines(&stdout(&cli.run(&["ingest", &path])));
        assert_eq!(rows[0].1, "quarantined");
        assert!(rows[0].2.contains("MIME nesting deeper than 20"), "{}", rows[0].2);

        let store = cli.store().await;
        let m = store.message(1).await.expect("query").expect("stored");
        assert_eq!(m.status, "quarantined");
        assert!(m.reason.is_some_and(|r| r.contains("deeper")));
        assert_eq!(store.message_raw(1).await.expect("query").expect("raw"), deep.as_bytes());
    }

    async fn audit_verify_passes_then_names_an_altered_or_removed_record(db: Db) {
        let cli = Cli::new(db).await;
        let a = cli.write("a.eml", &fixture("action_request.eml"));
        let b = cli.write("b.eml", &fixture("latin1_attachments.eml"));
        assert!(cli.run(&["ingest", &a, &b]).status.success());
        let ok = cli.run(&["audit", "verify"]);
        assert!(ok.status.success(), "{}", stdout(&ok));
        assert!(stdout(&ok).starts_with("audit log intact:"));

        let altered =
            cli.tamper("UPDATE audit_log SET details = '{\"subject\":\"forged\"}' WHERE seq = 3").await;
        assert_eq!(altered, 1);
        let bad = cli.run(&["audit", "verify"]);
        assert!(!bad.status.success());
        assert!(stdout(&bad).contains("seq 3"), "{}", stdout(&bad));

        // Put the chain back by re-ingesting into a fresh database, then remove a record instead.
        let cli2 = Cli::new(db).await;
        let a2 = cli2.write("a.eml", &fixture("action_request.eml"));
        assert!(cli2.run(&["ingest", &a2]).status.success());
        assert_eq!(cli2.tamper("DELETE FROM audit_log WHERE seq = 5").await, 1);
        let bad = cli2.run(&["audit", "verify"]);
        assert!(!bad.status.success());
        assert!(stdout(&bad).contains("seq 6"), "the record after the gap is named: {}", stdout(&bad));
    }

    async fn audit_export_writes_rfc4180_csv_with_filters(db: Db) {
        let cli = Cli::new(db).await;
        let a = cli.write("a.eml", &fixture("action_request.eml"));
        let b = cli.write("b.eml", &fixture("html_only.eml"));
        assert!(cli.run(&["ingest", &a, &b]).status.success());

        let all = cli.run(&["audit", "export", "--format", "csv"]);
        assert!(all.status.success());
        let text = stdout(&all);
        assert!(text.starts_with("seq,at,actor,action,entity,task_id,details,prev_hash,hash\r\n"));
        let rows: Vec<csv::StringRecord> =
            csv::Reader::from_reader(text.as_bytes()).records().collect::<Result<_, _>>().expect("valid CSV");
        assert!(rows.len() > 10);
        assert!(rows.iter().all(|r| r.len() == 9));

        let one = stdout(&cli.run(&["audit", "export", "--format", "csv", "--task", "2"]));
        let task_rows: Vec<csv::StringRecord> =
            csv::Reader::from_reader(one.as_bytes()).records().collect::<Result<_, _>>().expect("csv");
        assert!(!task_rows.is_empty() && task_rows.iter().all(|r| &r[5] == "2"));

        let future = stdout(&cli.run(&["audit", "export", "--format", "csv", "--since", "2999-01-01T00:00:00Z"]));
        assert_eq!(future.lines().count(), 1, "only the header row");
        let bad = cli.run(&["audit", "export", "--format", "csv", "--until", "soon"]);
        assert!(!bad.status.success());
    }

    async fn task_show_prints_the_task_as_json(db: Db) {
        let cli = Cli::new(db).await;
        let a = cli.write("a.eml", &fixture("latin1_attachments.eml"));
        assert!(cli.run(&["ingest", &a]).status.success());
        let out = cli.run(&["task", "show", "1"]);
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
        assert_eq!(v["task"]["subject"], "Prüfbericht und Fotos");
        let steps = v["steps"].as_array().expect("steps");
        let agents: Vec<&str> = steps.iter().filter_map(|s| s["agent"].as_str()).collect();
        assert_eq!(agents, ["triage", "summarize", "action_items", "attachments", "exec_summary"]);
        assert!(steps.iter().all(|s| s["status"] == "ok" && s["duration_ms"].is_number()));
        let attachments = &steps[3]["output"];
        assert_eq!(attachments["count"], 2);
        assert_eq!(attachments["attachments"][1]["name"], "Prüfbericht.pdf");
        assert_eq!(steps[2]["output"]["items"][0]["due"], "2026-11-27");
        assert_eq!(v["deliveries"][0]["status"], "delivered");
        assert!(!cli.run(&["task", "show", "99"]).status.success());
    }
}

matrix! {
    async fn a_bounce_ingested_after_the_reply_suppresses_and_the_cli_lists_and_removes_it(db: Db) {
        let cli = Cli::new(db).await;
        let request = cli.write("request.eml", &fixture("action_request.eml"));
        assert!(cli.run(&["ingest", &request]).status.success());
        let store = cli.store().await;
        let reply_id = store.task_deliveries(1).await.expect("deliveries").remove(0).message_id;
        let bounce = format!(
            "From: MAILER-DAEMON@mx.example.org\r\nSubject: failure notice\r\nMessage-ID: <b1@mx.example.org>\r\n\r\n\
             I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\r\n\
             <anna@example.org>:\r\nRemote host said: 550 5.1.1 no mailbox here by that name\r\n\r\n\
             --- Below this line is a copy of the message.\r\n\r\nMessage-ID: <{reply_id}>\r\nSubject: Re: x\r\n"
        );
        let bounce = cli.write("bounce.eml", bounce.as_bytes());
        let out = cli.run(&["ingest", &bounce]);
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(line.contains("\tignored\t") && line.contains("hard 5.1.1"), "{line}");

        let list = cli.run(&["suppression", "list"]);
        let text = String::from_utf8_lossy(&list.stdout).into_owned();
        assert!(text.starts_with("anna@example.org\t") && text.contains("5.1.1"), "{text}");
        assert!(cli.run(&["suppression", "remove", "anna@example.org"]).status.success());
        assert!(String::from_utf8_lossy(&cli.run(&["suppression", "list"]).stdout).is_empty());
        let again = cli.run(&["suppression", "remove", "anna@example.org"]);
        assert!(!again.status.success(), "removing an address not on the list is an error");
        assert!(String::from_utf8_lossy(&again.stderr).contains("not on the suppression list"));
        let release = cli.run(&["outbox", "release", "1"]);
        assert!(!release.status.success(), "delivery 1 was delivered, not held");
        assert!(String::from_utf8_lossy(&release.stderr).contains("no held delivery 1"));
        assert_eq!((again.status.code(), release.status.code()), (Some(66), Some(66)), "EX_NOINPUT");
        assert_eq!(cli.run(&["task", "show", "99"]).status.code(), Some(66));
    }
}

matrix! {
    async fn quarantined_mail_is_listed_shown_and_reprocessed_once_the_limit_allows_it(db: Db) {
        let cli = Cli::new(db).await;
        let raw = fixture("action_request.eml");
        let path = cli.write("big.eml", &raw);
        let out = cli.run_with(&["ingest", &path], &[("SWARM_MAX_MESSAGE_BYTES", "300")]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("\tquarantined\t"), "{out:?}");

        let list = String::from_utf8_lossy(&cli.run(&["quarantine", "list"]).stdout).into_owned();
        assert!(list.starts_with("1\t") && list.contains("over the limit of 300 bytes"), "{list}");
        let shown = cli.run(&["quarantine", "show", "1"]).stdout;
        let at = shown.windows(2).position(|w| w == b"\n\n").expect("blank line") + 2;
        assert_eq!(&shown[at..], &raw[..], "the raw bytes exactly as received");

        let out = cli.run(&["quarantine", "reprocess", "1"]);
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(line.starts_with("message 1\ttask\t") && line.contains("status=done"), "{line} {out:?}");
        let store = cli.store().await;
        assert_eq!(store.message(1).await.expect("query").expect("row").status, "accepted");
        assert_eq!(store.task_deliveries(1).await.expect("deliveries")[0].status, "delivered");
        let again = cli.run(&["quarantine", "reprocess", "1"]);
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("not quarantined"), "{again:?}");
        assert_eq!(again.status.code(), Some(65), "EX_DATAERR: the message is no longer quarantined");
        assert!(String::from_utf8_lossy(&cli.run(&["quarantine", "list"]).stdout).is_empty());
        assert!(cli.run(&["audit", "verify"]).status.success());
    }
}
