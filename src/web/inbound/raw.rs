//! `POST /inbound/raw`: one raw MIME message (`Content-Type: message/rfc822`) signed per Standard
//! Webhooks. 401 for a missing or bad signature, 409 for a reused webhook-id, 202 after the commit.

use axum::http::StatusCode;
use axum::http::request::Parts;
use bytes::Bytes;

use super::{
    Converted, Endpoint, Inbound, Provider, check_standard_head, header, media_type, nonce_lifetime,
    verify_standard,
};
use crate::web::{ApiError, AppState};

/// The source name of messages posted here.
pub const RAW_SOURCE: &str = "webhook:raw";

pub struct Raw;

impl Provider for Raw {
    const ENDPOINT: Endpoint = Endpoint::Raw;
    const SETTING: &'static str = "SWARM_WEBHOOK_SECRETS";
    const ACCEPTED: StatusCode = StatusCode::ACCEPTED;
    const UNACCEPTABLE: StatusCode = StatusCode::BAD_REQUEST;

    fn configured(inbound: &Inbound) -> bool {
        inbound.raw.is_some()
    }

    /// The body is the message itself: capped at the message limit too.
    fn max_body(inbound: &Inbound) -> usize {
        inbound.max_request_bytes.min(inbound.max_message_bytes)
    }

    /// Signature headers, media type and an unused webhook-id, before the body is read.
    async fn check_head(state: &AppState, parts: &Parts) -> Result<(), ApiError> {
        check_standard_head(state.inbound.raw.as_ref(), &parts.headers, state.now())?;
        if media_type(&parts.headers) != "message/rfc822" {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be message/rfc822",
            ));
        }
        let id = header(&parts.headers, "webhook-id").unwrap_or_default();
        if state.store.nonce_seen(RAW_SOURCE, id).await? {
            return Err(Self::replayed());
        }
        Ok(())
    }

    async fn convert(state: &AppState, parts: &Parts, body: Bytes) -> Result<Converted, ApiError> {
        let inbound = &state.inbound;
        let id = verify_standard(inbound.raw.as_ref(), &parts.headers, &body, state.now())?;
        if body.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "empty body: expected one raw RFC 5322 message",
            ));
        }
        Ok(Converted {
            raw: Vec::from(body),
            source: RAW_SOURCE.to_owned(),
            key: Some(id.to_owned()),
            nonce: Some((id.to_owned(), nonce_lifetime(inbound.webhook_tolerance))),
            ..Converted::default()
        })
    }

    fn replayed() -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "webhook-id was already used")
    }
}
