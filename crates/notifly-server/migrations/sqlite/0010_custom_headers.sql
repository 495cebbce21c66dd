-- A webhook's custom headers, added to every delivery to it: a JSON array
-- of [name, value] pairs, sealed like the signing keys (see secrets.rs;
-- bound to the endpoint's id) because values are often credentials. NULL:
-- none.
ALTER TABLE endpoints ADD COLUMN headers TEXT;
