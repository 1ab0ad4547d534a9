//! `POST /inbound/raw`: one raw MIME message (`Content-Type: message/rfc822`), signed per
//! Standard Webhooks. 401 for a missing or bad signature (nothing stored), 409 for a reused
//! webhook-id, 202 with the outcome only after the raw bytes are committed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::intake::webhook::SignedHeaders;
use crate::intake::{Outcome, Source};

pub const SOURCE: &str = "webhook:raw";

pub async fn raw(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(verifier) = &state.verifier else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "/inbound/raw is disabled: set SWARM_WEBHOOK_SECRETS to enable it",
        ));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = SignedHeaders {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
    };
    let id = verifier
        .verify(signed, &body, chrono::Utc::now().timestamp())
        .map_err(|e| ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
    let media = header(CONTENT_TYPE.as_str())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "message/rfc822" {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be message/rfc822"));
    }
    if body.is_empty() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "empty body: expected one raw RFC 5322 message"));
    }
    // Nonces are kept past the whole acceptance window, so a replay can never outlive them.
    let keep_for = state.webhook_tolerance * 2 + std::time::Duration::from_secs(60);
    let source = Source { name: SOURCE, key: Some(id), nonce: Some((id, keep_for)) };
    let outcome = state.intake.accept(&source, &body).await.map_err(ApiError::internal)?;
    let reply = match &outcome {
        Outcome::Replayed => return Err(ApiError::new(StatusCode::CONFLICT, "webhook-id was already used")),
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
    Ok((StatusCode::ACCEPTED, Json(reply)))
}
