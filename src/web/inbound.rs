//! The HTTP intake endpoints. Every one of them, in this order:
//!
//! 1. answers 404 unless its secret is configured and it is not in `SWARM_INBOUND_DISABLED`;
//! 2. limits the rate per client address (429 with `Retry-After`);
//! 3. reads the body up to `SWARM_MAX_REQUEST_BYTES` (413 as soon as a request declares or sends
//!    more) within `SWARM_INBOUND_READ_TIMEOUT_SECS` (408);
//! 4. checks the provider's proof of authenticity (401, nothing stored);
//! 5. turns the request into one RFC 5322 message and hands it to [`Intake::accept`], which
//!    commits it (raw first, dedupe) before anything is answered: 2xx only after the commit.
//!
//! | route | proof | body |
//! |---|---|---|
//! | `POST /inbound/raw` | Standard Webhooks | `message/rfc822` |
//! | `POST /inbound/mailgun`, `/inbound/mailgun/mime` | Mailgun HMAC + one-time token | form |
//! | `POST /inbound/sendgrid` | Basic auth and/or ECDSA signature | form |
//! | `POST /inbound/postmark` | Basic auth | JSON |
//! | `POST /hooks/{name}` | Standard Webhooks | JSON task request |

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Json;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::intake::providers::form::Form;
use crate::intake::providers::sendgrid::{self, SignatureKey};
use crate::intake::providers::{Rejection, basic_auth_matches, hook, mailgun, postmark};
use crate::intake::webhook::{SignedHeaders, Verifier};
use crate::intake::{Hints, Outcome, Source};

/// An HTTP intake endpoint, for `SWARM_INBOUND_DISABLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /inbound/raw`
    Raw,
    /// `POST /inbound/mailgun` and `/inbound/mailgun/mime`
    Mailgun,
    /// `POST /inbound/sendgrid`
    Sendgrid,
    /// `POST /inbound/postmark`
    Postmark,
    /// `POST /hooks/{name}`
    Hooks,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] =
        [Endpoint::Raw, Endpoint::Mailgun, Endpoint::Sendgrid, Endpoint::Postmark, Endpoint::Hooks];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Raw => "raw",
            Endpoint::Mailgun => "mailgun",
            Endpoint::Sendgrid => "sendgrid",
            Endpoint::Postmark => "postmark",
            Endpoint::Hooks => "hooks",
        }
    }
}

/// The HTTP intake endpoints: their secrets and the limits every one of them applies.
/// An endpoint whose secret is not set, or that is listed in `SWARM_INBOUND_DISABLED`, answers 404.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Standard Webhooks secrets (`whsec_<base64>`) of `/inbound/raw` (`SWARM_WEBHOOK_SECRETS`),
    /// several for rotation; empty disables the endpoint.
    pub raw_secrets: Vec<SecretString>,
    /// Accepted clock skew of signed webhooks (`SWARM_WEBHOOK_TOLERANCE_SECS`).
    pub webhook_tolerance: Duration,
    /// Mailgun's HTTP webhook signing key (`MAILGUN_SIGNING_KEY`).
    pub mailgun_signing_key: Option<SecretString>,
    /// Accepted age (either way) of a Mailgun `timestamp` (`MAILGUN_TIMESTAMP_TOLERANCE_SECS`).
    pub mailgun_tolerance: Duration,
    /// `user:password` SendGrid must present (put in the Destination URL).
    pub sendgrid_basic_auth: Option<SecretString>,
    /// Public key of a SendGrid signing policy: base64 DER or PEM.
    pub sendgrid_verification_key: Option<String>,
    /// `user:password` Postmark must present (put in the webhook URL).
    pub postmark_basic_auth: Option<SecretString>,
    /// Standard Webhooks secrets of `/hooks/{name}` (`SWARM_HOOK_SECRETS`, default
    /// `SWARM_WEBHOOK_SECRETS`).
    pub hook_secrets: Vec<SecretString>,
    pub disabled: Vec<Endpoint>,
    /// Largest request body, in bytes; larger ones get 413 before the rest is read.
    pub max_request_bytes: usize,
    /// Longest time to receive a request body.
    pub read_timeout: Duration,
    /// Requests per second per client address and endpoint; 0 turns rate limiting off.
    pub rate_per_sec: u32,
    /// Requests a client may send at once above the rate.
    pub rate_burst: u32,
}

/// Everything the intake endpoints need besides the shared state.
pub struct Inbound {
    raw: Option<Verifier>,
    hooks: Option<Verifier>,
    webhook_tolerance: Duration,
    mailgun_key: Option<SecretString>,
    mailgun_tolerance: Duration,
    sendgrid_basic: Option<SecretString>,
    sendgrid_key: Option<SignatureKey>,
    postmark_basic: Option<SecretString>,
    disabled: Vec<Endpoint>,
    max_request_bytes: usize,
    /// `/inbound/raw` bodies are the message itself: capped at the message limit too.
    max_message_bytes: usize,
    read_timeout: Duration,
    /// One limiter per endpoint (indexed like [`Endpoint::ALL`]), keyed by client address.
    limiters: Option<Vec<DefaultKeyedRateLimiter<IpAddr>>>,
    /// Workflows a task hook may ask for.
    workflows: Vec<String>,
}

impl Inbound {
    /// Errors name the setting that is wrong, never a secret's value.
    ///
    /// `max_message_bytes` caps `/inbound/raw` bodies, which are the message itself.
    pub fn from_settings(i: &Settings, max_message_bytes: usize, workflows: Vec<String>) -> Result<Self> {
        let verifier = |secrets: &[SecretString]| -> Result<Option<Verifier>> {
            Ok(if secrets.is_empty() { None } else { Some(Verifier::new(secrets, i.webhook_tolerance)?) })
        };
        let limiters = NonZeroU32::new(i.rate_per_sec).map(|rate| {
            let burst = NonZeroU32::new(i.rate_burst).unwrap_or(rate);
            Endpoint::ALL
                .iter()
                .map(|_| RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)))
                .collect()
        });
        Ok(Self {
            raw: verifier(&i.raw_secrets).context("SWARM_WEBHOOK_SECRETS")?,
            hooks: verifier(&i.hook_secrets).context("SWARM_HOOK_SECRETS")?,
            webhook_tolerance: i.webhook_tolerance,
            mailgun_key: i.mailgun_signing_key.clone(),
            mailgun_tolerance: i.mailgun_tolerance,
            sendgrid_basic: i.sendgrid_basic_auth.clone(),
            sendgrid_key: i
                .sendgrid_verification_key
                .as_deref()
                .map(SignatureKey::parse)
                .transpose()
                .context("SENDGRID_VERIFICATION_KEY")?,
            postmark_basic: i.postmark_basic_auth.clone(),
            disabled: i.disabled.clone(),
            max_request_bytes: i.max_request_bytes,
            max_message_bytes,
            read_timeout: i.read_timeout,
            limiters,
            workflows,
        })
    }

    /// 404 unless `endpoint` is configured (`secret_set`) and enabled; then the rate limit.
    fn admit(
        &self,
        endpoint: Endpoint,
        secret_set: bool,
        setting: &str,
        peer: IpAddr,
    ) -> Result<(), ApiError> {
        let path = path_of(endpoint);
        if self.disabled.contains(&endpoint) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{path} is disabled by SWARM_INBOUND_DISABLED"),
            ));
        }
        if !secret_set {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{path} is disabled: set {setting} to enable it"),
            ));
        }
        let Some(limiters) = &self.limiters else { return Ok(()) };
        let index = Endpoint::ALL.iter().position(|e| *e == endpoint).unwrap_or(0);
        let limiter = &limiters[index];
        if limiter.len() > 100_000 {
            limiter.retain_recent();
        }
        limiter.check_key(&peer).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, format!("too many requests to {path}; retry later"))
                .retry_after(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
    }

    /// [`Self::read_body_capped`] at `SWARM_MAX_REQUEST_BYTES`.
    async fn read_body(&self, headers: &HeaderMap, body: axum::body::Body) -> Result<Bytes, ApiError> {
        self.read_body_capped(headers, body, self.max_request_bytes).await
    }

    /// Reads the whole body: 413 once it declares or sends more than `max` bytes, 408 when it
    /// does not arrive within the read timeout.
    async fn read_body_capped(
        &self,
        headers: &HeaderMap,
        body: axum::body::Body,
        max: usize,
    ) -> Result<Bytes, ApiError> {
        let too_large =
            || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is over {max} bytes"));
        let declared =
            headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let read = async {
            let mut stream = body.into_data_stream();
            let mut buf = BytesMut::with_capacity(declared.map_or(8192, |n| n as usize));
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, "the request body could not be read")
                })?;
                if buf.len() + chunk.len() > max {
                    return Err(too_large());
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(buf.freeze())
        };
        tokio::time::timeout(self.read_timeout, read).await.unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {} seconds", self.read_timeout.as_secs()),
            ))
        })
    }
}

fn path_of(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Raw => "/inbound/raw",
        Endpoint::Mailgun => "/inbound/mailgun",
        Endpoint::Sendgrid => "/inbound/sendgrid",
        Endpoint::Postmark => "/inbound/postmark",
        Endpoint::Hooks => "/hooks",
    }
}

/// The client address (unspecified when the server runs without connection info, in tests).
fn peer(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn media_type(headers: &HeaderMap) -> String {
    header(headers, CONTENT_TYPE.as_str())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A provider rejection as an answer: 401, or the provider's status for "never retry this".
fn refuse(rejection: Rejection, unacceptable: StatusCode) -> ApiError {
    match rejection {
        Rejection::Unauthorized(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
        Rejection::Unacceptable(m) => ApiError::new(unacceptable, m),
    }
}

/// Keeps a nonce past the whole acceptance window either way, so a replay can never outlive it.
fn nonce_lifetime(tolerance: Duration) -> Duration {
    tolerance * 2 + Duration::from_secs(60)
}

/// Commits the message and answers `status` with its outcome. `Replayed` is the caller's to map.
async fn accept(
    state: &AppState,
    source: &Source<'_>,
    raw: &[u8],
    status: StatusCode,
    replayed: impl FnOnce() -> ApiError,
) -> Result<Response, ApiError> {
    let outcome = state.intake.accept(source, raw).await.map_err(ApiError::internal)?;
    let body = match &outcome {
        Outcome::Replayed => return Err(replayed()),
        Outcome::Task { message, task } => {
            state.task_wake.notify_one();
            json!({"outcome": "task", "task_id": task, "message": message})
        }
        Outcome::Duplicate { message, task } => {
            json!({"outcome": "duplicate", "task_id": task, "message": message})
        }
        Outcome::Ignored { message, reason } => {
            json!({"outcome": "ignored", "message": message, "reason": reason})
        }
        Outcome::Quarantined { message, reason } => {
            json!({"outcome": "quarantined", "message": message, "reason": reason})
        }
    };
    Ok((status, Json::<Value>(body)).into_response())
}

pub const RAW_SOURCE: &str = "webhook:raw";

/// `POST /inbound/raw`: one raw MIME message (`Content-Type: message/rfc822`) signed per Standard
/// Webhooks. 401 for a missing or bad signature, 409 for a reused webhook-id, 202 after the commit.
pub async fn raw(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let inbound = &state.inbound;
    inbound.admit(Endpoint::Raw, inbound.raw.is_some(), "SWARM_WEBHOOK_SECRETS", peer(&request))?;
    let (parts, body) = request.into_parts();
    let max = inbound.max_request_bytes.min(inbound.max_message_bytes);
    let body = inbound.read_body_capped(&parts.headers, body, max).await?;
    let id = verify_standard(inbound.raw.as_ref(), &parts.headers, &body, state.now())?;
    if media_type(&parts.headers) != "message/rfc822" {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be message/rfc822"));
    }
    if body.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "empty body: expected one raw RFC 5322 message"));
    }
    let source = Source {
        nonce: Some((id, nonce_lifetime(inbound.webhook_tolerance))),
        ..Source::new(RAW_SOURCE, Some(id))
    };
    accept(&state, &source, &body, StatusCode::ACCEPTED, || {
        ApiError::new(StatusCode::CONFLICT, "webhook-id was already used")
    })
    .await
}

/// Verifies Standard Webhooks headers; the webhook-id on success.
fn verify_standard<'h>(
    verifier: Option<&Verifier>,
    headers: &'h HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<&'h str, ApiError> {
    let verifier = verifier.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not configured"))?;
    let signed = SignedHeaders {
        id: header(headers, "webhook-id"),
        timestamp: header(headers, "webhook-timestamp"),
        signature: header(headers, "webhook-signature"),
    };
    verifier.verify(signed, body, now).map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
}

/// `POST /inbound/mailgun`: a Mailgun route's parsed fields.
pub async fn mailgun_parsed(state: State<AppState>, request: Request) -> Result<Response, ApiError> {
    mailgun(state, request, false).await
}

/// `POST /inbound/mailgun/mime`: a Mailgun route's raw MIME (`body-mime`).
pub async fn mailgun_mime(state: State<AppState>, request: Request) -> Result<Response, ApiError> {
    mailgun(state, request, true).await
}

/// Mailgun stops retrying on 406 only; everything it can never fix gets 406.
async fn mailgun(State(state): State<AppState>, request: Request, mime: bool) -> Result<Response, ApiError> {
    let inbound = &state.inbound;
    inbound.admit(Endpoint::Mailgun, inbound.mailgun_key.is_some(), "MAILGUN_SIGNING_KEY", peer(&request))?;
    let key = inbound.mailgun_key.as_ref().map(|k| k.expose_secret().as_bytes()).unwrap_or_default();
    let (parts, body) = request.into_parts();
    let body = inbound.read_body(&parts.headers, body).await?;
    let content_type = header(&parts.headers, CONTENT_TYPE.as_str()).unwrap_or("");
    let form =
        Form::parse(content_type, body).await.map_err(|m| ApiError::new(StatusCode::NOT_ACCEPTABLE, m))?;
    let now = state.now();
    let message = if mime {
        mailgun::from_mime_form(&form, key, now, inbound.mailgun_tolerance)
    } else {
        mailgun::from_parsed_form(&form, key, now, inbound.mailgun_tolerance)
    }
    .map_err(|r| refuse(r, StatusCode::NOT_ACCEPTABLE))?;
    let source = Source {
        nonce: Some((&message.token, nonce_lifetime(inbound.mailgun_tolerance))),
        hints: Hints { new_text: message.stripped_text.as_deref(), ..Hints::default() },
        ..Source::new("mailgun", Some(&message.token))
    };
    // A reused token is either a replay (perhaps with another body: the signature does not cover
    // it) or Mailgun retrying a request whose answer was lost after the commit. 406 stops both.
    accept(&state, &source, &message.raw, StatusCode::OK, || {
        ApiError::new(StatusCode::NOT_ACCEPTABLE, "token was already used")
    })
    .await
}

/// `POST /inbound/sendgrid`: Inbound Parse, raw or parsed mode.
pub async fn sendgrid(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let inbound = &state.inbound;
    let configured = inbound.sendgrid_basic.is_some() || inbound.sendgrid_key.is_some();
    inbound.admit(
        Endpoint::Sendgrid,
        configured,
        "SENDGRID_INBOUND_BASIC_AUTH or SENDGRID_VERIFICATION_KEY",
        peer(&request),
    )?;
    let (parts, body) = request.into_parts();
    if let Some(expected) = &inbound.sendgrid_basic {
        check_basic(&parts.headers, expected)?;
    }
    let body = inbound.read_body(&parts.headers, body).await?;
    if let Some(key) = &inbound.sendgrid_key {
        key.verify(
            header(&parts.headers, sendgrid::SIGNATURE_HEADER),
            header(&parts.headers, sendgrid::TIMESTAMP_HEADER),
            &body,
            state.now(),
            inbound.webhook_tolerance,
        )
        .map_err(|r| refuse(r, StatusCode::BAD_REQUEST))?;
    }
    let content_type = header(&parts.headers, CONTENT_TYPE.as_str()).unwrap_or("");
    let form =
        Form::parse(content_type, body).await.map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    let raw = sendgrid::message(&form).map_err(|r| refuse(r, StatusCode::BAD_REQUEST))?;
    let smtp_peer = sendgrid::smtp_peer(&form);
    let source = Source {
        hints: Hints { peer: smtp_peer.as_ref(), ..Hints::default() },
        ..Source::new("sendgrid", None)
    };
    accept(&state, &source, &raw, StatusCode::OK, || ApiError::internal("sendgrid intake uses no nonce"))
        .await
}

/// `POST /inbound/postmark`: Postmark's inbound JSON. Postmark stops retrying on 403 only.
pub async fn postmark(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let inbound = &state.inbound;
    let configured = inbound.postmark_basic.is_some();
    inbound.admit(Endpoint::Postmark, configured, "POSTMARK_INBOUND_BASIC_AUTH", peer(&request))?;
    let (parts, body) = request.into_parts();
    if let Some(expected) = &inbound.postmark_basic {
        check_basic(&parts.headers, expected)?;
    }
    let body = inbound.read_body(&parts.headers, body).await?;
    if media_type(&parts.headers) != "application/json" {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "Content-Type must be application/json"));
    }
    let message = postmark::message(&body).map_err(|r| refuse(r, StatusCode::FORBIDDEN))?;
    let source = Source {
        hints: Hints { new_text: message.stripped_text.as_deref(), ..Hints::default() },
        ..Source::new("postmark", None)
    };
    accept(&state, &source, &message.raw, StatusCode::OK, || {
        ApiError::internal("postmark intake uses no nonce")
    })
    .await
}

/// `POST /hooks/{name}`: a signed task request; 202 with the task, or the duplicate's task when
/// the same webhook-id was delivered before.
pub async fn task_hook(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let inbound = &state.inbound;
    if !hook::valid_name(&name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("hook names are 1-{} characters of a-z, 0-9, - and _", hook::MAX_NAME),
        ));
    }
    inbound.admit(
        Endpoint::Hooks,
        inbound.hooks.is_some(),
        "SWARM_HOOK_SECRETS or SWARM_WEBHOOK_SECRETS",
        peer(&request),
    )?;
    let (parts, body) = request.into_parts();
    let body = inbound.read_body(&parts.headers, body).await?;
    let id = verify_standard(inbound.hooks.as_ref(), &parts.headers, &body, state.now())?;
    if media_type(&parts.headers) != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    let (request, raw) = hook::message(&name, id, &body, state.store.clock().now())
        .map_err(|r| refuse(r, StatusCode::UNPROCESSABLE_ENTITY))?;
    if let Some(w) = request.workflow.as_deref().filter(|w| !inbound.workflows.iter().any(|k| k == w)) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unknown workflow {w:?}; known: {}", inbound.workflows.join(", ")),
        ));
    }
    let source_name = format!("hook:{name}");
    let source = Source {
        hints: Hints {
            workflow: request.workflow.as_deref(),
            metadata: request.metadata.as_ref(),
            requested: true,
            ..Hints::default()
        },
        ..Source::new(&source_name, Some(id))
    };
    accept(&state, &source, &raw, StatusCode::ACCEPTED, || ApiError::internal("task hooks use no nonce"))
        .await
}

/// 401 with a Basic challenge unless the request carries exactly these credentials.
fn check_basic(headers: &HeaderMap, expected: &SecretString) -> Result<(), ApiError> {
    if basic_auth_matches(header(headers, AUTHORIZATION.as_str()), expected.expose_secret()) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong HTTP Basic credentials").challenge())
    }
}

/// The routes, each with its own state in `inbound`.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::post;
    axum::Router::new()
        .route("/inbound/raw", post(raw))
        .route("/inbound/mailgun", post(mailgun_parsed))
        .route("/inbound/mailgun/mime", post(mailgun_mime))
        .route("/inbound/sendgrid", post(sendgrid))
        .route("/inbound/postmark", post(postmark))
        .route("/hooks/{name}", post(task_hook))
        // The handlers read and cap the body themselves (413 with a JSON message).
        .layer(axum::extract::DefaultBodyLimit::disable())
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound").field("disabled", &self.disabled).finish_non_exhaustive()
    }
}
