//! Orchestration: workflows (ordered stages of agents; agents in one stage run concurrently) and
//! the task worker that claims a queued task under a lease, runs its workflow recording every
//! step, composes the reply and commits the task's completion together with the reply's outbox
//! row. Never sends mail or calls HTTP itself.

mod budget;
mod conversation;
mod reply;
pub mod routing;
mod stage;
pub mod workflows;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tracing::{instrument, warn};

pub use budget::{Budget, Spent};
pub use conversation::MAX_CONVERSATION_TURNS;
use stage::TaskState;

use crate::agents::Agent;
use crate::domain::{EmailAddress, InboundEmail, Routing};
use crate::mail::compose::Templates;
use crate::store::{ClaimedTask, Leased, Store, StoreError};

/// Longest a single step may run unless its workflow says otherwise.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// A task claimed this many times without finishing (its workers kept dying) fails for good.
pub const MAX_ATTEMPTS: i64 = 3;

/// One step of a workflow: an agent with its limits and the agent that stands in when it fails.
#[derive(Clone)]
pub struct Step {
    pub agent: Arc<dyn Agent>,
    /// Per run of the agent.
    pub timeout: Duration,
    /// Runs after a failed first one (an LLM agent's HTTP calls have their own retries).
    pub retries: u32,
    /// Runs when the agent fails for good, is unavailable, or the task's budget is spent.
    pub fallback: Option<Arc<dyn Agent>>,
}

impl Step {
    pub fn new(agent: Arc<dyn Agent>) -> Self {
        Self { agent, timeout: STEP_TIMEOUT, retries: 0, fallback: None }
    }
}

/// A named workflow: stages run in order; the steps of one stage run concurrently.
#[derive(Clone)]
pub struct Workflow {
    pub name: String,
    /// What it is for (shown to the director).
    pub description: String,
    pub stages: Vec<Vec<Step>>,
    /// The agent whose output leads the reply as its executive summary.
    pub summary_agent: String,
}

/// Runs tasks: one call of [`Orchestrator::run_next`] handles one task.
pub struct Orchestrator {
    store: Store,
    workflows: Vec<Workflow>,
    /// Chooses the workflow of tasks no routing rule matched.
    director: Option<Arc<dyn Agent>>,
    budget: Budget,
    templates: Arc<Templates>,
    from: EmailAddress,
    owner: String,
    lease: Duration,
}

/// Why a task's run stopped short.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// A problem with the task itself (bad stored input, unknown workflow, an unaddressable
    /// reply, too many attempts): retrying cannot help, so the task fails for good.
    #[error("{0:#}")]
    Fail(anyhow::Error),
    /// Anything else (e.g. storage): the task stays leased and is retried when the lease expires.
    #[error("{0:#}")]
    Retry(anyhow::Error),
}

impl TaskError {
    fn fail(e: impl Into<anyhow::Error>) -> Self {
        Self::Fail(e.into())
    }
}

/// True when a store error in `e`'s chain says the lease is another owner's now.
fn is_lease_lost(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<StoreError>(), Some(StoreError::LeaseLost(_))))
}

impl From<anyhow::Error> for TaskError {
    fn from(e: anyhow::Error) -> Self {
        Self::Retry(e)
    }
}

impl From<crate::store::StoreError> for TaskError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::Retry(e.into())
    }
}

impl Orchestrator {
    /// Runs `catalogue`'s workflows; its first is the default. Errors when there is none.
    pub fn new(
        store: Store,
        templates: Arc<Templates>,
        from: EmailAddress,
        owner: String,
        lease: Duration,
        catalogue: &workflows::Catalogue,
        budget: Budget,
    ) -> Result<Self> {
        anyhow::ensure!(!catalogue.workflows.is_empty(), "no workflow configured");
        Ok(Self {
            store,
            workflows: catalogue.workflows.clone(),
            director: catalogue.director.clone(),
            budget,
            templates,
            from,
            owner,
            lease,
        })
    }

    /// Names of the workflows this orchestrator runs.
    pub fn workflow_names(&self) -> Vec<String> {
        self.workflows.iter().map(|w| w.name.clone()).collect()
    }

    /// The workflow new tasks get.
    pub fn default_workflow(&self) -> &str {
        &self.workflows[0].name
    }

    /// Claims and runs the next task. `Ok(false)` when there was none.
    ///
    /// The task's lease is renewed every lease/3 while it runs; when a renewal finds it gone,
    /// the run is dropped where it is (its agents' calls cancelled) and nothing more is written,
    /// and every write of the run is fenced on the lease, so a task is never run to completion
    /// twice at once.
    pub async fn run_next(&self) -> Result<bool> {
        let Some(task) = self.store.claim_task(&self.owner, self.lease).await? else {
            return Ok(false);
        };
        let id = task.id;
        let (workflow, begun) = (task.workflow.clone(), self.store.clock().now());
        let mut heartbeat = self.store.heartbeat(Leased::Task(id), &self.owner, self.lease);
        let outcome = tokio::select! {
            outcome = self.run(task) => outcome,
            () = heartbeat.lost() => {
                warn!(task_id = id.0, "lease lost while running: stopped, another worker owns the task");
                return Ok(true);
            }
        };
        drop(heartbeat);
        let word = match &outcome {
            Ok(()) => "done",
            Err(TaskError::Fail(_)) => "failed",
            Err(TaskError::Retry(_)) => "interrupted",
        };
        let seconds = (self.store.clock().now() - begun).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::histogram!("swarm_task_duration_seconds", "workflow" => workflow, "outcome" => word)
            .record(seconds);
        match outcome {
            Ok(()) => Ok(true),
            Err(TaskError::Retry(e)) if is_lease_lost(&e) => {
                warn!(task_id = id.0, error = %format!("{e:#}"), "lease lost: stopped before writing");
                Ok(true)
            }
            Err(TaskError::Fail(e)) => {
                warn!(task_id = id.0, error = %format!("{e:#}"), "task failed");
                self.store.fail_task(id, &self.owner, &format!("{e:#}")).await?;
                Ok(true)
            }
            Err(TaskError::Retry(e)) => {
                Err(e.context(format!("task {id} interrupted; it is retried when its lease expires")))
            }
        }
    }

    /// The pipeline of one task: read it, let the director route it when asked to, run the
    /// workflow's stages, compose the reply and complete the task.
    #[instrument(skip_all, fields(task_id = task.id.0, attempt = task.attempts))]
    async fn run(&self, task: ClaimedTask) -> Result<(), TaskError> {
        let mut state = self.start(&task).await?;
        let mut workflow_name = task.workflow.clone();
        if task.routing == Routing::AskDirector {
            let (chosen, reason) = self.direct(&mut state).await?;
            self.store.route_task(task.id, &self.owner, &chosen, &reason).await?;
            workflow_name = chosen;
        }
        let workflow = self
            .workflows
            .iter()
            .find(|w| w.name == workflow_name)
            .with_context(|| format!("unknown workflow {workflow_name:?}"))
            .map_err(TaskError::fail)?;
        for stage in &workflow.stages {
            stage::run_stage(&self.store, &self.budget, stage, &workflow.summary_agent, &mut state).await?;
        }
        self.complete(&task, &state, &workflow.name).await
    }

    /// The task's state before its first step: its email, when it arrived, its conversation.
    async fn start(&self, task: &ClaimedTask) -> Result<TaskState, TaskError> {
        if task.attempts > MAX_ATTEMPTS {
            return Err(TaskError::fail(anyhow::anyhow!("gave up after {MAX_ATTEMPTS} attempts")));
        }
        let email: InboundEmail = serde_json::from_str(&task.input)
            .context("task input is not a stored email")
            .map_err(TaskError::fail)?;
        let received_at: DateTime<Utc> = DateTime::parse_from_rfc3339(&task.created_at)
            .map(|d| d.to_utc())
            .unwrap_or_else(|_| self.store.clock().now());
        let turns = match task.conversation_id {
            Some(conversation) => conversation::turns(&self.store, conversation, task.id.0).await?,
            None => Vec::new(),
        };
        Ok(TaskState {
            task_id: task.id.0,
            owner: self.owner.clone(),
            attempt: task.attempts,
            email,
            received_at,
            catalogue: self.workflows.iter().map(|w| (w.name.clone(), w.description.clone())).collect(),
            turns,
            outputs: BTreeMap::new(),
            results: Vec::new(),
            spent: Spent::default(),
            position: 0,
        })
    }
}
