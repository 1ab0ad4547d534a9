//! What model calls cost, as steps record it and budgets check it.

/// What a model call cost: recorded with the step, summed per task, checked against budgets.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Usage {
    pub model: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// USD, when the model has a price (`LLM_PRICES`).
    pub cost_usd: Option<f64>,
    /// HTTP calls, retries included.
    pub calls: u32,
}
