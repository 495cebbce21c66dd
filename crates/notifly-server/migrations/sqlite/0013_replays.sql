-- Replays: a webhook sent again every event of its account's log in a time
-- window that it selects. The replayer advances `cursor` (the last event of
-- the log it has looked at) batch by batch, in the transaction that makes
-- the batch's deliveries, so a restart resumes where it was.
CREATE TABLE replays (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    since INTEGER NOT NULL,
    until INTEGER NOT NULL,
    status TEXT NOT NULL,
    total INTEGER NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    cursor TEXT,
    -- When the cursor's event was written: where to look again if
    -- retention purges that event before the replay passes it.
    cursor_at INTEGER,
    -- The newest event of the log when the replay was made: it ends there,
    -- so events written since (which the webhook gets live) are not sent
    -- twice.
    last_event TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX replays_endpoint ON replays(endpoint_id, created_at);
CREATE INDEX replays_active ON replays(updated_at) WHERE status IN ('queued', 'running');
