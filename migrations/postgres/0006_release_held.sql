-- A held reply a person released is sent even though a reply cap is still reached.
ALTER TABLE outbox ADD COLUMN cap_exempt INTEGER NOT NULL DEFAULT 0;
