-- API keys become things an account manages: a public id, a name, the first
-- characters of the key (to tell keys apart; the rest is never stored) and
-- when each was last used. Keys from before get an id and the name
-- 'first key'; their prefix is unknown, so it is the common one.
ALTER TABLE api_keys ADD COLUMN id TEXT;
ALTER TABLE api_keys ADD COLUMN name TEXT NOT NULL DEFAULT 'first key';
ALTER TABLE api_keys ADD COLUMN prefix TEXT NOT NULL DEFAULT 'nfly_sk_';
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
UPDATE api_keys SET id = substr(md5(random()::text || key_hash), 1, 16) WHERE id IS NULL;
ALTER TABLE api_keys ALTER COLUMN id SET NOT NULL;
CREATE UNIQUE INDEX api_keys_id ON api_keys(id);
CREATE INDEX api_keys_account ON api_keys(account_id, created_at);

-- The key a dashboard session was opened with: revoking the key ends it (a
-- session whose key is gone is not live, even one opened while its key was
-- being revoked). Until now an account had exactly one key, so sessions from
-- before were opened with it.
ALTER TABLE dashboard_sessions ADD COLUMN key_id TEXT;
UPDATE dashboard_sessions SET key_id =
    (SELECT k.id FROM api_keys k WHERE k.account_id = dashboard_sessions.account_id ORDER BY k.created_at LIMIT 1)
WHERE key_id IS NULL;
CREATE INDEX dashboard_sessions_key ON dashboard_sessions(key_id);
