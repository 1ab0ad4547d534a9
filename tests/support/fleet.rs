//! Instances of the `swarm-director` binary as separate processes on 127.0.0.1, and a signed
//! /inbound/raw client: shared by the multi-process test and the benchmarks.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use swarm_director::intake::webhook::sign;

/// Running `serve` processes; all killed when dropped.
pub struct Fleet {
    children: Vec<Option<Child>>,
    pub ports: Vec<u16>,
    pub logs: Vec<PathBuf>,
    binary: PathBuf,
    dir: PathBuf,
    url: String,
    env: Vec<(String, String)>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The binary with a clean environment: `DATABASE_URL`, files in `dir`, quiet logs, no rate
/// limit (load from one address is the point here), and `env`.
pub fn command(binary: &Path, dir: &Path, url: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", url)
        .env("SWARM_OUTBOX_DIR", dir.join("outbox"))
        .env("SWARM_LOG", "warn")
        .env("SWARM_INBOUND_RATE_PER_SEC", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Fleet {
    /// Starts `n` instances of `serve` sharing `url` and the folder `dir`, each on its own port,
    /// stderr to `dir/instance-N.log`, instance N named `fleet-N` (`SWARM_INSTANCE_ID`) unless
    /// `env` names one (an empty value: the derived default); returns once every one accepts
    /// connections (20 s at most).
    pub fn start(binary: &Path, dir: &Path, url: &str, n: usize, env: &[(&str, &str)]) -> Self {
        let mut fleet = Self {
            children: (0..n).map(|_| None).collect(),
            ports: (0..n).map(|_| free_port()).collect(),
            logs: (0..n).map(|i| dir.join(format!("instance-{i}.log"))).collect(),
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            url: url.to_owned(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        for i in 0..n {
            fleet.spawn(i);
        }
        fleet
    }

    /// Starts instance `i` again on its port, with its name (after [`Self::kill`]); returns once
    /// it accepts connections. Its log is appended to.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    fn spawn(&mut self, i: usize) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.logs[i]).expect("log file");
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut cmd = command(&self.binary, &self.dir, &self.url, &env);
        if !self.env.iter().any(|(k, _)| k == "SWARM_INSTANCE_ID") {
            cmd.env("SWARM_INSTANCE_ID", format!("fleet-{i}"));
        }
        let port = self.ports[i];
        let child = cmd
            .arg("serve")
            .env("SWARM_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("instance starts");
        self.children[i] = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "instance on port {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// A small distinct request, number `i`.
pub fn message(i: usize) -> Vec<u8> {
    format!(
        "From: User {i} <user{i}@example.org>\r\nTo: swarm@localhost\r\nSubject: Request {i}\r\n\
         Message-ID: <load-{i}@example.org>\r\nDate: Fri, 20 Nov 2026 09:00:00 +0000\r\n\r\n\
         Hello,\r\n\r\nCould you send report number {i} by Friday? The numbers for region {i} are in.\r\n"
    )
    .into_bytes()
}

/// Posts `body` to an instance's /inbound/raw, signed with `key` as webhook-id `id`; the status.
pub async fn post_signed(
    http: &reqwest::Client,
    port: u16,
    key: &[u8],
    id: &str,
    body: Vec<u8>,
) -> Result<u16, reqwest::Error> {
    let ts = chrono::Utc::now().timestamp();
    http.post(format!("http://127.0.0.1:{port}/inbound/raw"))
        .header("content-type", "message/rfc822")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign(key, id, ts, &body))
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
}
