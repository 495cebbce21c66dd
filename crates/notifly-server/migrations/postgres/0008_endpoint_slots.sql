-- An endpoint's slots: its limit of attempts in flight, shared by every
-- node. Every leased delivery holds one slot of its endpoint for as long
-- as its lease (`delivery_id`, `owner` and `until_ms` are the lease's), and
-- a slot is free once it is handed back or its lease has run out. A claim
-- or a write takes free slots with `FOR UPDATE SKIP LOCKED`, so nodes
-- never wait for each other's slots, and no two can take the same one:
-- the limit holds across nodes without a lock over every claim, and a
-- write can lease its new deliveries itself (the hand-off) and give them
-- to its node's dispatcher without a claim.
--
-- Rows 0 to limit - 1 are made, once per endpoint, by the first claim
-- that needs them (a node's limit is `endpoint_concurrency`).
CREATE TABLE endpoint_slots (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    delivery_id TEXT,
    owner TEXT,
    until_ms BIGINT,
    PRIMARY KEY (endpoint_id, n)
) WITH (fillfactor = 50);
