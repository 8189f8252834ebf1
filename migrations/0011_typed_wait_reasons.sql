-- Why a pending task waits, as a value (`{"kind": "missing_capability", "capability": ...}`),
-- not a sentence: capability gaps are found by its kind. The text column is no longer written;
-- the scheduler fills the new one within a pass.
ALTER TABLE tasks ADD COLUMN wait_reason jsonb;
DROP INDEX IF EXISTS tasks_pending_reason_idx;
CREATE INDEX tasks_capability_gap_idx ON tasks (created_at, id)
    WHERE status = 'pending'
      AND wait_reason->>'kind' IN ('missing_capability', 'no_agent_with_all');
