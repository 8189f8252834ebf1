-- Tasks, and the task each event is about.
CREATE TABLE tasks (
    id                    uuid PRIMARY KEY,
    title                 text NOT NULL,
    description           text NOT NULL,
    priority              smallint NOT NULL CHECK (priority BETWEEN 1 AND 10),
    required_capabilities text[] NOT NULL,
    resources             jsonb NOT NULL,
    deadline              timestamptz,
    metadata              jsonb NOT NULL,
    status                text NOT NULL CHECK (status IN
        ('pending', 'assigned', 'running', 'completed', 'failed', 'cancelled', 'expired')),
    assigned_agent        uuid,
    attempt               integer NOT NULL CHECK (attempt >= 1),
    round_start           integer NOT NULL CHECK (round_start BETWEEN 1 AND attempt),
    max_attempts          integer NOT NULL CHECK (max_attempts >= 1),
    lease_seconds         integer NOT NULL CHECK (lease_seconds > 0),
    preemptible           boolean NOT NULL,
    lease_expires_at      timestamptz,
    assigned_at           timestamptz,
    started_at            timestamptz,
    completed_at          timestamptz,
    progress              double precision,
    result                jsonb,
    error                 text,
    resource_claims       jsonb NOT NULL,
    workflow_id           uuid,
    execution_id          uuid,
    step                  text,
    pending_reason        text,
    not_before            timestamptz NOT NULL,
    cancel_requested      boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    version               bigint NOT NULL DEFAULT 0,
    -- A held task always has its holder; a pending one never does.
    CHECK ((status IN ('assigned', 'running')) = (assigned_agent IS NOT NULL AND lease_expires_at IS NOT NULL))
);

CREATE INDEX tasks_created_at_id_idx ON tasks (created_at DESC, id DESC);
-- The scheduler's queue.
CREATE INDEX tasks_pending_idx ON tasks (priority DESC, created_at) WHERE status = 'pending';
-- Lease expiry.
CREATE INDEX tasks_lease_idx ON tasks (lease_expires_at) WHERE status IN ('assigned', 'running');
-- An agent's tasks.
CREATE INDEX tasks_agent_idx ON tasks (assigned_agent) WHERE assigned_agent IS NOT NULL;
-- Deadline expiry of pending tasks.
CREATE INDEX tasks_deadline_idx ON tasks (deadline) WHERE status = 'pending' AND deadline IS NOT NULL;

ALTER TABLE events ADD COLUMN task_id uuid;
CREATE INDEX events_task_id_seq_idx ON events (task_id, seq) WHERE task_id IS NOT NULL;
