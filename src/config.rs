//! Typed settings, read once at start from the environment (and a `.env` file when present).
//! No other module reads the environment. Secrets are `SecretString`, redacted in `Debug`.
//! Every setting has a default; `.env.example` lists them all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use secrecy::SecretString;

use crate::agents::llm::{self, LlmSettings};
use crate::domain::{EmailAddress, url_host};
use crate::intake::imap;
use crate::mail::auth::DnsResolver;
use crate::mail::compose;
use crate::mail::parse::Limits as MimeLimits;
use crate::mail::policy::{DmarcSource, PolicySettings};
use crate::mail::transport::SmtpSettings;
use crate::orchestrator::Budget;
use crate::outbox::{Caps, ReplyCap};
use crate::store::DbOptions;
use crate::web::inbound::{self, Endpoint};
use crate::web::serve::Limits as HttpLimits;

mod ops;
pub use ops::OpsSettings;

/// Parses `IMAP_URL` and friends, one entry per mailbox of the comma-separated `IMAP_MAILBOX`
/// (default `INBOX`). `imaps://host[:993]` is TLS from the start; `imap://host[:143]` upgrades
/// with STARTTLS when the server offers it, and sends the password in clear text only to a
/// loopback address or with `IMAP_ALLOW_PLAINTEXT=true`.
fn imap_settings(get: &dyn Fn(&str) -> Option<String>) -> Result<Vec<imap::Settings>> {
    let Some(url) = get("IMAP_URL") else { return Ok(Vec::new()) };
    let shape = || format!("IMAP_URL={url:?} must be imaps://host[:port] or imap://host[:port]");
    let parsed = url::Url::parse(&url).with_context(shape)?;
    let (tls, default_port) = match parsed.scheme() {
        "imap" => (imap::Tls::StartTls, 143),
        "imaps" => (imap::Tls::Implicit, 993),
        _ => bail!(shape()),
    };
    anyhow::ensure!(
        parsed.username().is_empty() && parsed.password().is_none(),
        "IMAP_URL={url:?} must not carry credentials: set IMAP_USERNAME and IMAP_PASSWORD"
    );
    anyhow::ensure!(
        matches!(parsed.path(), "" | "/") && parsed.query().is_none(),
        "IMAP_URL={url:?} must not name a mailbox: set IMAP_MAILBOX"
    );
    let (host, loopback) = url_host(&parsed).with_context(|| format!("IMAP_URL={url:?} has no host"))?;
    let port = parsed.port().unwrap_or(default_port);
    let allow_plaintext = loopback || get("IMAP_ALLOW_PLAINTEXT").is_some_and(|v| v == "true");
    let username = get("IMAP_USERNAME").context("IMAP_URL is set but IMAP_USERNAME is not")?;
    let auth = match (get("IMAP_PASSWORD"), get("IMAP_OAUTH2_TOKEN_COMMAND")) {
        (Some(password), None) => imap::Auth::Password(SecretString::from(password)),
        (None, Some(command)) => imap::Auth::OAuth2TokenCommand(command),
        (None, None) => bail!("IMAP_URL is set but neither IMAP_PASSWORD nor IMAP_OAUTH2_TOKEN_COMMAND is"),
        (Some(_), Some(_)) => bail!("set IMAP_PASSWORD or IMAP_OAUTH2_TOKEN_COMMAND, not both"),
    };
    let start = match get("IMAP_START").as_deref() {
        None | Some("new") => imap::Start::New,
        Some("all") => imap::Start::All,
        Some(v) => match v.strip_prefix("since:").map(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")) {
            Some(Ok(day)) => imap::Start::Since(day),
            _ => bail!("IMAP_START={v:?} must be new, all or since:YYYY-MM-DD"),
        },
    };
    let seconds = |key: &str, default: u64| -> Result<Duration> {
        match get(key) {
            None => Ok(Duration::from_secs(default)),
            Some(v) => Ok(Duration::from_secs(
                v.parse().with_context(|| format!("{key}={v:?} is not whole seconds"))?,
            )),
        }
    };
    let one = imap::Settings {
        host,
        port,
        tls,
        allow_plaintext,
        ca_file: get("IMAP_CA_FILE").map(PathBuf::from),
        username,
        auth,
        mailbox: String::new(),
        processed_mailbox: get("IMAP_PROCESSED_MAILBOX"),
        quarantine_mailbox: get("IMAP_QUARANTINE_MAILBOX"),
        start,
        mode: match get("IMAP_MODE").as_deref() {
            None | Some("idle") => imap::Mode::Idle,
            Some("poll") => imap::Mode::Poll,
            Some(v) => bail!("IMAP_MODE={v:?} must be idle or poll"),
        },
        poll_interval: seconds("IMAP_POLL_INTERVAL", 60)?,
        lease: seconds("IMAP_LEASE_SECS", 30)?,
        health_max_age: seconds("IMAP_HEALTH_MAX_AGE", 600)?,
        command_timeout: seconds("IMAP_COMMAND_TIMEOUT", 60)?,
    };
    let names = get("IMAP_MAILBOX").unwrap_or_else(|| "INBOX".into());
    let mut mailboxes: Vec<imap::Settings> = Vec::new();
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if mailboxes.iter().any(|m| m.mailbox == name) {
            bail!("IMAP_MAILBOX names {name:?} twice");
        }
        mailboxes.push(imap::Settings { mailbox: name.to_owned(), ..one.clone() });
    }
    if mailboxes.is_empty() {
        bail!("IMAP_MAILBOX={names:?} names no mailbox");
    }
    Ok(mailboxes)
}

/// Parses `1m,5m,30m,2h,6h,24h`: durations with a unit (`s`, `m`, `h`, `d`), comma-separated.
fn retry_schedule(text: &str) -> Result<Vec<Duration>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (number, unit) =
                item.split_at(item.find(|c: char| !c.is_ascii_digit()).unwrap_or(item.len()));
            let n: u64 = number.parse().with_context(|| format!("SMTP_RETRY_SCHEDULE entry {item:?}"))?;
            let seconds = match unit {
                "s" => n,
                "m" => n * 60,
                "h" => n * 3600,
                "d" => n * 86_400,
                _ => bail!("SMTP_RETRY_SCHEDULE entry {item:?} needs a unit: s, m, h or d"),
            };
            Ok(Duration::from_secs(seconds))
        })
        .collect()
}

/// Parses `10/10m` (count / window with a unit s, m, h, d); `0` or `off` turns the cap off.
fn reply_cap(key: &str, text: &str) -> Result<Option<ReplyCap>> {
    if text == "0" || text == "off" {
        return Ok(None);
    }
    let (count, window) =
        text.split_once('/').with_context(|| format!("{key}={text:?} must look like 10/10m"))?;
    let count: u32 =
        count.trim().parse().with_context(|| format!("{key}={text:?}: count is not a number"))?;
    let window = retry_schedule(window).with_context(|| format!("{key}={text:?}: window"))?;
    anyhow::ensure!(window.len() == 1, "{key}={text:?} must look like 10/10m");
    Ok(Some(ReplyCap { count, window: window[0] }))
}

/// `SWARM_ALLOWED_SENDERS` (addresses and `@domains`), `SWARM_REQUIRE_DMARC` (default: on when
/// an allowlist is set), and how DMARC is proven: `SWARM_TRUSTED_AUTHSERV_ID` names our
/// receiving server, whose topmost Authentication-Results is trusted; without it DMARC is
/// verified in process against DNS (`SWARM_DNS_RESOLVER`: `system` or `ip[:port]` list,
/// `SWARM_DNS_TIMEOUT_SECS`).
fn sender_policy(get: &dyn Fn(&str) -> Option<String>) -> Result<PolicySettings> {
    let allowed: Vec<String> = get("SWARM_ALLOWED_SENDERS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    for entry in &allowed {
        let ok = match entry.strip_prefix('@') {
            Some(domain) => !domain.is_empty() && !domain.contains('@'),
            None => EmailAddress::parse(entry).is_ok(),
        };
        anyhow::ensure!(ok, "SWARM_ALLOWED_SENDERS entry {entry:?} is neither an address nor @domain");
    }
    let require_dmarc = match get("SWARM_REQUIRE_DMARC").as_deref() {
        None => !allowed.is_empty(),
        Some("true") => true,
        Some("false") => false,
        Some(v) => bail!("SWARM_REQUIRE_DMARC={v:?} must be true or false"),
    };
    let resolver = dns_resolver(get("SWARM_DNS_RESOLVER").as_deref())?;
    let timeout = match get("SWARM_DNS_TIMEOUT_SECS") {
        None => Duration::from_secs(5),
        Some(v) => Duration::from_secs(
            v.trim().parse().with_context(|| format!("SWARM_DNS_TIMEOUT_SECS={v:?} is not a number"))?,
        ),
    };
    let dmarc = match (require_dmarc, get("SWARM_TRUSTED_AUTHSERV_ID")) {
        (false, _) => None,
        (true, Some(authserv_id)) => Some(DmarcSource::Header { authserv_id }),
        (true, None) => Some(DmarcSource::Dns { resolver, timeout }),
    };
    let polite_refusal = match get("SWARM_POLITE_REFUSAL").as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => bail!("SWARM_POLITE_REFUSAL={v:?} must be true or false"),
    };
    anyhow::ensure!(
        !polite_refusal || (dmarc.is_some() && !allowed.is_empty()),
        "SWARM_POLITE_REFUSAL answers only refused senders whose DMARC passed: it needs \
         SWARM_ALLOWED_SENDERS and SWARM_REQUIRE_DMARC"
    );
    Ok(PolicySettings { allowed, dmarc, polite_refusal })
}

/// `SWARM_DNS_RESOLVER`: `system` (the default) or name servers `ip[:port]`, comma-separated
/// (IPv6 with a port as `[::1]:53`).
fn dns_resolver(value: Option<&str>) -> Result<DnsResolver> {
    let value = value.map(str::trim).unwrap_or("system");
    if value.is_empty() || value.eq_ignore_ascii_case("system") {
        return Ok(DnsResolver::System);
    }
    let servers = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<std::net::SocketAddr>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
                .with_context(|| format!("SWARM_DNS_RESOLVER entry {s:?} is not ip or ip:port"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(DnsResolver::Servers(servers))
}

/// Comma-separated secrets; empty entries ignored.
fn secret_list(value: Option<String>) -> Vec<SecretString> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| SecretString::from(s.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Everything the bot is configured with, assembled from each module's own settings type.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite://path` (default `sqlite://data/swarm.db`) or `postgres://user:password@host/db`.
    pub database_url: SecretString,
    pub db: DbOptions,
    pub http_addr: SocketAddr,
    /// Request-head deadline and connection cap of the HTTP server.
    pub http_limits: HttpLimits,
    /// Where replies go: an SMTP relay or `.eml` files.
    pub smtp: SmtpSettings,
    /// Waits between delivery attempts after transient failures (`SMTP_RETRY_SCHEDULE`); after
    /// the last one the delivery fails for good.
    pub retry_schedule: Vec<Duration>,
    /// Reply caps per conversation and per recipient (`SWARM_REPLY_CAP_THREAD`,
    /// `SWARM_REPLY_CAP_RECIPIENT`).
    pub caps: Caps,
    /// Our address: the From of replies; its domain names our Message-IDs.
    pub from_address: EmailAddress,
    /// Reply templates; embedded copies are used for any file missing here.
    pub templates_dir: PathBuf,
    /// `SWARM_MAX_REPLY_BYTES`: the most a composed reply weighs, headers included.
    pub max_reply_bytes: usize,
    /// Bearer token for pages showing mail content and for /audit.csv.
    pub admin_token: Option<SecretString>,
    pub mime_limits: MimeLimits,
    /// How long a worker owns a claimed task or delivery before another may take it; renewed
    /// every third of it while the work is in hand (`SWARM_LEASE_SECS`, default 30).
    pub lease: Duration,
    /// `SWARM_INSTANCE_ID`: this instance's name on its leases; unset derives one from the host,
    /// the database and the listen address.
    pub instance_id: Option<String>,
    /// `SWARM_SHUTDOWN_GRACE_SECS` (default 25): how long a shutdown waits for work in hand.
    pub shutdown_grace: Duration,
    /// How often idle workers look for work they were not told about.
    pub poll_interval: Duration,
    /// Task workers per instance, each running one task at a time.
    pub task_workers: usize,
    /// Metrics listener, scheduled jobs, trusted proxies.
    pub ops: OpsSettings,
    /// tracing EnvFilter directives, e.g. `info` or `swarm_director=debug`.
    pub log_filter: String,
    /// `text` or `json`.
    pub log_format: String,
    /// IMAP intake, one entry per mailbox of `IMAP_MAILBOX` (empty unless `IMAP_URL` is set).
    pub imap: Vec<imap::Settings>,
    /// The HTTP intake endpoints: secrets and limits.
    pub inbound: inbound::Settings,
    /// Workflow that list and bulk mail becomes tasks of; unset ignores such mail.
    pub list_mail_workflow: Option<String>,
    /// Which senders are obeyed (`SWARM_ALLOWED_SENDERS`, `SWARM_REQUIRE_DMARC`,
    /// `SWARM_TRUSTED_AUTHSERV_ID`).
    pub sender_policy: PolicySettings,
    /// The OpenAI-compatible endpoint (`LLM_*`); `None` runs the local agents only.
    pub llm: Option<LlmSettings>,
    /// `SWARM_WORKFLOWS`: the workflows TOML file; unset uses the built-in workflows.
    pub workflows_file: Option<PathBuf>,
    /// `SWARM_TASK_BUDGET_TOKENS` / `SWARM_TASK_BUDGET_USD` (0 or unset: no limit).
    pub budget: Budget,
}

/// `SWARM_MAX_REPLY_BYTES` (default 1 MiB), at least [`compose::MIN_MAX_REPLY_BYTES`].
fn max_reply_bytes(number: &dyn Fn(&str, u64) -> Result<u64>) -> Result<usize> {
    let max = number("SWARM_MAX_REPLY_BYTES", compose::DEFAULT_MAX_REPLY_BYTES as u64)? as usize;
    anyhow::ensure!(
        max >= compose::MIN_MAX_REPLY_BYTES,
        "SWARM_MAX_REPLY_BYTES={max} is below {} bytes, too small for a reply's headers and templates",
        compose::MIN_MAX_REPLY_BYTES
    );
    Ok(max)
}

/// `LLM_BASE_URL` (unset: no LLM), `LLM_API_KEY`, `LLM_MODEL`, `LLM_TIMEOUT_SECS`,
/// `LLM_RETRIES`, `LLM_RETRY_BACKOFF_MS`, `LLM_BREAKER_FAILURES`, `LLM_BREAKER_COOLDOWN_SECS`,
/// `LLM_PRICES` (`model=input/output` USD per million tokens, comma-separated),
/// `LLM_AGENT_MODELS` (`role=model`, comma-separated).
fn llm_settings(
    get: &dyn Fn(&str) -> Option<String>,
    number: &dyn Fn(&str, u64) -> Result<u64>,
) -> Result<Option<LlmSettings>> {
    let Some(base_url) = get("LLM_BASE_URL") else { return Ok(None) };
    anyhow::ensure!(
        base_url.starts_with("http://") || base_url.starts_with("https://"),
        "LLM_BASE_URL={base_url:?} must be an http:// or https:// URL (the API base, e.g. https://api.openai.com/v1)"
    );
    let mut prices = std::collections::HashMap::new();
    for entry in get("LLM_PRICES").unwrap_or_default().split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = entry.rsplit_once('=').and_then(|(model, price)| {
            let (input, output) = price.split_once('/')?;
            Some((model.trim().to_owned(), (input.trim().parse().ok()?, output.trim().parse().ok()?)))
        });
        let (model, price): (String, (f64, f64)) = parsed
            .with_context(|| format!("LLM_PRICES entry {entry:?} must look like gpt-4o-mini=0.15/0.60"))?;
        prices.insert(model, price);
    }
    let mut agent_models = std::collections::HashMap::new();
    for entry in
        get("LLM_AGENT_MODELS").unwrap_or_default().split(',').map(str::trim).filter(|e| !e.is_empty())
    {
        let (role, model) = entry
            .split_once('=')
            .map(|(r, m)| (r.trim(), m.trim()))
            .filter(|(_, m)| !m.is_empty())
            .with_context(|| format!("LLM_AGENT_MODELS entry {entry:?} must look like drafter=gpt-4o"))?;
        anyhow::ensure!(
            llm::Role::parse(role).is_some(),
            "LLM_AGENT_MODELS entry {entry:?}: {role:?} is not an LLM role (director, analyst, drafter, reviewer, llm_exec_summary)"
        );
        agent_models.insert(role.to_owned(), model.to_owned());
    }
    Ok(Some(LlmSettings {
        base_url: base_url.trim_end_matches('/').to_owned(),
        api_key: get("LLM_API_KEY").map(SecretString::from),
        model: get("LLM_MODEL").unwrap_or_else(|| "gpt-4o-mini".to_owned()),
        agent_models,
        timeout: Duration::from_secs(number("LLM_TIMEOUT_SECS", 60)?),
        retries: number("LLM_RETRIES", 2)? as usize,
        backoff: Duration::from_millis(number("LLM_RETRY_BACKOFF_MS", 500)?),
        breaker_failures: number("LLM_BREAKER_FAILURES", 5)? as u32,
        breaker_cooldown: Duration::from_secs(number("LLM_BREAKER_COOLDOWN_SECS", 60)?),
        prices,
    }))
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;
type Number<'a> = &'a dyn Fn(&str, u64) -> Result<u64>;

/// `SWARM_DB_POOL_SIZE`, `SWARM_DB_ACQUIRE_TIMEOUT_SECS`, `SWARM_DB_STATEMENT_TIMEOUT_MS`,
/// `SWARM_SQLITE_SYNCHRONOUS` (`full` or `normal`).
fn db_options(get: Lookup<'_>, number: Number<'_>) -> Result<DbOptions> {
    Ok(DbOptions {
        pool_size: number("SWARM_DB_POOL_SIZE", 10)? as u32,
        acquire_timeout: Duration::from_secs(number("SWARM_DB_ACQUIRE_TIMEOUT_SECS", 30)?),
        statement_timeout: Duration::from_millis(number("SWARM_DB_STATEMENT_TIMEOUT_MS", 30_000)?),
        sqlite_full_sync: match get("SWARM_SQLITE_SYNCHRONOUS").as_deref() {
            None | Some("full") => true,
            Some("normal") => false,
            Some(v) => bail!("SWARM_SQLITE_SYNCHRONOUS={v:?} must be full or normal"),
        },
    })
}

/// `SWARM_TASK_BUDGET_TOKENS` and `SWARM_TASK_BUDGET_USD`; 0 or unset means no limit.
fn budget(get: Lookup<'_>, number: Number<'_>) -> Result<Budget> {
    Ok(Budget {
        max_tokens: Some(number("SWARM_TASK_BUDGET_TOKENS", 0)?).filter(|n| *n > 0),
        max_cost_usd: match get("SWARM_TASK_BUDGET_USD") {
            None => None,
            Some(v) => Some(
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .with_context(|| format!("SWARM_TASK_BUDGET_USD={v:?} is not an amount"))?,
            )
            .filter(|x| *x > 0.0),
        },
    })
}

/// Secrets by hook name.
type NamedSecrets = BTreeMap<String, Vec<SecretString>>;

/// `SWARM_HOOK_SECRETS`: comma-separated; `name=whsec_…` entries are that hook's own secrets
/// (several for one name while rotating), bare `whsec_…` entries the shared list for names
/// without their own. Without bare entries the shared list is `shared`
/// (`SWARM_WEBHOOK_SECRETS`). Errors name a malformed entry's hook, never a secret.
fn hook_secrets(value: Option<String>, shared: &[SecretString]) -> Result<(Vec<SecretString>, NamedSecrets)> {
    let mut bare = Vec::new();
    let mut named = NamedSecrets::new();
    for entry in value.as_deref().unwrap_or_default().split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.split_once('=') {
            Some((name, secret))
                if !name.starts_with("whsec_") && crate::intake::providers::hook::valid_name(name) =>
            {
                if secret.trim().is_empty() {
                    bail!("SWARM_HOOK_SECRETS: the entry for hook {name:?} has no secret after '='");
                }
                named.entry(name.to_owned()).or_default().push(SecretString::from(secret.trim().to_owned()));
            }
            _ => bare.push(SecretString::from(entry.to_owned())),
        }
    }
    Ok((if bare.is_empty() { shared.to_vec() } else { bare }, named))
}

/// The HTTP intake endpoints: `SWARM_WEBHOOK_SECRETS` (`/inbound/raw`), `SWARM_HOOK_SECRETS`
/// (see [`hook_secrets`]), the providers' keys, `SWARM_INBOUND_DISABLED` and the request limits.
fn inbound_settings(get: Lookup<'_>, number: Number<'_>) -> Result<inbound::Settings> {
    let webhook_secrets = secret_list(get("SWARM_WEBHOOK_SECRETS"));
    let (hook_secrets, named_hook_secrets) = hook_secrets(get("SWARM_HOOK_SECRETS"), &webhook_secrets)?;
    let mut disabled = Vec::new();
    for name in get("SWARM_INBOUND_DISABLED").unwrap_or_default().split(',').map(str::trim) {
        if name.is_empty() {
            continue;
        }
        let endpoint = Endpoint::ALL.into_iter().find(|e| e.name() == name).with_context(|| {
            format!("SWARM_INBOUND_DISABLED names {name:?}; known: raw, mailgun, sendgrid, postmark, hooks")
        })?;
        disabled.push(endpoint);
    }
    Ok(inbound::Settings {
        raw_secrets: webhook_secrets,
        webhook_tolerance: Duration::from_secs(number("SWARM_WEBHOOK_TOLERANCE_SECS", 300)?),
        mailgun_signing_key: get("MAILGUN_SIGNING_KEY").map(SecretString::from),
        mailgun_tolerance: Duration::from_secs(number("MAILGUN_TIMESTAMP_TOLERANCE_SECS", 300)?),
        sendgrid_basic_auth: get("SENDGRID_INBOUND_BASIC_AUTH").map(SecretString::from),
        sendgrid_verification_key: get("SENDGRID_VERIFICATION_KEY"),
        postmark_basic_auth: get("POSTMARK_INBOUND_BASIC_AUTH").map(SecretString::from),
        hook_secrets,
        named_hook_secrets,
        disabled,
        max_request_bytes: number("SWARM_MAX_REQUEST_BYTES", 25 * 1024 * 1024)? as usize,
        max_buffered_bytes: number("SWARM_INBOUND_MAX_BUFFERED_BYTES", 128 * 1024 * 1024)? as usize,
        read_timeout: Duration::from_secs(number("SWARM_INBOUND_READ_TIMEOUT_SECS", 30)?),
        rate_per_sec: number("SWARM_INBOUND_RATE_PER_SEC", 50)? as u32,
        rate_burst: number("SWARM_INBOUND_RATE_BURST", 200)? as u32,
    })
}

/// `SWARM_HTTP_HEADER_TIMEOUT_SECS` (default 10) and `SWARM_HTTP_MAX_CONNECTIONS` (512).
fn http_limits(number: &dyn Fn(&str, u64) -> Result<u64>) -> Result<HttpLimits> {
    Ok(HttpLimits {
        header_timeout: Duration::from_secs(number("SWARM_HTTP_HEADER_TIMEOUT_SECS", 10)?.max(1)),
        max_connections: number("SWARM_HTTP_MAX_CONNECTIONS", 512)?.max(1) as usize,
    })
}

impl Settings {
    /// Reads `.env` (if any) and the process environment.
    ///
    /// Errors name the variable and what was wrong with it.
    pub fn from_env() -> Result<Self> {
        // A missing .env is the normal case; a malformed one is a mistake worth reporting.
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => return Err(e).context("reading .env"),
        }
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Builds settings from any key lookup; tests pass a map instead of the environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        // An empty admin token would silently leave the pages open: refuse it.
        if lookup("SWARM_ADMIN_TOKEN").is_some_and(|v| v.trim().is_empty()) {
            bail!("SWARM_ADMIN_TOKEN is set but empty: set a token, or unset it to leave the pages open");
        }
        let get = |key: &str| lookup(key).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let text = |key: &str, default: &str| get(key).unwrap_or_else(|| default.to_owned());
        let number = |key: &str, default: u64| -> Result<u64> {
            match get(key) {
                None => Ok(default),
                Some(v) => v.parse().with_context(|| format!("{key}={v:?} is not a whole number")),
            }
        };

        let http_addr = text("SWARM_HTTP_ADDR", "127.0.0.1:8080");
        let http_addr =
            http_addr.parse().with_context(|| format!("SWARM_HTTP_ADDR={http_addr:?} is not host:port"))?;
        let from = text("SWARM_FROM_ADDRESS", "swarm@localhost");
        let from_address = EmailAddress::parse(&from).context("SWARM_FROM_ADDRESS")?;
        let log_format = text("SWARM_LOG_FORMAT", "text");
        if log_format != "text" && log_format != "json" {
            bail!("SWARM_LOG_FORMAT={log_format:?} must be text or json");
        }
        let defaults = MimeLimits::default();
        let imap = imap_settings(&get)?;
        let ops = ops::ops_settings(
            &get,
            &number,
            &from_address,
            http_addr,
            imap.first().map(|i| i.health_max_age),
        )?;

        Ok(Self {
            database_url: SecretString::from(text("DATABASE_URL", "sqlite://data/swarm.db")),
            db: db_options(&get, &number)?,
            http_addr,
            http_limits: http_limits(&number)?,
            smtp: SmtpSettings {
                url: get("SMTP_URL").map(SecretString::from),
                allow_plaintext: get("SMTP_ALLOW_PLAINTEXT").is_some_and(|v| v == "true"),
                ca_file: get("SMTP_CA_FILE").map(PathBuf::from),
                timeout: Duration::from_secs(number("SMTP_TIMEOUT_SECS", 60)?),
                outbox_dir: text("SWARM_OUTBOX_DIR", "outbox").into(),
            },
            retry_schedule: retry_schedule(&text("SMTP_RETRY_SCHEDULE", "1m,5m,30m,2h,6h,24h"))?,
            caps: Caps {
                per_thread: reply_cap("SWARM_REPLY_CAP_THREAD", &text("SWARM_REPLY_CAP_THREAD", "10/10m"))?,
                per_recipient: reply_cap(
                    "SWARM_REPLY_CAP_RECIPIENT",
                    &text("SWARM_REPLY_CAP_RECIPIENT", "30/10m"),
                )?,
            },
            from_address,
            templates_dir: text("SWARM_TEMPLATES_DIR", "templates").into(),
            max_reply_bytes: max_reply_bytes(&number)?,
            admin_token: get("SWARM_ADMIN_TOKEN").map(SecretString::from),
            mime_limits: MimeLimits {
                max_bytes: number("SWARM_MAX_MESSAGE_BYTES", defaults.max_bytes as u64)? as usize,
                max_depth: number("SWARM_MAX_MIME_DEPTH", defaults.max_depth as u64)? as usize,
                max_parts: number("SWARM_MAX_MIME_PARTS", defaults.max_parts as u64)? as usize,
            },
            lease: Duration::from_secs(number("SWARM_LEASE_SECS", 30)?.max(1)),
            instance_id: get("SWARM_INSTANCE_ID").map(|id| id.trim().to_owned()).filter(|id| !id.is_empty()),
            shutdown_grace: Duration::from_secs(number("SWARM_SHUTDOWN_GRACE_SECS", 25)?),
            poll_interval: Duration::from_millis(number("SWARM_POLL_INTERVAL_MS", 1000)?),
            task_workers: number("SWARM_TASK_WORKERS", 2)? as usize,
            log_filter: text("SWARM_LOG", "info"),
            imap,
            ops,
            list_mail_workflow: get("SWARM_LIST_MAIL_WORKFLOW"),
            sender_policy: sender_policy(&get)?,
            llm: llm_settings(&get, &number)?,
            workflows_file: get("SWARM_WORKFLOWS").map(PathBuf::from),
            budget: budget(&get, &number)?,
            inbound: inbound_settings(&get, &number)?,
            log_format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = settings(&[]).expect("defaults");
        assert_eq!(s.database_url.expose_secret(), "sqlite://data/swarm.db");
        assert_eq!(s.db.pool_size, 10);
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.from_address.as_str(), "swarm@localhost");
        assert!(s.smtp.url.is_none() && s.inbound.raw_secrets.is_empty());
        assert_eq!(s.mime_limits.max_parts, 2_000);
    }

    #[test]
    fn an_empty_admin_token_is_refused_not_taken_as_none() {
        for empty in ["", "  "] {
            let err = settings(&[("SWARM_ADMIN_TOKEN", empty)]).expect_err("empty token");
            assert!(err.to_string().contains("SWARM_ADMIN_TOKEN is set but empty"), "{err}");
        }
        assert!(settings(&[("SWARM_ADMIN_TOKEN", "t0ken")]).expect("set").admin_token.is_some());
    }

    #[test]
    fn webhook_secrets_are_split_on_commas() {
        let s = settings(&[("SWARM_WEBHOOK_SECRETS", "whsec_a, whsec_b,")]).expect("valid");
        assert_eq!(s.inbound.raw_secrets.len(), 2);
    }

    #[test]
    fn imap_allows_plaintext_only_to_loopback_by_default() {
        let base = [("IMAP_USERNAME", "bot"), ("IMAP_PASSWORD", "pw")];
        let with = |url: &str, extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![("IMAP_URL", url)];
            pairs.extend_from_slice(&base);
            pairs.extend_from_slice(extra);
            settings(&pairs)
        };
        let local = with("imap://127.0.0.1:14143", &[]).expect("loopback").imap.remove(0);
        assert_eq!((local.port, local.mailbox.as_str(), local.start), (14143, "INBOX", imap::Start::New));
        assert_eq!(local.mode, imap::Mode::Idle);
        assert!(with("imap://localhost", &[("IMAP_MODE", "push")]).is_err());
        assert!(local.allow_plaintext && local.tls == imap::Tls::StartTls);
        let remote = with("imap://mail.example.org", &[]).expect("STARTTLS").imap.remove(0);
        assert!(!remote.allow_plaintext, "the password only goes over TLS");
        assert!(
            with("imap://mail.example.org", &[("IMAP_ALLOW_PLAINTEXT", "true")]).expect("allowed").imap[0]
                .allow_plaintext
        );
        let v6 = with("imap://[::1]:14143", &[]).expect("IPv6 loopback").imap.remove(0);
        assert_eq!((v6.host.as_str(), v6.port, v6.allow_plaintext), ("::1", 14143, true));
        assert_eq!(v6.key(), "imap://bot@[::1]:14143/INBOX");
        assert!(with("imap://localhost/INBOX", &[]).is_err(), "the mailbox is IMAP_MAILBOX");
        assert!(
            with("imap://bot:pw@localhost", &[]).is_err(),
            "credentials are IMAP_USERNAME and IMAP_PASSWORD"
        );
        assert!(with("imap://localhost:port", &[]).is_err());
        let tls = with("imaps://imap.example.org", &[]).expect("imaps").imap.remove(0);
        assert_eq!((tls.tls, tls.port), (imap::Tls::Implicit, 993));
        assert!(with("pop3://mail.example.org", &[]).is_err());
        let both = with("imap://localhost", &[("IMAP_OAUTH2_TOKEN_COMMAND", "print-token")]);
        assert!(both.is_err(), "a password and a token command at once is ambiguous");
        let since =
            with("imap://localhost", &[("IMAP_START", "since:2026-01-31")]).expect("since").imap.remove(0);
        assert_eq!(
            since.start,
            imap::Start::Since(chrono::NaiveDate::from_ymd_opt(2026, 1, 31).expect("date"))
        );
        assert!(with("imap://localhost", &[("IMAP_START", "yesterday")]).is_err());
        assert!(settings(&[]).expect("defaults").imap.is_empty());
        let two = with("imap://localhost", &[("IMAP_MAILBOX", "INBOX, Support")]).expect("two").imap;
        assert_eq!(two.iter().map(|m| m.mailbox.as_str()).collect::<Vec<_>>(), ["INBOX", "Support"]);
        assert!(with("imap://localhost", &[("IMAP_MAILBOX", "INBOX,INBOX")]).is_err());
    }

    #[test]
    fn retry_schedule_has_units() {
        let s = settings(&[]).expect("defaults");
        let minutes: Vec<u64> = s.retry_schedule.iter().map(|d| d.as_secs() / 60).collect();
        assert_eq!(minutes, [1, 5, 30, 120, 360, 1440]);
        let s = settings(&[("SMTP_RETRY_SCHEDULE", "2s, 1d")]).expect("valid");
        assert_eq!(s.retry_schedule, [Duration::from_secs(2), Duration::from_secs(86_400)]);
        assert!(settings(&[("SMTP_RETRY_SCHEDULE", "5")]).is_err(), "a unit is required");
        assert!(settings(&[("SMTP_RETRY_SCHEDULE", "soon")]).is_err());
        assert_eq!(s.caps.per_thread, Some(ReplyCap { count: 10, window: Duration::from_secs(600) }));
        let off = settings(&[("SWARM_REPLY_CAP_RECIPIENT", "off")]).expect("valid");
        assert_eq!(off.caps.per_recipient, None);
        assert!(settings(&[("SWARM_REPLY_CAP_THREAD", "10")]).is_err());
    }

    #[test]
    fn llm_settings_parse_prices_and_per_role_models() {
        assert!(settings(&[]).expect("defaults").llm.is_none(), "no LLM without LLM_BASE_URL");
        let base = ("LLM_BASE_URL", "http://127.0.0.1:11434/v1/");
        let s = settings(&[
            base,
            ("LLM_PRICES", "gpt-4o-mini=0.15/0.60, local=0/0"),
            ("LLM_AGENT_MODELS", "drafter=gpt-4o, reviewer = gpt-4o-mini"),
        ])
        .expect("valid");
        let llm = s.llm.expect("llm");
        assert_eq!(llm.base_url, "http://127.0.0.1:11434/v1");
        assert_eq!(llm.prices["gpt-4o-mini"], (0.15, 0.60));
        assert_eq!(llm.agent_models["drafter"], "gpt-4o");
        assert_eq!(llm.agent_models["reviewer"], "gpt-4o-mini");
        let err = settings(&[base, ("LLM_AGENT_MODELS", "writer=gpt-4o")]).expect_err("unknown role");
        assert!(format!("{err:#}").contains("\"writer\" is not an LLM role"), "{err:#}");
        assert!(settings(&[base, ("LLM_AGENT_MODELS", "drafter=")]).is_err());
        assert!(settings(&[base, ("LLM_PRICES", "gpt-4o=cheap")]).is_err());
        assert!(settings(&[("LLM_BASE_URL", "api.openai.com/v1")]).is_err());
    }

    #[test]
    fn sender_policy_settings() {
        assert!(settings(&[]).expect("defaults").sender_policy.dmarc.is_none());
        let s = settings(&[
            ("SWARM_ALLOWED_SENDERS", "@example.org"),
            ("SWARM_DNS_RESOLVER", "127.0.0.1:5353, ::1"),
        ])
        .expect("valid");
        assert!(
            matches!(s.sender_policy.dmarc, Some(DmarcSource::Dns { .. })),
            "verified in process by default"
        );
        let err =
            settings(&[("SWARM_ALLOWED_SENDERS", "@example.org"), ("SWARM_DNS_RESOLVER", "dns.example")])
                .expect_err("not an address");
        assert!(format!("{err:#}").contains("SWARM_DNS_RESOLVER"));
        assert_eq!(
            dns_resolver(Some("127.0.0.1:5353, ::1")).expect("valid"),
            DnsResolver::Servers(vec![
                "127.0.0.1:5353".parse().expect("addr"),
                "[::1]:53".parse().expect("addr")
            ])
        );
        let s = settings(&[
            ("SWARM_ALLOWED_SENDERS", "Boss@Corp.example, @example.org"),
            ("SWARM_TRUSTED_AUTHSERV_ID", "mx.ours"),
        ])
        .expect("valid");
        assert_eq!(s.sender_policy.allowed, ["boss@corp.example", "@example.org"]);
        assert!(
            matches!(&s.sender_policy.dmarc, Some(DmarcSource::Header { authserv_id }) if authserv_id == "mx.ours")
        );
        let s = settings(&[("SWARM_ALLOWED_SENDERS", "@example.org"), ("SWARM_REQUIRE_DMARC", "false")])
            .expect("valid");
        assert!(s.sender_policy.dmarc.is_none());
        let err = settings(&[
            ("SWARM_ALLOWED_SENDERS", "@example.org"),
            ("SWARM_REQUIRE_DMARC", "false"),
            ("SWARM_POLITE_REFUSAL", "true"),
        ])
        .expect_err("a refusal needs an authenticated sender");
        assert!(format!("{err:#}").contains("SWARM_REQUIRE_DMARC"));
        assert!(settings(&[("SWARM_ALLOWED_SENDERS", "nobody"), ("SWARM_REQUIRE_DMARC", "false")]).is_err());
    }

    #[test]
    fn inbound_endpoints_and_their_secrets() {
        let s = settings(&[("SWARM_WEBHOOK_SECRETS", "whsec_a")]).expect("valid");
        assert_eq!(s.inbound.hook_secrets.len(), 1, "hooks share the /inbound/raw secrets by default");
        assert!(s.inbound.disabled.is_empty() && s.inbound.mailgun_signing_key.is_none());
        let s =
            settings(&[("SWARM_INBOUND_DISABLED", "raw, hooks"), ("SWARM_HOOK_SECRETS", "whsec_b,whsec_c")])
                .expect("valid");
        assert_eq!(s.inbound.disabled, [Endpoint::Raw, Endpoint::Hooks]);
        assert_eq!(s.inbound.hook_secrets.len(), 2);
        let s = settings(&[
            ("SWARM_WEBHOOK_SECRETS", "whsec_raw"),
            ("SWARM_HOOK_SECRETS", "crm=whsec_a, crm=whsec_b,billing=whsec_c"),
        ])
        .expect("valid");
        assert_eq!(
            s.inbound.hook_secrets.len(),
            1,
            "no bare entry: names without their own share /inbound/raw's"
        );
        let named: Vec<(&str, usize)> =
            s.inbound.named_hook_secrets.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
        assert_eq!(named, [("billing", 1), ("crm", 2)]);
        let s = settings(&[("SWARM_HOOK_SECRETS", "whsec_shared,crm=whsec_a")]).expect("valid");
        assert_eq!((s.inbound.hook_secrets.len(), s.inbound.named_hook_secrets.len()), (1, 1));
        let err = Settings::from_lookup(|k| (k == "SWARM_HOOK_SECRETS").then(|| "crm=".to_owned()))
            .expect_err("an empty secret");
        assert!(format!("{err:#}").contains("\"crm\" has no secret"), "{err:#}");
        let err = settings(&[("SWARM_INBOUND_DISABLED", "mailchimp")]).expect_err("unknown");
        assert!(format!("{err:#}").contains("SWARM_INBOUND_DISABLED"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = settings(&[("SWARM_LEASE_SECS", "soon")]).expect_err("invalid");
        assert!(format!("{err:#}").contains("SWARM_LEASE_SECS"));
        let err = settings(&[("SWARM_FROM_ADDRESS", "nobody")]).expect_err("invalid");
        assert!(format!("{err:#}").contains("SWARM_FROM_ADDRESS"));
    }
}
