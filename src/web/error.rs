//! The one error type at the HTTP edge: a status and a message safe to show the client,
//! rendered as `{"error": "...", "code": "...", "request_id": "..."}` (the id also in the
//! `x-request-id` header and the log). `code` is a stable word for programs ([`CODES`]);
//! internal errors are logged and answered with a generic 500.

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::WWW_AUTHENTICATE;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

/// Every `code` an error body may carry, with its meaning (the OpenAPI document lists them).
pub const CODES: &[(&str, &str)] = &[
    ("bad_request", "400: the query, path or body is malformed"),
    ("unauthorized", "401: no token was presented"),
    ("invalid_token", "401: the token is unknown, revoked or expired"),
    ("bad_signature", "401: a webhook's signature or credentials do not verify"),
    ("missing_scope", "403: the token lacks the scope the operation needs"),
    ("not_found", "404: no such route, row or enabled endpoint"),
    ("method_not_allowed", "405: the route does not take this method"),
    ("timeout", "408 or 504: the request body did not arrive, or the answer was not ready, in time"),
    ("conflict", "409: the row is not in a state that allows the change, or a replayed webhook"),
    ("too_large", "413: the body is over the limit"),
    ("unsupported_media_type", "415: the Content-Type is not the one the route takes"),
    ("unprocessable", "422: well-formed but not acceptable (unknown workflow, bad address)"),
    ("idempotency_key_reused", "422: the Idempotency-Key was used before with another body"),
    ("callback_refused", "422: the callback URL's host is not allowed"),
    ("rate_limited", "429: too many requests; see Retry-After"),
    ("internal", "500: an internal error (logged with the request id)"),
    ("unavailable", "503: the database is busy or the body budget is full; see Retry-After"),
];

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    code: Option<&'static str>,
    challenge: bool,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), code: None, challenge: false, retry_after: None }
    }

    /// Sets the body's `code` (one of [`CODES`]); by default it follows the status.
    pub fn code(self, code: &'static str) -> Self {
        debug_assert!(CODES.iter().any(|(c, _)| *c == code), "undocumented error code {code}");
        Self { code: Some(code), ..self }
    }

    /// The body's `code`.
    pub fn code_word(&self) -> &'static str {
        self.code.unwrap_or(match self.status.as_u16() {
            400 => "bad_request",
            401 => "unauthorized",
            403 => "missing_scope",
            404 => "not_found",
            405 => "method_not_allowed",
            408 | 504 => "timeout",
            409 => "conflict",
            413 => "too_large",
            415 => "unsupported_media_type",
            422 => "unprocessable",
            429 => "rate_limited",
            503 => "unavailable",
            _ if self.status.is_server_error() => "internal",
            _ => "bad_request",
        })
    }

    /// Adds `WWW-Authenticate: Basic` (RFC 7617) so clients know to send credentials.
    pub fn challenge(self) -> Self {
        Self { challenge: true, ..self }
    }

    /// Adds `Retry-After: <seconds>` (RFC 9110 §10.2.3).
    pub fn retry_after(self, seconds: u64) -> Self {
        Self { retry_after: Some(seconds.max(1)), ..self }
    }

    /// Logs the cause; the client sees only "internal error".
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let request_id = super::layers::current_request_id().unwrap_or_default();
        tracing::error!(%request_id, error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// A failure of some operation: 503 with `Retry-After: 1` when a store error in its chain
    /// says the database is busy ([`StoreError::is_busy`]), else internal (logged, 500).
    pub fn from_failure(e: anyhow::Error) -> Self {
        match e.chain().find_map(|cause| cause.downcast_ref::<StoreError>()) {
            Some(store) if store.is_busy() => Self::busy(store),
            _ => Self::internal(format!("{e:#}")),
        }
    }

    /// 503: the database could not take the request in time; logged as a warning.
    fn busy(cause: &StoreError) -> Self {
        let request_id = super::layers::current_request_id().unwrap_or_default();
        tracing::warn!(%request_id, error = %cause, "database busy");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "database busy; retry shortly").retry_after(1)
    }

    /// 401: no token presented where one is needed.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "a token is required: Authorization: Bearer <token> (SWARM_ADMIN_TOKEN or one from `token create`)",
        )
        .challenge()
    }
}

/// A store failure as the client sees it: a missing row is 404, a row in the wrong state or
/// taken over by another owner 409 (RFC 9110 §15.5.5, §15.5.10), a busy database 503 with
/// `Retry-After` (§15.6.4); anything else is internal.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_busy() {
            return Self::busy(&e);
        }
        match e {
            StoreError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            StoreError::Conflict(_) | StoreError::LeaseLost(_) => {
                Self::new(StatusCode::CONFLICT, e.to_string())
            }
            StoreError::Database(_) => Self::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "code": self.code_word()});
        if let Some(id) = super::layers::current_request_id().filter(|id| !id.is_empty()) {
            body["request_id"] = json!(id);
        }
        let mut response = (self.status, Json(body)).into_response();
        if self.challenge {
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"SwarmDirector\""),
            );
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
