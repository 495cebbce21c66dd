//! The plain statements every file of this backend uses: a row by id, a
//! page of rows, a delete; and [`Tables`], the plain reads and writes of
//! [`crud`], built on them.

use super::*;

/// Reads one row of `table` by id, within `account`, locked as the handle
/// locks what it reads (see [`Scope::row_lock`]).
async fn get<T, C: Scope>(
    conn: &mut C,
    table: &'static str,
    columns: &'static str,
    account: &str,
    id: &str,
) -> StoreResult<Option<T>>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let lock = conn.row_lock();
    get_locked(conn, table, columns, account, id, lock).await
}

/// Reads one row of `table` by id, within `account`, with the locking
/// clause `lock` ("" for none).
pub(super) async fn get_locked<T>(
    conn: &mut PgConnection,
    table: &'static str,
    columns: &'static str,
    account: &str,
    id: &str,
    lock: &str,
) -> StoreResult<Option<T>>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as(&format!(
        "SELECT {columns} FROM {table} WHERE account_id = $1 AND id = $2{lock}"
    ))
    .bind(account)
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(backend)
}

#[async_trait]
impl<C: Scope> Tables for Handle<C> {
    async fn get<R: Record>(&mut self, account: &str, id: &str) -> StoreResult<Option<R>> {
        get(&mut self.0, R::TABLE, R::COLUMNS, account, id).await
    }

    async fn list<R: Record>(
        &mut self,
        account: &str,
        filters: &[Filter<'_>],
        page: &Page,
    ) -> StoreResult<Listed<R>> {
        list(&mut self.0, R::TABLE, R::COLUMNS, account, filters, page).await
    }
}

#[async_trait]
impl TableWrites for Handle<PgTx> {
    async fn insert<R: Row>(&mut self, account: &str, row: &R) -> StoreResult<()> {
        let statements = R::statements(Dialect::Postgres);
        // A new resource's event fans out under the account's shared
        // endpoint lock (see `insert_event`): the first insert takes it in
        // its own statement, a round trip less than a statement of its own.
        // Any statement before the fan-out's will do: the fan-out reads the
        // endpoints with a snapshot taken after it has the lock.
        let sharing;
        let sql = if self.0.endpoints_locked.is_none() {
            sharing = format!(
                "{} FROM (SELECT pg_advisory_xact_lock_shared({NS_ENDPOINTS}, hashtext($1))) AS endpoints_lock",
                statements.insert_select
            );
            &sharing
        } else {
            &statements.insert
        };
        let mut q = sqlx::query(sql).bind(account);
        for value in row.insert_values()? {
            q = bind(q, value);
        }
        q.execute(&mut *self.0)
            .await
            .map_err(conflict(R::CONFLICT))?;
        if self.0.endpoints_locked.is_none() {
            self.0.endpoints_locked = Some(false);
        }
        Ok(())
    }

    async fn update<R: Row>(&mut self, account: &str, row: &R) -> StoreResult<()> {
        let mut q = sqlx::query(&R::statements(Dialect::Postgres).update);
        for value in row.update_values()? {
            q = bind(q, value);
        }
        q.bind(account)
            .bind(row.id())
            .execute(&mut *self.0)
            .await
            .map_err(conflict(R::CONFLICT))?;
        Ok(())
    }

    async fn delete<R: Record>(&mut self, account: &str, id: &str) -> StoreResult<()> {
        delete(&mut self.0, R::TABLE, account, id).await
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Binds one of [`crud`]'s values.
pub(super) fn bind<'q>(q: PgQuery<'q>, value: Value<'q>) -> PgQuery<'q> {
    match value {
        Value::Text(v) => q.bind(v),
        Value::OptText(v) => q.bind(v),
        Value::Int(v) => q.bind(v),
        Value::OptInt(v) => q.bind(v),
        Value::Bool(v) => q.bind(v),
        Value::Json(v) => q.bind(sqlx::types::Json(v)),
    }
}

/// Maps a violation of the unique constraint `what` names, if any, to
/// [`StoreError::Conflict`].
fn conflict(what: Option<&'static str>) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match what {
        Some(what) => unique(what)(e),
        None => backend(e),
    }
}

/// Deletes one row of `table` by id, within `account`.
async fn delete(
    conn: &mut PgConnection,
    table: &'static str,
    account: &str,
    id: &str,
) -> StoreResult<()> {
    sqlx::query(&format!(
        "DELETE FROM {table} WHERE account_id = $1 AND id = $2"
    ))
    .bind(account)
    .bind(id)
    .execute(conn)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Reads one page of `table` for `account`, newest first, with keyset cursors on `seq`.
async fn list<T>(
    conn: &mut PgConnection,
    table: &'static str,
    columns: &'static str,
    account: &str,
    filters: &[Filter<'_>],
    page: &Page,
) -> StoreResult<Listed<T>>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let cursor = match &page.cursor {
        None => None,
        Some(Cursor::After(id) | Cursor::Before(id)) => {
            let seq: Option<i64> = sqlx::query_scalar(&format!(
                "SELECT seq FROM {table} WHERE account_id = $1 AND id = $2"
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
        QueryBuilder::<Postgres>::new(format!("SELECT {columns} FROM {table} WHERE account_id = "));
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
    let items: Vec<T> = q.build_query_as().fetch_all(conn).await.map_err(backend)?;
    Ok(Listed::from_probe(items, page.limit, backwards))
}
