-- What each replica announces of the settings every replica must share, as fingerprints, so
-- that a replica started with different ones (a different `JWT_SECRET`, say) is noticed. Rows
-- of replicas gone quiet are deleted by the announcements of the others.
CREATE TABLE replicas (
    id       uuid PRIMARY KEY,
    settings jsonb NOT NULL,
    seen_at  timestamptz NOT NULL
);
