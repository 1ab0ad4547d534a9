//! The HTTP intake endpoints: one generic handler, [`intake`], over a [`Provider`] per endpoint
//! (`raw`, `mailgun`, `sendgrid`, `postmark`, `hooks`). Every one of them, in this order:
//!
//! 1. answers 404 unless its secret is configured and it is not in `SWARM_INBOUND_DISABLED`;
//! 2. limits the rate per client address (429 with `Retry-After`);
//! 3. checks what it can before reading a byte of body ([`Provider::check_head`]: Basic
//!    credentials, well-formed Standard Webhooks headers in their time window, an unused
//!    webhook-id), so a forged request is refused without being read;
//! 4. reads the body up to `SWARM_MAX_REQUEST_BYTES` (413 as soon as a request declares or sends
//!    more) within `SWARM_INBOUND_READ_TIMEOUT_SECS` (408), holding its bytes against the
//!    budget all endpoints share (`SWARM_INBOUND_MAX_BUFFERED_BYTES`; 503 with `Retry-After`
//!    when a body does not fit within [`BUFFER_WAIT`]) until the request is answered;
//! 5. checks the provider's proof of authenticity over the body (401, nothing stored);
//! 6. turns the request into one RFC 5322 message and hands it to [`Intake::accept`], which
//!    commits it (raw first, dedupe) before anything is answered: 2xx only after the commit.
//!
//! | route | proof | body |
//! |---|---|---|
//! | `POST /inbound/raw` | Standard Webhooks | `message/rfc822` |
//! | `POST /inbound/mailgun`, `/inbound/mailgun/mime` | Mailgun HMAC + one-time token | form |
//! | `POST /inbound/sendgrid` | Basic auth and/or ECDSA signature | form |
//! | `POST /inbound/postmark` | Basic auth | JSON |
//! | `POST /hooks/{name}` | Standard Webhooks | JSON task request |

mod hooks;
mod mailgun;
mod postmark;
mod raw;
mod sendgrid;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use raw::RAW_SOURCE;

use super::{ApiError, AppState};
use crate::intake::providers::sendgrid::SignatureKey;
use crate::intake::providers::{Rejection, basic_auth_matches};
use crate::intake::webhook::{SignedHeaders, Verifier};
use crate::intake::{Hints, Outcome, Source};
use crate::mail::auth::SmtpPeer;

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
    /// Hooks with their own secrets (`SWARM_HOOK_SECRETS=crm=whsec_…`): such a hook is verified
    /// with these only, so one integration is revoked or rotated alone.
    pub named_hook_secrets: BTreeMap<String, Vec<SecretString>>,
    pub disabled: Vec<Endpoint>,
    /// Largest request body, in bytes; larger ones get 413 before the rest is read.
    pub max_request_bytes: usize,
    /// Request body bytes all endpoints together may hold at once, counting each body times its
    /// provider's [`Provider::BUFFER_FACTOR`] (at least [`MAX_BUFFER_FACTOR`] x
    /// `max_request_bytes`).
    pub max_buffered_bytes: usize,
    /// Longest time to receive a request body.
    pub read_timeout: Duration,
    /// Requests per second per client address and endpoint; 0 turns rate limiting off.
    pub rate_per_sec: u32,
    /// Requests a client may send at once above the rate.
    pub rate_burst: u32,
}

/// Everything the intake endpoints need besides the shared state.
pub struct Inbound {
    pub(super) raw: Option<Verifier>,
    pub(super) hooks: Option<Verifier>,
    /// The hooks with their own secrets, by name.
    pub(super) named_hooks: BTreeMap<String, Verifier>,
    pub(super) webhook_tolerance: Duration,
    pub(super) mailgun_key: Option<SecretString>,
    pub(super) mailgun_tolerance: Duration,
    pub(super) sendgrid_basic: Option<SecretString>,
    pub(super) sendgrid_key: Option<SignatureKey>,
    pub(super) postmark_basic: Option<SecretString>,
    pub(super) disabled: Vec<Endpoint>,
    pub(super) max_request_bytes: usize,
    /// `/inbound/raw` bodies are the message itself: capped at the message limit too.
    pub(super) max_message_bytes: usize,
    pub(super) read_timeout: Duration,
    /// Permits for the body bytes held in memory, one per byte, shared by all endpoints.
    pub(super) buffered: Arc<Semaphore>,
    /// One limiter per endpoint (indexed like [`Endpoint::ALL`]), keyed by client address.
    pub(super) limiters: Option<Vec<DefaultKeyedRateLimiter<IpAddr>>>,
    /// Workflows a task hook may ask for.
    pub(super) workflows: Vec<String>,
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
        if i.max_buffered_bytes < i.max_request_bytes.saturating_mul(MAX_BUFFER_FACTOR) {
            anyhow::bail!(
                "SWARM_INBOUND_MAX_BUFFERED_BYTES ({}) is below {MAX_BUFFER_FACTOR} x SWARM_MAX_REQUEST_BYTES ({}): \
                 the largest form request could never be read",
                i.max_buffered_bytes,
                i.max_request_bytes
            );
        }
        Ok(Self {
            raw: verifier(&i.raw_secrets).context("SWARM_WEBHOOK_SECRETS")?,
            hooks: verifier(&i.hook_secrets).context("SWARM_HOOK_SECRETS")?,
            named_hooks: i
                .named_hook_secrets
                .iter()
                .map(|(name, secrets)| {
                    let verifier = Verifier::new(secrets, i.webhook_tolerance)
                        .with_context(|| format!("SWARM_HOOK_SECRETS for hook {name:?}"))?;
                    Ok((name.clone(), verifier))
                })
                .collect::<Result<_>>()?,
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
            buffered: Arc::new(Semaphore::new(i.max_buffered_bytes.min(Semaphore::MAX_PERMITS))),
            limiters,
            workflows,
        })
    }

    /// The verifier of hook `name`: its own secrets when it has them, else the shared list.
    pub(super) fn hook_verifier(&self, name: &str) -> Option<&Verifier> {
        self.named_hooks.get(name).or(self.hooks.as_ref())
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

    /// Reads the whole body: 413 once it declares or sends more than `max` bytes, 408 when it
    /// does not arrive within the read timeout, 503 when the shared buffer budget has no room
    /// for `factor` times its bytes within [`BUFFER_WAIT`]. The permit holds them in the budget:
    /// keep it until the request is answered.
    async fn read_body(
        &self,
        headers: &HeaderMap,
        body: axum::body::Body,
        max: usize,
        factor: usize,
    ) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
        let counted = |bytes: usize| bytes.saturating_mul(factor);
        let too_large =
            || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is over {max} bytes"));
        let declared =
            headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let declared = declared.map_or(0, |n| n as usize);
        let mut held = self.reserve(counted(declared)).await?;
        let read = async {
            let mut stream = body.into_data_stream();
            let mut buf = BytesMut::with_capacity(declared.max(8192).min(max));
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, "the request body could not be read")
                })?;
                if buf.len() + chunk.len() > max {
                    return Err(too_large());
                }
                let needed = counted(buf.len() + chunk.len()).saturating_sub(held.num_permits());
                if needed > 0 {
                    held.merge(self.reserve(needed).await?);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(buf.freeze())
        };
        let body = tokio::time::timeout(self.read_timeout, read).await.unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {} seconds", self.read_timeout.as_secs()),
            ))
        })?;
        Ok((body, held))
    }

    /// `bytes` permits of the buffer budget, waiting at most [`BUFFER_WAIT`]; 503 otherwise.
    async fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        let acquire = self.buffered.clone().acquire_many_owned(bytes);
        match tokio::time::timeout(BUFFER_WAIT, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many request bodies in flight (SWARM_INBOUND_MAX_BUFFERED_BYTES); retry later",
            )
            .retry_after(1)),
        }
    }
}

/// The largest [`Provider::BUFFER_FACTOR`]: the budget must hold that many times the largest
/// request, so every request fits when it is alone.
pub const MAX_BUFFER_FACTOR: usize = 3;

/// How long a request waits for room in the shared body budget before it gets 503.
pub const BUFFER_WAIT: Duration = Duration::from_secs(1);

/// One intake endpoint: when it is enabled, what it checks before and after reading the body,
/// how its request becomes one RFC 5322 message, and the statuses its provider understands.
pub(super) trait Provider: Send + Sync + 'static {
    /// For `SWARM_INBOUND_DISABLED` and the rate limiter.
    const ENDPOINT: Endpoint;
    /// The setting that enables the endpoint, named in its 404.
    const SETTING: &'static str;
    /// The answer after the commit.
    const ACCEPTED: StatusCode;
    /// The answer to a request that can never be taken, chosen so the provider stops retrying
    /// it (Mailgun 406, Postmark 403, SendGrid 400, task hooks 422).
    const UNACCEPTABLE: StatusCode;

    /// Whether its secret is set.
    fn configured(inbound: &Inbound) -> bool;

    /// Checks of the path, made before anything else (a hook name).
    fn check_route(_parts: &Parts) -> Result<(), ApiError> {
        Ok(())
    }

    /// Checks of the headers made once the endpoint is admitted, before a byte of the body is
    /// read: whatever makes the request unacceptable whatever its body.
    fn check_head(
        _state: &AppState,
        _parts: &Parts,
    ) -> impl std::future::Future<Output = Result<(), ApiError>> + Send {
        async { Ok(()) }
    }

    /// Memory its conversion needs at its peak per body byte (the body plus the copies its
    /// parser makes: a multipart form is buffered again by the parser and rebuilt into a
    /// message), counted against the shared body budget.
    const BUFFER_FACTOR: usize = 1;

    /// The largest body it takes, in bytes.
    fn max_body(inbound: &Inbound) -> usize {
        inbound.max_request_bytes
    }

    /// Verifies the request and converts it into the message to store.
    fn convert(
        state: &AppState,
        parts: &Parts,
        body: Bytes,
    ) -> impl std::future::Future<Output = Result<Converted, ApiError>> + Send;

    /// The answer to a request whose nonce was seen before.
    fn replayed() -> ApiError {
        ApiError::internal(format!("{} intake uses no nonce", path_of(Self::ENDPOINT)))
    }
}

/// A request turned into a message: its bytes and what the source knows about it.
#[derive(Debug, Default)]
pub(in crate::web) struct Converted {
    pub raw: Vec<u8>,
    /// The source name stored with the message (`webhook:raw`, `mailgun`, `hook:crm`, ...).
    pub source: String,
    /// The provider's own key of the request (webhook-id, Mailgun token).
    pub key: Option<String>,
    /// A replay key that must not have been seen before, and how long to keep it.
    pub nonce: Option<(String, Duration)>,
    pub new_text: Option<String>,
    pub peer: Option<SmtpPeer>,
    pub workflow: Option<String>,
    pub metadata: Option<Value>,
    /// A task request that asks for a reply (see [`Hints::requested`]).
    pub requested: bool,
    /// The message was rebuilt by us, Message-ID included (see [`Source::minted_id`]).
    pub minted_id: bool,
}

impl Converted {
    fn source(&self) -> Source<'_> {
        Source {
            name: &self.source,
            key: self.key.as_deref(),
            nonce: self.nonce.as_ref().map(|(n, keep)| (n.as_str(), *keep)),
            minted_id: self.minted_id,
            hints: Hints {
                new_text: self.new_text.as_deref(),
                workflow: self.workflow.as_deref(),
                metadata: self.metadata.as_ref(),
                requested: self.requested,
                peer: self.peer.as_ref(),
            },
        }
    }
}

/// The one intake handler: the provider's path check, 404 unless enabled, the rate limit, its
/// header checks, the body within its cap, time and the shared budget, the provider's
/// verification and conversion, then the commit before any 2xx.
async fn intake<P: Provider>(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let inbound = &state.inbound;
    let peer = peer(&request);
    let (parts, body) = request.into_parts();
    P::check_route(&parts)?;
    inbound.admit(P::ENDPOINT, P::configured(inbound), P::SETTING, peer)?;
    P::check_head(&state, &parts).await?;
    // The permit keeps the body's bytes counted until the request is answered.
    let (body, _buffered) =
        inbound.read_body(&parts.headers, body, P::max_body(inbound), P::BUFFER_FACTOR).await?;
    let message = P::convert(&state, &parts, body).await?;
    accept::<P>(&state, &message).await
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

/// The client address: a trusted proxy's `X-Forwarded-For` client, else the peer
/// (unspecified when the server runs without connection info, in tests).
fn peer(request: &Request) -> IpAddr {
    let extensions = request.extensions();
    match extensions.get::<super::serve::ClientAddr>() {
        Some(client) => client.0,
        None => extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip()),
    }
}

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(super) fn media_type(headers: &HeaderMap) -> String {
    header(headers, CONTENT_TYPE.as_str())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A provider rejection as an answer: 401, or the provider's status for "never retry this".
pub(super) fn refuse(rejection: Rejection, unacceptable: StatusCode) -> ApiError {
    match rejection {
        Rejection::Unauthorized(m) => ApiError::new(StatusCode::UNAUTHORIZED, m).code("bad_signature"),
        Rejection::Unacceptable(m) => ApiError::new(unacceptable, m),
    }
}

/// Keeps a nonce past the whole acceptance window either way, so a replay can never outlive it.
pub(super) fn nonce_lifetime(tolerance: Duration) -> Duration {
    tolerance * 2 + Duration::from_secs(60)
}

/// Commits the message; wakes the task worker when it made a task.
pub(super) async fn commit(state: &AppState, message: &Converted) -> Result<Outcome, ApiError> {
    let outcome =
        state.intake.accept(&message.source(), &message.raw).await.map_err(ApiError::from_failure)?;
    if matches!(outcome, Outcome::Task { .. }) {
        state.task_wake.notify_one();
    }
    Ok(outcome)
}

/// Commits the message and answers `P::ACCEPTED` with its outcome, or `P::replayed()`.
async fn accept<P: Provider>(state: &AppState, message: &Converted) -> Result<Response, ApiError> {
    let body = match &commit(state, message).await? {
        Outcome::Replayed => return Err(P::replayed()),
        Outcome::Task { message, task } => {
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
    Ok((P::ACCEPTED, Json::<Value>(body)).into_response())
}

/// Verifies Standard Webhooks headers; the webhook-id on success.
pub(super) fn verify_standard<'h>(
    verifier: Option<&Verifier>,
    headers: &'h HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<&'h str, ApiError> {
    let verifier = verifier.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not configured"))?;
    verifier
        .verify(signed_headers(headers), body, now)
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()).code("bad_signature"))
}

/// The body-independent part of [`verify_standard`]: 401 for missing or malformed headers or a
/// timestamp outside the window.
pub(super) fn check_standard_head(
    verifier: Option<&Verifier>,
    headers: &HeaderMap,
    now: i64,
) -> Result<(), ApiError> {
    let verifier = verifier.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not configured"))?;
    verifier
        .check_head(signed_headers(headers), now)
        .map(|_| ())
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()).code("bad_signature"))
}

fn signed_headers(headers: &HeaderMap) -> SignedHeaders<'_> {
    SignedHeaders {
        id: header(headers, "webhook-id"),
        timestamp: header(headers, "webhook-timestamp"),
        signature: header(headers, "webhook-signature"),
    }
}

/// 401 with a Basic challenge unless the request carries exactly these credentials.
pub(super) fn check_basic(headers: &HeaderMap, expected: &SecretString) -> Result<(), ApiError> {
    if basic_auth_matches(header(headers, AUTHORIZATION.as_str()), expected.expose_secret()) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong HTTP Basic credentials")
            .code("bad_signature")
            .challenge())
    }
}

/// The routes, each answered by [`intake`] with its provider.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::post;
    axum::Router::new()
        .route("/inbound/raw", post(intake::<raw::Raw>))
        .route("/inbound/mailgun", post(intake::<mailgun::Mailgun<false>>))
        .route("/inbound/mailgun/mime", post(intake::<mailgun::Mailgun<true>>))
        .route("/inbound/sendgrid", post(intake::<sendgrid::Sendgrid>))
        .route("/inbound/postmark", post(intake::<postmark::Postmark>))
        .route("/hooks/{name}", post(intake::<hooks::Hooks>))
        // The handlers read and cap the body themselves (413 with a JSON message).
        .layer(axum::extract::DefaultBodyLimit::disable())
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound").field("disabled", &self.disabled).finish_non_exhaustive()
    }
}
