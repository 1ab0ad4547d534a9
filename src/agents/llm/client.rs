//! A client for an OpenAI-compatible Chat Completions endpoint (`POST {LLM_BASE_URL}/chat/completions`:
//! OpenAI, OpenRouter, Ollama, vLLM, LM Studio, ...), with a timeout per call, retries with
//! exponential backoff and jitter on 429, 5xx, timeouts and connection errors (honouring
//! `Retry-After`, RFC 9110 §10.2.3), and a circuit breaker for the endpoint.
//!
//! Wire format: request `{"model", "messages": [{"role", "content"}], "response_format":
//! {"type": "json_object"}?}`; response `{"choices": [{"message": {"content"}}], "usage":
//! {"prompt_tokens", "completion_tokens"}}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::breaker::{Breaker, BreakerState};

/// Longest `Retry-After` we wait for; a server asking for more gets the step's fallback instead.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How to reach the endpoint and how hard to try.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    /// The API base including its version path, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Option<SecretString>,
    /// Model for steps that name none.
    pub model: String,
    /// Per-role model (`LLM_AGENT_MODELS`, role name → model), for steps that name none;
    /// ahead of `model`.
    pub agent_models: HashMap<String, String>,
    /// Per HTTP call.
    pub timeout: Duration,
    /// Retries after the first call (so `retries + 1` calls at most).
    pub retries: usize,
    /// First backoff delay; doubled per retry, with jitter.
    pub backoff: Duration,
    /// Consecutive failed calls that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call is let through.
    pub breaker_cooldown: Duration,
    /// USD per million prompt and completion tokens, by model (`LLM_PRICES`).
    pub prices: HashMap<String, (f64, f64)>,
}

/// One chat message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: &'static str,
    pub content: String,
}

/// What a call returned.
#[derive(Debug, Clone)]
pub struct Completion {
    pub content: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// From `LLM_PRICES`; `None` when the model has no price.
    pub cost_usd: Option<f64>,
    /// HTTP calls made, retries included.
    pub calls: u32,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("circuit breaker open for {0} after repeated failures")]
    Open(String),
    #[error("HTTP {status}: {message}")]
    Status { status: u16, message: String, retry_after: Option<Duration> },
    #[error("no answer within {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("cannot reach the endpoint: {0}")]
    Connect(String),
    #[error("the response is not a chat completion: {0}")]
    Malformed(String),
}

impl LlmError {
    /// Worth another try: rate limited, server error, timeout, connection failure.
    pub fn transient(&self) -> bool {
        match self {
            LlmError::Status { status, .. } => *status == 429 || *status >= 500,
            LlmError::Timeout(_) | LlmError::Connect(_) => true,
            LlmError::Open(_) | LlmError::Malformed(_) => false,
        }
    }

    /// Counts against the endpoint's health (the breaker): transient failures and answers that
    /// are not chat completions; a 4xx for our request does not.
    fn endpoint_failure(&self) -> bool {
        self.transient() || matches!(self, LlmError::Malformed(_))
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            LlmError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat>,
}

#[derive(Serialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Deserialize)]
struct Response {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<UsageField>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    message: MessageField,
}

#[derive(Deserialize)]
struct MessageField {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct UsageField {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// The endpoint: shared by every LLM step, so its breaker sees every call.
#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    settings: Arc<LlmSettings>,
    breaker: Arc<Breaker>,
}

impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient").field("base_url", &self.settings.base_url).finish_non_exhaustive()
    }
}

impl LlmClient {
    /// A client whose circuit breaker tells time by `clock`.
    ///
    /// Errors: the HTTP client cannot be built (TLS roots).
    pub fn new(settings: LlmSettings, clock: Arc<dyn crate::domain::Clock>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("swarm-director/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let breaker = Arc::new(Breaker::new(settings.breaker_failures, settings.breaker_cooldown, clock));
        Ok(Self { http, settings: Arc::new(settings), breaker })
    }

    pub fn settings(&self) -> &LlmSettings {
        &self.settings
    }

    /// The breaker's state, for the status page and tests.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// USD for these token counts of `model`, when it has a price.
    pub fn cost(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) -> Option<f64> {
        let (input, output) = self.settings.prices.get(model)?;
        Some((prompt_tokens as f64 * input + completion_tokens as f64 * output) / 1_000_000.0)
    }

    /// One chat completion, retried per the settings. `json` asks for a JSON object
    /// (`response_format`); the caller still has to parse what comes back.
    ///
    /// Errors: [`LlmError::Open`] at once while the breaker is open; otherwise the last call's
    /// error once retries are used up or the error is not transient.
    pub async fn chat(
        &self,
        model: &str,
        messages: &[ChatMessage],
        json: bool,
    ) -> Result<Completion, LlmError> {
        let mut calls = 0u32;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.backoff)
            .with_max_delay(MAX_RETRY_AFTER)
            .with_max_times(self.settings.retries)
            .with_jitter();
        let result = (|| {
            calls += 1;
            self.call_once(model, messages, json)
        })
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(LlmError::transient)
        // A Retry-After within bounds replaces the computed delay; a longer one ends the retries.
        .adjust(|e, delay| match e.retry_after() {
            Some(wait) if wait > MAX_RETRY_AFTER => None,
            Some(wait) => delay.map(|_| wait),
            None => delay,
        })
        .await;
        result.map(|mut c| {
            c.calls = calls;
            c
        })
    }

    async fn call_once(
        &self,
        model: &str,
        messages: &[ChatMessage],
        json: bool,
    ) -> Result<Completion, LlmError> {
        let permit =
            self.breaker.try_acquire().ok_or_else(|| LlmError::Open(self.settings.base_url.clone()))?;
        let outcome = self.post(model, messages, json).await;
        let word = if outcome.is_ok() { "ok" } else { "error" };
        metrics::counter!("swarm_llm_calls_total", "model" => model.to_owned(), "outcome" => word)
            .increment(1);
        permit.finish(match &outcome {
            Ok(_) => true,
            Err(e) => !e.endpoint_failure(),
        });
        outcome
    }

    async fn post(&self, model: &str, messages: &[ChatMessage], json: bool) -> Result<Completion, LlmError> {
        let url = format!("{}/chat/completions", self.settings.base_url.trim_end_matches('/'));
        let body = Request {
            model,
            messages,
            response_format: json.then_some(ResponseFormat { kind: "json_object" }),
        };
        let mut request = self.http.post(&url).json(&body).timeout(self.settings.timeout);
        if let Some(key) = &self.settings.api_key {
            request = request.bearer_auth(key.expose_secret());
        }
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = response.text().await.unwrap_or_default();
            return Err(LlmError::Status {
                status: status.as_u16(),
                message: error_message(&text),
                retry_after,
            });
        }
        let bytes = response.bytes().await.map_err(|e| self.transport_error(e))?;
        let parsed: Response =
            serde_json::from_slice(&bytes).map_err(|e| LlmError::Malformed(e.to_string()))?;
        let content = parsed
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| LlmError::Malformed("no choices[0].message.content".into()))?;
        let usage = parsed.usage.unwrap_or(UsageField { prompt_tokens: 0, completion_tokens: 0 });
        let requested = model;
        let model = parsed.model.filter(|m| !m.is_empty()).unwrap_or_else(|| model.to_owned());
        Ok(Completion {
            // Servers answer with the exact version (`gpt-4o-mini-2024-07-18`) of the model asked
            // for (`gpt-4o-mini`): a price for either counts.
            cost_usd: self
                .cost(&model, usage.prompt_tokens, usage.completion_tokens)
                .or_else(|| self.cost(requested, usage.prompt_tokens, usage.completion_tokens)),
            content,
            model,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            calls: 1,
        })
    }

    fn transport_error(&self, e: reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(self.settings.timeout)
        } else {
            // The URL is ours and holds no secret; the API key travels in a header.
            LlmError::Connect(e.without_url().to_string())
        }
    }
}

/// The server's `{"error": {"message": ...}}`, else the start of its body (one line, 200 chars).
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: ErrorField,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ErrorField {
        Object { message: String },
        Text(String),
    }
    let text = match serde_json::from_str::<Envelope>(body) {
        Ok(Envelope { error: ErrorField::Object { message } | ErrorField::Text(message) }) => message,
        Err(_) => body.to_owned(),
    };
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_the_error_envelope() {
        assert_eq!(
            error_message(r#"{"error":{"message":"Rate limit reached","type":"x"}}"#),
            "Rate limit reached"
        );
        assert_eq!(error_message(r#"{"error":"model not found"}"#), "model not found");
        assert_eq!(error_message("<html>\n502 Bad Gateway\n</html>"), "<html> 502 Bad Gateway </html>");
    }

    #[test]
    fn transient_errors_are_retried_and_count_against_the_endpoint() {
        let status = |s: u16| LlmError::Status { status: s, message: String::new(), retry_after: None };
        assert!(status(429).transient() && status(500).transient() && status(503).transient());
        assert!(!status(400).transient() && !status(401).transient());
        assert!(!status(400).endpoint_failure());
        assert!(LlmError::Malformed("x".into()).endpoint_failure());
        assert!(!LlmError::Malformed("x".into()).transient());
        assert!(!LlmError::Open("x".into()).transient());
    }
}
