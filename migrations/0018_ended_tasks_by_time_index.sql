-- no-transaction
-- Ended tasks by when they ended: what the retention of finished tasks deletes from, oldest
-- first, without walking the rest. Built concurrently, so a deployment onto a large table does
-- not stop writes to it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_ended_at_idx ON tasks (completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled', 'expired');
