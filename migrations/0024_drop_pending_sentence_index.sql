-- no-transaction
-- The index of 0007 on the sentence saying why a pending task waits. It served the capability
-- gap query of the versions before 0011, which now reads `tasks_capability_gap_idx` by the
-- reason's kind; every task inserted or updated while pending still wrote an entry in it. A
-- replica of one of those versions still running works without it, its query walking the
-- pending tasks instead. Dropped concurrently, so writes go on meanwhile.
DROP INDEX CONCURRENTLY IF EXISTS tasks_pending_reason_idx;
