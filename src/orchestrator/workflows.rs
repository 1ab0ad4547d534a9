//! Workflows and routing: the built-in ones, or a TOML file (`SWARM_WORKFLOWS`).
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

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;
use toml::Spanned;

use super::{STEP_TIMEOUT, Step, Workflow};
use crate::agents::llm::{LlmAgent, LlmClient, Prompts, Role};
use crate::agents::{Agent, local_agents};
use crate::domain::EmailAddress;
use crate::domain::InboundEmail;

/// The task workflow name that asks the orchestrator to let the director choose.
pub const DIRECTOR_ROUTED: &str = "(director)";

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

/// One routing condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    PlusAddress(String),
    SubjectTag(String),
    Keywords(Vec<String>),
    SenderDomain(String),
}

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

impl Router {
    /// The workflow name (or [`DIRECTOR_ROUTED`]) and why.
    pub fn route(&self, email: &InboundEmail, own: &EmailAddress) -> (String, String) {
        for route in &self.routes {
            if let Some(why) = route.rule.matches(email, own) {
                return (route.workflow.clone(), why);
            }
        }
        if self.director {
            (DIRECTOR_ROUTED.to_owned(), "no rule matched: the director chooses".into())
        } else {
            (self.default.clone(), "no rule matched: default workflow".into())
        }
    }
}

impl Rule {
    fn matches(&self, email: &InboundEmail, own: &EmailAddress) -> Option<String> {
        match self {
            Rule::PlusAddress(tag) => {
                let (own_local, own_domain) = own.as_str().rsplit_once('@')?;
                email.to.iter().chain(&email.cc).find_map(|address| {
                    let (local, domain) = (address.local_part(), address.domain());
                    let (base, plus) = local.split_once('+')?;
                    (base.eq_ignore_ascii_case(own_local)
                        && domain.eq_ignore_ascii_case(own_domain)
                        && plus.eq_ignore_ascii_case(tag))
                    .then(|| format!("plus address {address}"))
                })
            }
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
                let from = email.from.as_ref()?;
                from.address.domain().eq_ignore_ascii_case(domain).then(|| format!("sender domain {domain}"))
            }
        }
    }
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    default: Option<Spanned<String>>,
    director: Option<bool>,
    #[serde(default)]
    route: Vec<Spanned<FileRoute>>,
    #[serde(default)]
    workflow: BTreeMap<Spanned<String>, FileWorkflow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRoute {
    workflow: Spanned<String>,
    plus_address: Option<String>,
    subject_tag: Option<String>,
    keywords: Option<Vec<String>>,
    sender_domain: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWorkflow {
    #[serde(default)]
    description: String,
    summary: Option<Spanned<String>>,
    #[serde(default)]
    step: Vec<FileStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStep {
    agent: Spanned<String>,
    group: Option<String>,
    prompt: Option<Spanned<String>>,
    model: Option<String>,
    timeout_secs: Option<u64>,
    retries: Option<u32>,
    fallback: Option<Spanned<String>>,
}

/// Reads the workflows file at `path`. Errors: `path:line: problem` (syntax, unknown agent,
/// unknown prompt template, unknown workflow, duplicate agent in a workflow, LLM role without
/// an LLM configured).
pub fn load(path: &Path, llm: Option<&Llm>) -> Result<Catalogue> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    parse(&text, &path.display().to_string(), llm)
}

/// [`load`] on text; `file` names it in errors.
pub fn parse(text: &str, file: &str, llm: Option<&Llm>) -> Result<Catalogue> {
    let at = |span: std::ops::Range<usize>| {
        let before = text.get(..span.start).unwrap_or(text);
        format!("{file}:{}", before.matches('\n').count() + 1)
    };
    let doc: FileDoc = toml::from_str(text).map_err(|e| {
        let line = e.span().map(&at).unwrap_or_else(|| file.to_owned());
        anyhow::anyhow!("{line}: {}", e.message())
    })?;
    let local = local_agents();
    let local_agent = |name: &Spanned<String>| -> Result<Arc<dyn Agent>> {
        local.get(name.get_ref().as_str()).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "{}: unknown local agent {:?} (known: {})",
                at(name.span()),
                name.get_ref(),
                local.keys().copied().collect::<Vec<_>>().join(", ")
            )
        })
    };
    if doc.workflow.is_empty() {
        bail!("{file}: no [workflow.<name>] table");
    }
    let mut workflows = Vec::new();
    for (name, flow) in &doc.workflow {
        let mut stages: Vec<Vec<Step>> = Vec::new();
        let mut last_group: Option<&str> = None;
        let mut seen = HashSet::new();
        for s in &flow.step {
            let agent_name = s.agent.get_ref().as_str();
            if !seen.insert(agent_name) {
                bail!(
                    "{}: agent {agent_name:?} appears twice in workflow {:?}",
                    at(s.agent.span()),
                    name.get_ref()
                );
            }
            let agent: Arc<dyn Agent> = match (Role::parse(agent_name), llm) {
                (Some(role), Some(llm)) => {
                    if let Some(p) = &s.prompt
                        && !llm.prompts.has(p.get_ref())
                    {
                        bail!(
                            "{}: unknown prompt template {:?} (templates/prompts/)",
                            at(p.span()),
                            p.get_ref()
                        );
                    }
                    Arc::new(LlmAgent::new(
                        role,
                        s.model.clone(),
                        s.prompt.as_ref().map(|p| p.get_ref().clone()),
                        llm.client.clone(),
                        llm.prompts.clone(),
                    ))
                }
                (Some(_), None) => bail!(
                    "{}: agent {agent_name:?} needs an LLM, and LLM_BASE_URL is not set",
                    at(s.agent.span())
                ),
                (None, _) => {
                    if let Some(p) = &s.prompt {
                        bail!("{}: prompt is for LLM agents; {agent_name:?} is local", at(p.span()));
                    }
                    local_agent(&s.agent)?
                }
            };
            let fallback = s.fallback.as_ref().map(local_agent).transpose()?;
            let step = Step {
                agent,
                timeout: s.timeout_secs.map_or(STEP_TIMEOUT, Duration::from_secs),
                retries: s.retries.unwrap_or(0),
                fallback,
            };
            match (s.group.as_deref(), last_group, stages.last_mut()) {
                (Some(g), Some(last), Some(stage)) if g == last => stage.push(step),
                _ => stages.push(vec![step]),
            }
            last_group = s.group.as_deref();
        }
        if stages.is_empty() {
            bail!(
                "{}: workflow {:?} has no [[workflow.{}.step]]",
                at(name.span()),
                name.get_ref(),
                name.get_ref()
            );
        }
        let summary_agent = match &flow.summary {
            Some(summary) if seen.contains(summary.get_ref().as_str()) => summary.get_ref().clone(),
            Some(summary) => bail!(
                "{}: summary {:?} is not a step of workflow {:?}",
                at(summary.span()),
                summary.get_ref(),
                name.get_ref()
            ),
            None => String::new(),
        };
        workflows.push(Workflow {
            name: name.get_ref().clone(),
            description: flow.description.clone(),
            stages,
            summary_agent,
        });
    }
    let known = |w: &Spanned<String>| -> Result<String> {
        if doc.workflow.keys().any(|k| k.get_ref() == w.get_ref()) {
            Ok(w.get_ref().clone())
        } else {
            bail!("{}: unknown workflow {:?}", at(w.span()), w.get_ref())
        }
    };
    // The default comes first: the orchestrator's default is its first workflow.
    let default = match &doc.default {
        Some(d) => known(d)?,
        None => workflows[0].name.clone(),
    };
    if let Some(i) = workflows.iter().position(|w| w.name == default) {
        let first = workflows.remove(i);
        workflows.insert(0, first);
    }
    let mut routes = Vec::new();
    for r in &doc.route {
        let route = r.get_ref();
        let workflow = known(&route.workflow)?;
        let mut rules = Vec::new();
        if let Some(tag) = &route.plus_address {
            rules.push(Rule::PlusAddress(tag.clone()));
        }
        if let Some(tag) = &route.subject_tag {
            rules.push(Rule::SubjectTag(tag.clone()));
        }
        if let Some(words) = &route.keywords {
            rules.push(Rule::Keywords(words.clone()));
        }
        if let Some(domain) = &route.sender_domain {
            rules.push(Rule::SenderDomain(domain.clone()));
        }
        if rules.len() != 1 {
            bail!(
                "{}: a [[route]] needs exactly one of plus_address, subject_tag, keywords, sender_domain",
                at(r.span())
            );
        }
        routes.extend(rules.into_iter().map(|rule| Route { workflow: workflow.clone(), rule }));
    }
    let director_wanted = doc.director.unwrap_or(llm.is_some());
    if director_wanted && llm.is_none() {
        bail!("{file}: director = true needs an LLM, and LLM_BASE_URL is not set");
    }
    let director: Option<Arc<dyn Agent>> = llm.filter(|_| director_wanted).map(|llm| {
        Arc::new(LlmAgent::new(Role::Director, None, None, llm.client.clone(), llm.prompts.clone())) as _
    });
    Ok(Catalogue { workflows, router: Router { routes, default, director: director.is_some() }, director })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn llm() -> Llm {
        let settings = crate::agents::llm::LlmSettings {
            base_url: "http://127.0.0.1:9/v1".into(),
            api_key: None,
            model: "m".into(),
            agent_models: Default::default(),
            timeout: Duration::from_secs(1),
            retries: 0,
            backoff: Duration::from_millis(1),
            breaker_failures: 1,
            breaker_cooldown: Duration::from_secs(1),
            prices: Default::default(),
        };
        Llm {
            client: LlmClient::new(settings, Arc::new(crate::domain::SystemClock)).expect("client"),
            prompts: Arc::new(Prompts::load(Path::new("/nonexistent")).expect("prompts")),
        }
    }

    fn error(text: &str, llm: Option<&Llm>) -> String {
        match parse(text, "flows.toml", llm) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => format!("{e:#}"),
        }
    }

    const STEP: &str = "[workflow.a]\n[[workflow.a.step]]\nagent = \"triage\"\n";

    #[test]
    fn errors_name_the_file_the_line_and_the_problem() {
        let unknown = error("[workflow.a]\n\n[[workflow.a.step]]\nagent = \"triaje\"\n", None);
        assert!(unknown.starts_with("flows.toml:4: unknown local agent \"triaje\""), "{unknown}");
        let template = error(
            "[workflow.a]\n[[workflow.a.step]]\nagent = \"analyst\"\nprompt = \"nope.j2\"\n",
            Some(&llm()),
        );
        assert!(template.starts_with("flows.toml:4: unknown prompt template \"nope.j2\""), "{template}");
        let twice = error(&format!("{STEP}[[workflow.a.step]]\nagent = \"triage\"\n"), None);
        assert!(twice.starts_with("flows.toml:5: agent \"triage\" appears twice"), "{twice}");
        let dup = error(&format!("{STEP}[workflow.a]\n"), None);
        assert!(dup.starts_with("flows.toml:4:") && dup.contains("duplicate"), "{dup}");
        let route = error(&format!("[[route]]\nworkflow = \"b\"\nplus_address = \"x\"\n{STEP}"), None);
        assert!(route.starts_with("flows.toml:2: unknown workflow \"b\""), "{route}");
        let no_llm = error("[workflow.a]\n[[workflow.a.step]]\nagent = \"drafter\"\n", None);
        assert!(no_llm.contains("needs an LLM"), "{no_llm}");
        let syntax = error("[workflow.a\n", None);
        assert!(syntax.starts_with("flows.toml:1:"), "{syntax}");
        let field = error(&format!("{STEP}timeout = 3\n"), None);
        assert!(field.starts_with("flows.toml:4:") && field.contains("timeout"), "{field}");
    }

    #[test]
    fn groups_run_together_and_the_default_comes_first() {
        let text = "default = \"b\"\n\
            [workflow.a]\n[[workflow.a.step]]\nagent = \"triage\"\n\
            [workflow.b]\nsummary = \"exec_summary\"\n\
            [[workflow.b.step]]\nagent = \"triage\"\ngroup = \"g\"\n\
            [[workflow.b.step]]\nagent = \"summarize\"\ngroup = \"g\"\n\
            [[workflow.b.step]]\nagent = \"exec_summary\"\n";
        let catalogue = parse(text, "f", None).expect("valid");
        assert_eq!(catalogue.workflows[0].name, "b");
        let sizes: Vec<usize> = catalogue.workflows[0].stages.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1]);
        assert!(catalogue.director.is_none() && !catalogue.router.director);
    }

    fn email(to: &str, subject: &str, text: &str, from: &str) -> InboundEmail {
        InboundEmail {
            message_id: None,
            from: Some(crate::domain::Mailbox {
                name: None,
                address: EmailAddress::parse(from).expect("address"),
            }),
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
        let pick = |e: InboundEmail| router.route(&e, &own).0;
        assert_eq!(pick(email("BOT+Sales@ours.example", "x", "", "a@b.example")), "plus");
        assert_eq!(pick(email("bot+sales@other.example", "x", "", "a@b.example")), "default");
        assert_eq!(pick(email("bot@ours.example", "re: [legal] contract", "", "a@b.example")), "tag");
        assert_eq!(pick(email("bot@ours.example", "x", "I want a Refund.", "a@b.example")), "words");
        assert_eq!(pick(email("bot@ours.example", "x", "refunds", "a@b.example")), "default", "whole words");
        assert_eq!(pick(email("bot@ours.example", "x", "", "a@Partner.example")), "domain");
        let director = Router { director: true, ..router.clone() };
        assert_eq!(
            director.route(&email("bot@ours.example", "x", "", "a@b.example"), &own).0,
            DIRECTOR_ROUTED
        );
    }
}
