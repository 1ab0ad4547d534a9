//! `exec_summary`: 3-5 bullet lines leading the reply, built from the other steps' outputs.
//! Output schema: `{"bullets": [str]}`. Input: the outputs of `triage`, `summarize`,
//! `action_items` and `attachments` (any may be missing when its step failed).

use serde::{Deserialize, Serialize};

use super::attachments::human_size;
use super::{ActionItemsOutput, AttachmentsOutput, SummaryOutput, TriageOutput};
use crate::agents::{LocalAgent, TaskContext};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecInput {
    pub triage: Option<TriageOutput>,
    pub summarize: Option<SummaryOutput>,
    pub action_items: Option<ActionItemsOutput>,
    pub attachments: Option<AttachmentsOutput>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecSummaryOutput {
    pub bullets: Vec<String>,
}

pub struct ExecSummary;

fn output<T: serde::de::DeserializeOwned>(task: &TaskContext<'_>, agent: &str) -> Option<T> {
    task.outputs.get(agent).and_then(|v| serde_json::from_value(v.clone()).ok())
}

impl LocalAgent for ExecSummary {
    const NAME: &'static str = "exec_summary";
    const TITLE: &'static str = "Executive summary";
    type Input = ExecInput;
    type Output = ExecSummaryOutput;

    fn input(&self, task: &TaskContext<'_>) -> ExecInput {
        ExecInput {
            triage: output(task, "triage"),
            summarize: output(task, "summarize"),
            action_items: output(task, "action_items"),
            attachments: output(task, "attachments"),
        }
    }

    fn run(&self, input: ExecInput) -> ExecSummaryOutput {
        let mut bullets = Vec::with_capacity(5);
        let mut missing = Vec::new();
        match &input.triage {
            Some(t) => bullets.push(format!("{} ({})", t.category.label(), t.rule)),
            None => missing.push("triage"),
        }
        match input.summarize.as_ref().and_then(|s| s.sentences.first()) {
            Some(first) => bullets.push(format!("Gist: {first}")),
            None if input.summarize.is_some() => {
                bullets.push("Gist: the message has no text to summarize.".into())
            }
            None => missing.push("summarize"),
        }
        match &input.action_items {
            Some(a) if a.items.is_empty() => bullets.push("No action items found.".into()),
            Some(a) => {
                let earliest =
                    a.items.iter().filter_map(|i| i.due.as_deref().map(|d| (d, i))).min_by_key(|(d, _)| *d);
                let n = a.items.len();
                let noun = if n == 1 { "action item" } else { "action items" };
                bullets.push(match earliest {
                    Some((due, item)) => format!("{n} {noun}; earliest due {due}: {}", item.text),
                    None => format!("{n} {noun}, none with a deadline: {}", a.items[0].text),
                });
            }
            None => missing.push("action_items"),
        }
        match &input.attachments {
            Some(a) if a.count > 0 => {
                let names: Vec<&str> =
                    a.attachments.iter().take(3).map(|x| x.name.as_deref().unwrap_or("(unnamed)")).collect();
                let more = if a.count > 3 { format!(" and {} more", a.count - 3) } else { String::new() };
                bullets.push(format!(
                    "{} attachment(s), {}: {}{more}",
                    a.count,
                    human_size(a.total_bytes),
                    names.join(", ")
                ));
            }
            Some(_) => {}
            None => missing.push("attachments"),
        }
        if !missing.is_empty() {
            bullets.push(format!("Incomplete: {} did not finish.", missing.join(", ")));
        }
        ExecSummaryOutput { bullets }
    }

    fn describe(&self, o: &ExecSummaryOutput) -> Vec<String> {
        o.bullets.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::local::{ActionItem, Category};

    #[test]
    fn bullets_lead_with_category_gist_and_earliest_deadline() {
        let out = ExecSummary.run(ExecInput {
            triage: Some(TriageOutput {
                category: Category::ActionRequest,
                rule: "request phrase \"could you\"".into(),
                evidence: None,
            }),
            summarize: Some(SummaryOutput {
                method: "textrank".into(),
                sentences: vec!["Budget is due.".into()],
                selected: vec![0],
                sentence_count: 1,
            }),
            action_items: Some(ActionItemsOutput {
                items: vec![
                    ActionItem {
                        text: "Send X by Friday.".into(),
                        assignee: None,
                        due: Some("2026-11-27".into()),
                        due_phrase: None,
                        rule: String::new(),
                    },
                    ActionItem {
                        text: "Send Y today.".into(),
                        assignee: None,
                        due: Some("2026-11-20".into()),
                        due_phrase: None,
                        rule: String::new(),
                    },
                ],
            }),
            attachments: None,
        });
        assert_eq!(out.bullets.len(), 4);
        assert!(out.bullets[0].starts_with("Action request"));
        assert_eq!(out.bullets[1], "Gist: Budget is due.");
        assert!(out.bullets[2].contains("earliest due 2026-11-20: Send Y today."));
        assert!(out.bullets[3].contains("attachments did not finish"));
    }
}
