-- Notifly schema for PostgreSQL, mirroring migrations/sqlite. `seq` orders
-- lists (keyset pagination); `id` is the public 16-character base62 id. Every
-- resource row carries its account. JSON columns are JSONB (decoded through
-- `sqlx::types::Json`); `events.body` stays TEXT: it is the exact bytes sent.

CREATE TABLE accounts (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    key_hash TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    created_at BIGINT NOT NULL
);

CREATE TABLE contacts (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    username TEXT NOT NULL,
    phone_number TEXT NOT NULL,
    avatar_url TEXT,
    display_name TEXT,
    conversation_id TEXT,
    last_active_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX contacts_username ON contacts(account_id, username);
CREATE INDEX contacts_account_seq ON contacts(account_id, seq);

CREATE TABLE groups (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    description TEXT,
    avatar_url TEXT,
    conversation_id TEXT,
    created_at BIGINT NOT NULL,
    archived_at BIGINT
);
CREATE INDEX groups_account_seq ON groups(account_id, seq);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id),
    contact_id TEXT NOT NULL REFERENCES contacts(id),
    position BIGINT NOT NULL,
    PRIMARY KEY (group_id, contact_id)
);
CREATE INDEX group_members_contact ON group_members(contact_id);

CREATE TABLE conversations (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    contact_id TEXT REFERENCES contacts(id),
    group_id TEXT REFERENCES groups(id),
    pinned_message_id TEXT,
    is_pinned BOOLEAN NOT NULL,
    is_muted BOOLEAN NOT NULL,
    last_active_at BIGINT,
    last_opened_at BIGINT,
    created_at BIGINT NOT NULL,
    archived_at BIGINT,
    CHECK ((contact_id IS NULL) <> (group_id IS NULL))
);
CREATE UNIQUE INDEX conversations_contact ON conversations(contact_id) WHERE contact_id IS NOT NULL;
CREATE UNIQUE INDEX conversations_group ON conversations(group_id) WHERE group_id IS NOT NULL;
CREATE INDEX conversations_account_seq ON conversations(account_id, seq);

CREATE TABLE messages (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    contact_id TEXT REFERENCES contacts(id),
    message TEXT NOT NULL,
    reactions JSONB NOT NULL,
    read_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX messages_account_seq ON messages(account_id, seq);
CREATE INDEX messages_conversation_seq ON messages(conversation_id, seq);
CREATE INDEX messages_contact ON messages(contact_id);

CREATE TABLE attachments (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    message_id TEXT NOT NULL REFERENCES messages(id),
    filename TEXT NOT NULL,
    file_type TEXT NOT NULL,
    file_size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX attachments_account_seq ON attachments(account_id, seq);
CREATE INDEX attachments_message_seq ON attachments(message_id, seq);

-- The outbox: one row per event, written in the transaction of the change.
-- `body` is the exact webhook request body.
CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_account_seq ON events(account_id, seq);
CREATE INDEX events_account_type_seq ON events(account_id, event_type, seq);

CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, key)
);
