-- API tokens: only the SHA-256 of a token is kept. Scopes are `read,operate,approve` words.
-- A revoked token keeps its row (for `token list`) until a new token takes its name.
CREATE TABLE api_tokens (
    name         TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    scopes       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT
);

-- Idempotency keys of POST /api/v1/tasks, per token: the request body's SHA-256, so the same
-- key with another body is refused.
CREATE TABLE idempotency_keys (
    token          TEXT NOT NULL,
    idem_key       TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    PRIMARY KEY (token, idem_key)
);
