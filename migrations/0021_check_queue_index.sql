-- Stops the upgrade before 0022 drops the old queue index if the new one (0020) is not usable:
-- a build of it that was interrupted leaves an invalid index, which `IF NOT EXISTS` would not
-- build again.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE c.relname = 'tasks_queue_idx' AND i.indisvalid
    ) THEN
        RAISE EXCEPTION 'the index tasks_queue_idx is not valid: rebuild it with '
            '"REINDEX INDEX CONCURRENTLY tasks_queue_idx" and start again';
    END IF;
END
$$;
