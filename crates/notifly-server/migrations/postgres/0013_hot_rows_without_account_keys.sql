-- The rows every API write appends no longer have their account, nor a
-- message its conversation and sender, checked by a foreign key. Each check
-- ran a statement of its own per inserted row and locked the referenced row
-- FOR KEY SHARE; with concurrent writes of one account (the common case:
-- one integrator, many requests), each new locker of the account's row, or
-- of a busy conversation's, turned its lock into a new MultiXact of all of
-- them, written to pg_multixact and looked up by every later check.
-- Measured on the 2-core bench machine: about a fifth of PostgreSQL's CPU
-- per acknowledged message (docs/benchmarks.md, issue 24).
--
-- What the checks guarded is held otherwise:
-- - `account_id`: accounts are never deleted, and every write names the
--   account its request authenticated as (its API key's or its dashboard
--   session's, read in the same request).
-- - a message's `conversation_id` and `contact_id`: the message's insert
--   checks both exist in its account, in the same statement (an index
--   probe each, no lock); the one write that inserts a message has read
--   both FOR KEY SHARE before, and a conversation's or a contact's delete
--   locks it FOR UPDATE before it checks or deletes what refers to it, so
--   neither can go while a message to it is being written.
-- The rest stay: a group member's, an attachment's message, a delivery's
-- event, an attempt's delivery (their checks lock rows that few writes
-- share), and the account keys of the tables written rarely: API keys,
-- endpoints, idempotency keys, dashboard sessions.
ALTER TABLE contacts DROP CONSTRAINT contacts_account_id_fkey;
ALTER TABLE groups DROP CONSTRAINT groups_account_id_fkey;
ALTER TABLE conversations DROP CONSTRAINT conversations_account_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_account_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_conversation_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_contact_id_fkey;
ALTER TABLE attachments DROP CONSTRAINT attachments_account_id_fkey;
ALTER TABLE events DROP CONSTRAINT events_account_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_account_id_fkey;
