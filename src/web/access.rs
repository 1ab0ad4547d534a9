//! Who is asking: the token a request presents (`Authorization: Bearer <token>`, or HTTP Basic
//! with the token as password, so a browser can log in), resolved to a [`Principal`] with its
//! scopes. `SWARM_ADMIN_TOKEN` is a token with every scope; the others are made with
//! `swarm-director token create` and found by their SHA-256.

use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use chrono::DateTime;
use secrecy::ExposeSecret;

use super::{ApiError, AppState};
use crate::domain::{Scope, Scopes, token_hash};
use crate::intake::providers::{Credentials, secrets_match};

/// A token's use is written to `last_used_at` at most this often.
const LAST_USE_RESOLUTION_SECS: i64 = 60;

/// The holder of a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name; `admin` for `SWARM_ADMIN_TOKEN`.
    pub name: String,
    pub scopes: Scopes,
    admin: bool,
}

impl Principal {
    /// The audit actor of what this principal changes: `admin` or `token:<name>`.
    pub fn actor(&self) -> String {
        if self.admin { "admin".to_owned() } else { format!("token:{}", self.name) }
    }

    /// 403 unless the token has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(scope) {
            return Ok(());
        }
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("token {:?} lacks the {scope} scope (it has {})", self.name, self.scopes),
        )
        .code("missing_scope"))
    }
}

/// The token a request presents: a Bearer token, or the password of Basic credentials.
pub(super) fn presented_token(headers: &HeaderMap) -> Option<String> {
    match Credentials::parse(headers.get(AUTHORIZATION)?.to_str().ok()?)? {
        Credentials::Bearer(token) => Some(token),
        Credentials::Basic(decoded) => {
            let text = String::from_utf8(decoded).ok()?;
            text.split_once(':').map(|(_, password)| password.to_owned())
        }
    }
}

impl AppState {
    /// The principal of the presented token; `None` when the request presents none.
    ///
    /// Errors: 401 (`invalid_token`) for a token that is unknown, revoked or expired.
    pub async fn principal(&self, headers: &HeaderMap) -> Result<Option<Principal>, ApiError> {
        let Some(token) = presented_token(headers) else { return Ok(None) };
        if let Some(admin) = &self.admin_token
            && secrets_match(token.as_bytes(), admin.expose_secret().as_bytes())
        {
            return Ok(Some(Principal { name: "admin".into(), scopes: Scopes::ALL, admin: true }));
        }
        let invalid =
            |why: &str| ApiError::new(StatusCode::UNAUTHORIZED, why).code("invalid_token").challenge();
        let row =
            self.store.token_by_hash(&token_hash(&token)).await?.ok_or_else(|| invalid("unknown token"))?;
        if row.revoked_at.is_some() {
            return Err(invalid("this token was revoked"));
        }
        let now = self.store.clock().now();
        let before_now = |t: &Option<String>, slack: i64| {
            t.as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| (now - t.to_utc()).num_seconds() >= slack)
        };
        if before_now(&row.expires_at, 0) == Some(true) {
            return Err(invalid("this token has expired"));
        }
        if before_now(&row.last_used_at, LAST_USE_RESOLUTION_SECS) != Some(false)
            && let Err(e) = self.store.token_used(&row.name).await
        {
            tracing::warn!(token = %row.name, error = %e, "could not note the token's use");
        }
        let scopes = Scopes::parse(&row.scopes).map_err(ApiError::internal)?;
        Ok(Some(Principal { name: row.name, scopes, admin: false }))
    }

    /// The principal, which must present a token with `scope`: 401 without a token, 403 when
    /// it lacks the scope.
    pub async fn require(&self, headers: &HeaderMap, scope: Scope) -> Result<Principal, ApiError> {
        let principal = self.principal(headers).await?.ok_or_else(ApiError::unauthorized)?;
        principal.require(scope)?;
        Ok(principal)
    }

    /// Whether any credential is configured (the admin token or an active API token). Without
    /// one, the pages stay open as they are on a fresh install (bind to loopback then).
    pub async fn access_configured(&self) -> Result<bool, ApiError> {
        Ok(self.admin_token.is_some() || self.store.any_active_token().await?)
    }

    /// The pages' and exports' check: a token with `read` when any credential is configured,
    /// nothing otherwise.
    pub(super) async fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.principal(headers).await? {
            Some(p) => p.require(Scope::Read),
            None if self.access_configured().await? => Err(ApiError::unauthorized()),
            None => Ok(()),
        }
    }
}
