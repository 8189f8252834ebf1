-- API keys, stored only as SHA-256 hashes. Rows are revoked, never deleted, to keep the record.
CREATE TABLE api_keys (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    prefix     text NOT NULL,
    hash       text NOT NULL UNIQUE,
    role       text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin', 'agent')),
    agent_id   uuid,
    created_at timestamptz NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz,
    CHECK ((role = 'agent') = (agent_id IS NOT NULL))
);

CREATE INDEX api_keys_agent_id_idx ON api_keys (agent_id) WHERE agent_id IS NOT NULL;
