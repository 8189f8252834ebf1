-- Tokens issued at sign-in carry the user's token version; a change of role or password moves
-- it on, which ends every token issued before.
ALTER TABLE users ADD COLUMN token_version bigint NOT NULL DEFAULT 1;
