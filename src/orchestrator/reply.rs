//! The end of a task's run: the reply composed from the step results (summary first, then one
//! section per step) and committed with the task's completion (invariant 4).

use anyhow::Context;
use tracing::{info, warn};

use super::stage::{StepResult, TaskState};
use super::{Orchestrator, TaskError};
use crate::domain::{EmailAddress, InboundEmail, TaskId};
use crate::mail::compose::{ReplyContent, Section, compose, references};
use crate::store::{ClaimedTask, NewDelivery};

impl Orchestrator {
    /// Composes the reply of `task` and completes it with the reply queued, in one transaction.
    pub(super) async fn complete(
        &self,
        task: &ClaimedTask,
        state: &TaskState,
        workflow: &str,
    ) -> Result<(), TaskError> {
        let content = reply_content(task.id, &state.email, &state.results);
        let to =
            EmailAddress::parse(&task.reply_to).context("stored reply address").map_err(TaskError::fail)?;
        // The conversation's root: the first References entry (RFC 5322 §3.6.4), else this request.
        let thread_key = references(&state.email)
            .first()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_else(|| format!("task:{}", task.id));
        let reply = compose(
            &self.templates,
            &self.from,
            &to,
            &state.email,
            task.id,
            &content,
            self.store.clock().now(),
        )
        .map_err(TaskError::fail)?;
        let delivery = NewDelivery {
            message_id: reply.message_id.as_str(),
            envelope_from: reply.from.as_str(),
            envelope_to: reply.to.as_str(),
            payload: &reply.bytes,
            thread_key: &thread_key,
        };
        let details = serde_json::json!({"workflow": workflow, "llm": state.spent});
        if self.store.complete_task_with(task.id, &self.owner, delivery, details).await? {
            info!(message_id = %reply.message_id, "task done, reply queued");
        } else {
            warn!("lease lost before completion; another worker owns the task now");
        }
        Ok(())
    }
}

/// The reply's summary (from the summary step) and sections (every other step, failures said
/// as such, a fallback's note first).
fn reply_content(task: TaskId, email: &InboundEmail, results: &[StepResult]) -> ReplyContent {
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
            sections.push(Section::new(r.agent.title().to_owned(), lines, failed));
        }
    }
    ReplyContent::new(task, email, summary, sections)
}
