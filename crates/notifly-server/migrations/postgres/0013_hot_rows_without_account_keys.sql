-- The tables every API write appends to no longer check their account with
-- a foreign key. Each check ran a statement of its own per inserted row
-- and locked the account's row FOR KEY SHARE; with concurrent writes of
-- one account (the common case: one integrator, many requests), each new
-- locker of that one row turned its lock into a new MultiXact of all of
-- them, written to pg_multixact and looked up by every later check
-- (docs/benchmarks.md, issue 24).
--
-- The check guarded nothing the application does not: accounts are never
-- deleted, and every write names the account its request authenticated as
-- (its API key's or its dashboard session's, read in the same request).
-- The keys that hold a row's place inside its account stay (a message's
-- conversation and sender, a group member's, an attachment's message, a
-- delivery's event, an attempt's delivery), as do the account keys of the
-- tables written rarely: API keys, endpoints, idempotency keys, dashboard
-- sessions.
ALTER TABLE contacts DROP CONSTRAINT contacts_account_id_fkey;
ALTER TABLE groups DROP CONSTRAINT groups_account_id_fkey;
ALTER TABLE conversations DROP CONSTRAINT conversations_account_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_account_id_fkey;
ALTER TABLE attachments DROP CONSTRAINT attachments_account_id_fkey;
ALTER TABLE events DROP CONSTRAINT events_account_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_account_id_fkey;
