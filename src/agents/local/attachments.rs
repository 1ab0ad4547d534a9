//! `attachments`: what came attached. Output schema:
//! `{"count": int, "total_bytes": int, "attachments": [{"name": str|null, "content_type": str,
//! "size_bytes": int, "summary": [str]|null}]}`; text attachments get a 2-sentence TextRank summary.

use serde::{Deserialize, Serialize};

use super::summarize::summarize;
use crate::agents::{LocalAgent, TaskContext};
use crate::domain::Attachment;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentInfo {
    pub name: Option<String>,
    pub content_type: String,
    pub size_bytes: usize,
    pub summary: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentsOutput {
    pub count: usize,
    pub total_bytes: usize,
    pub attachments: Vec<AttachmentInfo>,
}

pub struct Attachments;

/// Sizes for people: `512 B`, `12.3 KB`, `4.5 MB` (powers of 1024).
pub fn human_size(bytes: usize) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KB", b as f64 / 1024.0),
        b => format!("{:.1} MB", b as f64 / (1024.0 * 1024.0)),
    }
}

impl LocalAgent for Attachments {
    const NAME: &'static str = "attachments";
    const TITLE: &'static str = "Attachments";
    type Input = Vec<Attachment>;
    type Output = AttachmentsOutput;

    fn input(&self, task: &TaskContext<'_>) -> Vec<Attachment> {
        task.email.attachments.clone()
    }

    fn run(&self, input: Vec<Attachment>) -> AttachmentsOutput {
        let attachments: Vec<AttachmentInfo> = input
            .into_iter()
            .map(|a| AttachmentInfo {
                summary: a.text.as_deref().map(|t| summarize(t, 2).sentences).filter(|s| !s.is_empty()),
                name: a.name,
                content_type: a.content_type,
                size_bytes: a.size_bytes,
            })
            .collect();
        AttachmentsOutput {
            count: attachments.len(),
            total_bytes: attachments.iter().map(|a| a.size_bytes).sum(),
            attachments,
        }
    }

    fn describe(&self, o: &AttachmentsOutput) -> Vec<String> {
        if o.attachments.is_empty() {
            return vec!["No attachments.".into()];
        }
        o.attachments
            .iter()
            .map(|a| {
                let name = a.name.as_deref().unwrap_or("(unnamed)");
                let mut line = format!("{name} ({}, {})", a.content_type, human_size(a.size_bytes));
                if let Some(s) = &a.summary {
                    line.push_str(": ");
                    line.push_str(&s.join(" "));
                }
                line
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_attachments_are_summarized_binary_ones_listed() {
        let out = Attachments.run(vec![
            Attachment {
                name: Some("notes.txt".into()),
                content_type: "text/plain".into(),
                size_bytes: 40,
                text: Some("The deploy failed twice. Deploy logs are attached.".into()),
            },
            Attachment {
                name: Some("photo.png".into()),
                content_type: "image/png".into(),
                size_bytes: 2048,
                text: None,
            },
        ]);
        assert_eq!(out.count, 2);
        assert_eq!(out.total_bytes, 2088);
        assert!(out.attachments[0].summary.as_ref().is_some_and(|s| !s.is_empty()));
        assert_eq!(out.attachments[1].summary, None);
        assert_eq!(human_size(2048), "2.0 KB");
    }
}
