//! A throwaway Dovecot IMAP server on 127.0.0.1 for tests: a minimal stand-alone config
//! (passwd-file users, Dovecot's indexed sdbox format in a temp folder, no TLS), run in the foreground under a watchdog
//! shell that stops it and removes its folder when this process exits. Debian's `dovecot-imapd`
//! provides it (`.ci/run` installs it). Dovecot's master must start as root; mail is owned by
//! nobody. Each test takes a user of its own, so mailboxes never collide.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_imap::Session;
use futures_util::TryStreamExt;
use tokio::net::TcpStream;

pub const PASSWORD: &str = "password";
const DOVECOT: &str = "/usr/sbin/dovecot";
/// Users available to one test process.
const USERS: u32 = 500;

pub struct Dovecot {
    pub port: u16,
    pub dir: PathBuf,
    /// With TLS: the IMAPS port and the test CA certificate that signed the server's.
    pub tls: Option<(u16, PathBuf)>,
}

static SERVER: OnceLock<Result<Dovecot, String>> = OnceLock::new();

/// The server shared by this process's tests.
pub fn server() -> Result<&'static Dovecot, &'static str> {
    SERVER.get_or_init(|| start(false, None)).as_ref().map_err(String::as_str)
}

/// A server of its own, for a test that stops and restarts it.
pub fn dedicated() -> Dovecot {
    start(false, None).expect("dedicated dovecot")
}

/// A server of its own with TLS: STARTTLS on `port`, implicit TLS on the IMAPS port, and a
/// certificate for 127.0.0.1 and localhost signed by a test CA.
pub fn dedicated_tls() -> Dovecot {
    start(true, None).expect("dedicated dovecot with TLS")
}

/// A server of its own that also accepts SASL XOAUTH2, checking each token by POSTing it to
/// `introspection_url` (RFC 7662 token introspection: `{"active": true, "username": ...}`).
pub fn dedicated_oauth2(introspection_url: &str) -> Dovecot {
    start(false, Some(introspection_url)).expect("dedicated dovecot with XOAUTH2")
}

/// Whether IMAP tests run: `true` when Dovecot is up. When it cannot start, CI (`CI=true`) fails
/// loudly; elsewhere the test is skipped with a notice.
pub fn available() -> bool {
    match server() {
        Ok(_) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("Dovecot must run in CI: {e}"),
        Err(e) => {
            eprintln!("NOTICE: Dovecot unavailable, skipping: {e}");
            false
        }
    }
}

impl Dovecot {
    /// Stops the server (its mail stays) and waits until the port is closed.
    pub fn stop(&self) {
        let status = Command::new(DOVECOT).arg("-c").arg(self.dir.join("dovecot.conf")).arg("stop").status();
        assert!(status.is_ok_and(|s| s.success()), "dovecot stop");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "dovecot still listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port and mail.
    pub fn restart(&self) {
        launch(&self.dir, self.port).expect("dovecot restarts");
    }

    /// Imports the maildir at `maildir` into `user`'s INBOX with `doveadm import` (bulk filling).
    pub fn import_maildir(&self, user: &str, maildir: &std::path::Path) {
        let status = Command::new("doveadm")
            .arg("-c")
            .arg(self.dir.join("dovecot.conf"))
            .args(["import", "-u", user])
            .arg(format!("maildir:{}", maildir.display()))
            .args(["", "all"])
            .status()
            .expect("doveadm runs");
        assert!(status.success(), "doveadm import failed");
    }

    /// A user nobody else has used in this process, with an empty INBOX; returns its login.
    /// (Users are created before the server starts: Dovecot re-reads its passwd-file by mtime,
    /// which misses several changes within one second.)
    pub fn new_user(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < USERS, "more than {USERS} IMAP test users in one process");
        format!("user{n}@example.test")
    }

    /// A logged-in session of `user`, for a test to look at or change the mailbox.
    pub async fn session(&self, user: &str) -> Session<TcpStream> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await.expect("connect");
        let mut client = async_imap::Client::new(tcp);
        client.read_response().await.expect("greeting").expect("greeting");
        client.login(user, PASSWORD).await.map_err(|(e, _)| e).expect("login")
    }
}

/// Appends a message, with optional flags such as `(\Seen)`.
pub async fn append(session: &mut Session<TcpStream>, mailbox: &str, raw: &[u8], flags: Option<&str>) {
    session.append(mailbox, flags, None, raw).await.expect("APPEND");
}

/// UID → flags of every message in `mailbox`.
pub async fn flags(session: &mut Session<TcpStream>, mailbox: &str) -> Vec<(u32, Vec<String>)> {
    session.select(mailbox).await.expect("SELECT");
    let fetches: Vec<async_imap::types::Fetch> =
        session.uid_fetch("1:*", "(UID FLAGS)").await.expect("FETCH").try_collect().await.expect("fetches");
    let mut out: Vec<(u32, Vec<String>)> = fetches
        .iter()
        .filter_map(|f| Some((f.uid?, f.flags().map(|fl| format!("{fl:?}")).collect())))
        .collect();
    out.sort();
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(14143)
}

fn start(tls: bool, introspection_url: Option<&str>) -> Result<Dovecot, String> {
    if !std::path::Path::new(DOVECOT).exists() {
        return Err("Dovecot is not installed (apt-get install dovecot-imapd)".into());
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        return Err("Dovecot's master must start as root".into());
    }
    // Short: unix socket paths under it must stay below 108 bytes.
    let dir =
        PathBuf::from(format!("/tmp/swim-{}-{:06x}", std::process::id(), rand::random::<u32>() & 0xff_ffff));
    for sub in ["run", "state", "mail"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
    }
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    if !ok(Command::new("chmod").arg("755").arg(&dir))
        || !ok(Command::new("chown").arg("65534:65534").arg(dir.join("mail")))
    {
        return Err("cannot prepare the mail folder".into());
    }
    let users: String = (0..USERS).map(|n| format!("user{n}@example.test:{{PLAIN}}{PASSWORD}\n")).collect();
    std::fs::write(dir.join("users"), users).map_err(|e| e.to_string())?;
    let port = free_port();
    let d = dir.display();
    let (ssl, imaps, tls) = if tls {
        super::tls::test_ca(&dir)?;
        let cert = dir.join("ca.pem");
        let imaps_port = free_port();
        (
            format!("ssl = yes\nssl_cert = <{d}/cert.pem\nssl_key = <{d}/key.pem"),
            format!("address = 127.0.0.1\n    port = {imaps_port}"),
            Some((imaps_port, cert)),
        )
    } else {
        ("ssl = no".to_owned(), "port = 0".to_owned(), None)
    };
    let (mechanisms, oauth2_passdb) = match introspection_url {
        Some(url) => {
            let conf = format!(
                "introspection_mode = post\nintrospection_url = {url}\nusername_attribute = username\n\
                 active_attribute = active\nactive_value = true\n"
            );
            std::fs::write(dir.join("oauth2.conf.ext"), conf).map_err(|e| e.to_string())?;
            (
                "plain login xoauth2",
                format!(
                    "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2\n  args = {d}/oauth2.conf.ext\n}}\n"
                ),
            )
        }
        None => ("plain login", String::new()),
    };
    let conf = format!(
        r#"instance_name = swarmtest-{port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
login_trusted_networks = 127.0.0.0/8
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 65534
mail_location = sdbox:{d}/mail/%d/%n/sdbox
mail_fsync = never
auth_cache_size = 0
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {d}/users
}}
{oauth2_passdb}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={d}/mail/%d/%n
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    {imaps}
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
"#
    );
    std::fs::write(dir.join("dovecot.conf"), conf).map_err(|e| e.to_string())?;
    // The watchdog: once this test process is gone, stop whatever master runs and remove the folder.
    let script = "while kill -0 \"$2\" 2>/dev/null; do sleep 0.5; done\n\
                  [ -f \"$1/run/master.pid\" ] && kill \"$(cat \"$1/run/master.pid\")\" 2>/dev/null\n\
                  sleep 1\nrm -rf \"$1\"\n";
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&dir)
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the watchdog: {e}"))?;
    launch(&dir, port)?;
    Ok(Dovecot { port, dir, tls })
}

/// Starts the master (it daemonizes; its pid goes to `run/master.pid`) and waits for the greeting.
fn launch(dir: &std::path::Path, port: u16) -> Result<(), String> {
    let status = Command::new(DOVECOT)
        .arg("-c")
        .arg(dir.join("dovecot.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("starting dovecot: {e}"))?;
    if !status.success() {
        let log = std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
        return Err(format!("dovecot did not start: {log}"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::Read;
            let mut greeting = [0u8; 4];
            if s.read_exact(&mut greeting).is_ok() && &greeting == b"* OK" {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default();
            return Err(format!("dovecot did not greet within 20 s: {log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
