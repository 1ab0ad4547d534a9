//! One stage of a workflow: its steps recorded, run concurrently (each under its timeout, with
//! retries), the fallbacks of the steps that could not serve run and recorded as steps of their
//! own, and the results folded into the task's state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use serde_json::Value;

use super::Step;
use super::budget::{Budget, Spent, merge};
use crate::agents::{Agent, AgentError, TaskContext, Turn};
use crate::domain::{Clock, InboundEmail, Usage};
use crate::store::{NewStep, StepOutcome, Store};

/// Everything a task's run has gathered so far.
pub struct TaskState {
    pub task_id: i64,
    /// The lease owner running the task: every write of the run is fenced on it.
    pub owner: String,
    pub attempt: i64,
    pub email: InboundEmail,
    pub received_at: DateTime<Utc>,
    /// The workflows a director may choose from: name and description.
    pub catalogue: Vec<(String, String)>,
    /// Earlier exchanges of the conversation, oldest first.
    pub turns: Vec<Turn>,
    /// Outputs of the finished steps, by agent name.
    pub outputs: BTreeMap<String, Value>,
    /// What the reply shows, in step order.
    pub results: Vec<StepResult>,
    pub spent: Spent,
    /// Position of the next recorded step.
    pub position: usize,
}

impl TaskState {
    /// What an agent may read now.
    pub fn ctx(&self) -> TaskContext<'_> {
        TaskContext {
            email: &self.email,
            received_at: self.received_at,
            outputs: &self.outputs,
            workflows: &self.catalogue,
            conversation: &self.turns,
        }
    }
}

/// A finished step for the reply: the agent whose output it is, and a note when a fallback
/// stood in.
pub struct StepResult {
    pub agent: Arc<dyn Agent>,
    pub outcome: Result<Value, String>,
    /// Its output leads the reply as the executive summary.
    pub summary: bool,
    pub note: Option<String>,
}

/// How one agent run ended.
pub struct Run {
    pub outcome: Result<Value, String>,
    pub usage: Option<Usage>,
    pub ms: u64,
    /// The agent could not serve (unavailable or over budget): its fallback should.
    pub fall_back: bool,
}

/// One agent to run as a recorded step.
pub struct Job {
    pub agent: Arc<dyn Agent>,
    pub input: Value,
    pub timeout: Duration,
    pub retries: u32,
    /// Not run at all, for this reason (the budget is spent).
    pub refused: Option<String>,
}

/// Runs `agent` on `input` up to `1 + retries` times, each under `timeout`; the duration is
/// measured on `clock`.
pub async fn run_agent(
    agent: &dyn Agent,
    input: &Value,
    timeout: Duration,
    retries: u32,
    clock: &dyn Clock,
) -> Run {
    let begun = clock.now();
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
            let ms = (clock.now() - begun).num_milliseconds().max(0) as u64;
            return Run { outcome, usage, ms, fall_back };
        }
        attempt += 1;
    }
}

/// Records `jobs` as the task's next steps, runs them concurrently and records how each ended.
pub async fn run_recorded(store: &Store, state: &mut TaskState, jobs: &[Job]) -> Result<Vec<Run>> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let new_steps: Vec<NewStep<'_>> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| NewStep {
            position: state.position + i,
            agent: job.agent.name(),
            model: job.agent.model(),
            input: &job.input,
        })
        .collect();
    let ids = store.start_steps(state.task_id, &state.owner, state.attempt, &new_steps).await?;
    state.position += jobs.len();
    let clock = store.clock().as_ref();
    let runs = futures_util::future::join_all(jobs.iter().map(|job| async move {
        match &job.refused {
            Some(why) => Run { outcome: Err(why.clone()), usage: None, ms: 0, fall_back: true },
            None => run_agent(job.agent.as_ref(), &job.input, job.timeout, job.retries, clock).await,
        }
    }))
    .await;
    let recorded: Vec<StepOutcome<'_>> = jobs
        .iter()
        .zip(&ids)
        .zip(&runs)
        .map(|((job, &id), run)| StepOutcome {
            step: id,
            agent: job.agent.name(),
            outcome: run.outcome.as_ref().map_err(String::as_str),
            duration_ms: run.ms,
            usage: run.usage.as_ref(),
        })
        .collect();
    store.finish_steps(state.task_id, &state.owner, &recorded).await?;
    for (job, step) in jobs.iter().zip(&recorded) {
        count_step(step, job.agent.model());
    }
    Ok(runs)
}

/// A finished step in the metrics: `swarm_step_duration_seconds{agent, outcome}` and, for an
/// LLM step, `swarm_llm_tokens_total{model, kind="input"|"output"}` and
/// `swarm_llm_cost_usd_total{model}` (a float that only grows, so a gauge in the `metrics` crate).
/// `model` is the configured one the step asked for, as on `swarm_llm_calls_total` (the API may
/// answer with a dated snapshot name).
fn count_step(step: &StepOutcome<'_>, model: Option<&str>) {
    let outcome = if step.outcome.is_ok() { "ok" } else { "failed" };
    let agent = step.agent.to_owned();
    metrics::histogram!("swarm_step_duration_seconds", "agent" => agent, "outcome" => outcome)
        .record(step.duration_ms as f64 / 1000.0);
    if let Some(usage) = step.usage {
        let model = model.unwrap_or(&usage.model).to_owned();
        metrics::counter!("swarm_llm_tokens_total", "model" => model.clone(), "kind" => "input")
            .increment(usage.tokens_in);
        metrics::counter!("swarm_llm_tokens_total", "model" => model.clone(), "kind" => "output")
            .increment(usage.tokens_out);
        if let Some(cost) = usage.cost_usd {
            metrics::gauge!("swarm_llm_cost_usd_total", "model" => model).increment(cost);
        }
    }
}

/// Runs one stage of a workflow whose executive summary comes from `summary_agent`.
///
/// The budget is checked once, before the stage: its steps start together.
pub async fn run_stage(
    store: &Store,
    budget: &Budget,
    stage: &[Step],
    summary_agent: &str,
    state: &mut TaskState,
) -> Result<()> {
    let over_budget = state.spent.exhausted(budget);
    let jobs: Vec<Job> = stage
        .iter()
        .map(|step| Job {
            agent: step.agent.clone(),
            input: step.agent.input(&state.ctx()),
            timeout: step.timeout,
            retries: step.retries,
            refused: over_budget.clone().filter(|_| step.agent.model().is_some()),
        })
        .collect();
    let finished = run_recorded(store, state, &jobs).await?;

    // Fallbacks of the steps that could not serve, run and recorded as steps of their own.
    let mut why_not = Vec::new();
    let mut stand_ins = Vec::new();
    for (step, run) in stage.iter().zip(&finished) {
        if let (Err(why), Some(fallback)) = (&run.outcome, &step.fallback) {
            why_not.push(why.clone());
            let input = fallback.input(&state.ctx());
            stand_ins.push(Job {
                agent: fallback.clone(),
                input,
                timeout: step.timeout,
                retries: 0,
                refused: None,
            });
        }
    }
    let fallback_runs = run_recorded(store, state, &stand_ins).await?;
    let mut fallbacks = stand_ins.into_iter().zip(why_not).zip(fallback_runs);
    for (step, run) in stage.iter().zip(finished) {
        let summary = step.agent.name() == summary_agent;
        if run.outcome.is_ok() || step.fallback.is_none() {
            fold(state, &step.agent, run, summary, None);
            continue;
        }
        if let Some(usage) = &run.usage {
            state.spent.add(usage);
        }
        let Some(((stand_in, why), fb_run)) = fallbacks.next() else { continue };
        let reason = if run.fall_back { "was unavailable" } else { "failed" };
        let note = format!(
            "The {} step {reason} ({why}); this section comes from the local {} agent instead.",
            step.agent.name(),
            stand_in.agent.name()
        );
        fold(state, &stand_in.agent, fb_run, summary, Some(note));
    }
    Ok(())
}

/// Adds a finished run to the task's spending, outputs and results.
fn fold(state: &mut TaskState, agent: &Arc<dyn Agent>, run: Run, summary: bool, note: Option<String>) {
    if let Some(usage) = &run.usage {
        state.spent.add(usage);
    }
    if let Ok(v) = &run.outcome {
        state.outputs.insert(agent.name().to_owned(), v.clone());
    }
    state.results.push(StepResult { agent: agent.clone(), outcome: run.outcome, summary, note });
}
