-- Where IMAP intake stands in each mailbox: the UIDVALIDITY it last saw and the highest UID
-- whose message is committed and acknowledged (flagged or moved), plus its health.
CREATE TABLE mailbox_state (
    mailbox            TEXT   PRIMARY KEY,
    uidvalidity        BIGINT NOT NULL,
    last_uid           BIGINT NOT NULL,
    last_ok_at         TEXT,
    last_error         TEXT,
    consecutive_errors BIGINT NOT NULL DEFAULT 0,
    updated_at         TEXT   NOT NULL
);
