-- no-transaction
-- The queue index of 0004, replaced by `tasks_queue_idx` (0020, found valid by 0021). Dropped
-- concurrently, so writes go on meanwhile.
DROP INDEX CONCURRENTLY IF EXISTS tasks_pending_idx;
