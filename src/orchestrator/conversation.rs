//! The earlier exchanges of a conversation, as the agents read them: what the sender wrote and
//! what we answered (summary and draft lines), the most recent [`MAX_CONVERSATION_TURNS`].

use anyhow::Result;
use serde_json::Value;

use crate::agents::Turn;
use crate::domain::{InboundEmail, StepStatus, truncate};
use crate::store::{StepRow, Store};

/// How many earlier exchanges of a conversation the agents see (the most recent ones), so that
/// a long thread does not grow every prompt without bound.
pub const MAX_CONVERSATION_TURNS: i64 = 6;

/// Bytes of an earlier message's new text an agent sees.
const TURN_TEXT_BYTES: usize = 4 * 1024;

/// The earlier exchanges of `conversation` before task `before`, oldest first.
pub async fn turns(store: &Store, conversation: i64, before: i64) -> Result<Vec<Turn>> {
    let mut turns = Vec::new();
    for (task, input, steps) in store.conversation(conversation, before, MAX_CONVERSATION_TURNS).await? {
        let Ok(email) = serde_json::from_str::<InboundEmail>(&input) else { continue };
        turns.push(Turn {
            task: task.id.0,
            from: task.sender,
            subject: email.subject,
            text: truncate(&email.new_text, TURN_TEXT_BYTES),
            reply: reply_lines(&steps),
        });
    }
    Ok(turns)
}

/// What we answered in one exchange: the executive summary and the draft, as lines.
fn reply_lines(steps: &[StepRow]) -> Vec<String> {
    let mut reply = Vec::new();
    for step in steps.iter().filter(|s| s.status == StepStatus::Ok) {
        let Some(output) = step.output.as_deref().and_then(|o| serde_json::from_str::<Value>(o).ok()) else {
            continue;
        };
        let lines = |key: &str| -> Vec<String> {
            match &output[key] {
                Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
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
    reply
}
