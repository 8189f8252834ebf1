-- no-transaction
-- The tasks each agent holds now: what a scheduling pass counts to find the free slots, and
-- reads for the agents it places on, and what an agent's long poll reads. `tasks_agent_idx`
-- also holds every task an agent ever finished, which those reads would walk through.
-- Built concurrently (outside a transaction), so a deployment onto a large table does not
-- stop writes to it meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_held_idx ON tasks (assigned_agent)
    WHERE status IN ('assigned', 'running');
