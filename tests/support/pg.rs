//! A throwaway PostgreSQL cluster on 127.0.0.1 for tests and benchmarks: `initdb` into a fresh
//! folder, `postgres` on a free port, password auth over TCP like a real deployment, durability
//! off for speed. A watchdog shell stops the cluster and removes its folder when this process
//! exits. Debian's `postgresql` package provides the binaries (`.ci/run` installs it).
//!
//! As root, `initdb` and `postgres` run as the `postgres` user (initdb refuses root).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "postgres";

pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
}

impl Cluster {
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/{database}", self.port)
    }
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// This process's cluster, started on first use; `Err` says why PostgreSQL cannot run here.
pub fn cluster() -> Result<&'static Cluster, &'static str> {
    CLUSTER.get_or_init(start).as_ref().map_err(String::as_str)
}

/// Whether PostgreSQL tests run: `true` when the cluster is up. When it cannot start, CI
/// (`CI=true`) fails loudly; elsewhere the test is skipped with a notice.
pub fn available() -> bool {
    match cluster() {
        Ok(_) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("PostgreSQL must run in CI: {e}"),
        Err(e) => {
            eprintln!("NOTICE: PostgreSQL unavailable, skipping: {e}");
            false
        }
    }
}

/// A new, empty database on the cluster; returns its URL.
pub async fn fresh_database() -> String {
    use sqlx::Connection;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let cluster = cluster().expect("cluster");
    let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let mut admin =
        sqlx::postgres::PgConnection::connect(&cluster.url("postgres")).await.expect("admin connection");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create db");
    let _ = admin.close().await;
    cluster.url(&name)
}

fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(15432)
}

fn run(root: bool, program: &Path, args: &[&str]) -> Result<(), String> {
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = cmd.args(args).output().map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{} failed: {}", program.display(), String::from_utf8_lossy(&out.stderr)))
    }
}

fn start() -> Result<Cluster, String> {
    let bin = bin_dir().ok_or("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)")?;
    let root = is_root();
    // Short path: the unix socket lives here too (socket paths must stay under 108 bytes).
    let dir =
        PathBuf::from(format!("/tmp/swpg-{}-{:06x}", std::process::id(), rand::random::<u32>() & 0xff_ffff));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let chmod = Command::new("chmod").arg("755").arg(&dir).status();
    let pwfile = dir.join("pwfile");
    std::fs::write(&pwfile, format!("{PASSWORD}\n")).map_err(|e| e.to_string())?;
    if root {
        let chown = Command::new("chown").arg("-R").arg("postgres").arg(&dir).status();
        if !chmod.is_ok_and(|s| s.success()) || !chown.is_ok_and(|s| s.success()) {
            return Err(format!("cannot hand {} to the postgres user", dir.display()));
        }
    }
    let data = dir.join("data");
    let (data_s, pw_s) = (data.display().to_string(), pwfile.display().to_string());
    run(
        root,
        &bin.join("initdb"),
        &[
            "-D",
            &data_s,
            "-U",
            "postgres",
            &format!("--pwfile={pw_s}"),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ],
    )?;
    let port = free_port();
    let conf = format!(
        "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
         max_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n",
        dir.display()
    );
    let mut existing = std::fs::read_to_string(data.join("postgresql.conf")).map_err(|e| e.to_string())?;
    existing.push_str(&conf);
    std::fs::write(data.join("postgresql.conf"), existing).map_err(|e| e.to_string())?;

    // The watchdog: start postgres, then stop it (fast shutdown) and remove the folder once this
    // test process is gone.
    let postgres = bin.join("postgres");
    let launch = if root {
        format!("runuser -u postgres -- {} -D \"$1\"", postgres.display())
    } else {
        format!("{} -D \"$1\"", postgres.display())
    };
    let script = format!(
        "{launch} > \"$3/postgres.log\" 2>&1 &\n\
         while kill -0 \"$2\" 2>/dev/null; do sleep 0.5; done\n\
         [ -f \"$1/postmaster.pid\" ] && kill -INT \"$(head -1 \"$1/postmaster.pid\")\" 2>/dev/null\n\
         wait\nrm -rf \"$3\"\n"
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&data)
        .arg(std::process::id().to_string())
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;

    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = bin.join("pg_isready");
    loop {
        let ok = Command::new(&ready)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(Cluster { port, dir });
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            return Err(format!("postgres did not accept connections within 30 s: {log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
