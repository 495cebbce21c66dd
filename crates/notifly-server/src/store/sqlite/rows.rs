//! Reading the SQLite store's rows, the few helpers every statement uses,
//! and [`Tables`], the plain reads and writes of [`crud`], built on them.
//!
//! Rows are decoded by position, in the order of the `*_COLUMNS` lists in
//! `store/mod.rs`; JSON columns are TEXT.

use rusqlite::types::Type;
use rusqlite::{Connection, Row};
use serde::de::DeserializeOwned;

use super::*;

/// A row type read from one `SELECT` of its `*_COLUMNS`.
pub(crate) trait Decode: Sized {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self>;
}

/// Maps any SQLite error.
pub(crate) fn sqlite(e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite(e)
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
pub(crate) fn unique_sqlite(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| match e.sqlite_error() {
        Some(f)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict(what)
        }
        _ => StoreError::Sqlite(e),
    }
}

/// A JSON text column.
fn json<T: DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<sqlx::types::Json<T>> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text)
        .map(sqlx::types::Json)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

/// A nullable JSON text column.
fn json_opt<T: DeserializeOwned>(
    row: &Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<sqlx::types::Json<T>>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|text| {
        serde_json::from_str(&text)
            .map(sqlx::types::Json)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
    })
    .transpose()
}

/// A value as JSON text, for binding.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(StoreError::Corrupt)
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            Value::Text(v) | Value::OptText(Some(v)) => {
                ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes()))
            }
            Value::Json(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.get().as_bytes())),
            Value::Int(v) | Value::OptInt(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Bool(v) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*v))),
            Value::OptText(None) | Value::OptInt(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

/// Runs a statement (cached), returning the rows it changed.
pub(crate) fn exec(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    c.prepare_cached(sql)?.execute(params)
}

/// The one row `sql` returns, if any, decoded with `f`.
pub(crate) fn one<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Option<T>> {
    let mut stmt = c.prepare_cached(sql).map_err(sqlite)?;
    let mut rows = stmt.query(params).map_err(sqlite)?;
    match rows.next().map_err(sqlite)? {
        Some(row) => f(row).map(Some).map_err(sqlite),
        None => Ok(None),
    }
}

/// Every row `sql` returns, decoded with `f`.
pub(crate) fn all<T>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    mut f: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = c.prepare_cached(sql).map_err(sqlite)?;
    let mut rows = stmt.query(params).map_err(sqlite)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite)? {
        out.push(f(row).map_err(sqlite)?);
    }
    Ok(out)
}

/// The first column of a one-row query (an aggregate).
pub(crate) fn scalar<T: rusqlite::types::FromSql>(
    c: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StoreResult<T> {
    c.prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_row(params, |row| row.get(0)))
        .map_err(sqlite)
}

/// `n` comma-separated placeholders, for `IN (…)` lists.
pub(crate) fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('?');
    }
    s
}

/// `rows` groups of `cols` placeholders, for multi-row `VALUES`.
pub(crate) fn value_rows(rows: usize, cols: usize) -> String {
    let row = format!("({})", placeholders(cols));
    let mut s = String::with_capacity(rows * (row.len() + 2));
    for i in 0..rows {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&row);
    }
    s
}

/// Reads one row of `table` by id, within `account`.
fn get<T: Decode>(
    c: &Connection,
    table: &'static str,
    columns: &'static str,
    account: &str,
    id: &str,
) -> StoreResult<Option<T>> {
    one(
        c,
        &format!("SELECT {columns} FROM {table} WHERE account_id = ? AND id = ?"),
        [account, id],
        T::decode,
    )
}

#[async_trait]
impl<C> Tables for Handle<C>
where
    C: DerefMut<Target = Connection> + Send,
{
    async fn get<R: Record>(&mut self, account: &str, id: &str) -> StoreResult<Option<R>> {
        get(&self.0, R::TABLE, R::COLUMNS, account, id)
    }

    async fn list<R: Record>(
        &mut self,
        account: &str,
        filters: &[Filter<'_>],
        page: &Page,
    ) -> StoreResult<Listed<R>> {
        list(&self.0, R::TABLE, R::COLUMNS, account, filters, page)
    }
}

#[async_trait]
impl TableWrites for Handle<WriterGuard> {
    async fn insert<R: crate::store::Row>(&mut self, account: &str, row: &R) -> StoreResult<()> {
        let mut values = vec![Value::Text(account)];
        values.extend(row.insert_values()?);
        let sql = &R::statements(Dialect::Sqlite).insert;
        exec(&self.0, sql, params_from_iter(values)).map_err(conflict(R::CONFLICT))?;
        Ok(())
    }

    async fn update<R: crate::store::Row>(&mut self, account: &str, row: &R) -> StoreResult<()> {
        let mut values = row.update_values()?;
        values.extend([Value::Text(account), Value::Text(row.id())]);
        let sql = &R::statements(Dialect::Sqlite).update;
        exec(&self.0, sql, params_from_iter(values)).map_err(conflict(R::CONFLICT))?;
        Ok(())
    }

    async fn delete<R: Record>(&mut self, account: &str, id: &str) -> StoreResult<()> {
        delete(&self.0, R::TABLE, account, id)
    }
}

/// Maps a violation of the unique constraint `what` names, if any, to
/// [`StoreError::Conflict`].
fn conflict(what: Option<&'static str>) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| match what {
        Some(what) => unique_sqlite(what)(e),
        None => sqlite(e),
    }
}

/// Deletes one row of `table` by id, within `account`.
fn delete(c: &Connection, table: &'static str, account: &str, id: &str) -> StoreResult<()> {
    exec(
        c,
        &format!("DELETE FROM {table} WHERE account_id = ? AND id = ?"),
        [account, id],
    )
    .map_err(sqlite)?;
    Ok(())
}

/// Reads one page of `table` for `account`, newest first, with keyset cursors on `seq`.
fn list<T: Decode>(
    c: &Connection,
    table: &'static str,
    columns: &'static str,
    account: &str,
    filters: &[Filter<'_>],
    page: &Page,
) -> StoreResult<Listed<T>> {
    let cursor = match &page.cursor {
        None => None,
        Some(Cursor::After(id) | Cursor::Before(id)) => {
            let seq: Option<i64> = one(
                c,
                &format!("SELECT seq FROM {table} WHERE account_id = ? AND id = ?"),
                [account, id],
                |row| row.get(0),
            )?;
            Some(seq.ok_or(StoreError::UnknownCursor)?)
        }
    };
    let mut sql = format!("SELECT {columns} FROM {table} WHERE account_id = ?");
    let mut values: Vec<&dyn ToSql> = vec![&account];
    for filter in filters {
        match filter {
            Filter::Text(col, v) => {
                sql.push_str(&format!(" AND {col} = ?"));
                values.push(v);
            }
            Filter::Bool(col, v) => {
                sql.push_str(&format!(" AND {col} = ?"));
                values.push(v);
            }
            Filter::Set(col, true) => sql.push_str(&format!(" AND {col} IS NOT NULL")),
            Filter::Set(col, false) => sql.push_str(&format!(" AND {col} IS NULL")),
        };
    }
    let backwards = matches!(page.cursor, Some(Cursor::Before(_)));
    if let Some(seq) = &cursor {
        sql.push_str(if backwards {
            " AND seq > ?"
        } else {
            " AND seq < ?"
        });
        values.push(seq);
    }
    sql.push_str(if backwards {
        " ORDER BY seq ASC LIMIT ?"
    } else {
        " ORDER BY seq DESC LIMIT ?"
    });
    let probe = i64::from(page.limit) + 1;
    values.push(&probe);
    let items = all(c, &sql, params_from_iter(values), T::decode)?;
    Ok(Listed::from_probe(items, page.limit, backwards))
}

impl Decode for Account {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Account {
            id: row.get(0)?,
            name: row.get(1)?,
            created_at: row.get(2)?,
        })
    }
}

impl Decode for Contact {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Contact {
            id: row.get(0)?,
            username: row.get(1)?,
            phone_number: row.get(2)?,
            avatar_url: row.get(3)?,
            display_name: row.get(4)?,
            conversation_id: row.get(5)?,
            last_active_at: row.get(6)?,
            created_at: row.get(7)?,
        })
    }
}

impl Decode for Conversation {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Conversation {
            id: row.get(0)?,
            contact_id: row.get(1)?,
            group_id: row.get(2)?,
            pinned_message_id: row.get(3)?,
            is_pinned: row.get(4)?,
            is_muted: row.get(5)?,
            last_active_at: row.get(6)?,
            last_opened_at: row.get(7)?,
            created_at: row.get(8)?,
            archived_at: row.get(9)?,
        })
    }
}

impl Decode for MessageRecord {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(MessageRecord {
            id: row.get(0)?,
            conversation_id: row.get(1)?,
            contact_id: row.get(2)?,
            message: row.get(3)?,
            reactions: json(row, 4)?,
            read_at: row.get(5)?,
            created_at: row.get(6)?,
            updated_at: row.get(7)?,
        })
    }
}

impl Decode for GroupRecord {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(GroupRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            description: row.get(2)?,
            avatar_url: row.get(3)?,
            conversation_id: row.get(4)?,
            created_at: row.get(5)?,
            archived_at: row.get(6)?,
        })
    }
}

impl Decode for Attachment {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Attachment {
            id: row.get(0)?,
            message_id: row.get(1)?,
            filename: row.get(2)?,
            file_url: String::new(),
            file_type: row.get(3)?,
            file_size: row.get(4)?,
            created_at: row.get(5)?,
        })
    }
}

impl Decode for EventRecord {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(EventRecord {
            id: row.get(0)?,
            event_type: row.get(1)?,
            body: row.get(2)?,
            created_at: row.get(3)?,
            resource_id: None,
            traceparent: None,
        })
    }
}

impl Decode for IdempotentResponse {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(IdempotentResponse {
            request_hash: row.get(0)?,
            status: row.get(1)?,
            body: row.get(2)?,
            created_at: row.get(3)?,
        })
    }
}

impl Decode for DashboardSession {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(DashboardSession {
            token_hash: row.get(0)?,
            account_id: row.get(1)?,
            account_name: row.get(2)?,
            csrf: row.get(3)?,
            created_at: row.get(4)?,
            last_seen_at: row.get(5)?,
            expires_at: row.get(6)?,
            flash_kind: row.get(7)?,
            flash_message: row.get(8)?,
            key_id: row.get(9)?,
        })
    }
}

impl Decode for EndpointRecord {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(EndpointRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            url: row.get(2)?,
            description: row.get(3)?,
            events: json(row, 4)?,
            enabled: row.get(5)?,
            disabled_reason: row.get(6)?,
            secret: row.get(7)?,
            previous_secret: row.get(8)?,
            previous_secret_expires_at: row.get(9)?,
            failing_since: row.get(10)?,
            created_at: row.get(11)?,
            updated_at: row.get(12)?,
            signature_scheme: row.get(13)?,
            circuit: row.get(14)?,
            circuit_since: row.get(15)?,
            rate_limit: row.get(16)?,
            ordering: row.get(17)?,
            headers: row.get(18)?,
            filter: row.get(19)?,
        })
    }
}

impl Decode for DeliveryRecord {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(DeliveryRecord {
            id: row.get(0)?,
            endpoint_id: row.get(1)?,
            event_id: row.get(2)?,
            event_type: row.get(3)?,
            status: row.get(4)?,
            attempts: row.get(5)?,
            next_attempt_ms: row.get(6)?,
            last_attempt_at: row.get(7)?,
            last_status_code: row.get(8)?,
            created_at: row.get(9)?,
            updated_at: row.get(10)?,
        })
    }
}

impl Decode for AttemptRecord {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(AttemptRecord {
            id: row.get(0)?,
            delivery_id: row.get(1)?,
            attempt: row.get(2)?,
            started_at_ms: row.get(3)?,
            duration_ms: row.get(4)?,
            request_headers: json(row, 5)?,
            response_status: row.get(6)?,
            response_headers: json_opt(row, 7)?,
            response_body: row.get(8)?,
            error: row.get(9)?,
            succeeded: row.get(10)?,
        })
    }
}

impl Decode for AttemptBucket {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(AttemptBucket {
            bucket: row.get(0)?,
            attempts: row.get(1)?,
            succeeded: row.get(2)?,
            total_duration_ms: row.get(3)?,
            max_duration_ms: row.get(4)?,
        })
    }
}

/// From `CLAIMED_SELECT` (see `queue.rs`).
impl Decode for Claimed {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Claimed {
            delivery_id: row.get(0)?,
            account_id: row.get(1)?,
            endpoint_id: row.get(2)?,
            event_id: row.get(3)?,
            event_type: row.get(4)?,
            attempt: row.get(5)?,
            schedule_pos: row.get(6)?,
            url: row.get(7)?,
            secret: row.get(8)?,
            previous_secret: row.get(9)?,
            previous_secret_expires_at: row.get(10)?,
            body: row.get(11)?,
            ordered: row.get(12)?,
            headers: row.get(13)?,
            traceparent: row.get(14)?,
        })
    }
}

impl Decode for SessionFlash {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(SessionFlash {
            kind: row.get(0)?,
            message: row.get(1)?,
        })
    }
}

impl Decode for ReplayRecord {
    fn decode(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(ReplayRecord {
            id: row.get(0)?,
            account_id: row.get(1)?,
            endpoint_id: row.get(2)?,
            since: row.get(3)?,
            until: row.get(4)?,
            status: row.get(5)?,
            total: row.get(6)?,
            sent: row.get(7)?,
            cursor: row.get(8)?,
            cursor_at: row.get(9)?,
            last_event: row.get(10)?,
            created_at: row.get(11)?,
            updated_at: row.get(12)?,
        })
    }
}
