//! `triage`: what kind of message is this? Output schema:
//! `{"category": "question|action_request|report|fyi", "rule": str, "evidence": str|null}`.
//!
//! Rules, first match wins: an explicit "no action needed" → fyi; a request phrase → action_request;
//! a question → question; a report keyword in the subject or text → report; otherwise fyi.

use serde::{Deserialize, Serialize};

use super::{TextInput, request_phrase};
use crate::agents::text::sentences;
use crate::agents::{LocalAgent, TaskContext};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Question,
    ActionRequest,
    Report,
    Fyi,
}

impl Category {
    pub fn label(self) -> &'static str {
        match self {
            Self::Question => "Question",
            Self::ActionRequest => "Action request",
            Self::Report => "Report",
            Self::Fyi => "FYI",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriageOutput {
    pub category: Category,
    /// The rule that fired, in words.
    pub rule: String,
    /// The sentence (or subject) that made it fire.
    pub evidence: Option<String>,
}

const NO_ACTION: &[&str] = &[
    "no action needed",
    "no action required",
    "no action is needed",
    "no action is required",
    "no need to reply",
    "no reply needed",
];
/// A sentence opening with one of these asks something even without a question mark.
const WH_WORDS: &[&str] = &["what", "when", "where", "who", "whom", "whose", "why", "how", "which"];
const REPORT_WORDS: &[&str] = &[
    "report",
    "status",
    "update",
    "summary",
    "results",
    "minutes",
    "metrics",
    "incident",
    "weekly",
    "monthly",
    "quarterly",
    "newsletter",
    "digest",
    "postmortem",
    "changelog",
];

pub struct Triage;

impl LocalAgent for Triage {
    const NAME: &'static str = "triage";
    const TITLE: &'static str = "Triage";
    type Input = TextInput;
    type Output = TriageOutput;

    fn input(&self, task: &TaskContext<'_>) -> TextInput {
        TextInput::from_task(task)
    }

    fn run(&self, input: TextInput) -> TriageOutput {
        classify(&input.subject, &input.text)
    }

    fn describe(&self, o: &TriageOutput) -> Vec<String> {
        let mut lines = vec![format!("Category: {} (rule: {})", o.category.label(), o.rule)];
        if let Some(e) = &o.evidence {
            lines.push(format!("Evidence: \u{201c}{e}\u{201d}"));
        }
        lines
    }
}

fn out(category: Category, rule: String, evidence: Option<&str>) -> TriageOutput {
    TriageOutput { category, rule, evidence: evidence.map(|e| crate::domain::truncate(e, 300)) }
}

fn words(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn classify(subject: &str, text: &str) -> TriageOutput {
    let sents = sentences(text);
    for s in &sents {
        let lower = s.to_lowercase();
        if let Some(p) = NO_ACTION.iter().find(|p| lower.contains(*p)) {
            return out(Category::Fyi, format!("explicit \"{p}\""), Some(s));
        }
    }
    for s in &sents {
        if let Some(p) = request_phrase(s) {
            return out(Category::ActionRequest, format!("request phrase {}", quoted(&p)), Some(s));
        }
    }
    for s in &sents {
        if s.trim_end().ends_with('?') {
            return out(Category::Question, "sentence ends with a question mark".into(), Some(s));
        }
    }
    if subject.trim_end().ends_with('?') {
        return out(Category::Question, "subject ends with a question mark".into(), Some(subject));
    }
    for s in &sents {
        let w = words(s);
        if w.len() >= 3 && WH_WORDS.contains(&w[0].as_str()) {
            return out(Category::Question, format!("sentence opens with \"{}\"", w[0]), Some(s));
        }
    }
    if let Some(k) = words(subject).into_iter().find(|w| REPORT_WORDS.contains(&w.as_str()) || w == "fyi") {
        if k == "fyi" {
            return out(Category::Fyi, "\"FYI\" in subject".into(), Some(subject));
        }
        return out(Category::Report, format!("report keyword \"{k}\" in subject"), Some(subject));
    }
    for s in &sents {
        if let Some(k) = words(s).into_iter().find(|w| REPORT_WORDS.contains(&w.as_str())) {
            return out(Category::Report, format!("report keyword \"{k}\" in text"), Some(s));
        }
    }
    out(Category::Fyi, "no request, question or report marker found".into(), None)
}

fn quoted(phrase: &str) -> String {
    if phrase.starts_with("imperative") { phrase.to_owned() } else { format!("\"{phrase}\"") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn category(subject: &str, text: &str) -> Category {
        classify(subject, text).category
    }

    #[test]
    fn categories_follow_the_documented_rules() {
        assert_eq!(
            category("Slides", "Hi Ann,\nCould you send me the slides by Friday?\nThanks"),
            Category::ActionRequest
        );
        assert_eq!(category("Lunch", "Is the meeting still on at noon?"), Category::Question);
        assert_eq!(category("Weekly status", "All systems nominal. Two incidents closed."), Category::Report);
        assert_eq!(category("Office", "The office is closed on Monday."), Category::Fyi);
        assert_eq!(category("Office", "Please note the new address. No action needed."), Category::Fyi);
    }

    #[test]
    fn the_rule_and_evidence_are_given() {
        let o = classify("x", "Hello.\nCan you fix the login page?");
        assert_eq!(o.rule, "request phrase \"can you\"");
        assert_eq!(o.evidence.as_deref(), Some("Can you fix the login page?"));
    }
}
