-- Why a pending task waits, as a value (`{"kind": "missing_capability", "capability": ...}`),
-- not a sentence: capability gaps are found by its kind. The sentence column is still written
-- beside it, so replicas of the previous version keep working during a rolling upgrade; a later
-- migration drops it. Reasons already stored are carried over where their sentence says which
-- they are; the scheduler fills in the rest within a pass.
ALTER TABLE tasks ADD COLUMN wait_reason jsonb;
UPDATE tasks SET wait_reason = CASE
    WHEN pending_reason LIKE 'no online agent has capability %'
        THEN jsonb_build_object('kind', 'missing_capability',
                                'capability', substr(pending_reason, 32))
    WHEN pending_reason = 'no online agent has all the required capabilities'
        THEN jsonb_build_object('kind', 'no_agent_with_all')
    WHEN pending_reason ~ '^[0-9]+ agents? match, all at capacity$'
        THEN jsonb_build_object('kind', 'all_at_capacity',
                                'matching', split_part(pending_reason, ' ', 1)::int)
    END
WHERE status = 'pending' AND pending_reason IS NOT NULL;
CREATE INDEX tasks_capability_gap_idx ON tasks (created_at, id)
    WHERE status = 'pending'
      AND wait_reason->>'kind' IN ('missing_capability', 'no_agent_with_all');
