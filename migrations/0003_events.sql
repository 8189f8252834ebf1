-- The event log: every event is written in the transaction of the change it describes.
CREATE TABLE events (
    seq        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type       text NOT NULL,
    channel    text NOT NULL,
    agent_id   uuid,
    data       jsonb NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE INDEX events_agent_id_seq_idx ON events (agent_id, seq) WHERE agent_id IS NOT NULL;
