//! `action_items`: requests in the new text, who is asked, and by when. Output schema:
//! `{"items": [{"text": str, "assignee": str|null, "due": "YYYY-MM-DD"|null, "due_phrase": str|null,
//! "rule": str}]}`.
//!
//! A sentence is an item when it uses a request phrase ("could you", "please", an imperative verb)
//! or names someone with a commitment ("Maria to send ...", "Tom will ..."). The assignee is a
//! name addressed at the sentence start ("Bob, please ..."), an `@name`, or the named subject;
//! `null` means the recipient in general. Deadlines: see [`super::dates`].

use serde::{Deserialize, Serialize};

use super::dates::find_due;
use super::{TextInput, request_phrase};
use crate::agents::text::sentences;
use crate::agents::{LocalAgent, TaskContext};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionItem {
    pub text: String,
    pub assignee: Option<String>,
    pub due: Option<String>,
    pub due_phrase: Option<String>,
    /// Why this sentence is an item.
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionItemsOutput {
    pub items: Vec<ActionItem>,
}

pub struct ActionItems;

/// Capitalized words that are not names when they open a sentence.
const NOT_NAMES: &[&str] = &[
    "I", "We", "You", "They", "He", "She", "It", "Please", "Also", "So", "Then", "And", "But", "Thanks",
    "Hi", "Hello", "Hey", "Dear", "Could", "Can", "Would", "Will", "The", "This", "That", "Our", "My",
    "Your", "If", "When", "Ok", "OK", "Yes", "No", "Sure", "Everyone", "All", "Team", "Folks",
];
const COMMITMENTS: &[&str] = &["to", "will", "should", "must", "needs", "please", "can", "could"];

fn is_name(word: &str) -> bool {
    let w = word.trim_matches(|c: char| !c.is_alphanumeric());
    w.chars().next().is_some_and(char::is_uppercase)
        && w.chars().all(|c| c.is_alphabetic() || c == '-' || c == '\'')
        && w.len() > 1
        && !NOT_NAMES.contains(&w)
}

/// Who a sentence asks, and the rule for a named commitment when there is no request phrase.
fn assignee(sentence: &str) -> (Option<String>, Option<String>) {
    let words: Vec<&str> = sentence.split_whitespace().collect();
    if let Some(at) = words.iter().find(|w| w.starts_with('@') && w.len() > 1) {
        return (
            Some(
                at.trim_matches(|c: char| !c.is_alphanumeric() && c != '@' && c != '.' && c != '_')
                    .trim_end_matches('.')
                    .to_owned(),
            ),
            None,
        );
    }
    // "Bob, please ..." / "Bob and Ann, could you ..."
    if let Some((head, _)) = sentence.split_once(',') {
        let names: Vec<&str> = head.split_whitespace().filter(|w| *w != "and").collect();
        if !names.is_empty() && names.len() <= 3 && names.iter().all(|w| is_name(w)) {
            return (Some(head.trim().to_owned()), None);
        }
    }
    // "Maria to send ...", "Tom will prepare ...", "Ask Lee to ..."
    let (first, second) = match words.as_slice() {
        [ask, name, next, ..] if ask.eq_ignore_ascii_case("ask") && is_name(name) => (*name, *next),
        [name, next, ..] => (*name, *next),
        _ => return (None, None),
    };
    if is_name(first) && COMMITMENTS.contains(&second.to_lowercase().as_str()) {
        let name = first.trim_matches(|c: char| !c.is_alphanumeric()).to_owned();
        return (Some(name.clone()), Some(format!("named commitment \"{name} {second}\"")));
    }
    (None, None)
}

pub fn extract(input: &TextInput) -> ActionItemsOutput {
    let items = sentences(&input.text)
        .into_iter()
        .filter_map(|s| {
            let (who, commitment) = assignee(&s);
            let rule = request_phrase(&s).map(|p| format!("request phrase {p}")).or(commitment)?;
            let due = find_due(&s, input.base_date);
            Some(ActionItem {
                text: crate::domain::truncate(&s, 300),
                assignee: who,
                due: due.as_ref().map(|(d, _)| d.to_string()),
                due_phrase: due.map(|(_, p)| p),
                rule,
            })
        })
        .collect();
    ActionItemsOutput { items }
}

impl LocalAgent for ActionItems {
    const NAME: &'static str = "action_items";
    const TITLE: &'static str = "Action items";
    type Input = TextInput;
    type Output = ActionItemsOutput;

    fn input(&self, task: &TaskContext<'_>) -> TextInput {
        TextInput::from_task(task)
    }

    fn run(&self, input: TextInput) -> ActionItemsOutput {
        extract(&input)
    }

    fn describe(&self, o: &ActionItemsOutput) -> Vec<String> {
        if o.items.is_empty() {
            return vec!["No action items found.".into()];
        }
        o.items
            .iter()
            .map(|i| {
                let who = i.assignee.as_deref().map(|a| format!(" (asked: {a})")).unwrap_or_default();
                let due = i.due.as_deref().map(|d| format!(" (due {d})")).unwrap_or_default();
                format!("{}{who}{due}", i.text)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn items(text: &str) -> Vec<ActionItem> {
        let base = NaiveDate::from_ymd_opt(2026, 11, 20).expect("date");
        extract(&TextInput { subject: String::new(), text: text.into(), base_date: base }).items
    }

    #[test]
    fn requests_with_assignees_and_deadlines() {
        let got = items(
            "Hi all,\n\nBob, could you send the budget by Monday? Maria to book the room for December 3. \
             Please review the draft before end of the week. The weather is nice.\n\nThanks",
        );
        assert_eq!(got.len(), 3, "{got:#?}");
        assert_eq!(got[0].assignee.as_deref(), Some("Bob"));
        assert_eq!(got[0].due.as_deref(), Some("2026-11-23"));
        assert_eq!(got[1].assignee.as_deref(), Some("Maria"));
        assert_eq!(got[1].due.as_deref(), Some("2026-12-03"));
        assert_eq!(got[2].assignee, None);
        assert_eq!(got[2].due.as_deref(), Some("2026-11-20"));
    }

    #[test]
    fn mentions_name_the_assignee() {
        let got = items("@lee please rotate the keys tomorrow.");
        assert_eq!(got[0].assignee.as_deref(), Some("@lee"));
        assert_eq!(got[0].due.as_deref(), Some("2026-11-21"));
    }

    #[test]
    fn statements_are_not_items() {
        assert!(items("The release went out. Everything is green.").is_empty());
    }
}
