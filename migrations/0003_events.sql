-- The event log: every event is written in the transaction of the change it describes, without a
-- number; the relay then numbers committed events (`seq`) in write order, one relay at a time, so
-- `seq` order is the order in which events became visible and readers by `seq` never miss one.
CREATE TABLE events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq        bigint UNIQUE,
    type       text NOT NULL,
    channel    text NOT NULL,
    agent_id   uuid,
    data       jsonb NOT NULL,
    created_at timestamptz NOT NULL
);

-- The relay's queue.
CREATE INDEX events_unsequenced_idx ON events (id) WHERE seq IS NULL;
CREATE INDEX events_agent_id_seq_idx ON events (agent_id, seq) WHERE agent_id IS NOT NULL;
