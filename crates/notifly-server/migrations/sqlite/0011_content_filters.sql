-- A webhook's content filter: a JSON match-by-example object (see
-- filter.rs), checked when saved and matched against each event's envelope
-- at fan-out. NULL: every event of its types.
ALTER TABLE endpoints ADD COLUMN filter TEXT;
