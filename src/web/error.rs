//! The one error type at the HTTP edge: a status and a message safe to show the client,
//! rendered as `{"error": "...", "request_id": "..."}` (the id also in the `x-request-id`
//! header and the log). Internal errors are logged and answered with a generic 500.

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::WWW_AUTHENTICATE;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    challenge: bool,
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into(), challenge: false, retry_after: None }
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

    pub fn unauthorized_admin() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "admin token required: Authorization: Bearer <SWARM_ADMIN_TOKEN>")
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
        let mut body = json!({"error": self.message});
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
