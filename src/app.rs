//! Builds everything from [`Settings`], binds the HTTP port, spawns the workers, and shuts down
//! gracefully: the listener stops accepting, each worker finishes the item in hand within
//! `SWARM_SHUTDOWN_GRACE_SECS`, and what is still unfinished then has its leases expired so
//! another instance takes it at once. At start, a `serve` takes back the claims its previous run
//! (same instance name) left behind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::agents::llm::{LlmClient, Prompts};
use crate::config::Settings;
use crate::domain::{Clock, SystemClock};
use crate::intake::Intake;
use crate::intake::imap::ImapIntake;
use crate::mail::compose::Templates;
use crate::mail::policy::SenderPolicy;
use crate::mail::transport::Transport;
use crate::orchestrator::Orchestrator;
use crate::orchestrator::workflows::{self, Catalogue, Llm};
use crate::outbox::Outbox;
use crate::store::Store;
use crate::web::{self, AppState};

/// The assembled bot, without a listener: enough for `ingest` and for tests.
pub struct App {
    pub settings: Settings,
    pub store: Store,
    pub intake: Arc<Intake>,
    pub orchestrator: Arc<Orchestrator>,
    pub outbox: Arc<Outbox>,
    pub task_wake: Arc<Notify>,
    pub outbox_wake: Arc<Notify>,
    /// IMAP intake, one per configured mailbox (none unless `IMAP_URL` is set).
    pub imap: Vec<Arc<ImapIntake>>,
    /// The LLM endpoint (unless `LLM_BASE_URL` is unset).
    pub llm: Option<LlmClient>,
    /// This instance's name on every lease it holds (see [`instance_id`]).
    pub instance: String,
}

/// The LLM endpoint (when configured) and the workflows: `SWARM_WORKFLOWS` or the built-in ones.
fn workflows(settings: &Settings, clock: &Arc<dyn Clock>) -> Result<(Option<Llm>, Catalogue)> {
    let llm = match &settings.llm {
        None => None,
        Some(llm) => Some(Llm {
            client: LlmClient::new(llm.clone(), clock.clone())?,
            prompts: Arc::new(Prompts::load(&settings.templates_dir.join("prompts"))?),
        }),
    };
    let catalogue = match &settings.workflows_file {
        Some(path) => workflows::load(path, llm.as_ref())?,
        None => workflows::builtin(llm.as_ref()),
    };
    Ok((llm, catalogue))
}

/// This instance's name on its leases: `SWARM_INSTANCE_ID`, else `<host>-<8 hex>` of a hash of
/// the database location and `listen` (the bound HTTP address), so a restarted `serve` gets the
/// name of its previous run (and takes back its claims at once) while two instances on one host,
/// which cannot listen on one address, never share one. Without a listener (`ingest`, tests of
/// the bare app) the process id and a random number stand in for the address: such an app never
/// takes back claims, and two in one process stay apart.
fn instance_id(settings: &Settings, listen: Option<SocketAddr>) -> String {
    use sha2::{Digest, Sha256};
    if let Some(id) = &settings.instance_id {
        return id.clone();
    }
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let place = match listen {
        Some(addr) => format!("listen {addr}"),
        None => format!("process {} {:08x}", std::process::id(), rand::random::<u32>()),
    };
    let mut hash = Sha256::new();
    hash.update(settings.database_url.expose_secret().as_bytes());
    hash.update(b"\n");
    hash.update(place.as_bytes());
    format!("{host}-{}", &hex::encode(hash.finalize())[..8])
}

impl App {
    /// Opens and migrates the database, loads templates, picks the transport; time from the
    /// system clock.
    pub async fn build(settings: Settings) -> Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Like [`Self::build`], with every timestamp, lease, retry and window read from `clock`.
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self> {
        let instance = instance_id(&settings, None);
        Self::build_as(settings, clock, instance).await
    }

    /// Like [`Self::build_with_clock`], holding leases as `instance`.
    async fn build_as(settings: Settings, clock: Arc<dyn Clock>, instance: String) -> Result<Self> {
        // Installed before anything is counted: what is recorded before the recorder is lost.
        web::metrics::handle();
        let store = Store::connect(settings.database_url.expose_secret(), &settings.db)
            .await?
            .with_clock(clock.clone());
        store.migrate().await?;
        let templates = Arc::new(Templates::load(&settings.templates_dir, settings.max_reply_bytes)?);
        let transport = Transport::from_settings(&settings.smtp)?;
        let owner = instance.clone();
        let (llm, catalogue) = workflows(&settings, &clock)?;
        let orchestrator = Orchestrator::new(
            store.clone(),
            templates.clone(),
            settings.from_address.clone(),
            owner.clone(),
            settings.lease,
            &catalogue,
            settings.budget,
        )?;
        let intake = Intake::new(
            store.clone(),
            settings.mime_limits,
            settings.from_address.clone(),
            catalogue.router.clone(),
        );
        if let Some(w) = &settings.list_mail_workflow
            && !orchestrator.workflow_names().contains(w)
        {
            anyhow::bail!(
                "SWARM_LIST_MAIL_WORKFLOW={w:?} is not a workflow; known: {}",
                orchestrator.workflow_names().join(", ")
            );
        }
        let intake = intake
            .with_list_workflow(settings.list_mail_workflow.clone())
            .with_sender_policy(SenderPolicy::build(&settings.sender_policy)?, templates);
        let outbox = Outbox::new(
            store.clone(),
            transport,
            owner.clone(),
            settings.lease,
            settings.retry_schedule.clone(),
            settings.caps,
        );
        let intake = Arc::new(intake);
        let imap = settings
            .imap
            .iter()
            .map(|imap| {
                ImapIntake::new(
                    imap.clone(),
                    intake.clone(),
                    store.clone(),
                    settings.mime_limits.max_bytes,
                    owner.clone(),
                )
                .map(Arc::new)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            settings,
            store,
            intake,
            orchestrator: Arc::new(orchestrator),
            outbox: Arc::new(outbox),
            task_wake: Arc::new(Notify::new()),
            outbox_wake: Arc::new(Notify::new()),
            imap,
            llm: llm.map(|l| l.client),
            instance,
        })
    }

    /// Runs tasks and due deliveries until none is left. Deliveries scheduled for a later retry
    /// stay queued. Deterministic: used by `ingest` and by tests.
    pub async fn drain(&self) -> Result<()> {
        loop {
            let ran = self.orchestrator.run_next().await?;
            let delivered = self.outbox.deliver_next().await?;
            if !ran && !delivered {
                return Ok(());
            }
        }
    }
}

/// The running service: bound listener plus workers.
pub struct Application {
    app: App,
    listener: TcpListener,
}

impl Application {
    /// Builds the app and binds `SWARM_HTTP_ADDR` (port 0 picks a free port; see [`Self::port`]).
    pub async fn build(settings: Settings) -> Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Like [`Self::build`], with time read from `clock`.
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self> {
        let addr = settings.http_addr;
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        let instance = instance_id(&settings, Some(listener.local_addr()?));
        let app = App::build_as(settings, clock, instance).await?;
        Ok(Self { app, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.app.settings.http_addr)
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves HTTP and runs the workers until `shutdown` resolves.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let Self { app, listener } = self;
        let s = &app.settings;
        let mut state = app.web_state()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let poll = s.poll_interval;
        app.take_back_claims().await?;

        // Several task workers: each claims its own task under a lease, so they never collide.
        let mut handles: Vec<tokio::task::JoinHandle<()>> = (0..s.task_workers.max(1))
            .map(|_| {
                let orchestrator = app.orchestrator.clone();
                let outbox_wake = app.outbox_wake.clone();
                tokio::spawn(work_loop(
                    "task worker",
                    app.task_wake.clone(),
                    poll,
                    stop_rx.clone(),
                    move || {
                        let orchestrator = orchestrator.clone();
                        let outbox_wake = outbox_wake.clone();
                        async move {
                            let ran = orchestrator.run_next().await?;
                            if ran {
                                outbox_wake.notify_one();
                            }
                            Ok(ran)
                        }
                    },
                ))
            })
            .collect();
        let outbox = app.outbox.clone();
        handles.push(tokio::spawn(work_loop(
            "outbox worker",
            app.outbox_wake.clone(),
            poll,
            stop_rx.clone(),
            move || {
                let outbox = outbox.clone();
                async move { outbox.deliver_next().await }
            },
        )));
        for imap in &app.imap {
            handles.push(tokio::spawn(crate::intake::imap::run(
                imap.clone(),
                app.task_wake.clone(),
                stop_rx.clone(),
            )));
        }
        handles.push(tokio::spawn(crate::scheduler::run(app.jobs(), stop_rx.clone())));
        if let Some(addr) = s.ops.metrics_addr {
            handles.push(metrics_listener(addr, state.clone(), s.http_limits, stop_rx.clone()).await?);
        }
        state.workers_started.store(true, std::sync::atomic::Ordering::Release);
        warn_if_open(s);

        // Open event streams end as soon as shutdown begins, so the graceful wait is short.
        let (closing_tx, closing) = watch::channel(false);
        state.closing = closing;
        let shutdown = async move {
            shutdown.await;
            let _ = closing_tx.send(true);
        };
        info!(addr = %listener.local_addr()?, instance = %app.instance, "serving");
        let trusted: Arc<[crate::domain::IpNet]> = app.settings.ops.trusted_proxies.clone().into();
        web::serve::serve(listener, web::router(state), app.settings.http_limits, trusted, shutdown).await;
        let _ = stop_tx.send(true);
        app.wind_down(handles).await
    }
}

/// Serves `/metrics` alone on `addr` (`SWARM_METRICS_ADDR`) until `stop` changes.
async fn metrics_listener(
    addr: SocketAddr,
    state: AppState,
    limits: web::serve::Limits,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener =
        TcpListener::bind(addr).await.with_context(|| format!("binding SWARM_METRICS_ADDR {addr}"))?;
    info!(addr = %listener.local_addr()?, "serving /metrics");
    let router = web::metrics_router(state);
    Ok(tokio::spawn(web::serve::serve(listener, router, limits, Arc::from([]), async move {
        let _ = stop.changed().await;
    })))
}

/// A listener reachable from other hosts without `SWARM_ADMIN_TOKEN` shows mail to anyone.
fn warn_if_open(s: &Settings) {
    if s.admin_token.is_none() && !s.http_addr.ip().is_loopback() {
        warn!(
            addr = %s.http_addr,
            "SWARM_HTTP_ADDR is not a loopback address and SWARM_ADMIN_TOKEN is unset: the pages, \
             the task API and /metrics are open to anyone who reaches this port"
        );
    }
}

impl App {
    /// The state of the HTTP handlers.
    fn web_state(&self) -> Result<AppState> {
        let s = &self.settings;
        let inbound = web::Inbound::from_settings(
            &s.inbound,
            s.mime_limits.max_bytes,
            self.orchestrator.workflow_names(),
        )?;
        let mut state = AppState::new(
            self.store.clone(),
            self.intake.clone(),
            inbound,
            s.admin_token.clone(),
            self.task_wake.clone(),
        )?;
        state.imap_max_age = s.imap.first().map(|i| i.health_max_age);
        state.llm = self.llm.clone();
        Ok(state)
    }

    /// What the scheduled jobs run with.
    pub fn jobs(&self) -> crate::scheduler::JobContext {
        let llm_open: Option<Arc<dyn Fn() -> Option<String> + Send + Sync>> = self.llm.clone().map(|llm| {
            let open = move || match llm.breaker_state() {
                crate::agents::llm::breaker::BreakerState::Open { retry_in_ms } => Some(format!(
                    "the LLM circuit breaker is open (next probe in {} s): LLM steps run their local fallbacks",
                    retry_in_ms / 1000
                )),
                _ => None,
            };
            Arc::new(open) as Arc<dyn Fn() -> Option<String> + Send + Sync>
        });
        crate::scheduler::JobContext {
            store: self.store.clone(),
            settings: self.settings.ops.jobs.clone(),
            owner: self.instance.clone(),
            llm_open,
            outbox_wake: self.outbox_wake.clone(),
        }
    }

    /// What a previous run under this instance's name had in hand becomes claimable now, not
    /// when its leases run out.
    async fn take_back_claims(&self) -> Result<()> {
        let taken =
            self.store.expire_leases(&self.instance, "restart: this instance's earlier claims").await?;
        if taken.total() > 0 {
            info!(instance = %self.instance, tasks = taken.tasks, deliveries = taken.deliveries,
                  mailboxes = taken.mailboxes, "took back the claims of this instance's previous run");
        }
        Ok(())
    }

    /// Waits for the stopped workers up to `SWARM_SHUTDOWN_GRACE_SECS`; then stops what is left
    /// and lets its leases expire, so another instance takes the work at once.
    async fn wind_down(&self, workers: Vec<tokio::task::JoinHandle<()>>) -> Result<()> {
        let grace = self.settings.shutdown_grace;
        info!(grace_secs = grace.as_secs(), "shutting down: finishing work in hand");
        let aborts: Vec<_> = workers.iter().map(|h| h.abort_handle()).collect();
        if tokio::time::timeout(grace, futures_util::future::join_all(workers)).await.is_err() {
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
            let handed = self.store.expire_leases(&self.instance, "shutdown: grace period passed").await?;
            info!(
                tasks = handed.tasks,
                deliveries = handed.deliveries,
                "work not finished in time handed on"
            );
        }
        Ok(())
    }
}

/// Calls `step` while it finds work; otherwise waits for a wake-up, the poll interval, or stop.
async fn work_loop<F, Fut>(
    name: &'static str,
    wake: Arc<Notify>,
    poll: Duration,
    mut stop: watch::Receiver<bool>,
    step: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    loop {
        if *stop.borrow() {
            return;
        }
        let pause = match step().await {
            Ok(true) => continue,
            Ok(false) => poll,
            Err(e) => {
                error!(worker = name, error = %format!("{e:#}"), "worker step failed");
                poll
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
    }
}
