//! `POST /inbound/mailgun` (a route's parsed fields) and `/inbound/mailgun/mime` (its raw MIME,
//! `body-mime`): HMAC over timestamp and token with the signing key, each token used once.
//! Mailgun stops retrying on 406 only; everything it can never fix gets 406.

use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use bytes::Bytes;
use secrecy::ExposeSecret;

use super::{Converted, Endpoint, Inbound, Provider, header, nonce_lifetime, refuse};
use crate::intake::providers::form::Form;
use crate::intake::providers::mailgun;
use crate::web::{ApiError, AppState};

/// `MIME`: the `body-mime` form (true) or the parsed fields (false).
pub struct Mailgun<const MIME: bool>;

impl<const MIME: bool> Provider for Mailgun<MIME> {
    const ENDPOINT: Endpoint = Endpoint::Mailgun;
    const SETTING: &'static str = "MAILGUN_SIGNING_KEY";
    const ACCEPTED: StatusCode = StatusCode::OK;
    const UNACCEPTABLE: StatusCode = StatusCode::NOT_ACCEPTABLE;
    /// The form, the parser's copy, the rebuilt message.
    const BUFFER_FACTOR: usize = 3;

    fn configured(inbound: &Inbound) -> bool {
        inbound.mailgun_key.is_some()
    }

    async fn convert(state: &AppState, parts: &Parts, body: Bytes) -> Result<Converted, ApiError> {
        let inbound = &state.inbound;
        let key = inbound.mailgun_key.as_ref().map(|k| k.expose_secret().as_bytes()).unwrap_or_default();
        let content_type = header(&parts.headers, CONTENT_TYPE.as_str()).unwrap_or("");
        let form = Form::parse(content_type, body).await.map_err(|m| ApiError::new(Self::UNACCEPTABLE, m))?;
        let now = state.now();
        let message = if MIME {
            mailgun::from_mime_form(&form, key, now, inbound.mailgun_tolerance)
        } else {
            mailgun::from_parsed_form(&form, key, now, inbound.mailgun_tolerance)
        }
        .map_err(|r| refuse(r, Self::UNACCEPTABLE))?;
        Ok(Converted {
            source: "mailgun".to_owned(),
            key: Some(message.token.clone()),
            nonce: Some((message.token, nonce_lifetime(inbound.mailgun_tolerance))),
            new_text: message.stripped_text,
            raw: message.raw,
            minted_id: !MIME,
            ..Converted::default()
        })
    }

    /// A reused token is either a replay (perhaps with another body: the signature does not
    /// cover it) or Mailgun retrying a request whose answer was lost after the commit. 406 stops
    /// both.
    fn replayed() -> ApiError {
        ApiError::new(StatusCode::NOT_ACCEPTABLE, "token was already used")
    }
}
