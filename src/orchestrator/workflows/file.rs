//! The workflows file: its TOML schema and the reader that checks it and builds the catalogue.
//! Every error names the file, the line and the problem.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde::Deserialize;
use toml::Spanned;

use super::{Catalogue, Llm};
use crate::agents::llm::{LlmAgent, Role};
use crate::agents::{Agent, local_agents};
use crate::orchestrator::routing::{Route, Router, Rule};
use crate::orchestrator::{STEP_TIMEOUT, Step, Workflow};

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

/// Parses a workflows file's `text`; `file` names it in errors.
pub fn parse(text: &str, file: &str, llm: Option<&Llm>) -> Result<Catalogue> {
    let reader = Reader { text, file, llm, local: local_agents() };
    let doc: FileDoc = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| reader.at(s)).unwrap_or_else(|| file.to_owned());
        anyhow!("{line}: {}", e.message())
    })?;
    if doc.workflow.is_empty() {
        bail!("{file}: no [workflow.<name>] table");
    }
    let mut workflows =
        doc.workflow.iter().map(|(name, flow)| reader.workflow(name, flow)).collect::<Result<Vec<_>>>()?;
    // The default comes first: the orchestrator's default is its first workflow.
    let default = match &doc.default {
        Some(d) => reader.known(&doc, d)?,
        None => workflows[0].name.clone(),
    };
    if let Some(i) = workflows.iter().position(|w| w.name == default) {
        let first = workflows.remove(i);
        workflows.insert(0, first);
    }
    let routes = doc.route.iter().map(|r| reader.route(&doc, r)).collect::<Result<Vec<_>>>()?;
    let director_wanted = doc.director.unwrap_or(llm.is_some());
    if director_wanted && llm.is_none() {
        bail!("{file}: director = true needs an LLM, and LLM_BASE_URL is not set");
    }
    let director: Option<Arc<dyn Agent>> = llm.filter(|_| director_wanted).map(|llm| {
        Arc::new(LlmAgent::new(Role::Director, None, None, llm.client.clone(), llm.prompts.clone())) as _
    });
    Ok(Catalogue { workflows, router: Router { routes, default, director: director.is_some() }, director })
}

/// Reads one file: its text (for line numbers), its name, the LLM and the local agents.
struct Reader<'a> {
    text: &'a str,
    file: &'a str,
    llm: Option<&'a Llm>,
    local: BTreeMap<&'static str, Arc<dyn Agent>>,
}

impl Reader<'_> {
    /// `file:line` of a byte span.
    fn at(&self, span: Range<usize>) -> String {
        let before = self.text.get(..span.start).unwrap_or(self.text);
        format!("{}:{}", self.file, before.matches('\n').count() + 1)
    }

    fn local_agent(&self, name: &Spanned<String>) -> Result<Arc<dyn Agent>> {
        self.local.get(name.get_ref().as_str()).cloned().ok_or_else(|| {
            let known: Vec<&str> = self.local.keys().copied().collect();
            anyhow!(
                "{}: unknown local agent {:?} (known: {})",
                self.at(name.span()),
                name.get_ref(),
                known.join(", ")
            )
        })
    }

    /// A workflow name that the file defines.
    fn known(&self, doc: &FileDoc, w: &Spanned<String>) -> Result<String> {
        if doc.workflow.keys().any(|k| k.get_ref() == w.get_ref()) {
            Ok(w.get_ref().clone())
        } else {
            bail!("{}: unknown workflow {:?}", self.at(w.span()), w.get_ref())
        }
    }

    /// One `[workflow.<name>]`: its steps in stages (consecutive steps of one group together).
    fn workflow(&self, name: &Spanned<String>, flow: &FileWorkflow) -> Result<Workflow> {
        let mut stages: Vec<Vec<Step>> = Vec::new();
        let mut last_group: Option<&str> = None;
        let mut seen = HashSet::new();
        for s in &flow.step {
            let agent_name = s.agent.get_ref().as_str();
            if !seen.insert(agent_name) {
                bail!(
                    "{}: agent {agent_name:?} appears twice in workflow {:?}",
                    self.at(s.agent.span()),
                    name.get_ref()
                );
            }
            let step = self.step(s)?;
            match (s.group.as_deref(), last_group, stages.last_mut()) {
                (Some(g), Some(last), Some(stage)) if g == last => stage.push(step),
                _ => stages.push(vec![step]),
            }
            last_group = s.group.as_deref();
        }
        if stages.is_empty() {
            let n = name.get_ref();
            bail!("{}: workflow {n:?} has no [[workflow.{n}.step]]", self.at(name.span()));
        }
        let summary_agent = match &flow.summary {
            Some(summary) if seen.contains(summary.get_ref().as_str()) => summary.get_ref().clone(),
            Some(summary) => bail!(
                "{}: summary {:?} is not a step of workflow {:?}",
                self.at(summary.span()),
                summary.get_ref(),
                name.get_ref()
            ),
            None => String::new(),
        };
        Ok(Workflow {
            name: name.get_ref().clone(),
            description: flow.description.clone(),
            stages,
            summary_agent,
        })
    }

    /// One `[[workflow.<name>.step]]`: a local agent or an LLM role, its limits and fallback.
    fn step(&self, s: &FileStep) -> Result<Step> {
        let agent_name = s.agent.get_ref().as_str();
        let agent: Arc<dyn Agent> = match (Role::parse(agent_name), self.llm) {
            (Some(role), Some(llm)) => {
                if let Some(p) = &s.prompt
                    && !llm.prompts.has(p.get_ref())
                {
                    bail!(
                        "{}: unknown prompt template {:?} (templates/prompts/)",
                        self.at(p.span()),
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
            (Some(_), None) => {
                bail!(
                    "{}: agent {agent_name:?} needs an LLM, and LLM_BASE_URL is not set",
                    self.at(s.agent.span())
                )
            }
            (None, _) => {
                if let Some(p) = &s.prompt {
                    bail!("{}: prompt is for LLM agents; {agent_name:?} is local", self.at(p.span()));
                }
                self.local_agent(&s.agent)?
            }
        };
        Ok(Step {
            agent,
            timeout: s.timeout_secs.map_or(STEP_TIMEOUT, Duration::from_secs),
            retries: s.retries.unwrap_or(0),
            fallback: s.fallback.as_ref().map(|f| self.local_agent(f)).transpose()?,
        })
    }

    /// One `[[route]]`: exactly one condition and a workflow the file defines.
    fn route(&self, doc: &FileDoc, r: &Spanned<FileRoute>) -> Result<Route> {
        let route = r.get_ref();
        let workflow = self.known(doc, &route.workflow)?;
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
        match <[Rule; 1]>::try_from(rules) {
            Ok([rule]) => Ok(Route { workflow, rule }),
            Err(_) => bail!(
                "{}: a [[route]] needs exactly one of plus_address, subject_tag, keywords, sender_domain",
                self.at(r.span())
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::llm::{LlmClient, Prompts};

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
}
