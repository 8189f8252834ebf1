-- The event log's primary key on `id`, which nothing reads by any more: since 0014 every write
-- numbers its events itself (`seq`, unique, is how events are read, replayed and purged), and
-- rows an earlier version left unnumbered are found through `events_unsequenced_idx`, which
-- covers them. Every event inserted still wrote an entry in it, about a tenth of the cost of
-- storing an event. `id` stays, filled as before, for the versions that still insert without
-- it.
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_pkey;
