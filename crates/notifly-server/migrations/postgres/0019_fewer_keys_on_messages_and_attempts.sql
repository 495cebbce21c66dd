-- Fewer checks and index entries for each message written, each delivery
-- made and each attempt recorded (docs/benchmarks.md, twelfth round).
--
-- 1. Four foreign keys go, as the account keys of the hot tables went in
--    0013: each check ran a statement of its own (through SPI) per inserted
--    row, and they guarded nothing the application does not.
--    - A message is inserted only by the statement that reads its
--      conversation and its sender and locks both `FOR KEY SHARE` (what the
--      keys' checks did again), and refers to neither if either is gone. A
--      conversation or a contact is deleted only under `FOR UPDATE` of its
--      row (which waits for those locks) and after its messages (a
--      conversation deletes them; a contact that sent any is refused). A
--      message's conversation and sender never change.
--    - An attempt is inserted only for a delivery that the same write-back
--      has locked `FOR UPDATE` and found; the purge deletes a delivery's
--      attempts with it.
--    - A delivery is inserted in the statement or the transaction that
--      inserts its event, or, for an older event (a replay), by a statement
--      that reads the event `FOR KEY SHARE`. The purge deletes only events
--      it has locked `FOR UPDATE`, re-checking under that lock that none
--      has a delivery.
ALTER TABLE messages DROP CONSTRAINT messages_conversation_id_fkey;
ALTER TABLE messages DROP CONSTRAINT messages_contact_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT attempts_delivery_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_event_id_fkey;

-- 2. Messages and attempts are keyed by their id alone (unique, not null,
--    and their replica identity for logical replication). Their `seq`
--    stays (it orders lists: `messages_account_seq`,
--    `messages_conversation_seq`, `attempts_delivery`) but nothing looks a
--    row up by it, and its primary key was one more index entry per row.
ALTER TABLE messages DROP CONSTRAINT messages_pkey;
ALTER TABLE messages REPLICA IDENTITY USING INDEX messages_id_key;
ALTER TABLE attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE attempts REPLICA IDENTITY USING INDEX attempts_id_key;
