-- Seeds a PostgreSQL database for measuring the retention purge at 10
-- million deliveries (docs/benchmarks.md, fourteenth round).
--
-- What it makes, in `seq` order (oldest first), as 30 days of traffic:
--   * 5,000 held events at the oldest end: each has one pending delivery
--     (with one failed attempt) to an endpoint that is disabled, so the
--     purge must keep them, whatever their age;
--   * 1,000,000 events over 30 days (one every 2.592 s from
--     T0 = 1767225600, 2026-01-01 00:00 UTC), each delivered to 10
--     endpoints: 10,000,000 succeeded deliveries, one attempt each, in the
--     order they were written.
-- With a cutoff of T0 + 86400 (retention at 30 days, one day later) the
-- first day is past retention: 33,334 events, 333,340 deliveries and as
-- many attempts, behind the 5,000 held events.
--
-- Run it on a scratch database that notifly has migrated, e.g.:
--   createdb -h 127.0.0.1 -U postgres purge_scale
--   notifly accounts create --name bench \
--       --database postgres://postgres@127.0.0.1/purge_scale   # migrates
--   psql -h 127.0.0.1 -U postgres -d purge_scale -f bench/seed_retention.sql
-- It takes about 8.7 GB and, on a 2 vCPU VM, some 6 minutes. Then time
-- the purge with bench/purge_batches.sh; drop the database when done.

\set ON_ERROR_STOP on
\timing on
SET synchronous_commit = off;
SET maintenance_work_mem = '512MB';

INSERT INTO accounts (id, name, created_at) VALUES ('acct-bench', 'bench', 1767225600);
INSERT INTO endpoints (id, account_id, name, url, events, enabled, secret, created_at, updated_at)
  SELECT 'ep' || i, 'acct-bench', 'ep' || i, 'https://hooks.example.com/' || i, '["*"]',
         true, 'whsec_x', 1767225600, 1767225600
  FROM generate_series(0, 9) i;
INSERT INTO endpoints (id, account_id, name, url, events, enabled, disabled_reason, secret, created_at, updated_at)
  VALUES ('ep-down', 'acct-bench', 'down', 'https://down.example.com/', '["*"]',
          false, 'disabled by hand', 'whsec_x', 1767225600, 1767225600);

-- The held events, one a second before T0, and their pending deliveries
-- and failed attempts.
INSERT INTO events (id, account_id, event_type, body, created_at)
  SELECT 'evh' || lpad(i::text, 9, '0'), 'acct-bench', 'message.created',
         '{"id":"evh' || lpad(i::text, 9, '0') || '","type":"message.created","payload":{"text":"'
           || repeat('x', 360) || '"}}',
         1767225600 - 5000 + i
  FROM generate_series(0, 4999) i;
INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, attempts,
                        schedule_pos, next_attempt_ms, last_attempt_at, last_status_code,
                        created_at, updated_at, resource_id)
  SELECT 'dlh' || lpad(i::text, 9, '0'), 'acct-bench', 'ep-down', 'evh' || lpad(i::text, 9, '0'),
         'message.created', 'pending', 1, 1, (1767225600 + 3600) * 1000::bigint,
         1767225600 - 5000 + i, 503, 1767225600 - 5000 + i, 1767225600 - 5000 + i,
         'res' || lpad(i::text, 9, '0')
  FROM generate_series(0, 4999) i;
INSERT INTO attempts (id, delivery_id, attempt, started_at_ms, duration_ms, request_headers,
                      response_status, response_headers, response_body, error, succeeded)
  SELECT 'ath' || lpad(i::text, 9, '0'), 'dlh' || lpad(i::text, 9, '0'), 1,
         (1767225600 - 5000 + i) * 1000::bigint, 30,
         '[["content-type","application/json"],["webhook-id","msg_0000000000000000000000"],["webhook-timestamp","1767225600"],["webhook-signature","v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]]',
         503, '[["content-type","text/plain"],["content-length","19"]]', 'service unavailable',
         NULL, false
  FROM generate_series(0, 4999) i;

-- A million events over 30 days.
INSERT INTO events (id, account_id, event_type, body, created_at)
  SELECT 'ev' || lpad(i::text, 10, '0'), 'acct-bench', 'message.created',
         '{"id":"ev' || lpad(i::text, 10, '0') || '","type":"message.created","payload":{"text":"'
           || repeat('x', 360) || '"}}',
         1767225600 + (i * 2592 / 1000)
  FROM generate_series(0::bigint, 999999) i;

-- Ten succeeded deliveries each, in the order they were written (n is
-- event n / 10's delivery to endpoint n % 10; a function scan yields n in
-- order, so no sort is needed).
INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, attempts,
                        schedule_pos, next_attempt_ms, last_attempt_at, last_status_code,
                        created_at, updated_at, resource_id)
  SELECT 'dl' || lpad((n / 10)::text, 10, '0') || '_' || (n % 10), 'acct-bench', 'ep' || (n % 10),
         'ev' || lpad((n / 10)::text, 10, '0'), 'message.created', 'succeeded', 1, 0, NULL,
         1767225600 + (n / 10 * 2592 / 1000), 200,
         1767225600 + (n / 10 * 2592 / 1000), 1767225600 + (n / 10 * 2592 / 1000), NULL
  FROM generate_series(0::bigint, 9999999) n;

-- One attempt per delivery, in the same order.
INSERT INTO attempts (id, delivery_id, attempt, started_at_ms, duration_ms, request_headers,
                      response_status, response_headers, response_body, error, succeeded)
  SELECT 'at' || lpad((n / 10)::text, 10, '0') || '_' || (n % 10),
         'dl' || lpad((n / 10)::text, 10, '0') || '_' || (n % 10), 1,
         (1767225600 + (n / 10 * 2592 / 1000)) * 1000::bigint, 12,
         '[["content-type","application/json"],["webhook-id","msg_0000000000000000000000"],["webhook-timestamp","1767225600"],["webhook-signature","v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]]',
         200, '[["content-type","text/plain"],["content-length","2"]]', 'ok', NULL, true
  FROM generate_series(0::bigint, 9999999) n;

VACUUM (ANALYZE) events, deliveries, attempts;
SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) AS total, reltuples::bigint AS rows
FROM pg_class WHERE relname IN ('events', 'deliveries', 'attempts') ORDER BY relname;
