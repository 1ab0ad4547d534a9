-- One instance reads a mailbox at a time: it holds this lease and renews it while it works;
-- another takes over once the lease expires.
ALTER TABLE mailbox_state ADD COLUMN lease_owner TEXT;
ALTER TABLE mailbox_state ADD COLUMN lease_until TEXT;
