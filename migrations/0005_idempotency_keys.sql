-- Idempotency-Key records: the same key with the same body returns the original task for 24 h.
CREATE TABLE idempotency_keys (
    key         text PRIMARY KEY,
    fingerprint text NOT NULL,
    task_id     uuid NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
