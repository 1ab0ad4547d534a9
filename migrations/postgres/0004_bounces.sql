-- Bounces matched to the deliveries they report on, and the addresses we no longer send to.
ALTER TABLE outbox ADD COLUMN bounce TEXT;   -- "hard 5.1.1: <diagnostic>" once a bounce names it

CREATE TABLE suppressions (
    address    TEXT PRIMARY KEY,               -- lower case
    reason     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    message_id BIGINT REFERENCES messages (id)  -- the bounce that added it; NULL when added by hand
);
