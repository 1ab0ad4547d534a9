-- Reply caps count recent deliveries per thread and per recipient.
ALTER TABLE outbox ADD COLUMN thread_key TEXT;   -- root Message-ID of the conversation
CREATE INDEX outbox_recipient_recent ON outbox (envelope_to, delivered_at);
CREATE INDEX outbox_thread_recent ON outbox (thread_key, delivered_at);
