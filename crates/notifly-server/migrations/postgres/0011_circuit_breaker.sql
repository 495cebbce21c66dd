-- Each endpoint's circuit breaker: 'closed' (deliveries flow), 'open' (after
-- a run of failed attempts: nothing is sent but a probe, at growing
-- intervals) or 'half_open' (a probe is in flight). `circuit_since` is when
-- it last changed (Unix seconds). While open, `probe_at_ms` is when the next
-- probe may go and `probe_interval_ms` the interval that set it.
ALTER TABLE endpoints ADD COLUMN circuit TEXT NOT NULL DEFAULT 'closed';
ALTER TABLE endpoints ADD COLUMN circuit_since BIGINT;
ALTER TABLE endpoints ADD COLUMN consecutive_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN probe_at_ms BIGINT;
ALTER TABLE endpoints ADD COLUMN probe_interval_ms BIGINT;
