-- A delivery's lease lives in its endpoint's slot only (migration 0008):
-- every leased delivery already held one, with the same owner and expiry.
-- The copy on the delivery row cost a claim a second version of the row:
-- setting `lease_until_ms` is an update of an indexed column
-- (`deliveries_leased`), so it was never HOT and wrote a new entry in every
-- index of `deliveries`, for every claimed delivery (docs/benchmarks.md,
-- issue 24). A slot's update is HOT (its table keeps free space for it).
--
-- A delivery is leased while a slot names it with an expiry in the future;
-- a claim that takes a delivery clears any slot still naming it from an
-- expired lease, so at most one slot names a pending delivery, and a
-- write-back moves a delivery on only if it freed the slot naming it and
-- its own lease.
DROP INDEX deliveries_leased;
ALTER TABLE deliveries DROP COLUMN lease_until_ms, DROP COLUMN lease_owner;
