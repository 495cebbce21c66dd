-- `deliveries_due` (pending deliveries by due time) served the dispatcher's
-- old next-due look-up, a MIN over every pending delivery. That look-up now
-- reads the head of each endpoint's queue (`deliveries_queue`), and nothing
-- else needs this index: it only cost every delivery's insert and update,
-- and it let PostgreSQL's planner, on stale statistics, scan the whole
-- pending set in due order instead of each endpoint's range.
DROP INDEX IF EXISTS deliveries_due;
