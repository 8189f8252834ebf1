-- An Idempotency-Key may cover a batch of tasks: every task it created, in the order given.
-- `task_id` keeps the first, so replicas of earlier versions still read a record; a record they
-- write has no `task_ids`, and is read as covering `task_id` alone.
ALTER TABLE idempotency_keys ADD COLUMN task_ids uuid[];
