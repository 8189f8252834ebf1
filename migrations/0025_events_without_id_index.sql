-- The event log's primary key on `id`, which nothing reads by any more: since 0014 every write
-- numbers its events itself (`seq`, unique, is how events are read, replayed and purged), and
-- rows an earlier version left unnumbered are found through `events_unsequenced_idx`, which
-- covers them. Every event inserted still wrote an entry in it. `id` stays, filled as before,
-- for the versions that still insert without it.
-- The index backs a constraint, so it cannot be dropped concurrently: the table is locked for an
-- instant, and the lock is waited for at most 2 s, so a long transaction on the events cannot
-- stall every write queued behind this one. Timed out, the migration fails, changes nothing, and
-- is tried again at the next run.
SET LOCAL lock_timeout = '2s';
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_pkey;
