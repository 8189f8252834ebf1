-- People who sign in with a password (stored only as an Argon2id hash), and the audit trail of
-- credential changes, sign-ins, refusals and conflict settlements.
CREATE TABLE users (
    id            uuid PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    created_at    timestamptz NOT NULL
);

CREATE INDEX users_created_at_id_idx ON users (created_at DESC, id DESC);
CREATE INDEX api_keys_created_at_id_idx ON api_keys (created_at DESC, id DESC);
-- Recent revocations, which end WebSocket sessions opened with the keys.
CREATE INDEX api_keys_revoked_at_idx ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;

CREATE TABLE audit_log (
    id     uuid PRIMARY KEY,
    at     timestamptz NOT NULL,
    actor  text NOT NULL,
    action text NOT NULL,
    target text,
    detail jsonb NOT NULL
);

CREATE INDEX audit_log_at_id_idx ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_action_at_idx ON audit_log (action, at DESC, id DESC);
