-- SwarmDirector schema, SQLite dialect. Times are RFC 3339 UTC text with microseconds
-- ("2026-11-22T02:17:12.123456Z"), which sorts and compares correctly as text.

CREATE TABLE messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT    NOT NULL,
    source      TEXT    NOT NULL,            -- cli | webhook:raw | ...
    source_key  TEXT,                        -- file path, webhook-id, ...
    dedupe_key  TEXT    NOT NULL UNIQUE,     -- mid:<Message-ID> or sha256:<hex of raw bytes>
    message_id  TEXT,                        -- bare Message-ID when valid
    sha256      TEXT    NOT NULL,
    size_bytes  INTEGER NOT NULL,
    raw         BLOB    NOT NULL,
    status      TEXT    NOT NULL,            -- accepted | ignored | quarantined
    reason      TEXT,
    sender      TEXT,
    subject     TEXT
);
CREATE INDEX messages_status ON messages (status, id);
CREATE INDEX messages_source ON messages (source, received_at);

CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  INTEGER NOT NULL UNIQUE REFERENCES messages (id),
    created_at  TEXT    NOT NULL,
    updated_at  TEXT    NOT NULL,
    sender      TEXT    NOT NULL,
    reply_to    TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    workflow    TEXT    NOT NULL,
    input       TEXT    NOT NULL,            -- JSON: the parsed email the agents work on
    status      TEXT    NOT NULL,            -- queued | running | done | failed
    lease_owner TEXT,
    lease_until TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    started_at  TEXT,
    finished_at TEXT,
    error       TEXT
);
CREATE INDEX tasks_claim ON tasks (status, id);

CREATE TABLE task_steps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     INTEGER NOT NULL REFERENCES tasks (id),
    attempt     INTEGER NOT NULL,
    position    INTEGER NOT NULL,
    agent       TEXT    NOT NULL,
    model       TEXT,
    input       TEXT    NOT NULL,            -- JSON
    output      TEXT,                        -- JSON
    status      TEXT    NOT NULL,            -- running | ok | failed
    error       TEXT,
    tokens_in   INTEGER,
    tokens_out  INTEGER,
    cost_usd    REAL,
    started_at  TEXT    NOT NULL,
    finished_at TEXT,
    duration_ms INTEGER
);
CREATE INDEX task_steps_task ON task_steps (task_id, id);

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id         INTEGER REFERENCES tasks (id),
    kind            TEXT    NOT NULL,        -- mail
    message_id      TEXT    NOT NULL UNIQUE, -- bare Message-ID of the reply; kept across retries
    envelope_from   TEXT    NOT NULL,
    envelope_to     TEXT    NOT NULL,
    payload         BLOB    NOT NULL,        -- the complete RFC 5322 message
    status          TEXT    NOT NULL,        -- pending | sending | delivered | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    lease_owner     TEXT,
    lease_until     TEXT,
    created_at      TEXT    NOT NULL,
    delivered_at    TEXT,
    location        TEXT,                    -- file written, or the relay's answer
    last_error      TEXT
);
CREATE INDEX outbox_claim ON outbox (status, next_attempt_at);
CREATE UNIQUE INDEX outbox_one_reply_per_task ON outbox (task_id) WHERE kind = 'mail';

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        TEXT    NOT NULL,
    actor     TEXT    NOT NULL,
    action    TEXT    NOT NULL,
    entity    TEXT    NOT NULL,
    task_id   INTEGER,
    details   TEXT    NOT NULL,              -- JSON
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL UNIQUE
);
CREATE INDEX audit_log_task ON audit_log (task_id, seq);
CREATE INDEX audit_log_at ON audit_log (at);

-- One row: the newest (seq, hash). Moved in the same transaction as each append, so appends are
-- one total order and a removed tail is detectable.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE webhook_nonces (
    source     TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (source, nonce)
);
