-- Test events (`POST /v1/webhooks/{id}/test`) are samples addressed to one
-- endpoint: they are stored so that their delivery can be sent, retried and
-- shown, but they are not part of the account's event log (`/v1/events`, its
-- stream, `notifly listen`).
ALTER TABLE events ADD COLUMN is_test BOOLEAN NOT NULL DEFAULT false;
