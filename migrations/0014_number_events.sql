-- Writes number their events themselves, as the last step before they commit: `append_events`
-- takes the numbering lock (held to the end of the transaction, so writes commit in the order of
-- their numbers), then numbers `batch` after the highest `seq` committed and inserts it. It
-- returns that highest `seq`. One call, so the lock is held for one round trip and the commit.
-- Each statement in the function reads a fresh snapshot, taken after the lock. A client that
-- stalls between this call and its commit would hold every write up, so from here on the
-- transaction may sit idle for at most 5 s before the server ends the session (rolling it back).
CREATE FUNCTION append_events(batch jsonb) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    top bigint;
BEGIN
    -- The key of the numbering lock ("EVENTREL"), the one earlier versions' relay takes.
    PERFORM pg_advisory_xact_lock(4996257039338587468);
    PERFORM set_config('idle_in_transaction_session_timeout', '5s', true);
    SELECT coalesce(max(seq), 0) INTO top FROM events;
    INSERT INTO events (seq, type, channel, agent_id, task_id, data, created_at)
    SELECT top + e.ord, e.v->>'type', e.v->>'channel', (e.v->>'agent_id')::uuid,
           (e.v->>'task_id')::uuid, e.v->'data', (e.v->>'created_at')::timestamptz
    FROM jsonb_array_elements(batch) WITH ORDINALITY AS e(v, ord)
    ORDER BY e.ord;
    RETURN top;
END
$$;
