//! Which workflow a message gets: routing rules (plus address, subject tag, keywords, sender
//! domain; the first match wins), else the director (an LLM agent that chooses when the task
//! runs), else the default. The decision is typed and stored as such with the task.

use std::collections::HashSet;

use anyhow::Result;
use serde_json::Value;

use super::stage::{Job, TaskState, run_recorded};
use super::{Orchestrator, STEP_TIMEOUT};
use crate::domain::{EmailAddress, InboundEmail, Routing};

/// One routing condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// `bot+<tag>@our-domain` among To and Cc.
    PlusAddress(String),
    /// The subject contains this text (case-insensitive).
    SubjectTag(String),
    /// Any of these whole words in the subject or new text.
    Keywords(Vec<String>),
    /// The sender's domain.
    SenderDomain(String),
}

/// A rule and the workflow it sends to.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub workflow: String,
    pub rule: Rule,
}

/// Picks a workflow for a message: the first matching rule, else the director (when enabled),
/// else the default.
#[derive(Debug, Clone)]
pub struct Router {
    pub routes: Vec<Route>,
    pub default: String,
    pub director: bool,
}

/// What the router decided for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A rule matched: its workflow, and which rule (`plus address bot+billing@…`).
    Rule { workflow: String, why: String },
    /// No rule matched and no director: the default workflow.
    Default { workflow: String },
    /// No rule matched: the director chooses when the task runs; `fallback` if it cannot.
    AskDirector { fallback: String },
}

impl Decision {
    /// The workflow stored with the task (for [`Decision::AskDirector`], the one it runs if
    /// the director cannot choose).
    pub fn workflow(&self) -> &str {
        match self {
            Self::Rule { workflow, .. } | Self::Default { workflow } => workflow,
            Self::AskDirector { fallback } => fallback,
        }
    }

    /// How the workflow was chosen, as stored.
    pub fn routing(&self) -> Routing {
        match self {
            Self::Rule { .. } => Routing::Rule,
            Self::Default { .. } => Routing::Default,
            Self::AskDirector { .. } => Routing::AskDirector,
        }
    }

    /// Why, in words, for the audit log.
    pub fn why(&self) -> String {
        match self {
            Self::Rule { why, .. } => why.clone(),
            Self::Default { .. } => "no rule matched: default workflow".into(),
            Self::AskDirector { .. } => "no rule matched: the director chooses".into(),
        }
    }
}

impl Router {
    pub fn route(&self, email: &InboundEmail, own: &EmailAddress) -> Decision {
        for route in &self.routes {
            if let Some(why) = route.rule.matches(email, own) {
                return Decision::Rule { workflow: route.workflow.clone(), why };
            }
        }
        if self.director {
            Decision::AskDirector { fallback: self.default.clone() }
        } else {
            Decision::Default { workflow: self.default.clone() }
        }
    }
}

impl Rule {
    fn matches(&self, email: &InboundEmail, own: &EmailAddress) -> Option<String> {
        match self {
            Rule::PlusAddress(tag) => email.to.iter().chain(&email.cc).find_map(|address| {
                let (base, plus) = address.local_part().split_once('+')?;
                (base.eq_ignore_ascii_case(own.local_part())
                    && address.domain().eq_ignore_ascii_case(own.domain())
                    && plus.eq_ignore_ascii_case(tag))
                .then(|| format!("plus address {address}"))
            }),
            Rule::SubjectTag(tag) => email
                .subject
                .to_lowercase()
                .contains(&tag.to_lowercase())
                .then(|| format!("subject tag {tag}")),
            Rule::Keywords(words) => {
                let text = format!("{} {}", email.subject, email.new_text).to_lowercase();
                let tokens: HashSet<&str> = text.split(|c: char| !c.is_alphanumeric()).collect();
                words
                    .iter()
                    .find(|w| tokens.contains(w.to_lowercase().as_str()))
                    .map(|w| format!("keyword {w:?}"))
            }
            Rule::SenderDomain(domain) => {
                let from = email.sender()?;
                from.domain().eq_ignore_ascii_case(domain).then(|| format!("sender domain {domain}"))
            }
        }
    }
}

impl Orchestrator {
    /// Asks the director which workflow fits (recorded as the task's first step): its choice
    /// when it names a workflow, else the default. Returns the workflow and why; what the call
    /// cost is added to the task's spending.
    pub(super) async fn direct(&self, state: &mut TaskState) -> Result<(String, String)> {
        let default = self.default_workflow().to_owned();
        let Some(director) = &self.director else {
            return Ok((default, "no director configured: default workflow".into()));
        };
        let job = Job {
            agent: director.clone(),
            input: director.input(&state.ctx()),
            timeout: STEP_TIMEOUT,
            retries: 0,
            refused: None,
        };
        let run = run_recorded(&self.store, state, std::slice::from_ref(&job)).await?.remove(0);
        if let Some(usage) = &run.usage {
            state.spent.add(usage);
        }
        let choice = run.outcome.as_ref().ok().and_then(|v| {
            let name = v.get("workflow")?.as_str()?;
            let reason = v.get("reason").and_then(Value::as_str).unwrap_or_default();
            Some((name.to_owned(), reason.to_owned()))
        });
        Ok(match (choice, &run.outcome) {
            (Some((name, reason)), _) if self.workflows.iter().any(|w| w.name == name) => {
                (name, format!("director: {reason}"))
            }
            (Some((name, _)), _) => {
                (default, format!("the director chose an unknown workflow {name:?}: default"))
            }
            (None, Err(e)) => (default, format!("the director failed ({e}): default")),
            (None, Ok(_)) => (default, "the director named no workflow: default".into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Mailbox;

    fn email(to: &str, subject: &str, text: &str, from: &str) -> InboundEmail {
        InboundEmail {
            message_id: None,
            from: Some(Mailbox { name: None, address: EmailAddress::parse(from).expect("address") }),
            reply_to: None,
            to: vec![EmailAddress::parse(to).expect("address")],
            cc: vec![],
            subject: subject.into(),
            date: None,
            in_reply_to: vec![],
            references: vec![],
            body_text: text.into(),
            new_text: text.into(),
            from_html: false,
            attachments: vec![],
            metadata: None,
        }
    }

    #[test]
    fn rules_match_plus_addresses_tags_keywords_and_domains() {
        let own = EmailAddress::parse("bot@ours.example").expect("address");
        let router = Router {
            routes: vec![
                Route { workflow: "plus".into(), rule: Rule::PlusAddress("sales".into()) },
                Route { workflow: "tag".into(), rule: Rule::SubjectTag("[Legal]".into()) },
                Route { workflow: "words".into(), rule: Rule::Keywords(vec!["refund".into()]) },
                Route { workflow: "domain".into(), rule: Rule::SenderDomain("partner.example".into()) },
            ],
            default: "default".into(),
            director: false,
        };
        let pick = |e: InboundEmail| router.route(&e, &own).workflow().to_owned();
        assert_eq!(pick(email("BOT+Sales@ours.example", "x", "", "a@b.example")), "plus");
        assert_eq!(pick(email("bot+sales@other.example", "x", "", "a@b.example")), "default");
        assert_eq!(pick(email("bot@ours.example", "re: [legal] contract", "", "a@b.example")), "tag");
        assert_eq!(pick(email("bot@ours.example", "x", "I want a Refund.", "a@b.example")), "words");
        assert_eq!(pick(email("bot@ours.example", "x", "refunds", "a@b.example")), "default", "whole words");
        assert_eq!(pick(email("bot@ours.example", "x", "", "a@Partner.example")), "domain");
        assert_eq!(
            router.route(&email("BOT+Sales@ours.example", "x", "", "a@b.example"), &own),
            Decision::Rule { workflow: "plus".into(), why: "plus address BOT+Sales@ours.example".into() }
        );
        let director = Router { director: true, ..router.clone() };
        let decision = director.route(&email("bot@ours.example", "x", "", "a@b.example"), &own);
        assert_eq!(decision, Decision::AskDirector { fallback: "default".into() });
        assert_eq!((decision.routing(), decision.workflow()), (Routing::AskDirector, "default"));
    }
}
