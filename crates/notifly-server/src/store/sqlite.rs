//! The embedded SQLite store.
//!
//! SQLite allows one writer at a time, so writes go through a pool of exactly
//! one connection and every write transaction starts with `BEGIN IMMEDIATE`
//! (taking the write lock up front, so that another process, such as
//! `notifly accounts create` running beside the server, waits on the busy
//! timeout instead of failing on a lock upgrade). Reads use a separate pool and
//! run concurrently thanks to WAL mode. Durability: `synchronous=FULL`, so a
//! committed transaction is on disk when `commit` returns.

use std::ops::DerefMut;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{FromRow, QueryBuilder, Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or a
    /// plain path) and runs the migrations.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let url = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(StoreError::Backend)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("cache_size", "-16000");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(StoreError::Backend)?;
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| StoreError::Backend(e.into()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await
            .map_err(StoreError::Backend)?;
        Ok(SqliteStore { writer, reader })
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn read(&self) -> StoreResult<Box<dyn Conn>> {
        let conn = self.reader.acquire().await.map_err(StoreError::Backend)?;
        Ok(Box::new(Handle(conn)))
    }

    async fn write(&self) -> StoreResult<Box<dyn WriteTx>> {
        let tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::Backend)?;
        Ok(Box::new(Handle(tx)))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(StoreError::Backend)?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// A connection or a transaction; both read the same way.
struct Handle<C>(C);

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(e)
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
fn unique(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Backend(e),
    }
}

const CONTACT_COLUMNS: &str = "id, username, phone_number, avatar_url, display_name, conversation_id, last_active_at, created_at";
const CONVERSATION_COLUMNS: &str = "id, contact_id, group_id, pinned_message_id, is_pinned, is_muted, last_active_at, last_opened_at, created_at, archived_at";
const MESSAGE_COLUMNS: &str =
    "id, conversation_id, contact_id, message, reactions, read_at, created_at, updated_at";
const GROUP_COLUMNS: &str =
    "id, name, description, avatar_url, conversation_id, created_at, archived_at";
const ATTACHMENT_COLUMNS: &str = "id, message_id, filename, file_type, file_size, created_at";
const EVENT_COLUMNS: &str = "id, event_type, body, created_at";

/// A list filter on one column.
enum Filter<'a> {
    Text(&'static str, &'a str),
    Bool(&'static str, bool),
    /// `true`: the column is set; `false`: it is null.
    Set(&'static str, bool),
}

/// Reads one page of `table` for `account`, newest first, with keyset cursors on `seq`.
async fn list<T>(
    conn: &mut SqliteConnection,
    table: &'static str,
    columns: &'static str,
    account: &str,
    filters: &[Filter<'_>],
    page: &Page,
) -> StoreResult<Listed<T>>
where
    T: for<'r> FromRow<'r, SqliteRow> + Send + Unpin,
{
    let cursor = match &page.cursor {
        None => None,
        Some(Cursor::After(id) | Cursor::Before(id)) => {
            let seq: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT seq FROM {table} WHERE account_id = ? AND id = ?"
            ))
            .bind(account)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
            Some(seq.ok_or(StoreError::UnknownCursor)?)
        }
    };
    let mut q =
        QueryBuilder::<Sqlite>::new(format!("SELECT {columns} FROM {table} WHERE account_id = "));
    q.push_bind(account);
    for filter in filters {
        match filter {
            Filter::Text(col, v) => q.push(format!(" AND {col} = ")).push_bind(*v),
            Filter::Bool(col, v) => q.push(format!(" AND {col} = ")).push_bind(*v),
            Filter::Set(col, true) => q.push(format!(" AND {col} IS NOT NULL")),
            Filter::Set(col, false) => q.push(format!(" AND {col} IS NULL")),
        };
    }
    let backwards = matches!(page.cursor, Some(Cursor::Before(_)));
    if let Some(seq) = cursor {
        q.push(if backwards {
            " AND seq > "
        } else {
            " AND seq < "
        })
        .push_bind(seq);
    }
    q.push(if backwards {
        " ORDER BY seq ASC LIMIT "
    } else {
        " ORDER BY seq DESC LIMIT "
    })
    .push_bind(i64::from(page.limit) + 1);
    let mut items: Vec<T> = q.build_query_as().fetch_all(conn).await.map_err(backend)?;
    let has_more = items.len() > page.limit as usize;
    items.truncate(page.limit as usize);
    if backwards {
        items.reverse();
    }
    Ok(Listed { items, has_more })
}

#[async_trait]
impl<C> Conn for Handle<C>
where
    C: DerefMut<Target = SqliteConnection> + Send,
{
    async fn account_by_key_hash(&mut self, key_hash: &str) -> StoreResult<Option<Account>> {
        sqlx::query_as(
            "SELECT a.id, a.name, a.created_at FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = ?",
        )
        .bind(key_hash)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn account_count(&mut self) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(&mut *self.0)
            .await
            .map_err(backend)
    }

    async fn contact(&mut self, account: &str, id: &str) -> StoreResult<Option<Contact>> {
        sqlx::query_as(&format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE account_id = ? AND id = ?"
        ))
        .bind(account)
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn contacts_by_ids(
        &mut self,
        account: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Contact>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE account_id = "
        ));
        q.push_bind(account).push(" AND id IN (");
        let mut sep = q.separated(", ");
        for id in ids {
            sep.push_bind(id);
        }
        q.push(")");
        q.build_query_as()
            .fetch_all(&mut *self.0)
            .await
            .map_err(backend)
    }

    async fn list_contacts(&mut self, account: &str, page: &Page) -> StoreResult<Listed<Contact>> {
        list(&mut self.0, "contacts", CONTACT_COLUMNS, account, &[], page).await
    }

    async fn contact_has_messages(&mut self, account: &str, contact_id: &str) -> StoreResult<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE account_id = ? AND contact_id = ?)",
        )
        .bind(account)
        .bind(contact_id)
        .fetch_one(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn conversation(&mut self, account: &str, id: &str) -> StoreResult<Option<Conversation>> {
        sqlx::query_as(&format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE account_id = ? AND id = ?"
        ))
        .bind(account)
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn list_conversations(
        &mut self,
        account: &str,
        filter: &ConversationFilter,
        page: &Page,
    ) -> StoreResult<Listed<Conversation>> {
        let mut filters = Vec::new();
        if let Some(muted) = filter.muted {
            filters.push(Filter::Bool("is_muted", muted));
        }
        if let Some(pinned) = filter.pinned {
            filters.push(Filter::Bool("is_pinned", pinned));
        }
        if let Some(archived) = filter.archived {
            filters.push(Filter::Set("archived_at", archived));
        }
        if let Some(group_id) = &filter.group_id {
            filters.push(Filter::Text("group_id", group_id));
        }
        list(
            &mut self.0,
            "conversations",
            CONVERSATION_COLUMNS,
            account,
            &filters,
            page,
        )
        .await
    }

    async fn message(&mut self, account: &str, id: &str) -> StoreResult<Option<MessageRecord>> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE account_id = ? AND id = ?"
        ))
        .bind(account)
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn list_messages(
        &mut self,
        account: &str,
        conversation_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<MessageRecord>> {
        let filters: Vec<Filter> = conversation_id
            .map(|c| Filter::Text("conversation_id", c))
            .into_iter()
            .collect();
        list(
            &mut self.0,
            "messages",
            MESSAGE_COLUMNS,
            account,
            &filters,
            page,
        )
        .await
    }

    async fn messages_in_conversation(
        &mut self,
        account: &str,
        conversation_id: &str,
    ) -> StoreResult<Vec<MessageRecord>> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE account_id = ? AND conversation_id = ? ORDER BY seq"
        ))
        .bind(account)
        .bind(conversation_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn group(&mut self, account: &str, id: &str) -> StoreResult<Option<GroupRecord>> {
        sqlx::query_as(&format!(
            "SELECT {GROUP_COLUMNS} FROM groups WHERE account_id = ? AND id = ?"
        ))
        .bind(account)
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn list_groups(
        &mut self,
        account: &str,
        page: &Page,
    ) -> StoreResult<Listed<GroupRecord>> {
        list(&mut self.0, "groups", GROUP_COLUMNS, account, &[], page).await
    }

    async fn group_members(&mut self, group_id: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT contact_id FROM group_members WHERE group_id = ? ORDER BY position",
        )
        .bind(group_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn groups_with_member(
        &mut self,
        account: &str,
        contact_id: &str,
    ) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT g.id FROM group_members m JOIN groups g ON g.id = m.group_id WHERE g.account_id = ? AND m.contact_id = ? ORDER BY g.seq",
        )
        .bind(account)
        .bind(contact_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn attachment(&mut self, account: &str, id: &str) -> StoreResult<Option<Attachment>> {
        sqlx::query_as(&format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE account_id = ? AND id = ?"
        ))
        .bind(account)
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn list_attachments(
        &mut self,
        account: &str,
        message_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<Attachment>> {
        let filters: Vec<Filter> = message_id
            .map(|m| Filter::Text("message_id", m))
            .into_iter()
            .collect();
        list(
            &mut self.0,
            "attachments",
            ATTACHMENT_COLUMNS,
            account,
            &filters,
            page,
        )
        .await
    }

    async fn attachments_of_message(
        &mut self,
        account: &str,
        message_id: &str,
    ) -> StoreResult<Vec<Attachment>> {
        sqlx::query_as(&format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE account_id = ? AND message_id = ? ORDER BY seq"
        ))
        .bind(account)
        .bind(message_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn event(&mut self, account: &str, id: &str) -> StoreResult<Option<EventRecord>> {
        sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE account_id = ? AND id = ?"
        ))
        .bind(account)
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn list_events(
        &mut self,
        account: &str,
        event_type: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<EventRecord>> {
        let filters: Vec<Filter> = event_type
            .map(|t| Filter::Text("event_type", t))
            .into_iter()
            .collect();
        list(
            &mut self.0,
            "events",
            EVENT_COLUMNS,
            account,
            &filters,
            page,
        )
        .await
    }

    async fn idempotent_response(
        &mut self,
        account: &str,
        key: &str,
    ) -> StoreResult<Option<IdempotentResponse>> {
        sqlx::query_as(
            "SELECT request_hash, status, body, created_at FROM idempotency_keys WHERE account_id = ? AND key = ?",
        )
        .bind(account)
        .bind(key)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }
}

#[async_trait]
impl WriteTx for Handle<Transaction<'static, Sqlite>> {
    async fn insert_account(&mut self, account: &Account, key_hash: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)")
            .bind(&account.id)
            .bind(&account.name)
            .bind(account.created_at)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        sqlx::query("INSERT INTO api_keys (key_hash, account_id, created_at) VALUES (?, ?, ?)")
            .bind(key_hash)
            .bind(&account.id)
            .bind(account.created_at)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert_contact(&mut self, account: &str, c: &Contact) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO contacts (account_id, id, username, phone_number, avatar_url, display_name, conversation_id, last_active_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(account)
        .bind(&c.id)
        .bind(&c.username)
        .bind(&c.phone_number)
        .bind(&c.avatar_url)
        .bind(&c.display_name)
        .bind(&c.conversation_id)
        .bind(c.last_active_at)
        .bind(c.created_at)
        .execute(&mut *self.0)
        .await
        .map_err(unique("username"))?;
        Ok(())
    }

    async fn update_contact(&mut self, account: &str, c: &Contact) -> StoreResult<()> {
        sqlx::query(
            "UPDATE contacts SET username = ?, phone_number = ?, avatar_url = ?, display_name = ?, conversation_id = ?, last_active_at = ? WHERE account_id = ? AND id = ?",
        )
        .bind(&c.username)
        .bind(&c.phone_number)
        .bind(&c.avatar_url)
        .bind(&c.display_name)
        .bind(&c.conversation_id)
        .bind(c.last_active_at)
        .bind(account)
        .bind(&c.id)
        .execute(&mut *self.0)
        .await
        .map_err(unique("username"))?;
        Ok(())
    }

    async fn delete_contact(&mut self, account: &str, id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM contacts WHERE account_id = ? AND id = ?")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert_conversation(&mut self, account: &str, c: &Conversation) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO conversations (account_id, id, contact_id, group_id, pinned_message_id, is_pinned, is_muted, last_active_at, last_opened_at, created_at, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(account)
        .bind(&c.id)
        .bind(&c.contact_id)
        .bind(&c.group_id)
        .bind(&c.pinned_message_id)
        .bind(c.is_pinned)
        .bind(c.is_muted)
        .bind(c.last_active_at)
        .bind(c.last_opened_at)
        .bind(c.created_at)
        .bind(c.archived_at)
        .execute(&mut *self.0)
        .await
        .map_err(unique("conversation participant"))?;
        Ok(())
    }

    async fn update_conversation(&mut self, account: &str, c: &Conversation) -> StoreResult<()> {
        sqlx::query(
            "UPDATE conversations SET pinned_message_id = ?, is_pinned = ?, is_muted = ?, last_active_at = ?, last_opened_at = ?, archived_at = ? WHERE account_id = ? AND id = ?",
        )
        .bind(&c.pinned_message_id)
        .bind(c.is_pinned)
        .bind(c.is_muted)
        .bind(c.last_active_at)
        .bind(c.last_opened_at)
        .bind(c.archived_at)
        .bind(account)
        .bind(&c.id)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn delete_conversation(&mut self, account: &str, id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM conversations WHERE account_id = ? AND id = ?")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert_message(&mut self, account: &str, m: &MessageRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO messages (account_id, id, conversation_id, contact_id, message, reactions, read_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(account)
        .bind(&m.id)
        .bind(&m.conversation_id)
        .bind(&m.contact_id)
        .bind(&m.message)
        .bind(&m.reactions)
        .bind(m.read_at)
        .bind(m.created_at)
        .bind(m.updated_at)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn update_message(&mut self, account: &str, m: &MessageRecord) -> StoreResult<()> {
        sqlx::query(
            "UPDATE messages SET message = ?, reactions = ?, read_at = ?, updated_at = ? WHERE account_id = ? AND id = ?",
        )
        .bind(&m.message)
        .bind(&m.reactions)
        .bind(m.read_at)
        .bind(m.updated_at)
        .bind(account)
        .bind(&m.id)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn delete_message(&mut self, account: &str, id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM messages WHERE account_id = ? AND id = ?")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert_group(&mut self, account: &str, g: &GroupRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO groups (account_id, id, name, description, avatar_url, conversation_id, created_at, archived_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(account)
        .bind(&g.id)
        .bind(&g.name)
        .bind(&g.description)
        .bind(&g.avatar_url)
        .bind(&g.conversation_id)
        .bind(g.created_at)
        .bind(g.archived_at)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn update_group(&mut self, account: &str, g: &GroupRecord) -> StoreResult<()> {
        sqlx::query(
            "UPDATE groups SET name = ?, description = ?, avatar_url = ?, conversation_id = ?, archived_at = ? WHERE account_id = ? AND id = ?",
        )
        .bind(&g.name)
        .bind(&g.description)
        .bind(&g.avatar_url)
        .bind(&g.conversation_id)
        .bind(g.archived_at)
        .bind(account)
        .bind(&g.id)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn set_group_members(
        &mut self,
        group_id: &str,
        contact_ids: &[String],
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM group_members WHERE group_id = ?")
            .bind(group_id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        for (position, contact_id) in contact_ids.iter().enumerate() {
            sqlx::query(
                "INSERT INTO group_members (group_id, contact_id, position) VALUES (?, ?, ?)",
            )
            .bind(group_id)
            .bind(contact_id)
            .bind(position as i64)
            .execute(&mut *self.0)
            .await
            .map_err(unique("group member"))?;
        }
        Ok(())
    }

    async fn delete_group(&mut self, account: &str, id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM group_members WHERE group_id = ?")
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        sqlx::query("DELETE FROM groups WHERE account_id = ? AND id = ?")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert_attachment(&mut self, account: &str, a: &Attachment) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO attachments (account_id, id, message_id, filename, file_type, file_size, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(account)
        .bind(&a.id)
        .bind(&a.message_id)
        .bind(&a.filename)
        .bind(&a.file_type)
        .bind(a.file_size)
        .bind(a.created_at)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn update_attachment(&mut self, account: &str, a: &Attachment) -> StoreResult<()> {
        sqlx::query("UPDATE attachments SET filename = ? WHERE account_id = ? AND id = ?")
            .bind(&a.filename)
            .bind(account)
            .bind(&a.id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn delete_attachment(&mut self, account: &str, id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM attachments WHERE account_id = ? AND id = ?")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert_event(&mut self, account: &str, e: &EventRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO events (account_id, id, event_type, body, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(account)
        .bind(&e.id)
        .bind(&e.event_type)
        .bind(&e.body)
        .bind(e.created_at)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn insert_idempotent_response(
        &mut self,
        account: &str,
        key: &str,
        r: &IdempotentResponse,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO idempotency_keys (account_id, key, request_hash, status, body, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(account)
        .bind(key)
        .bind(&r.request_hash)
        .bind(r.status)
        .bind(&r.body)
        .bind(r.created_at)
        .execute(&mut *self.0)
        .await
        .map_err(unique("idempotency key"))?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.0.commit().await.map_err(backend)
    }
}
