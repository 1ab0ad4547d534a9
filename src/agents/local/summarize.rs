//! `summarize`: an extractive summary of the new text by TextRank. Output schema:
//! `{"method": "textrank", "sentences": [str], "selected": [int], "sentence_count": int}`,
//! `selected` being the 0-based positions of the chosen sentences among the content sentences.
//!
//! Greetings and sign-offs are left out before ranking (unless nothing else is there). Keeps ⌈n/4⌉ sentences, between 1 and 3;
//! texts of up to 2 content sentences are returned whole. At most 200 sentences are ranked.

use serde::{Deserialize, Serialize};

use super::TextInput;
use crate::agents::text::{is_pleasantry, sentences, textrank, top_k};
use crate::agents::{LocalAgent, TaskContext};

const MAX_RANKED: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryOutput {
    pub method: String,
    pub sentences: Vec<String>,
    pub selected: Vec<usize>,
    pub sentence_count: usize,
}

pub struct Summarize;

/// Summarizes `text` into at most `max` sentences.
pub fn summarize(text: &str, max: usize) -> SummaryOutput {
    let all = sentences(text);
    let mut content: Vec<String> =
        all.iter().filter(|s| !is_pleasantry(s)).take(MAX_RANKED).cloned().collect();
    if content.is_empty() {
        // A reply that is only "Thanks!" is still what was said.
        content = all.into_iter().take(MAX_RANKED).collect();
    }
    let k = if content.len() <= 2 { content.len() } else { content.len().div_ceil(4).clamp(1, max) };
    let selected = top_k(&textrank(&content), k);
    SummaryOutput {
        method: "textrank".into(),
        sentences: selected.iter().map(|&i| content[i].clone()).collect(),
        selected,
        sentence_count: content.len(),
    }
}

impl LocalAgent for Summarize {
    const NAME: &'static str = "summarize";
    const TITLE: &'static str = "Summary";
    type Input = TextInput;
    type Output = SummaryOutput;

    fn input(&self, task: &TaskContext<'_>) -> TextInput {
        TextInput::from_task(task)
    }

    fn run(&self, input: TextInput) -> SummaryOutput {
        summarize(&input.text, 3)
    }

    fn describe(&self, o: &SummaryOutput) -> Vec<String> {
        if o.sentences.is_empty() {
            return vec!["(no text to summarize)".into()];
        }
        let mut lines = o.sentences.clone();
        lines.push(format!("({} of {} sentences, chosen by TextRank)", o.sentences.len(), o.sentence_count));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_central_sentences_not_the_first_ones() {
        let text = "Hi team,\n\nI had a nice weekend. The database migration moved to Tuesday. \
            The migration needs a fresh database backup. Backup and migration scripts are in the repo. \
            My cat says hello. The migration window is two hours on the database cluster. Lunch was good. \
            Coffee machine is broken.\n\nThanks,\nAnna";
        let o = summarize(text, 3);
        assert_eq!(o.sentence_count, 8);
        assert_eq!(o.sentences.len(), 2);
        assert!(
            o.sentences.iter().all(|s| s.contains("migration") || s.contains("atabase")),
            "{:?}",
            o.sentences
        );
        assert!(!o.sentences.iter().any(|s| s.contains("weekend")));
    }

    #[test]
    fn short_texts_come_back_whole_without_pleasantries() {
        let o = summarize("Hello Bob,\nThe build is green.\nThanks,\nAnna", 3);
        assert_eq!(o.sentences, vec!["The build is green."]);
    }

    #[test]
    fn a_reply_of_only_pleasantries_is_kept() {
        assert_eq!(summarize("Hello", 3).sentences, vec!["Hello"]);
    }

    #[test]
    fn empty_text_gives_an_empty_summary() {
        assert_eq!(summarize("", 3).sentences.len(), 0);
    }
}
