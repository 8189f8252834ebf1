-- The identity of this deployment: one random ID, made once with the database and shared by
-- every replica on it. It names the deployment's channel on a Redis shared with others.
CREATE TABLE deployment (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id uuid NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO deployment DEFAULT VALUES;
