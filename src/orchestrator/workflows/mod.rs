//! Workflows and routing: the built-in ones ([`builtin`]), or a TOML file (`SWARM_WORKFLOWS`,
//! read by [`load`]).
//!
//! ```toml
//! default = "general"          # the workflow when no rule matches (else the first one)
//! director = true              # let the LLM director choose when no rule matches (needs an LLM)
//!
//! [[route]]                    # rules, first match wins; each names one condition
//! workflow = "billing"
//! plus_address = "billing"     # mail to bot+billing@ our domain
//! [[route]]
//! workflow = "billing"
//! subject_tag = "[billing]"    # in the subject, any case
//! [[route]]
//! workflow = "billing"
//! keywords = ["invoice", "refund"]   # any of them in the subject or new text, as words
//! [[route]]
//! workflow = "partners"
//! sender_domain = "partner.example"
//!
//! [workflow.billing]
//! description = "Invoices and refunds"
//! summary = "llm_exec_summary" # the step whose output leads the reply
//! [[workflow.billing.step]]
//! agent = "analyst"            # a local agent or an LLM role
//! group = "look"               # consecutive steps of one group run in parallel
//! prompt = "analyst.j2"        # LLM roles: template under templates/prompts/
//! model = "gpt-4o-mini"        # LLM roles: overrides LLM_MODEL
//! timeout_secs = 30
//! retries = 1
//! fallback = "summarize"       # a local agent that stands in when this step fails
//! ```
//!
//! Everything is checked at start; an error names the file, the line and the problem.

mod builtin;
mod file;

use std::sync::Arc;

pub use builtin::builtin;
pub use file::{load, parse};

use super::Workflow;
use super::routing::Router;
use crate::agents::Agent;
use crate::agents::llm::{LlmClient, Prompts};

/// The LLM endpoint and prompts, when one is configured.
#[derive(Clone)]
pub struct Llm {
    pub client: LlmClient,
    pub prompts: Arc<Prompts>,
}

/// Workflows plus the rules that pick one for a message.
#[derive(Clone)]
pub struct Catalogue {
    pub workflows: Vec<Workflow>,
    pub router: Router,
    /// The director agent, when routing may fall to it.
    pub director: Option<Arc<dyn Agent>>,
}
