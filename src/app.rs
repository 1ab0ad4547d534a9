//! Builds everything from [`Settings`], binds the HTTP port, spawns the workers, and shuts down
//! gracefully: the listener stops accepting, each worker finishes the item in hand.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tracing::{error, info};

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

/// A unique name for this process's leases.
fn owner_name() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("{host}:{}:{:08x}", std::process::id(), rand::random::<u32>())
}

impl App {
    /// Opens and migrates the database, loads templates, picks the transport; time from the
    /// system clock.
    pub async fn build(settings: Settings) -> Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Like [`Self::build`], with every timestamp, lease, retry and window read from `clock`.
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self> {
        let store = Store::connect(settings.database_url.expose_secret(), &settings.db)
            .await?
            .with_clock(clock.clone());
        store.migrate().await?;
        let templates = Arc::new(Templates::load(&settings.templates_dir, settings.max_reply_bytes)?);
        let transport = Transport::from_settings(&settings.smtp)?;
        let owner = owner_name();
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
        let app = App::build_with_clock(settings, clock).await?;
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
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
        let inbound = web::Inbound::from_settings(
            &s.inbound,
            s.mime_limits.max_bytes,
            app.orchestrator.workflow_names(),
        )?;
        let mut state = AppState::new(
            app.store.clone(),
            app.intake.clone(),
            inbound,
            s.admin_token.clone(),
            app.task_wake.clone(),
        )?;
        state.imap_max_age = s.imap.first().map(|i| i.health_max_age);
        state.llm = app.llm.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let poll = s.poll_interval;

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
        handles.push(tokio::spawn(crate::scheduler::run(app.store.clone(), stop_rx)));

        info!(addr = %listener.local_addr()?, "serving");
        web::serve::serve(listener, web::router(state), app.settings.http_limits, shutdown).await;
        info!("shutting down: finishing work in hand");
        let _ = stop_tx.send(true);
        for handle in handles {
            let _ = handle.await;
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
