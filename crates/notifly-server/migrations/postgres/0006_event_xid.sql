-- Writes of one account run in parallel, so events commit in an order that
-- `seq` (taken when each row is inserted) does not follow: an event may
-- commit after one with a higher `seq` was already read. Readers of the log
-- (the event list, its stream, `notifly listen`) order it by the writing
-- transaction's id, then `seq`, and read only the events of transactions
-- older than every transaction of this database still in flight
-- (`notifly_log_horizon()`): no transaction still to commit can then add an
-- event before a position already read.
--
-- Events written before this migration were written one account at a time,
-- in `seq` order: they all get xid 1 (a constant default is not a table
-- rewrite) and keep their order by `seq`.
ALTER TABLE events ADD COLUMN xid xid8 NOT NULL DEFAULT '1';
ALTER TABLE events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
DROP INDEX IF EXISTS events_account_seq;
DROP INDEX IF EXISTS events_account_type_seq;
CREATE INDEX events_account_xid ON events(account_id, xid, seq);
CREATE INDEX events_account_type_xid ON events(account_id, event_type, xid, seq);

-- The oldest transaction id that may still commit a write to this database:
-- the smallest id in flight in the current snapshot, leaving out those that
-- pg_stat_activity shows as another database's (they cannot write here), or
-- the snapshot's xmax when none is left. Conservative: a transaction it
-- cannot place (another role's, without the right to see it) counts.
CREATE FUNCTION notifly_log_horizon() RETURNS xid8 LANGUAGE sql STABLE AS $$
    SELECT COALESCE(
        (SELECT MIN(x) FROM pg_snapshot_xip(s) AS x
         WHERE NOT EXISTS (
             SELECT 1 FROM pg_stat_activity a
             WHERE a.datname IS DISTINCT FROM current_database()
               AND a.backend_xid IS NOT NULL
               AND a.backend_xid::text = (x::text::numeric % 4294967296)::text)),
        pg_snapshot_xmax(s))
    FROM pg_current_snapshot() AS s
$$;
