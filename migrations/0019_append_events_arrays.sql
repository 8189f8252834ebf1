-- `append_events` taking its batch as one array per column, bound in PostgreSQL's binary format:
-- nothing is read back out of a JSON document while the numbering lock is held, and nothing
-- but each event's `data` is parsed. Otherwise the same function as in 0014, which stays for
-- replicas of the earlier version during a rolling upgrade (both take the same lock).
CREATE FUNCTION append_events(
    kinds text[], channels text[], agents uuid[], tasks uuid[], payloads jsonb[],
    stamps timestamptz[]
) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    top bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(4996257039338587468);
    PERFORM set_config('idle_in_transaction_session_timeout', '5s', true);
    SELECT coalesce(max(seq), 0) INTO top FROM events;
    INSERT INTO events (seq, type, channel, agent_id, task_id, data, created_at)
    SELECT top + e.ord, e.kind, e.channel, e.agent, e.task, e.payload, e.stamp
    FROM unnest(kinds, channels, agents, tasks, payloads, stamps) WITH ORDINALITY
        AS e(kind, channel, agent, task, payload, stamp, ord)
    ORDER BY e.ord;
    RETURN top;
END
$$;
