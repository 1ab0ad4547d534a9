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

pub mod workflows;

use std::sync::Arc;

use crate::agents::{Agent, AgentError, TaskContext, Turn};
use crate::domain::{EmailAddress, TaskId};
use crate::domain::{InboundEmail, Usage};
use crate::mail::compose::{ReplyContent, Section, Templates, compose};
use crate::store::{ClaimedTask, NewDelivery, NewStep, StepOutcome, Store};

/// Longest a single step may run unless its workflow says otherwise.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// A task claimed this many times without finishing (its workers kept dying) fails for good.
pub const MAX_ATTEMPTS: i64 = 3;
/// How many earlier exchanges of a conversation the agents see (the most recent ones), so that
/// a long thread does not grow every prompt without bound.
pub const MAX_CONVERSATION_TURNS: i64 = 6;

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

/// Per-task limits on LLM spending (`SWARM_TASK_BUDGET_TOKENS`, `SWARM_TASK_BUDGET_USD`): once
/// reached, further LLM steps do not run (their fallbacks do).
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
}

/// LLM spending of one task so far.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Spent {
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    pub llm_calls: u32,
}

impl Spent {
    fn add(&mut self, usage: &Usage) {
        self.tokens_in += usage.tokens_in;
        self.tokens_out += usage.tokens_out;
        self.cost_usd += usage.cost_usd.unwrap_or(0.0);
        self.llm_calls += usage.calls;
    }

    /// Why no further LLM step may run, if the budget is spent.
    fn exhausted(&self, budget: &Budget) -> Option<String> {
        let tokens = self.tokens_in + self.tokens_out;
        if let Some(max) = budget.max_tokens.filter(|max| tokens >= *max) {
            return Some(format!("task budget spent: {tokens} of {max} tokens"));
        }
        if let Some(max) = budget.max_cost_usd.filter(|max| self.cost_usd >= *max) {
            return Some(format!("task budget spent: ${:.4} of ${max:.4}", self.cost_usd));
        }
        None
    }
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

/// A problem with the task itself (bad stored input, unknown workflow, an unaddressable reply,
/// too many attempts): retrying cannot help, so the task fails for good. Any other error (e.g.
/// storage) leaves the task leased; it is retried when the lease expires.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct Unrecoverable(anyhow::Error);

fn unrecoverable(e: impl Into<anyhow::Error>) -> anyhow::Error {
    Unrecoverable(e.into()).into()
}

/// How one agent run ended.
struct Run {
    outcome: Result<Value, String>,
    usage: Option<Usage>,
    ms: u64,
    /// The agent could not serve (unavailable or over budget): its fallback should.
    fall_back: bool,
}

/// A finished step for the reply: the agent whose output it is, and a note when a fallback
/// stood in.
struct StepResult {
    agent: Arc<dyn Agent>,
    outcome: Result<Value, String>,
    summary: bool,
    note: Option<String>,
}

/// Runs `agent` on `input` up to `1 + retries` times, each under `timeout`.
async fn run_agent(agent: &dyn Agent, input: &Value, timeout: Duration, retries: u32) -> Run {
    let begun = Instant::now();
    let mut usage: Option<Usage> = None;
    let mut attempt = 0;
    loop {
        // A panicking agent is a failed step, not a dead worker.
        let guarded = std::panic::AssertUnwindSafe(agent.run(input)).catch_unwind();
        let (outcome, fall_back) = match tokio::time::timeout(timeout, guarded).await {
            Ok(Ok(Ok(out))) => {
                merge(&mut usage, out.usage.as_ref());
                (Ok(out.value), false)
            }
            Ok(Ok(Err(e))) => {
                merge(&mut usage, e.usage());
                (Err(e.to_string()), matches!(e, AgentError::Unavailable(_)))
            }
            Ok(Err(_)) => (Err("the agent panicked".to_owned()), false),
            Err(_) => (Err(format!("timed out after {} s", timeout.as_secs_f64())), agent.model().is_some()),
        };
        if outcome.is_ok() || attempt >= retries {
            return Run { outcome, usage, ms: begun.elapsed().as_millis() as u64, fall_back };
        }
        attempt += 1;
    }
}

fn merge(total: &mut Option<Usage>, more: Option<&Usage>) {
    let Some(more) = more else { return };
    let t = total.get_or_insert_with(|| Usage { model: more.model.clone(), ..Usage::default() });
    t.tokens_in += more.tokens_in;
    t.tokens_out += more.tokens_out;
    t.cost_usd = match (t.cost_usd, more.cost_usd) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    };
    t.calls += more.calls;
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
        let received_at: DateTime<Utc> =
            DateTime::parse_from_rfc3339(&task.created_at).map(|d| d.to_utc()).unwrap_or_else(|_| Utc::now());
        let catalogue: Vec<(String, String)> =
            self.workflows.iter().map(|w| (w.name.clone(), w.description.clone())).collect();
        let mut outputs: BTreeMap<String, Value> = BTreeMap::new();
        let mut results: Vec<StepResult> = Vec::new();
        let mut spent = Spent::default();
        let mut position = 0;
        let turns = match task.conversation_id {
            Some(conversation) => self.turns(conversation, task.id).await?,
            None => Vec::new(),
        };

        let mut workflow_name = task.workflow.clone();
        if workflow_name == workflows::DIRECTOR_ROUTED {
            let ctx = TaskContext {
                email: &email,
                received_at,
                outputs: &outputs,
                workflows: &catalogue,
                conversation: &turns,
            };
            let (chosen, reason, usage) = self.direct(&task, &ctx).await?;
            if let Some(usage) = &usage {
                spent.add(usage);
            }
            self.store.route_task(task.id, &chosen, &reason).await?;
            workflow_name = chosen;
            position = 1;
        }
        let workflow = self
            .workflows
            .iter()
            .find(|w| w.name == workflow_name)
            .with_context(|| format!("unknown workflow {workflow_name:?}"))
            .map_err(unrecoverable)?;

        for stage in &workflow.stages {
            let ctx = TaskContext {
                email: &email,
                received_at,
                outputs: &outputs,
                workflows: &catalogue,
                conversation: &turns,
            };
            let inputs: Vec<Value> = stage.iter().map(|step| step.agent.input(&ctx)).collect();
            // Checked once per stage: the steps of a stage start together.
            let over_budget = spent.exhausted(&self.budget);
            let new_steps: Vec<NewStep<'_>> = stage
                .iter()
                .zip(&inputs)
                .enumerate()
                .map(|(i, (step, input))| NewStep {
                    position: position + i,
                    agent: step.agent.name(),
                    model: step.agent.model(),
                    input,
                })
                .collect();
            let step_ids = self.store.start_steps(task.id, task.attempts, &new_steps).await?;
            position += stage.len();

            let runs = stage.iter().zip(&inputs).map(|(step, input)| {
                let over_budget = over_budget.clone();
                async move {
                    match over_budget.filter(|_| step.agent.model().is_some()) {
                        Some(why) => Run { outcome: Err(why), usage: None, ms: 0, fall_back: true },
                        None => run_agent(step.agent.as_ref(), input, step.timeout, step.retries).await,
                    }
                }
            });
            let finished = futures_util::future::join_all(runs).await;
            let recorded: Vec<StepOutcome<'_>> = stage
                .iter()
                .zip(&step_ids)
                .zip(&finished)
                .map(|((step, &id), run)| StepOutcome {
                    step: id,
                    agent: step.agent.name(),
                    outcome: run.outcome.as_ref().map_err(String::as_str),
                    duration_ms: run.ms,
                    usage: run.usage.as_ref(),
                })
                .collect();
            self.store.finish_steps(task.id, &recorded).await?;

            // Fallbacks of the steps that could not serve, run and recorded as steps of their own.
            let mut stand_ins = Vec::new();
            for (step, run) in stage.iter().zip(&finished) {
                if let (Err(why), Some(fallback)) = (&run.outcome, &step.fallback) {
                    let ctx = TaskContext {
                        email: &email,
                        received_at,
                        outputs: &outputs,
                        workflows: &catalogue,
                        conversation: &turns,
                    };
                    stand_ins.push((step, fallback.clone(), fallback.input(&ctx), why.clone()));
                }
            }
            let fallback_runs = futures_util::future::join_all(
                stand_ins.iter().map(|(step, fb, input, _)| run_agent(fb.as_ref(), input, step.timeout, 0)),
            )
            .await;
            if !stand_ins.is_empty() {
                let new_steps: Vec<NewStep<'_>> = stand_ins
                    .iter()
                    .enumerate()
                    .map(|(i, (_, fb, input, _))| NewStep {
                        position: position + i,
                        agent: fb.name(),
                        model: fb.model(),
                        input,
                    })
                    .collect();
                let ids = self.store.start_steps(task.id, task.attempts, &new_steps).await?;
                position += stand_ins.len();
                let recorded: Vec<StepOutcome<'_>> = stand_ins
                    .iter()
                    .zip(&ids)
                    .zip(&fallback_runs)
                    .map(|(((_, fb, _, _), &id), run)| StepOutcome {
                        step: id,
                        agent: fb.name(),
                        outcome: run.outcome.as_ref().map_err(String::as_str),
                        duration_ms: run.ms,
                        usage: run.usage.as_ref(),
                    })
                    .collect();
                self.store.finish_steps(task.id, &recorded).await?;
            }

            let mut fallback_runs = stand_ins.into_iter().zip(fallback_runs);
            for (step, run) in stage.iter().zip(finished) {
                if let Some(usage) = &run.usage {
                    spent.add(usage);
                }
                let summary = step.agent.name() == workflow.summary_agent;
                let failed_with_fallback = run.outcome.is_err() && step.fallback.is_some();
                if !failed_with_fallback {
                    if let Ok(v) = &run.outcome {
                        outputs.insert(step.agent.name().to_owned(), v.clone());
                    }
                    results.push(StepResult {
                        agent: step.agent.clone(),
                        outcome: run.outcome,
                        summary,
                        note: None,
                    });
                    continue;
                }
                let Some(((_, fallback, _, why), fb_run)) = fallback_runs.next() else { continue };
                if let Some(usage) = &fb_run.usage {
                    spent.add(usage);
                }
                if let Ok(v) = &fb_run.outcome {
                    outputs.insert(fallback.name().to_owned(), v.clone());
                }
                let reason = if run.fall_back { "was unavailable" } else { "failed" };
                let note = format!(
                    "The {} step {reason} ({why}); this section comes from the local {} agent instead.",
                    step.agent.name(),
                    fallback.name()
                );
                results.push(StepResult {
                    agent: fallback,
                    outcome: fb_run.outcome,
                    summary,
                    note: Some(note),
                });
            }
        }

        let content = self.reply_content(TaskId(task.id), &email, &results);
        let to =
            EmailAddress::parse(&task.reply_to).context("stored reply address").map_err(unrecoverable)?;
        // The conversation's root: the first References entry (RFC 5322 §3.6.4), else this request.
        let thread_key = crate::mail::compose::references(&email)
            .first()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_else(|| format!("task:{}", task.id));
        let reply = compose(
            &self.templates,
            &self.from,
            &to,
            &email,
            TaskId(task.id),
            &content,
            self.store.clock().now(),
        )
        .map_err(unrecoverable)?;
        let queued = self
            .store
            .complete_task_with(
                task.id,
                &self.owner,
                NewDelivery {
                    message_id: reply.message_id.as_str(),
                    envelope_from: reply.from.as_str(),
                    envelope_to: reply.to.as_str(),
                    payload: &reply.bytes,
                    thread_key: &thread_key,
                },
                serde_json::json!({"workflow": workflow.name, "llm": spent}),
            )
            .await?;
        if queued {
            info!(message_id = %reply.message_id, "task done, reply queued");
        } else {
            warn!("lease lost before completion; another worker owns the task now");
        }
        Ok(())
    }

    /// The earlier exchanges of a conversation (the last [`MAX_CONVERSATION_TURNS`]), oldest
    /// first, for the agents to read.
    async fn turns(&self, conversation: i64, before: i64) -> Result<Vec<Turn>> {
        let mut turns = Vec::new();
        let earlier = self.store.conversation(conversation, before, MAX_CONVERSATION_TURNS).await?;
        for (task, input, steps) in earlier {
            let Ok(email) = serde_json::from_str::<InboundEmail>(&input) else { continue };
            let mut reply = Vec::new();
            for step in steps.iter().filter(|s| s.status == "ok") {
                let Some(output) = step.output.as_deref().and_then(|o| serde_json::from_str::<Value>(o).ok())
                else {
                    continue;
                };
                let lines = |key: &str| -> Vec<String> {
                    match &output[key] {
                        Value::Array(items) => {
                            items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
                        }
                        Value::String(text) => vec![text.clone()],
                        _ => vec![],
                    }
                };
                match step.agent.as_str() {
                    "llm_exec_summary" => reply.extend(lines("summary")),
                    "exec_summary" => reply.extend(lines("bullets")),
                    "drafter" => reply.extend(lines("draft")),
                    _ => {}
                }
            }
            turns.push(Turn {
                task: task.id,
                from: task.sender,
                subject: email.subject,
                text: crate::domain::truncate(&email.new_text, 4 * 1024),
                reply,
            });
        }
        Ok(turns)
    }

    /// Asks the director which workflow fits (recorded as step 0): its choice when it names a
    /// workflow, else the default. Returns the workflow, why, and what the call cost.
    async fn direct(
        &self,
        task: &ClaimedTask,
        ctx: &TaskContext<'_>,
    ) -> Result<(String, String, Option<Usage>)> {
        let default = self.default_workflow().to_owned();
        let Some(director) = &self.director else {
            return Ok((default, "no director configured: default workflow".into(), None));
        };
        let input = director.input(ctx);
        let new = [NewStep { position: 0, agent: director.name(), model: director.model(), input: &input }];
        let ids = self.store.start_steps(task.id, task.attempts, &new).await?;
        let run = run_agent(director.as_ref(), &input, STEP_TIMEOUT, 0).await;
        let outcome = StepOutcome {
            step: ids[0],
            agent: director.name(),
            outcome: run.outcome.as_ref().map_err(String::as_str),
            duration_ms: run.ms,
            usage: run.usage.as_ref(),
        };
        self.store.finish_steps(task.id, &[outcome]).await?;
        let choice = run.outcome.as_ref().ok().and_then(|v| {
            let name = v.get("workflow")?.as_str()?;
            let reason = v.get("reason").and_then(Value::as_str).unwrap_or_default();
            Some((name.to_owned(), reason.to_owned()))
        });
        let (workflow, reason) = match (choice, &run.outcome) {
            (Some((name, reason)), _) if self.workflows.iter().any(|w| w.name == name) => {
                (name, format!("director: {reason}"))
            }
            (Some((name, _)), _) => {
                (default, format!("the director chose an unknown workflow {name:?}: default"))
            }
            (None, Err(e)) => (default, format!("the director failed ({e}): default")),
            (None, Ok(_)) => (default, "the director named no workflow: default".into()),
        };
        Ok((workflow, reason, run.usage))
    }

    fn reply_content(&self, task: TaskId, email: &InboundEmail, results: &[StepResult]) -> ReplyContent {
        let mut summary = Vec::new();
        let mut sections = Vec::new();
        for r in results {
            let (mut lines, failed) = match &r.outcome {
                Ok(v) => (r.agent.describe(v), false),
                Err(e) => (vec![format!("This step failed: {e}")], true),
            };
            if let Some(note) = &r.note {
                lines.insert(0, format!("({note})"));
            }
            if r.summary {
                summary = lines;
            } else {
                sections.push(Section { title: r.agent.title().to_owned(), lines, failed });
            }
        }
        ReplyContent::new(task, email, summary, sections)
    }
}
