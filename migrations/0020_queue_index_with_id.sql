-- no-transaction
-- The queue as a pass that finds no free slot reads its head: priority, then age, then ID. The
-- index of 0004 stops at age, so tasks submitted together (a batch shares its `created_at`)
-- were sorted by ID on every such read; this one is walked in order to the last row taken.
-- Built concurrently, so writes go on meanwhile; 0022 then drops the old one.
CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_queue_idx ON tasks (priority DESC, created_at, id)
    WHERE status = 'pending';
