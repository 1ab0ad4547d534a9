-- Scheduled jobs: one row per (job, scheduled time), inserted by the instance that runs it, so
-- a scheduled time is run once across instances and restarts. Manual runs (`job run`) have
-- trigger 'manual' and their own time.
CREATE TABLE job_runs (
    job          TEXT NOT NULL,
    scheduled_at TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,              -- schedule | manual
    owner        TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    status       TEXT NOT NULL,              -- running | ok | failed
    note         TEXT,
    PRIMARY KEY (job, scheduled_at)
);
CREATE INDEX job_runs_recent ON job_runs (job, started_at);

-- Liveness alert conditions (mailbox:<key>, outbox-backlog, llm-breaker): whether each fires,
-- since when, when its operator was last told, and the samples the next check compares with.
CREATE TABLE alerts (
    condition   TEXT PRIMARY KEY,
    firing      INTEGER NOT NULL,
    since       TEXT NOT NULL,
    notified_at TEXT,
    streak      INTEGER NOT NULL DEFAULT 0,
    sample      INTEGER NOT NULL DEFAULT 0,
    detail      TEXT
);

-- Retention: content older than SWARM_RETENTION_DAYS is removed; the row, its hashes and its
-- audit records stay, and purged_at says when the content went.
ALTER TABLE messages ADD COLUMN purged_at TEXT;
ALTER TABLE tasks ADD COLUMN purged_at TEXT;
ALTER TABLE outbox ADD COLUMN purged_at TEXT;
