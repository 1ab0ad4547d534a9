//! The built-in catalogue, for when no workflows file is given.

use std::sync::Arc;

use super::{Catalogue, Llm};
use crate::agents::llm::{LlmAgent, Role};
use crate::agents::local_agents;
use crate::orchestrator::routing::Router;
use crate::orchestrator::{STEP_TIMEOUT, Step, Workflow};

/// The built-in catalogue. Without an LLM: `default` (the local agents). With one: `default`
/// (analyst and drafter beside the local triage, then the reviewer, then the LLM executive
/// summary; local agents stand in for failed LLM steps) and `local`; the director routes.
pub fn builtin(llm: Option<&Llm>) -> Catalogue {
    let local = local_agents();
    let agent = |name: &str| local.get(name).cloned().expect("built-in local agent");
    let local_flow = |name: &str| Workflow {
        name: name.to_owned(),
        description: "Local analysis: triage, summary, action items, attachments".into(),
        stages: vec![
            ["triage", "summarize", "action_items", "attachments"]
                .iter()
                .map(|n| Step::new(agent(n)))
                .collect(),
            vec![Step::new(agent("exec_summary"))],
        ],
        summary_agent: "exec_summary".into(),
    };
    let Some(llm) = llm else {
        return Catalogue {
            workflows: vec![local_flow("default")],
            router: Router { routes: vec![], default: "default".into(), director: false },
            director: None,
        };
    };
    let role = |role: Role, fallback: Option<&str>| Step {
        agent: Arc::new(LlmAgent::new(role, None, None, llm.client.clone(), llm.prompts.clone())),
        timeout: STEP_TIMEOUT,
        retries: 0,
        fallback: fallback.map(agent),
    };
    let default = Workflow {
        name: "default".into(),
        description: "Analysis and a drafted, reviewed reply, with an executive summary".into(),
        stages: vec![
            vec![
                role(Role::Analyst, Some("summarize")),
                role(Role::Drafter, None),
                Step::new(agent("triage")),
            ],
            vec![role(Role::Reviewer, None)],
            vec![role(Role::ExecSummary, Some("exec_summary"))],
        ],
        summary_agent: Role::ExecSummary.name().into(),
    };
    Catalogue {
        workflows: vec![default, local_flow("local")],
        router: Router { routes: vec![], default: "default".into(), director: true },
        director: Some(Arc::new(LlmAgent::new(
            Role::Director,
            None,
            None,
            llm.client.clone(),
            llm.prompts.clone(),
        ))),
    }
}
