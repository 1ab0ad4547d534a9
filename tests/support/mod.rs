//! Test harness: the whole app on port 0 over a real database (a SQLite file in a temp dir, or a
//! fresh database on a throwaway PostgreSQL cluster), a signing helper, a scripted SMTP server
//! on 127.0.0.1, and waits with deadlines. [`matrix!`] runs a test against both backends.

#![allow(dead_code)]

pub mod dns;
pub mod fleet;
pub mod imap;
pub mod llm;
pub mod mail;
pub mod pg;
pub mod smtp;
pub mod tls;

/// Which backend a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    /// `DATABASE_URL` of a fresh, empty database of this backend (SQLite files under `dir`).
    pub async fn fresh_url(self, dir: &Path) -> String {
        match self {
            Db::Sqlite => format!("sqlite://{}/swarm.db", dir.display()),
            Db::Postgres => pg::fresh_database().await,
        }
    }
}

/// Defines each test once and runs it against both backends: `name::sqlite` and
/// `name::postgres` (skipped with a notice where PostgreSQL cannot run, failing in CI).
///
/// ```ignore
/// matrix! {
///     async fn same_message_twice_makes_one_task(db: Db) { let app = TestApp::spawn(db, &[]).await; ... }
/// }
/// ```
#[allow(unused_macros)]
macro_rules! matrix {
    ($( $(#[$attr:meta])* async fn $name:ident($db:ident: Db) $body:block )*) => {$(
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::support::Db::Sqlite;
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if !$crate::support::pg::available() {
                    return;
                }
                let $db = $crate::support::Db::Postgres;
                $body
            }
        }
    )*};
}

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use swarm_director::app::Application;
use swarm_director::config::Settings;
use swarm_director::domain::{Clock, SystemClock, TaskStatus};
use swarm_director::intake::webhook::{decode_secret, sign};
use swarm_director::store::Store;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const ROTATED: &str = "whsec_c2Vjb25kLXNlY3JldC1rZXktZm9yLXRlc3Rz";

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)).expect("fixture")
}

/// Settings for a test instance on `database_url` with its files in `dir`, plus `extra`
/// overrides (an empty value unsets one).
pub fn settings(dir: &Path, database_url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut map: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), database_url.to_owned()),
        ("SWARM_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("SWARM_OUTBOX_DIR".into(), dir.join("outbox").display().to_string()),
        ("SWARM_TEMPLATES_DIR".into(), dir.join("templates").display().to_string()),
        ("SWARM_WEBHOOK_SECRETS".into(), SECRET.into()),
        ("SWARM_POLL_INTERVAL_MS".into(), "50".into()),
    ]);
    for (k, v) in extra {
        if v.is_empty() {
            map.remove(*k);
        } else {
            map.insert(k.to_string(), v.to_string());
        }
    }
    Settings::from_lookup(|k| map.get(k).cloned()).expect("test settings")
}

pub struct TestApp {
    pub base: String,
    /// The database the app runs on (a fresh one unless `extra` named a `DATABASE_URL`).
    pub database_url: String,
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    /// Starts the app on port 0 over a fresh database. `extra` overrides settings; an empty
    /// value unsets one.
    pub async fn spawn(db: Db, extra: &[(&str, &str)]) -> Self {
        Self::spawn_with_clock(db, extra, Arc::new(SystemClock)).await
    }

    /// [`Self::spawn`] with the app reading time from `clock` (tests advance a `ManualClock`
    /// instead of sleeping).
    pub async fn spawn_with_clock(db: Db, extra: &[(&str, &str)], clock: Arc<dyn Clock>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match extra.iter().find(|(k, v)| *k == "DATABASE_URL" && !v.is_empty()) {
            Some((_, given)) => given.to_string(),
            None => db.fresh_url(dir.path()).await,
        };
        let settings = settings(dir.path(), &url, extra);
        let app = Application::build_with_clock(settings, clock).await.expect("app builds");
        let base = format!("http://{}", app.local_addr());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            app.run_until(async move {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        let store = Store::connect(&url, &Default::default()).await.expect("test store");
        Self {
            base,
            database_url: url,
            dir,
            store,
            http: reqwest::Client::new(),
            stop: Some(tx),
            server: Some(server),
        }
    }

    /// Graceful shutdown; waits for the workers to stop.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts `body` to /inbound/raw signed with `secret` at `timestamp`.
    pub async fn post_signed_with(
        &self,
        body: &[u8],
        id: &str,
        secret: &str,
        timestamp: i64,
    ) -> reqwest::Response {
        self.signed_raw(body, id, secret, timestamp).send().await.expect("request")
    }

    /// The request [`Self::post_signed_with`] sends, for a test to add headers to.
    pub fn signed_raw(&self, body: &[u8], id: &str, secret: &str, timestamp: i64) -> reqwest::RequestBuilder {
        let sig = sign(&decode_secret(secret).expect("secret"), id, timestamp, body);
        self.http
            .post(self.url("/inbound/raw"))
            .header("content-type", "message/rfc822")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sig)
            .body(body.to_vec())
    }

    /// Posts `body` (JSON) to `/hooks/{name}` signed with [`SECRET`] as webhook-id `id` at `timestamp`.
    pub async fn post_hook(&self, name: &str, id: &str, body: &[u8], timestamp: i64) -> reqwest::Response {
        self.post_hook_with(name, id, body, timestamp, SECRET).await
    }

    /// [`Self::post_hook`] signed with `secret`.
    pub async fn post_hook_with(
        &self,
        name: &str,
        id: &str,
        body: &[u8],
        timestamp: i64,
        secret: &str,
    ) -> reqwest::Response {
        let signature = sign(&decode_secret(secret).expect("secret"), id, timestamp, body);
        self.http
            .post(self.url(&format!("/hooks/{name}")))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .expect("request")
    }

    pub async fn post_signed(&self, body: &[u8], id: &str) -> reqwest::Response {
        self.post_signed_with(body, id, SECRET, chrono::Utc::now().timestamp()).await
    }

    /// Posts `raw` signed to /inbound/raw as `id`; the task it made (panics with the answer
    /// when it made none).
    pub async fn post_for_task(&self, raw: &[u8], id: &str) -> i64 {
        let body = json(self.post_signed(raw, id).await).await;
        body["task_id"].as_i64().unwrap_or_else(|| panic!("a task: {body}"))
    }

    /// Posts `raw` and waits (up to `deadline`) until its task is finished and its reply no
    /// longer pending: the task and its report (`reports::task_report`).
    pub async fn post_and_wait(&self, raw: &[u8], id: &str, deadline: Duration) -> (i64, Value) {
        let task = self.post_for_task(raw, id).await;
        self.wait_finished_within(task, deadline).await;
        let report = swarm_director::reports::task_report(&self.store, task).await.expect("report");
        (task, report.expect("the task exists"))
    }

    /// Waits (5 s at most) until the task is done or failed and its reply is no longer pending.
    pub async fn wait_finished(&self, task: i64) -> TaskStatus {
        self.wait_finished_within(task, Duration::from_secs(5)).await
    }

    /// [`Self::wait_finished`] with another deadline.
    pub async fn wait_finished_within(&self, task: i64, deadline: Duration) -> TaskStatus {
        wait_until(deadline, || async {
            let status = self.store.task_status(swarm_director::domain::TaskId(task)).await.ok().flatten()?;
            let deliveries = self.store.task_deliveries(task).await.ok()?;
            let settled = deliveries
                .iter()
                .all(|d| ["delivered", "failed", "bounced", "held"].contains(&d.status.as_str()));
            match status {
                TaskStatus::Done if !deliveries.is_empty() && settled => Some(status),
                TaskStatus::Failed => Some(status),
                _ => None,
            }
        })
        .await
        .unwrap_or_else(|| panic!("task {task} did not finish in time"))
    }

    pub async fn message_count(&self) -> i64 {
        let o = self.store.overview(1).await.expect("overview");
        o.messages_by_status.iter().map(|(_, n)| n).sum()
    }
}

/// Runs the `swarm-director` binary in `dir` on the database `url` (replies into `dir/outbox`,
/// warnings only), with `env` on top of a cleared environment.
pub fn run_binary(dir: &Path, url: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_swarm-director"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .env("SWARM_OUTBOX_DIR", dir.join("outbox"))
        .env("SWARM_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("binary runs")
}

/// The JSON body of a response.
pub async fn json(r: reqwest::Response) -> Value {
    r.json().await.expect("a JSON body")
}

/// Polls `probe` every 20 ms until it returns `Some`, or `deadline` passes.
pub async fn wait_until<T, F, Fut>(deadline: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads a delivered reply file.
pub fn read_reply(location: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(location)).expect("reply file")
}

/// Reads an HTTP answer's head (through the blank line, or to EOF) from a raw connection;
/// `None` when it does not come within `within`. For tests that write requests by hand.
pub async fn read_answer_head(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(within, async {
        loop {
            let n = stream.read(&mut buf).await.expect("read");
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    read.ok().map(|()| String::from_utf8_lossy(&answer).into_owned())
}
