-- Per-endpoint flow controls.
-- `rate_limit`: most deliveries started per second (NULL: no limit). Claims
-- enforce it with a cell-rate algorithm whose state is `rate_tat_us` (the
-- theoretical arrival time of the next delivery, Unix microseconds).
-- `throttled_until_ms`: the endpoint answered 429, 502 or 504; nothing is
-- sent to it before this time (Unix ms).
-- `ordering`: 'none' or 'per_resource' (a delivery waits while an earlier
-- one about the same resource to the same endpoint is pending).
ALTER TABLE endpoints ADD COLUMN rate_limit BIGINT;
ALTER TABLE endpoints ADD COLUMN rate_tat_us BIGINT;
ALTER TABLE endpoints ADD COLUMN throttled_until_ms BIGINT;
ALTER TABLE endpoints ADD COLUMN ordering TEXT NOT NULL DEFAULT 'none';
-- The payload's `id`: the resource the event is about. The index leads with it
-- so that it serves only the per-resource look-ups, never an endpoint's queue.
ALTER TABLE deliveries ADD COLUMN resource_id TEXT;
CREATE INDEX deliveries_resource ON deliveries(resource_id, endpoint_id, seq) WHERE status = 'pending';
