-- no-transaction
-- The tasks of each workflow execution: what `GET /tasks?execution_id=` reads. Built
-- concurrently, so a deployment onto a large table does not stop writes to it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_execution_idx ON tasks (execution_id, created_at DESC)
    WHERE execution_id IS NOT NULL;
