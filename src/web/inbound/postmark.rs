//! `POST /inbound/postmark`: Postmark's inbound JSON behind Basic auth. Postmark stops retrying
//! on 403 only; what it can never fix gets 403.

use axum::http::StatusCode;
use axum::http::request::Parts;
use bytes::Bytes;

use super::{Converted, Endpoint, Inbound, Provider, check_basic, media_type, refuse};
use crate::intake::providers::postmark;
use crate::web::{ApiError, AppState};

pub struct Postmark;

impl Provider for Postmark {
    const ENDPOINT: Endpoint = Endpoint::Postmark;
    const SETTING: &'static str = "POSTMARK_INBOUND_BASIC_AUTH";
    const ACCEPTED: StatusCode = StatusCode::OK;
    const UNACCEPTABLE: StatusCode = StatusCode::FORBIDDEN;
    /// The JSON, its decoded strings, the rebuilt message.
    const BUFFER_FACTOR: usize = 3;

    fn configured(inbound: &Inbound) -> bool {
        inbound.postmark_basic.is_some()
    }

    async fn check_head(state: &AppState, parts: &Parts) -> Result<(), ApiError> {
        match &state.inbound.postmark_basic {
            Some(expected) => check_basic(&parts.headers, expected),
            None => Ok(()),
        }
    }

    async fn convert(_state: &AppState, parts: &Parts, body: Bytes) -> Result<Converted, ApiError> {
        if media_type(&parts.headers) != "application/json" {
            return Err(ApiError::new(Self::UNACCEPTABLE, "Content-Type must be application/json"));
        }
        let message = postmark::message(&body).map_err(|r| refuse(r, Self::UNACCEPTABLE))?;
        Ok(Converted {
            raw: message.raw,
            source: "postmark".to_owned(),
            new_text: message.stripped_text,
            minted_id: true,
            ..Converted::default()
        })
    }
}
