-- How each task's workflow was chosen (rule, default, ask_director, director, requested,
-- list_mail), stored as such instead of the former "(director)" workflow name. Tasks created
-- before this migration did not record it; they read as "default", or "ask_director" for the
-- ones still waiting for the director.
ALTER TABLE tasks ADD COLUMN routing TEXT NOT NULL DEFAULT 'default';
UPDATE tasks SET routing = 'ask_director' WHERE workflow = '(director)';
