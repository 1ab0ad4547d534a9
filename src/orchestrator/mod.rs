//! Orchestration: workflows (ordered stages of agents; agents in one stage run concurrently) and
//! the task worker that claims a queued task under a lease, runs its workflow recording every
//! step, composes the reply and commits the task's completion together with the reply's outbox
//! row. Never sends mail or calls HTTP itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use serde_json::Value;
use tracing::{info, instrument, warn};

use crate::agents::{Agent, Registry, TaskContext};
use crate::domain::{EmailAddress, TaskId};
use crate::mail::InboundEmail;
use crate::mail::compose::{ReplyContent, Section, Templates, compose};
use crate::store::{ClaimedTask, NewDelivery, NewStep, StepOutcome, Store};

/// Longest a single step may run.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// A task claimed this many times without finishing (its workers kept dying) fails for good.
pub const MAX_ATTEMPTS: i64 = 3;

/// A named workflow: stages run in order; the agents of one stage run concurrently.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: &'static str,
    pub stages: Vec<Vec<&'static str>>,
    /// The agent whose output leads the reply as its executive summary.
    pub summary_agent: &'static str,
}

impl Workflow {
    /// The embedded default: four independent analyses, then the executive summary.
    pub fn default_local() -> Self {
        Self {
            name: "default",
            stages: vec![vec!["triage", "summarize", "action_items", "attachments"], vec!["exec_summary"]],
            summary_agent: "exec_summary",
        }
    }
}

/// Runs tasks: one call of [`Orchestrator::run_next`] handles one task.
pub struct Orchestrator {
    store: Store,
    agents: Registry,
    workflows: Vec<Workflow>,
    templates: std::sync::Arc<Templates>,
    from: EmailAddress,
    owner: String,
    lease: Duration,
}

/// A problem with the task itself (bad stored input, unknown workflow, an unaddressable reply,
/// too many attempts): retrying cannot help, so the task fails for good. Any other error (e.g.
/// storage) leaves the task leased; it is retried when the lease expires.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct Unrecoverable(anyhow::Error);

fn unrecoverable(e: impl Into<anyhow::Error>) -> anyhow::Error {
    Unrecoverable(e.into()).into()
}

struct StepResult {
    agent: &'static str,
    outcome: Result<Value, String>,
}

impl Orchestrator {
    pub fn new(
        store: Store,
        templates: std::sync::Arc<Templates>,
        from: EmailAddress,
        owner: String,
        lease: Duration,
    ) -> Self {
        Self {
            store,
            agents: Registry::local(),
            workflows: vec![Workflow::default_local()],
            templates,
            from,
            owner,
            lease,
        }
    }

    /// Names of the workflows this orchestrator runs.
    pub fn workflow_names(&self) -> Vec<String> {
        self.workflows.iter().map(|w| w.name.to_owned()).collect()
    }

    /// The workflow new tasks get.
    pub fn default_workflow(&self) -> &'static str {
        self.workflows[0].name
    }

    /// Claims and runs the next task. `Ok(false)` when there was none.
    pub async fn run_next(&self) -> Result<bool> {
        let Some(task) = self.store.claim_task(&self.owner, self.lease).await? else {
            return Ok(false);
        };
        let id = task.id;
        match self.run(task).await {
            Ok(()) => Ok(true),
            Err(e) if e.is::<Unrecoverable>() => {
                warn!(task_id = id, error = %format!("{e:#}"), "task failed");
                self.store.fail_task(id, &self.owner, &format!("{e:#}")).await?;
                Ok(true)
            }
            Err(e) => Err(e.context(format!("task {id} interrupted; it is retried when its lease expires"))),
        }
    }

    #[instrument(skip_all, fields(task_id = task.id, attempt = task.attempts))]
    async fn run(&self, task: ClaimedTask) -> Result<()> {
        if task.attempts > MAX_ATTEMPTS {
            return Err(unrecoverable(anyhow::anyhow!("gave up after {MAX_ATTEMPTS} attempts")));
        }
        let email: InboundEmail = serde_json::from_str(&task.input)
            .context("task input is not a stored email")
            .map_err(unrecoverable)?;
        let workflow = self
            .workflows
            .iter()
            .find(|w| w.name == task.workflow)
            .with_context(|| format!("unknown workflow {:?}", task.workflow))
            .map_err(unrecoverable)?;
        let received_at: DateTime<Utc> =
            DateTime::parse_from_rfc3339(&task.created_at).map(|d| d.to_utc()).unwrap_or_else(|_| Utc::now());
        let mut outputs: BTreeMap<String, Value> = BTreeMap::new();
        let mut results: Vec<StepResult> = Vec::new();
        let mut position = 0;

        for stage in &workflow.stages {
            let mut agents: Vec<&dyn Agent> = Vec::with_capacity(stage.len());
            let mut inputs: Vec<Value> = Vec::with_capacity(stage.len());
            for &name in stage {
                let agent = self
                    .agents
                    .get(name)
                    .with_context(|| format!("unknown agent {name:?}"))
                    .map_err(unrecoverable)?;
                let ctx = TaskContext { email: &email, received_at, outputs: &outputs };
                inputs.push(agent.input(&ctx));
                agents.push(agent);
            }
            let new_steps: Vec<NewStep<'_>> = agents
                .iter()
                .zip(&inputs)
                .enumerate()
                .map(|(i, (agent, input))| NewStep { position: position + i, agent: agent.name(), input })
                .collect();
            let step_ids = self.store.start_steps(task.id, task.attempts, &new_steps).await?;
            position += stage.len();

            let runs = agents.iter().zip(&inputs).map(|(agent, input)| async move {
                let begun = Instant::now();
                // A panicking agent is a failed step, not a dead worker.
                let guarded = std::panic::AssertUnwindSafe(agent.run(input)).catch_unwind();
                let outcome = match tokio::time::timeout(STEP_TIMEOUT, guarded).await {
                    Ok(Ok(Ok(v))) => Ok(v),
                    Ok(Ok(Err(e))) => Err(e.to_string()),
                    Ok(Err(_)) => Err("the agent panicked".to_owned()),
                    Err(_) => Err(format!("timed out after {} s", STEP_TIMEOUT.as_secs())),
                };
                (outcome, begun.elapsed().as_millis() as u64)
            });
            let finished = futures_util::future::join_all(runs).await;
            let recorded: Vec<StepOutcome<'_>> = agents
                .iter()
                .zip(&step_ids)
                .zip(&finished)
                .map(|((agent, &step), (outcome, ms))| StepOutcome {
                    step,
                    agent: agent.name(),
                    outcome: outcome.as_ref().map_err(String::as_str),
                    duration_ms: *ms,
                })
                .collect();
            self.store.finish_steps(task.id, &recorded).await?;
            for (agent, (outcome, _)) in agents.iter().zip(finished) {
                if let Ok(v) = &outcome {
                    outputs.insert(agent.name().to_owned(), v.clone());
                }
                results.push(StepResult { agent: agent.name(), outcome });
            }
        }

        let content = self.reply_content(TaskId(task.id), workflow, &email, &results);
        let to =
            EmailAddress::parse(&task.reply_to).context("stored reply address").map_err(unrecoverable)?;
        // The conversation's root: the first References entry (RFC 5322 §3.6.4), else this request.
        let thread_key = crate::mail::compose::references(&email)
            .first()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_else(|| format!("task:{}", task.id));
        let reply = compose(&self.templates, &self.from, &to, &email, TaskId(task.id), &content)
            .map_err(unrecoverable)?;
        let queued = self
            .store
            .complete_task(
                task.id,
                &self.owner,
                NewDelivery {
                    message_id: reply.message_id.as_str(),
                    envelope_from: reply.from.as_str(),
                    envelope_to: reply.to.as_str(),
                    payload: &reply.bytes,
                    thread_key: &thread_key,
                },
            )
            .await?;
        if queued {
            info!(message_id = %reply.message_id, "task done, reply queued");
        } else {
            warn!("lease lost before completion; another worker owns the task now");
        }
        Ok(())
    }

    fn reply_content(
        &self,
        task: TaskId,
        workflow: &Workflow,
        email: &InboundEmail,
        results: &[StepResult],
    ) -> ReplyContent {
        let mut summary = Vec::new();
        let mut sections = Vec::new();
        for r in results {
            let Some(agent) = self.agents.get(r.agent) else { continue };
            let (lines, failed) = match &r.outcome {
                Ok(v) => (agent.describe(v), false),
                Err(e) => (vec![format!("This step failed: {e}")], true),
            };
            if r.agent == workflow.summary_agent {
                summary = lines;
            } else {
                sections.push(Section { title: agent.title().to_owned(), lines, failed });
            }
        }
        ReplyContent::new(task, email, summary, sections)
    }
}
