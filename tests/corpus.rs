//! Every message of the real-world corpus (`SWARM_CORPUS_DIR`, listed in its `index.tsv`) goes
//! through the same intake path as any inbound mail: no panic, every file gets an outcome,
//! quarantined ones keep their exact bytes, every task finishes with a delivered reply, and the
//! audit chain verifies; and `ingest` of a real Gmail reply threads under it. Skipped with a
//! printed notice when `SWARM_CORPUS_DIR` is unset (a plain `main`, so the notice is not captured).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use support::Db;
use swarm_director::app::App;
use swarm_director::audit::ChainVerifier;
use swarm_director::intake::{Outcome, Source};
use swarm_director::store::AuditFilter;

fn main() {
    let Some(root) = std::env::var_os("SWARM_CORPUS_DIR").map(PathBuf::from) else {
        println!("NOTICE: SWARM_CORPUS_DIR is unset; the corpus tests are skipped");
        return;
    };
    // Relative to the package root (as the README writes it); the CLI test runs elsewhere.
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(every_corpus_message_gets_an_outcome(&root, Db::Sqlite));
    println!("test every_corpus_message_gets_an_outcome::sqlite ... ok");
    if support::pg::available() {
        rt.block_on(every_corpus_message_gets_an_outcome(&root, Db::Postgres));
        println!("test every_corpus_message_gets_an_outcome::postgres ... ok");
    }
    ingest_of_a_real_gmail_reply_writes_a_threaded_reply_into_the_outbox(&root);
    println!("test ingest_of_a_real_gmail_reply_writes_a_threaded_reply_into_the_outbox ... ok");
    quote_stripping_finds_the_new_text_of_every_talon_reply(&root);
    println!("test quote_stripping_finds_the_new_text_of_every_talon_reply ... ok");
    bounces_auto_replies_and_list_mail_get_no_reply(&root);
    println!("test bounces_auto_replies_and_list_mail_get_no_reply ... ok");
}

/// How the guard sees one message.
fn classify(raw: &[u8], own: &swarm_director::domain::EmailAddress) -> (&'static str, String) {
    use swarm_director::mail::guard;
    let limits = swarm_director::mail::parse::Limits::default();
    let Ok(p) = swarm_director::mail::parse(raw, &limits) else { return ("quarantined", String::new()) };
    if let Some(b) = &p.signals.bounce {
        return ("bounce", format!("{} {}", b.format, b.kind()));
    }
    if let Err(reason) = guard::automated(&p).and_then(|()| guard::list_mail(&p)) {
        return ("automated", reason);
    }
    match guard::addressing(&p, own) {
        Ok(_) => ("ordinary", String::new()),
        Err(reason) => ("unaddressable", reason),
    }
}

/// Per corpus category (the index's heuristic guess), how the guard classifies each message;
/// every bounce, auto-reply and list message must get no reply. Prints every message whose
/// class disagrees with its category, with the reason.
fn bounces_auto_replies_and_list_mail_get_no_reply(root: &std::path::Path) {
    let own = swarm_director::domain::EmailAddress::parse("swarm@localhost").expect("address");
    let index = std::fs::read_to_string(root.join("index.tsv")).expect("corpus index.tsv");
    let mut table: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
    let mut answered = Vec::new();
    for line in index.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (path, mut category) = (cols[0], cols.get(2).copied().unwrap_or(""));
        let raw = std::fs::read(root.join(path)).expect("read");
        // Read receipts (RFC 8098 MDNs) have no category of their own in the index.
        if is_read_receipt(&raw) {
            category = "receipt";
        }
        let (class, reason) = classify(&raw, &own);
        *table.entry((category.to_owned(), class)).or_default() += 1;
        let expected = match category {
            "bounce" => Some("bounce"),
            "autoreply" | "list" | "receipt" => Some("automated"),
            _ => None,
        };
        let disagrees = match expected {
            Some(e) => class != e,
            None => class == "bounce",
        };
        if disagrees {
            eprintln!("  {category:<10} -> {class:<13} {path} {reason}");
        }
        if expected.is_some() && class == "ordinary" {
            answered.push(path.to_owned());
        }
    }
    for ((category, class), n) in &table {
        eprintln!("{category:<12} {class:<13} {n}");
    }
    assert!(answered.is_empty(), "these would get a reply: {answered:#?}");
}

/// A `multipart/report; report-type=disposition-notification` (RFC 8098 §3) in the headers.
fn is_read_receipt(raw: &[u8]) -> bool {
    let text = String::from_utf8_lossy(raw).to_ascii_lowercase().replace(['"', ' ', '\t', '\r', '\n'], "");
    text.contains("report-type=disposition-notification")
}

/// mailgun/talon's standard replies (Android, AOL, Apple Mail, Comcast, Gmail, Hotmail, iPhone,
/// Outlook, Sparrow, Thunderbird, Yahoo) all answer "Hello" to a quoted "Hi".
fn quote_stripping_finds_the_new_text_of_every_talon_reply(root: &std::path::Path) {
    let dir = root.join("mailgun-talon/standard_replies");
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&dir).expect("talon").filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    assert!(files.len() >= 12);
    let limits = swarm_director::mail::parse::Limits::default();
    for path in files {
        let raw = std::fs::read(&path).expect("read");
        let email = swarm_director::mail::parse(&raw, &limits).expect("parses").email;
        assert_eq!(email.new_text, "Hello", "{}", path.display());
    }
    let raw = std::fs::read(root.join("mailgun-talon/reply-quotations-share-block.eml")).expect("read");
    let email = swarm_director::mail::parse(&raw, &limits).expect("parses").email;
    assert!(
        email.new_text.starts_with("Hi Katharine.") && email.new_text.ends_with("Joe XXX"),
        "{:?}",
        email.new_text
    );
}

async fn every_corpus_message_gets_an_outcome(root: &std::path::Path, db: Db) {
    let index = std::fs::read_to_string(root.join("index.tsv")).expect("corpus index.tsv");
    let files: Vec<PathBuf> =
        index.lines().skip(1).filter_map(|l| l.split('\t').next()).map(|p| root.join(p)).collect();
    assert!(files.len() >= 500, "corpus index lists {} files", files.len());

    let dir = tempfile::tempdir().expect("tmp");
    let url = db.fresh_url(dir.path()).await;
    let app = App::build(support::settings(dir.path(), &url, &[])).await.expect("app");
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for path in &files {
        let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let key = path.display().to_string();
        let outcome = app
            .intake
            .accept(&Source::new("cli", Some(&key)), &raw)
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
    eprintln!("corpus on {db:?}: {total} files: {counts:?}");
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
        .for_each_audit(&AuditFilter::default(), |r| -> anyhow::Result<()> { Ok(verifier.push(&r)?) })
        .await
        .expect("chain intact");
    let (seq, hash) = app.store.audit_head().await.expect("head");
    let records = verifier.finish(seq, &hash).expect("head matches");
    eprintln!("audit records: {records}");
}

fn ingest_of_a_real_gmail_reply_writes_a_threaded_reply_into_the_outbox(root: &std::path::Path) {
    let original = root.join("mailgun-talon/standard_replies/gmail.eml");
    let dir = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_swarm-director"))
        .arg("ingest")
        .arg(&original)
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("SWARM_OUTBOX_DIR")
        .env("SWARM_LOG", "warn")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(line.contains("\ttask\t"), "{line}");

    let replies: Vec<PathBuf> = std::fs::read_dir(dir.path().join("outbox"))
        .expect("outbox/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert_eq!(replies.len(), 1);
    let raw = std::fs::read(&replies[0]).expect("reply");
    let reply = mail_parser::MessageParser::default().parse(&raw).expect("parses");
    let source = std::fs::read(&original).expect("original");
    let original = mail_parser::MessageParser::default().parse(&source).expect("original parses");
    let parent = original.message_id().expect("the Gmail reply has a Message-ID");
    assert_eq!(reply.in_reply_to().as_text(), Some(parent));
    assert!(
        reply.references().as_text_list().is_some_and(|r| r.iter().any(|id| id == parent))
            || reply.references().as_text() == Some(parent)
    );
    assert_eq!(reply.subject(), Some("Re: Test [#1]"));
    let text = reply.body_text(0).expect("text");
    assert!(text.starts_with("Executive summary (task #1)"), "{text}");
    assert!(text.contains("> Hello"), "the new text of the request is quoted: {text}");
}
