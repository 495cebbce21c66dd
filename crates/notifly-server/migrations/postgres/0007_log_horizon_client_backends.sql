-- Only client connections write events. Autovacuum's ANALYZE (and other
-- background processes) may hold a transaction id for a long time on a busy
-- table; counted in the horizon, it would hold the event log back from its
-- readers for as long. Leave out, besides other databases' transactions,
-- those of every backend that is not a client connection.
CREATE OR REPLACE FUNCTION notifly_log_horizon() RETURNS xid8 LANGUAGE sql STABLE AS $$
    SELECT COALESCE(
        (SELECT MIN(x) FROM pg_snapshot_xip(s) AS x
         WHERE NOT EXISTS (
             SELECT 1 FROM pg_stat_activity a
             WHERE (a.datname IS DISTINCT FROM current_database()
                    OR a.backend_type IS DISTINCT FROM 'client backend')
               AND a.backend_xid IS NOT NULL
               AND a.backend_xid::text = (x::text::numeric % 4294967296)::text)),
        pg_snapshot_xmax(s))
    FROM pg_current_snapshot() AS s
$$;
