-- Conflicts, reported or detected. A detected conflict names its cause; one cause has at most one
-- open conflict at a time, so replicas detecting the same thing cannot open it twice.
CREATE TABLE conflicts (
    id              uuid PRIMARY KEY,
    agent_id        uuid,
    task_id         uuid,
    conflict_type   text NOT NULL,
    description     text NOT NULL,
    severity        text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    metadata        jsonb NOT NULL,
    status          text NOT NULL CHECK (status IN ('open', 'resolved', 'dismissed')),
    source          text NOT NULL CHECK (source IN ('reported', 'detected')),
    involved_agents uuid[] NOT NULL,
    involved_tasks  uuid[] NOT NULL,
    resource_id     uuid,
    resolution      jsonb,
    cause           text,
    reported_by     text NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    resolved_at     timestamptz,
    version         bigint NOT NULL DEFAULT 0
);

CREATE INDEX conflicts_created_at_id_idx ON conflicts (created_at DESC, id DESC);
CREATE UNIQUE INDEX conflicts_open_cause_idx ON conflicts (cause) WHERE status = 'open' AND cause IS NOT NULL;
CREATE INDEX conflicts_open_detected_idx ON conflicts (conflict_type, created_at)
    WHERE status = 'open' AND source = 'detected';
CREATE INDEX conflicts_involved_agents_idx ON conflicts USING gin (involved_agents);

-- Tasks waiting for a reason (capability gaps are found this way).
CREATE INDEX tasks_pending_reason_idx ON tasks (pending_reason text_pattern_ops) WHERE status = 'pending';
