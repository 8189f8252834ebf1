-- Registered agents. `version` is the optimistic-concurrency token every write checks.
CREATE TABLE agents (
    id                   uuid PRIMARY KEY,
    name                 text NOT NULL,
    capabilities         text[] NOT NULL,
    resources            jsonb NOT NULL,
    metadata             jsonb NOT NULL,
    status               text NOT NULL
        CHECK (status IN ('idle', 'active', 'busy', 'draining', 'offline', 'suspended')),
    max_concurrent_tasks integer NOT NULL CHECK (max_concurrent_tasks > 0),
    current_tasks        integer NOT NULL DEFAULT 0 CHECK (current_tasks >= 0),
    reliability          double precision NOT NULL,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    last_heartbeat       timestamptz NOT NULL,
    version              bigint NOT NULL DEFAULT 0
);

-- Newest-first listing with keyset pagination.
CREATE INDEX agents_created_at_id_idx ON agents (created_at DESC, id DESC);
-- capability_filter.
CREATE INDEX agents_capabilities_idx ON agents USING gin (capabilities);
-- Offline detection scans only agents expected to heartbeat.
CREATE INDEX agents_online_heartbeat_idx ON agents (last_heartbeat)
    WHERE status IN ('idle', 'active', 'busy', 'draining');
