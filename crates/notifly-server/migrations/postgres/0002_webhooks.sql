-- Webhook endpoints, their deliveries and every attempt.
-- Times used for scheduling (`*_ms`) are Unix milliseconds; the rest are seconds.

CREATE TABLE endpoints (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    description TEXT,
    -- JSON array of event types, or ["*"].
    events JSONB NOT NULL,
    enabled BOOLEAN NOT NULL,
    disabled_reason TEXT,
    secret TEXT NOT NULL,
    -- During a rotation's overlap window: the secret being replaced.
    previous_secret TEXT,
    previous_secret_expires_at BIGINT,
    -- Start of the current run of failures; null while healthy.
    failing_since BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX endpoints_name ON endpoints(account_id, name);
CREATE INDEX endpoints_account_seq ON endpoints(account_id, seq);

-- The subscription, one row per event type ('*' for all), so that the outbox
-- fan-out is one indexed join.
CREATE TABLE endpoint_events (
    endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
    event_type TEXT NOT NULL,
    PRIMARY KEY (endpoint_id, event_type)
);

CREATE TABLE deliveries (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL REFERENCES events(id),
    event_type TEXT NOT NULL,
    -- pending | succeeded | failed | cancelled
    status TEXT NOT NULL,
    -- Attempts made so far (the next one is attempts + 1).
    attempts BIGINT NOT NULL DEFAULT 0,
    -- Position in the retry schedule; reset by a manual retry.
    schedule_pos BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT,
    lease_until_ms BIGINT,
    lease_owner TEXT,
    last_attempt_at BIGINT,
    last_status_code BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
-- The dispatcher's queue: due work per endpoint.
CREATE INDEX deliveries_queue ON deliveries(endpoint_id, next_attempt_ms) WHERE status = 'pending';
CREATE INDEX deliveries_endpoint_seq ON deliveries(endpoint_id, seq);
CREATE INDEX deliveries_event ON deliveries(event_id);

CREATE TABLE attempts (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    delivery_id TEXT NOT NULL REFERENCES deliveries(id),
    attempt BIGINT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    request_headers JSONB NOT NULL,
    response_status BIGINT,
    response_headers JSONB,
    response_body TEXT,
    error TEXT,
    succeeded BOOLEAN NOT NULL
);
CREATE INDEX attempts_delivery ON attempts(delivery_id, seq);
-- In-flight work, for per-endpoint limits that hold across nodes.
CREATE INDEX deliveries_leased ON deliveries(endpoint_id, lease_until_ms) WHERE lease_until_ms IS NOT NULL;
-- When the next retry is due, for the dispatcher's sleep.
CREATE INDEX deliveries_due ON deliveries(next_attempt_ms) WHERE status = 'pending';
