-- Shared resource pools. What a pool has allocated is not stored here: it is the claims of the
-- assigned and running tasks. `version` is bumped by every change and by every scheduling pass
-- that allocates from the pool, so a change checked against the allocations cannot overtake one.
CREATE TABLE resources (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    type        text NOT NULL,
    capacity    jsonb NOT NULL,
    metadata    jsonb NOT NULL,
    maintenance boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    version     bigint NOT NULL DEFAULT 0
);

CREATE INDEX resources_created_at_id_idx ON resources (created_at DESC, id DESC);

-- The live allocations: held tasks that claim a pool.
CREATE INDEX tasks_claim_holders_idx ON tasks (id)
    WHERE status IN ('assigned', 'running') AND resource_claims <> '[]'::jsonb;
