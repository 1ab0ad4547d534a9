//! Agents: the workers of a workflow. An agent reads a JSON input built from the task, and returns
//! a JSON output with a documented schema. Agents never touch the database or send mail; the
//! orchestrator records their steps.
//!
//! The local agents need no network, are deterministic and say why they concluded what they did.

pub mod llm;
pub mod local;
pub mod text;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::{InboundEmail, Usage};

/// Most bytes of new text an agent reads; the rest is not analysed (bounds agent time).
pub const MAX_AGENT_TEXT_BYTES: usize = 32 * 1024;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an agent may read: the task's email, when it arrived, and earlier steps' outputs.
pub struct TaskContext<'a> {
    pub email: &'a InboundEmail,
    pub received_at: DateTime<Utc>,
    /// Outputs of the steps already finished, by agent name.
    pub outputs: &'a BTreeMap<String, Value>,
    /// The workflows a director may choose from: name and description.
    pub workflows: &'a [(String, String)],
    /// Earlier exchanges of this conversation, oldest first (empty unless a follow-up).
    pub conversation: &'a [Turn],
}

/// One earlier exchange of a conversation: what the sender wrote and what we answered.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    pub task: i64,
    pub from: String,
    pub subject: String,
    /// The new text of that message, at most 4 KiB.
    pub text: String,
    /// Our reply's summary and draft, as lines.
    pub reply: Vec<String>,
}

/// An agent's JSON output and, for LLM agents, what producing it cost.
#[derive(Debug, Clone)]
pub struct AgentOutput {
    pub value: Value,
    pub usage: Option<Usage>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid input: {0}")]
    Input(String),
    #[error("{0}")]
    Failed(String),
    /// The model could not be reached (circuit open, timeouts, 5xx after retries): the step's
    /// fallback runs.
    #[error("LLM unavailable: {0}")]
    Unavailable(String),
    /// The model answered, but not with the output asked for; its tokens were still spent.
    #[error("{message}")]
    BadOutput { message: String, usage: Usage },
}

impl AgentError {
    /// Tokens spent before failing.
    pub fn usage(&self) -> Option<&Usage> {
        match self {
            AgentError::BadOutput { usage, .. } => Some(usage),
            _ => None,
        }
    }
}

pub trait Agent: Send + Sync {
    /// Name used in workflows and step records, e.g. `triage`.
    fn name(&self) -> &'static str;
    /// Heading of this agent's section in replies.
    fn title(&self) -> &'static str;
    /// The input this agent reads from the task; stored with the step.
    fn input(&self, task: &TaskContext<'_>) -> Value;
    /// The model an LLM agent calls; `None` for local agents.
    fn model(&self) -> Option<&str> {
        None
    }
    /// Runs on `input`, returning this agent's JSON output.
    fn run<'a>(&'a self, input: &'a Value) -> BoxFuture<'a, Result<AgentOutput, AgentError>>;
    /// Human-readable lines for the reply, from this agent's output.
    fn describe(&self, output: &Value) -> Vec<String>;
}

/// A synchronous, network-free agent; gets [`Agent`] for free.
pub trait LocalAgent: Send + Sync {
    const NAME: &'static str;
    const TITLE: &'static str;
    type Input: serde::Serialize + serde::de::DeserializeOwned;
    type Output: serde::Serialize + serde::de::DeserializeOwned;

    fn input(&self, task: &TaskContext<'_>) -> Self::Input;
    fn run(&self, input: Self::Input) -> Self::Output;
    fn describe(&self, output: &Self::Output) -> Vec<String>;
}

impl<T: LocalAgent> Agent for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn title(&self) -> &'static str {
        T::TITLE
    }

    fn input(&self, task: &TaskContext<'_>) -> Value {
        serde_json::to_value(LocalAgent::input(self, task)).unwrap_or(Value::Null)
    }

    fn run<'a>(&'a self, input: &'a Value) -> BoxFuture<'a, Result<AgentOutput, AgentError>> {
        Box::pin(async move {
            let input: T::Input =
                serde_json::from_value(input.clone()).map_err(|e| AgentError::Input(e.to_string()))?;
            let value = serde_json::to_value(LocalAgent::run(self, input))
                .map_err(|e| AgentError::Failed(e.to_string()))?;
            Ok(AgentOutput { value, usage: None })
        })
    }

    fn describe(&self, output: &Value) -> Vec<String> {
        match serde_json::from_value::<T::Output>(output.clone()) {
            Ok(o) => LocalAgent::describe(self, &o),
            Err(e) => vec![format!("(output not readable: {e})")],
        }
    }
}

/// The local agents, by name.
pub fn local_agents() -> BTreeMap<&'static str, Arc<dyn Agent>> {
    let list: Vec<Arc<dyn Agent>> = vec![
        Arc::new(local::Triage),
        Arc::new(local::Summarize),
        Arc::new(local::ActionItems),
        Arc::new(local::Attachments),
        Arc::new(local::ExecSummary),
    ];
    list.into_iter().map(|a| (a.name(), a)).collect()
}
