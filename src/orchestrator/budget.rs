//! Per-task limits on LLM spending and what a task has spent so far.

use crate::domain::Usage;

/// Per-task limits on LLM spending (`SWARM_TASK_BUDGET_TOKENS`, `SWARM_TASK_BUDGET_USD`): once
/// reached, further LLM steps do not run (their fallbacks do).
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    pub max_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
}

/// LLM spending of one task so far: tokens, USD, HTTP calls.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Spent {
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    pub llm_calls: u32,
}

impl Spent {
    pub fn add(&mut self, usage: &Usage) {
        self.tokens_in += usage.tokens_in;
        self.tokens_out += usage.tokens_out;
        self.cost_usd += usage.cost_usd.unwrap_or(0.0);
        self.llm_calls += usage.calls;
    }

    /// Why no further LLM step may run, if the budget is spent.
    pub fn exhausted(&self, budget: &Budget) -> Option<String> {
        let tokens = self.tokens_in + self.tokens_out;
        if let Some(max) = budget.max_tokens.filter(|max| tokens >= *max) {
            return Some(format!("task budget spent: {tokens} of {max} tokens"));
        }
        if let Some(max) = budget.max_cost_usd.filter(|max| self.cost_usd >= *max) {
            return Some(format!("task budget spent: ${:.4} of ${max:.4}", self.cost_usd));
        }
        None
    }
}

/// Adds `more` to `total`, keeping the first model's name.
pub fn merge(total: &mut Option<Usage>, more: Option<&Usage>) {
    let Some(more) = more else { return };
    let t = total.get_or_insert_with(|| Usage { model: more.model.clone(), ..Usage::default() });
    t.tokens_in += more.tokens_in;
    t.tokens_out += more.tokens_out;
    t.cost_usd = match (t.cost_usd, more.cost_usd) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
    };
    t.calls += more.calls;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_spent_by_tokens_or_by_cost() {
        let usage =
            Usage { model: "m".into(), tokens_in: 150, tokens_out: 50, cost_usd: Some(0.01), calls: 1 };
        let mut spent = Spent::default();
        spent.add(&usage);
        assert_eq!(spent.exhausted(&Budget::default()), None);
        let tokens = Budget { max_tokens: Some(200), max_cost_usd: None };
        assert_eq!(spent.exhausted(&tokens).as_deref(), Some("task budget spent: 200 of 200 tokens"));
        let cost = Budget { max_tokens: None, max_cost_usd: Some(0.02) };
        assert_eq!(spent.exhausted(&cost), None);
        spent.add(&usage);
        assert!(spent.exhausted(&cost).is_some_and(|why| why.contains("$0.0200 of $0.0200")));
    }
}
