//! A fake OpenAI-compatible server on 127.0.0.1 (axum, port 0) speaking the real Chat
//! Completions wire format: `POST /v1/chat/completions` in, `{"choices":[{"message":
//! {"content"}}],"usage":{...}}` out. Each test scripts it with a responder that sees the request
//! (and which LLM role sent it) and answers with content, an HTTP error, a delay or raw bytes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// What the fake answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this message content and token counts.
    Content { content: String, prompt_tokens: u64, completion_tokens: u64 },
    /// This status with an OpenAI-style error body, and `Retry-After` seconds when given.
    Status { status: u16, retry_after: Option<u64> },
    /// 200 with this body as is (not a chat completion).
    Raw(String),
    /// The reply after this delay.
    Slow(Duration, Box<Reply>),
}

impl Reply {
    pub fn json(value: Value) -> Self {
        Reply::Content { content: value.to_string(), prompt_tokens: 100, completion_tokens: 20 }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub role: String,
    pub body: Value,
    pub authorization: Option<String>,
}

type Responder = Arc<dyn Fn(&str, usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Shared {
    responder: Arc<Mutex<Responder>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

pub struct FakeLlm {
    pub addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

/// The LLM role that sent a request, from its system prompt.
pub fn role_of(body: &Value) -> String {
    let system = body["messages"][0]["content"].as_str().unwrap_or_default();
    let role = if system.contains("router of an email automation service") {
        "director"
    } else if system.contains("You are an analyst") {
        "analyst"
    } else if system.contains("You draft the reply") {
        "drafter"
    } else if system.contains("You review a draft reply") {
        "reviewer"
    } else if system.contains("executive summary") {
        "llm_exec_summary"
    } else {
        "unknown"
    };
    role.to_owned()
}

/// A well-formed answer for each role.
pub fn good_answer(role: &str) -> Reply {
    Reply::json(match role {
        "director" => json!({"workflow": "default", "reason": "a general request"}),
        "analyst" => {
            json!({"analysis": "Ann needs the Q3 numbers by Friday.", "key_points": ["deadline Friday"]})
        }
        "drafter" => json!({"draft": "Dear Ann,\nthe numbers follow by Friday.\nBest"}),
        "reviewer" => json!({"verdict": "approve", "issues": []}),
        "llm_exec_summary" => json!({"summary": ["LLM summary: Q3 numbers requested by Friday."]}),
        _ => json!({}),
    })
}

async fn completions(State(shared): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let role = role_of(&body);
    let n = {
        let mut seen = shared.seen.lock().expect("lock");
        seen.push(Seen {
            at: Instant::now(),
            role: role.clone(),
            body: body.clone(),
            authorization: headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned),
        });
        seen.iter().filter(|s| s.role == role).count()
    };
    let responder = shared.responder.lock().expect("lock").clone();
    let mut reply = responder(&role, n);
    loop {
        match reply {
            Reply::Slow(wait, next) => {
                tokio::time::sleep(wait).await;
                reply = *next;
            }
            Reply::Content { content, prompt_tokens, completion_tokens } => {
                // Like OpenAI: the answer names the exact version of the model asked for.
                let model = format!("{}-2026-11-01", body["model"].as_str().unwrap_or("fake"));
                return axum::Json(json!({
                    "id": format!("chatcmpl-{n}"),
                    "object": "chat.completion",
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens}
                }))
                .into_response();
            }
            Reply::Status { status, retry_after } => {
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = (
                    code,
                    axum::Json(
                        json!({"error": {"message": format!("scripted {status}"), "type": "server_error"}}),
                    ),
                )
                    .into_response();
                if let Some(secs) = retry_after {
                    response.headers_mut().insert("retry-after", secs.into());
                }
                return response;
            }
            Reply::Raw(text) => return (StatusCode::OK, text).into_response(),
        }
    }
}

impl FakeLlm {
    /// Starts with every role answered well.
    pub async fn start() -> Self {
        let shared = Shared {
            responder: Arc::new(Mutex::new(Arc::new(|role: &str, _| good_answer(role)))),
            seen: Arc::default(),
        };
        let app =
            axum::Router::new().route("/v1/chat/completions", post(completions)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake llm");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// `LLM_BASE_URL` for this server.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Answers with `f(role, nth request of that role, from 1)` from now on.
    pub fn script(&self, f: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) {
        *self.shared.responder.lock().expect("lock") = Arc::new(f);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("lock").clone()
    }

    /// How many requests `role` sent.
    pub fn count(&self, role: &str) -> usize {
        self.seen().iter().filter(|s| s.role == role).count()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}
