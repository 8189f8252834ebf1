-- Workflow definitions and their executions. A definition's steps and an execution's step
-- states are kept as JSON arrays: they are read and written whole, one row at a time, and the
-- execution's row is the lock every write that moves it takes.
CREATE TABLE workflows (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL,
    steps       jsonb NOT NULL,
    metadata    jsonb NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE INDEX workflows_created_at_id_idx ON workflows (created_at DESC, id DESC);

CREATE TABLE workflow_executions (
    id           uuid PRIMARY KEY,
    workflow_id  uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    status       text NOT NULL,
    parameters   jsonb NOT NULL,
    metadata     jsonb NOT NULL,
    steps        jsonb NOT NULL,
    reruns       jsonb NOT NULL,
    created_at   timestamptz NOT NULL,
    completed_at timestamptz,
    updated_at   timestamptz NOT NULL,
    version      bigint NOT NULL DEFAULT 0
);

CREATE INDEX workflow_executions_workflow_idx
    ON workflow_executions (workflow_id, created_at DESC, id DESC);
CREATE INDEX workflow_executions_running_idx
    ON workflow_executions (workflow_id) WHERE status = 'running';
