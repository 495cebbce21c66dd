-- Operational events owed: a write-back that disables an endpoint, opens or
-- closes its circuit, or exhausts a delivery's retries notes it here, in
-- its own transaction; the publisher (notices.rs) turns each row into a
-- `webhook.*` / `delivery.exhausted` event and deletes it, in one
-- transaction. So a notice is neither lost nor published twice.
CREATE TABLE notices (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    delivery_id TEXT,
    -- What the change left the endpoint at (JSON: enabled, disabled_reason,
    -- circuit, circuit_since), which the payload shows even if the endpoint
    -- changed again before the notice was published.
    state TEXT,
    created_at INTEGER NOT NULL
);
