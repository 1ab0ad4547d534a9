-- A follow-up (a reply to one of our replies, or carrying a task's [#id], from that task's
-- sender) continues its conversation: conversation_id is the first task of the conversation,
-- follows the task it answers. NULL for a task that starts a conversation.
ALTER TABLE tasks ADD COLUMN conversation_id BIGINT;
ALTER TABLE tasks ADD COLUMN follows BIGINT;
