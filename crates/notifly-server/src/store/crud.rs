//! The plain reads and writes of a record in a table of its own, written
//! once for both backends.
//!
//! A [`Record`] names its table and columns; a [`Row`] (one [`row!`]
//! line) also says the columns an insert and an update write (its fields
//! of the same names) and which unique constraint a write may break. Each
//! backend implements [`Tables`] and [`TableWrites`] once, generically:
//! read by id, list a page, insert, update, delete; the insert and update
//! statements are built in its [`Dialect`] once per process, with the
//! [`Value`]s bound. The store's traits whose methods are all plain are
//! implemented once over those (`resources.rs`, `deliveries.rs`). What is
//! more than that (fan-out, claims, write-back, endpoints with their
//! subscriptions, the event log) is written by hand per backend.

use std::sync::OnceLock;

use async_trait::async_trait;

use super::{
    ATTACHMENT_COLUMNS, Attachment, CONTACT_COLUMNS, CONVERSATION_COLUMNS, Contact, Conversation,
    DELIVERY_COLUMNS, DeliveryRecord, ENDPOINT_COLUMNS, EVENT_COLUMNS, EndpointRecord, EventRecord,
    Filter, GROUP_COLUMNS, GroupRecord, Listed, MESSAGE_COLUMNS, MessageRecord, Page,
    REPLAY_COLUMNS, ReplayRecord, StoreError, StoreResult,
};

/// A record stored as one row of its own table, keyed by account and id,
/// and read whole by either backend.
pub(crate) trait Record:
    for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
    + super::sqlite::Decode
    + Send
    + Sync
    + Unpin
    + 'static
{
    const TABLE: &'static str;
    /// The columns it is read from, in the order SQLite decodes them.
    const COLUMNS: &'static str;
}

macro_rules! record {
    ($ty:ty, $table:literal, $columns:expr) => {
        impl Record for $ty {
            const TABLE: &'static str = $table;
            const COLUMNS: &'static str = $columns;
        }
    };
}

record!(Contact, "contacts", CONTACT_COLUMNS);
record!(Conversation, "conversations", CONVERSATION_COLUMNS);
record!(MessageRecord, "messages", MESSAGE_COLUMNS);
record!(GroupRecord, "groups", GROUP_COLUMNS);
record!(Attachment, "attachments", ATTACHMENT_COLUMNS);
record!(DeliveryRecord, "deliveries", DELIVERY_COLUMNS);
record!(EndpointRecord, "endpoints", ENDPOINT_COLUMNS);
record!(EventRecord, "events", EVENT_COLUMNS);
record!(ReplayRecord, "replays", REPLAY_COLUMNS);

/// The plain reads, which each backend's handles implement once for every
/// [`Record`]. Generic, so only the store sees it.
#[async_trait]
pub(crate) trait Tables: Send {
    /// The record with this id in `account`, locked as the handle locks
    /// what it reads (PostgreSQL, in a write transaction).
    async fn get<R: Record>(&mut self, account: &str, id: &str) -> StoreResult<Option<R>>;
    /// One page of the account's records, newest first, keyset-paged on
    /// the table's `seq`.
    async fn list<R: Record>(
        &mut self,
        account: &str,
        filters: &[Filter<'_>],
        page: &Page,
    ) -> StoreResult<Listed<R>>;
}

/// The plain writes, which each backend's write transaction implements
/// once for every [`Row`].
#[async_trait]
pub(crate) trait TableWrites: Tables {
    async fn insert<R: Row>(&mut self, account: &str, row: &R) -> StoreResult<()>;
    async fn update<R: Row>(&mut self, account: &str, row: &R) -> StoreResult<()>;
    async fn delete<R: Record>(&mut self, account: &str, id: &str) -> StoreResult<()>;
}

/// A value bound to a statement, in a form both backends bind.
#[derive(Debug)]
pub(crate) enum Value<'a> {
    Text(&'a str),
    OptText(Option<&'a str>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
    /// JSON, serialized once: a `jsonb` column on PostgreSQL, a text one on
    /// SQLite.
    Json(Box<serde_json::value::RawValue>),
}

/// A field that is written to a column as one [`Value`].
pub(crate) trait ToValue {
    fn to_value(&self) -> StoreResult<Value<'_>>;
}

impl ToValue for String {
    fn to_value(&self) -> StoreResult<Value<'_>> {
        Ok(Value::Text(self))
    }
}

impl ToValue for Option<String> {
    fn to_value(&self) -> StoreResult<Value<'_>> {
        Ok(Value::OptText(self.as_deref()))
    }
}

impl ToValue for i64 {
    fn to_value(&self) -> StoreResult<Value<'_>> {
        Ok(Value::Int(*self))
    }
}

impl ToValue for Option<i64> {
    fn to_value(&self) -> StoreResult<Value<'_>> {
        Ok(Value::OptInt(*self))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> StoreResult<Value<'_>> {
        Ok(Value::Bool(*self))
    }
}

impl<T: serde::Serialize> ToValue for sqlx::types::Json<T> {
    fn to_value(&self) -> StoreResult<Value<'_>> {
        serde_json::value::to_raw_value(&self.0)
            .map(Value::Json)
            .map_err(StoreError::Corrupt)
    }
}

/// How a backend writes a statement's parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Dialect {
    /// `$1`, `$2`, …
    Postgres,
    /// `?1`, `?2`, …
    Sqlite,
}

impl Dialect {
    fn parameter(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite => format!("?{n}"),
        }
    }
}

/// One resource's statements in one dialect. The insert binds the account
/// and then [`Row::insert_values`]; the update binds
/// [`Row::update_values`], then the account and the id.
#[derive(Debug)]
pub(crate) struct Statements {
    pub insert: String,
    /// The insert as `INSERT … SELECT` of the same parameters, for a backend
    /// to add a `FROM` whose one row does something in the same statement.
    pub insert_select: String,
    pub update: String,
}

impl Statements {
    fn new(dialect: Dialect, table: &str, insert: &[&str], update: &[&str]) -> Self {
        let p = |n| dialect.parameter(n);
        let columns = insert.join(", ");
        let parameters = (1..=insert.len() + 1).map(p).collect::<Vec<_>>().join(", ");
        let insert_select =
            format!("INSERT INTO {table} (account_id, {columns}) SELECT {parameters}");
        let insert = format!("INSERT INTO {table} (account_id, {columns}) VALUES ({parameters})");
        let set: Vec<String> = update
            .iter()
            .enumerate()
            .map(|(i, column)| format!("{column} = {}", p(i + 1)))
            .collect();
        let update = format!(
            "UPDATE {table} SET {} WHERE account_id = {} AND id = {}",
            set.join(", "),
            p(update.len() + 1),
            p(update.len() + 2)
        );
        Statements {
            insert,
            insert_select,
            update,
        }
    }
}

/// A record the store writes with a plain insert and update.
pub(crate) trait Row: Record {
    /// The unique constraint an insert or update may break, as
    /// [`StoreError::Conflict`] names it.
    const CONFLICT: Option<&'static str>;
    fn id(&self) -> &str;
    /// The values of the insert's columns, in order.
    fn insert_values(&self) -> StoreResult<Vec<Value<'_>>>;
    /// The values of the update's columns, in order.
    fn update_values(&self) -> StoreResult<Vec<Value<'_>>>;
    /// Its statements in `dialect`, built on first use.
    fn statements(dialect: Dialect) -> &'static Statements;
}

/// Implements [`Row`] for a record whose fields are named as its columns.
macro_rules! row {
    ($ty:ty, conflict: $conflict:expr,
     insert: [$($insert:ident),+], update: [$($update:ident),+]) => {
        impl Row for $ty {
            const CONFLICT: Option<&'static str> = $conflict;

            fn id(&self) -> &str {
                &self.id
            }

            fn insert_values(&self) -> StoreResult<Vec<Value<'_>>> {
                Ok(vec![$(self.$insert.to_value()?),+])
            }

            fn update_values(&self) -> StoreResult<Vec<Value<'_>>> {
                Ok(vec![$(self.$update.to_value()?),+])
            }

            fn statements(dialect: Dialect) -> &'static Statements {
                static POSTGRES: OnceLock<Statements> = OnceLock::new();
                static SQLITE: OnceLock<Statements> = OnceLock::new();
                let cell = match dialect {
                    Dialect::Postgres => &POSTGRES,
                    Dialect::Sqlite => &SQLITE,
                };
                cell.get_or_init(|| {
                    Statements::new(
                        dialect,
                        Self::TABLE,
                        &[$(stringify!($insert)),+],
                        &[$(stringify!($update)),+],
                    )
                })
            }
        }
    };
}

row!(Contact, conflict: Some("username"),
    insert: [id, username, phone_number, avatar_url, display_name, conversation_id,
             last_active_at, created_at],
    update: [username, phone_number, avatar_url, display_name, conversation_id, last_active_at]);

// A conversation's participant (`contact_id` or `group_id`) never changes,
// so only an insert can meet the participant's unique index.
row!(Conversation, conflict: Some("conversation participant"),
    insert: [id, contact_id, group_id, pinned_message_id, is_pinned, is_muted, last_active_at,
             last_opened_at, created_at, archived_at],
    update: [pinned_message_id, is_pinned, is_muted, last_active_at, last_opened_at,
             archived_at]);

row!(MessageRecord, conflict: None,
    insert: [id, conversation_id, contact_id, message, reactions, read_at, created_at,
             updated_at],
    update: [message, reactions, read_at, updated_at]);

row!(GroupRecord, conflict: None,
    insert: [id, name, description, avatar_url, conversation_id, created_at, archived_at],
    update: [name, description, avatar_url, conversation_id, archived_at]);

row!(Attachment, conflict: None,
    insert: [id, message_id, filename, file_type, file_size, created_at],
    update: [filename]);

row!(ReplayRecord, conflict: None,
    insert: [id, endpoint_id, since, until, status, total, sent, cursor, cursor_at, last_event,
             created_at, updated_at],
    update: [status, total, sent, cursor, cursor_at, updated_at]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_every_column_once_in_each_dialect() {
        let pg = Contact::statements(Dialect::Postgres);
        assert_eq!(
            pg.insert,
            "INSERT INTO contacts (account_id, id, username, phone_number, avatar_url, \
             display_name, conversation_id, last_active_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        assert_eq!(
            Attachment::statements(Dialect::Sqlite).update,
            "UPDATE attachments SET filename = ?1 WHERE account_id = ?2 AND id = ?3"
        );
        let contact = Contact {
            id: "c".into(),
            username: "u".into(),
            phone_number: "1".into(),
            avatar_url: None,
            display_name: None,
            conversation_id: None,
            last_active_at: None,
            created_at: 0,
        };
        // One value per parameter (the insert's first is the account).
        assert_eq!(contact.insert_values().map(|v| v.len()).ok(), Some(8));
        assert_eq!(contact.update_values().map(|v| v.len()).ok(), Some(6));
    }
}
