//! `POST /inbound/sendgrid`: Inbound Parse, raw or parsed mode, authenticated by Basic auth
//! and/or an ECDSA signature over timestamp and body.

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use bytes::Bytes;

use super::{Converted, Endpoint, Inbound, Provider, check_basic, header, refuse};
use crate::intake::providers::form::Form;
use crate::intake::providers::sendgrid;
use crate::web::{ApiError, AppState};

pub struct Sendgrid;

impl Provider for Sendgrid {
    const ENDPOINT: Endpoint = Endpoint::Sendgrid;
    const SETTING: &'static str = "SENDGRID_INBOUND_BASIC_AUTH or SENDGRID_VERIFICATION_KEY";
    const ACCEPTED: StatusCode = StatusCode::OK;
    const UNACCEPTABLE: StatusCode = StatusCode::BAD_REQUEST;
    /// The form, the parser's copy, the rebuilt message.
    const BUFFER_FACTOR: usize = 3;

    fn configured(inbound: &Inbound) -> bool {
        inbound.sendgrid_basic.is_some() || inbound.sendgrid_key.is_some()
    }

    async fn check_head(state: &AppState, parts: &Parts) -> Result<(), ApiError> {
        match &state.inbound.sendgrid_basic {
            Some(expected) => check_basic(&parts.headers, expected),
            None => Ok(()),
        }
    }

    async fn convert(state: &AppState, parts: &Parts, body: Bytes) -> Result<Converted, ApiError> {
        let inbound = &state.inbound;
        if let Some(key) = &inbound.sendgrid_key {
            key.verify(
                header(&parts.headers, sendgrid::SIGNATURE_HEADER),
                header(&parts.headers, sendgrid::TIMESTAMP_HEADER),
                &body,
                state.now(),
                inbound.webhook_tolerance,
            )
            .map_err(|r| refuse(r, Self::UNACCEPTABLE))?;
        }
        let content_type = header(&parts.headers, CONTENT_TYPE.as_str()).unwrap_or("");
        let form = Form::parse(content_type, body).await.map_err(|m| ApiError::new(Self::UNACCEPTABLE, m))?;
        let raw = sendgrid::message(&form).map_err(|r| refuse(r, Self::UNACCEPTABLE))?;
        Ok(Converted {
            raw,
            source: "sendgrid".to_owned(),
            peer: sendgrid::smtp_peer(&form),
            minted_id: !sendgrid::carries_raw_mime(&form),
            ..Converted::default()
        })
    }
}
