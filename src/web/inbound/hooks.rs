//! `POST /hooks/{name}`: a task request signed per Standard Webhooks; 202 with the task, or the
//! duplicate's task when the same webhook-id was delivered before. What can never be a task
//! (bad JSON, addresses, unknown workflow) gets 422.

use axum::http::StatusCode;
use axum::http::request::Parts;
use bytes::Bytes;

use super::{
    Converted, Endpoint, Inbound, Provider, check_standard_head, media_type, refuse, verify_standard,
};
use crate::intake::providers::hook;
use crate::web::{ApiError, AppState};

pub struct Hooks;

/// The hook name of `/hooks/{name}`.
fn name(parts: &Parts) -> &str {
    parts.uri.path().strip_prefix("/hooks/").unwrap_or_default()
}

impl Provider for Hooks {
    const ENDPOINT: Endpoint = Endpoint::Hooks;
    const SETTING: &'static str = "SWARM_HOOK_SECRETS (name=whsec_… per hook) or SWARM_WEBHOOK_SECRETS";
    const ACCEPTED: StatusCode = StatusCode::ACCEPTED;
    const UNACCEPTABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
    /// The JSON and the composed message.
    const BUFFER_FACTOR: usize = 2;

    fn configured(inbound: &Inbound) -> bool {
        inbound.hooks.is_some() || !inbound.named_hooks.is_empty()
    }

    fn check_route(parts: &Parts) -> Result<(), ApiError> {
        if hook::valid_name(name(parts)) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("hook names are 1-{} characters of a-z, 0-9, - and _", hook::MAX_NAME),
        ))
    }

    /// Signature headers and media type, before the body is read.
    async fn check_head(state: &AppState, parts: &Parts) -> Result<(), ApiError> {
        check_standard_head(state.inbound.hook_verifier(name(parts)), &parts.headers, state.now())?;
        if media_type(&parts.headers) != "application/json" {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ));
        }
        Ok(())
    }

    async fn convert(state: &AppState, parts: &Parts, body: Bytes) -> Result<Converted, ApiError> {
        let name = name(parts);
        let id = verify_standard(state.inbound.hook_verifier(name), &parts.headers, &body, state.now())?;
        task_request(state, name, format!("hook:{name}"), id, &body)
    }
}

/// A task request body (see [`hook::TaskRequest`]) as the message to store: `name` namespaces
/// its Message-ID, `key` (a verified webhook-id or an API idempotency key) makes it unique in
/// that namespace, `source` is stored with it. 422 for what can never be a task.
pub(in crate::web) fn task_request(
    state: &AppState,
    name: &str,
    source: String,
    key: &str,
    body: &[u8],
) -> Result<Converted, ApiError> {
    let inbound = &state.inbound;
    let (request, raw) = hook::message(name, key, body, state.store.clock().now())
        .map_err(|r| refuse(r, Hooks::UNACCEPTABLE))?;
    if let Some(w) = request.workflow.as_deref().filter(|w| !inbound.workflows.iter().any(|k| k == w)) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("unknown workflow {w:?}; known: {}", inbound.workflows.join(", ")),
        ));
    }
    Ok(Converted {
        raw,
        source,
        key: Some(key.to_owned()),
        workflow: request.workflow,
        metadata: request.metadata,
        requested: true,
        minted_id: true,
        ..Converted::default()
    })
}
