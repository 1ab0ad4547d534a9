//! API tokens (by the SHA-256 of their text) and the idempotency keys of the API's creating
//! requests.

use serde::Serialize;
use serde_json::json;
use sqlx::FromRow;

use super::Store;
use super::error::{Result, StoreError};
use crate::audit::AuditEvent;

/// A token as `token list` shows it; never its text, which is not stored.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct TokenRow {
    pub name: String,
    /// `read,operate,approve` words.
    pub scopes: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

const TOKEN_COLUMNS: &str =
    "SELECT name, scopes, created_at, expires_at, last_used_at, revoked_at FROM api_tokens";

/// What an idempotency key said about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// The key is new, or was used before with the same body: go on (the work it names is
    /// itself idempotent, so a first attempt that died midway is finished now).
    Proceed,
    /// The key was used with another body.
    Reused,
}

impl Store {
    /// Stores a new token `name` by its hash (audited `token.created` with the name, scopes and
    /// expiry, never the hash). A revoked token of the same name is replaced.
    ///
    /// Errors: [`StoreError::Conflict`] when a token of that name is active.
    pub async fn create_token(
        &self,
        name: &str,
        hash: &str,
        scopes: &str,
        expires_at: Option<&str>,
        actor: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM api_tokens WHERE name = $1 AND revoked_at IS NOT NULL")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let added = sqlx::query(
            "INSERT INTO api_tokens (name, token_sha256, scopes, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(hash)
        .bind(scopes)
        .bind(self.now())
        .bind(expires_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if added == 0 {
            return Err(StoreError::Conflict(format!("a token named {name:?} exists; revoke it first")));
        }
        let event = AuditEvent::new(actor, "token.created", format!("token:{name}"))
            .details(json!({"scopes": scopes, "expires_at": expires_at}));
        self.commit_audited(tx, vec![event]).await
    }

    /// Every token, active and revoked, by name.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("{TOKEN_COLUMNS} ORDER BY name")))
            .fetch_all(&self.reader)
            .await?)
    }

    /// The token whose text hashes to `hash`, revoked or not.
    pub async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!("{TOKEN_COLUMNS} WHERE token_sha256 = $1")))
            .bind(hash)
            .fetch_optional(&self.reader)
            .await?)
    }

    /// Whether any token is active (not revoked; expiry aside): then the pages ask for one.
    pub async fn any_active_token(&self) -> Result<bool> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM api_tokens WHERE revoked_at IS NULL LIMIT 1")
                .fetch_optional(&self.reader)
                .await?;
        Ok(found.is_some())
    }

    /// Notes that token `name` was used now. Bookkeeping for `token list`, not a change of the
    /// bot's state: not audited; callers write it at most once a minute per token.
    pub async fn token_used(&self, name: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE name = $2")
            .bind(self.now())
            .bind(name)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await
    }

    /// Revokes the active token `name` (audited `token.revoked`); `false` when there is none.
    pub async fn revoke_token(&self, name: &str, actor: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let revoked =
            sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
                .bind(self.now())
                .bind(name)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if revoked == 0 {
            self.commit(tx).await?;
            return Ok(false);
        }
        self.commit_audited(tx, vec![AuditEvent::new(actor, "token.revoked", format!("token:{name}"))])
            .await?;
        Ok(true)
    }

    /// Records idempotency key `key` of `token` for a request body hashing to `request_sha256`,
    /// or checks it against the body it was first used with.
    pub async fn use_idempotency_key(&self, token: &str, key: &str, request_sha256: &str) -> Result<KeyUse> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO idempotency_keys (token, idem_key, request_sha256, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (token, idem_key) DO NOTHING",
        )
        .bind(token)
        .bind(key)
        .bind(request_sha256)
        .bind(self.now())
        .execute(&mut *tx)
        .await?;
        let first: String = sqlx::query_scalar(
            "SELECT request_sha256 FROM idempotency_keys WHERE token = $1 AND idem_key = $2",
        )
        .bind(token)
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
        self.commit(tx).await?;
        Ok(if first == request_sha256 { KeyUse::Proceed } else { KeyUse::Reused })
    }
}
