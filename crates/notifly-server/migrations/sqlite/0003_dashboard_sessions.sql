-- Dashboard login sessions, shared by every node on the database so that any
-- node serves any session and sessions survive restarts. Only the SHA-256 of
-- the cookie token is stored: a leaked table does not yield usable cookies.
-- Times are Unix seconds.

CREATE TABLE dashboard_sessions (
    -- Hex SHA-256 of the cookie token.
    token_hash TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    -- Every form of the session carries it.
    csrf TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- Written at most once a minute, not on every page.
    last_seen_at INTEGER NOT NULL,
    -- The earlier of the idle timeout after `last_seen_at` and the lifetime
    -- after `created_at`: the session is dead from then on.
    expires_at INTEGER NOT NULL,
    -- The one-shot message for the next page, if any (both set or both null).
    flash_kind TEXT,
    flash_message TEXT
);
-- Retention deletes by expiry.
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions(expires_at);
-- An account's sessions, least recently used first (the cap at login, and
-- the cascade from accounts).
CREATE INDEX dashboard_sessions_account ON dashboard_sessions(account_id, last_seen_at);
