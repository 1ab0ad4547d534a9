//! Agents: the workers of a workflow. An agent reads a JSON input built from the task, and returns
//! a JSON output with a documented schema. Agents never touch the database or send mail; the
//! orchestrator records their steps.
//!
//! The local agents need no network, are deterministic and say why they concluded what they did.

pub mod local;
pub mod text;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::mail::InboundEmail;

/// Most bytes of new text an agent reads; the rest is not analysed (bounds agent time).
pub const MAX_AGENT_TEXT_BYTES: usize = 32 * 1024;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an agent may read: the task's email, when it arrived, and earlier steps' outputs.
pub struct TaskContext<'a> {
    pub email: &'a InboundEmail,
    pub received_at: DateTime<Utc>,
    /// Outputs of the steps already finished, by agent name.
    pub outputs: &'a BTreeMap<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid input: {0}")]
    Input(String),
    #[error("{0}")]
    Failed(String),
}

pub trait Agent: Send + Sync {
    /// Name used in workflows and step records, e.g. `triage`.
    fn name(&self) -> &'static str;
    /// Heading of this agent's section in replies.
    fn title(&self) -> &'static str;
    /// The input this agent reads from the task; stored with the step.
    fn input(&self, task: &TaskContext<'_>) -> Value;
    /// Runs on `input`, returning this agent's JSON output.
    fn run<'a>(&'a self, input: &'a Value) -> BoxFuture<'a, Result<Value, AgentError>>;
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

    fn run<'a>(&'a self, input: &'a Value) -> BoxFuture<'a, Result<Value, AgentError>> {
        Box::pin(async move {
            let input: T::Input =
                serde_json::from_value(input.clone()).map_err(|e| AgentError::Input(e.to_string()))?;
            serde_json::to_value(LocalAgent::run(self, input)).map_err(|e| AgentError::Failed(e.to_string()))
        })
    }

    fn describe(&self, output: &Value) -> Vec<String> {
        match serde_json::from_value::<T::Output>(output.clone()) {
            Ok(o) => LocalAgent::describe(self, &o),
            Err(e) => vec![format!("(output not readable: {e})")],
        }
    }
}

/// The agents this build knows, by name.
pub struct Registry {
    agents: BTreeMap<&'static str, Box<dyn Agent>>,
}

impl Registry {
    /// All local agents.
    pub fn local() -> Self {
        let list: Vec<Box<dyn Agent>> = vec![
            Box::new(local::Triage),
            Box::new(local::Summarize),
            Box::new(local::ActionItems),
            Box::new(local::Attachments),
            Box::new(local::ExecSummary),
        ];
        Self { agents: list.into_iter().map(|a| (a.name(), a)).collect() }
    }

    pub fn get(&self, name: &str) -> Option<&dyn Agent> {
        self.agents.get(name).map(|a| a.as_ref())
    }
}
