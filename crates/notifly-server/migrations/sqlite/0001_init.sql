-- Notifly schema for SQLite. `seq` orders lists (keyset pagination); `id` is the
-- public 16-character base62 id. Every resource row carries its account.

CREATE TABLE accounts (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    key_hash TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    created_at INTEGER NOT NULL
);

CREATE TABLE contacts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    username TEXT NOT NULL,
    phone_number TEXT NOT NULL,
    avatar_url TEXT,
    display_name TEXT,
    conversation_id TEXT,
    last_active_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX contacts_username ON contacts(account_id, username);
CREATE INDEX contacts_account_seq ON contacts(account_id, seq);

CREATE TABLE groups (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    description TEXT,
    avatar_url TEXT,
    conversation_id TEXT,
    created_at INTEGER NOT NULL,
    archived_at INTEGER
);
CREATE INDEX groups_account_seq ON groups(account_id, seq);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id),
    contact_id TEXT NOT NULL REFERENCES contacts(id),
    position INTEGER NOT NULL,
    PRIMARY KEY (group_id, contact_id)
);
CREATE INDEX group_members_contact ON group_members(contact_id);

CREATE TABLE conversations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    contact_id TEXT REFERENCES contacts(id),
    group_id TEXT REFERENCES groups(id),
    pinned_message_id TEXT,
    is_pinned INTEGER NOT NULL,
    is_muted INTEGER NOT NULL,
    last_active_at INTEGER,
    last_opened_at INTEGER,
    created_at INTEGER NOT NULL,
    archived_at INTEGER,
    CHECK ((contact_id IS NULL) <> (group_id IS NULL))
);
CREATE UNIQUE INDEX conversations_contact ON conversations(contact_id) WHERE contact_id IS NOT NULL;
CREATE UNIQUE INDEX conversations_group ON conversations(group_id) WHERE group_id IS NOT NULL;
CREATE INDEX conversations_account_seq ON conversations(account_id, seq);

CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    contact_id TEXT REFERENCES contacts(id),
    message TEXT NOT NULL,
    reactions TEXT NOT NULL,
    read_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX messages_account_seq ON messages(account_id, seq);
CREATE INDEX messages_conversation_seq ON messages(conversation_id, seq);
CREATE INDEX messages_contact ON messages(contact_id);

CREATE TABLE attachments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    message_id TEXT NOT NULL REFERENCES messages(id),
    filename TEXT NOT NULL,
    file_type TEXT NOT NULL,
    file_size INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX attachments_account_seq ON attachments(account_id, seq);
CREATE INDEX attachments_message_seq ON attachments(message_id, seq);

-- The outbox: one row per event, written in the transaction of the change.
-- `body` is the exact webhook request body.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id),
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX events_account_seq ON events(account_id, seq);
CREATE INDEX events_account_type_seq ON events(account_id, event_type, seq);

CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL REFERENCES accounts(id),
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, key)
);
