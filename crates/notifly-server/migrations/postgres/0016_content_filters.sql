-- A webhook's content filter: a JSON match-by-example object (see
-- filter.rs), checked when saved and matched against each event's envelope
-- at fan-out. NULL: every event of its types.
ALTER TABLE endpoints ADD COLUMN filter TEXT;
-- Fan-out looks up an account's filtered endpoints apart from the others;
-- with none, that look-up finds an empty index.
CREATE INDEX endpoints_filtered ON endpoints (account_id) WHERE filter IS NOT NULL;
