-- How an endpoint signs `webhook-signature`: 'hmac-sha256' (`v1`) or
-- 'ed25519' (`v1a`). An ed25519 endpoint's `secret` (and `previous_secret`)
-- holds its `whsec_` secret and its `whsk_` private key, space-separated.
ALTER TABLE endpoints ADD COLUMN signature_scheme TEXT NOT NULL DEFAULT 'hmac-sha256';
