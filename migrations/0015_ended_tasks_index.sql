-- no-transaction
-- The tasks each agent ended (completed or failed, as their last holder), by when: what the
-- performance figures of an agent read for a span of time, without walking its other tasks.
-- Built concurrently, so a deployment onto a large table does not stop writes to it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_ended_idx ON tasks (assigned_agent, completed_at)
    WHERE status IN ('completed', 'failed');
