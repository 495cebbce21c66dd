//! The embedded SQLite store.
//!
//! SQLite allows one writer at a time, so writes go through one connection
//! with group commit (see `sqlite_writer`): each write runs in a savepoint of a
//! shared `BEGIN IMMEDIATE` transaction, and one `COMMIT` makes a whole group
//! durable. Taking the write lock up front means another process (such as
//! `notifly accounts create` beside a running server) waits on the busy
//! timeout instead of failing on a lock upgrade. Reads use a separate pool and
//! run concurrently thanks to WAL mode. Durability: `synchronous=FULL`, so a
//! write is on disk when its commit returns.

use std::ops::DerefMut;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{FromRow, QueryBuilder, Sqlite, SqliteConnection, SqlitePool};

use super::sqlite_writer::{self, Writer, WriterGuard};
use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    reader: SqlitePool,
    /// The database file (empty for an in-memory database).
    path: std::path::PathBuf,
    /// While this process serves the database: the locked `<database>.lock`.
    serving: Arc<std::sync::Mutex<Option<std::fs::File>>>,
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
        // Migrations run through a short-lived pool (`Migrator::run` on a bare
        // connection makes the future not `Send`).
        let migrations = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::Backend)?;
        MIGRATOR
            .run(&migrations)
            .await
            .map_err(|e| StoreError::Backend(e.into()))?;
        migrations.close().await;
        let path = options.get_filename().to_owned();
        let writer = Writer::start(sqlite_writer::connect(&options).await?);
        let reader = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await
            .map_err(StoreError::Backend)?;
        Ok(SqliteStore {
            writer,
            reader,
            path,
            serving: Arc::default(),
        })
    }

    /// Takes the lock file that makes this process the database's one
    /// server: an exclusive `flock` on `<database>.lock`, which the kernel
    /// releases when the process ends, however it ends.
    fn lock_for_serving(&self) -> StoreResult<()> {
        let name = self.path.as_os_str();
        if name.is_empty() || name == ":memory:" {
            return Ok(());
        }
        let mut lock_path = name.to_owned();
        lock_path.push(".lock");
        let lock_path = std::path::PathBuf::from(lock_path);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::Io(format!("cannot open {}", lock_path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::AlreadyServed(format!(
                    "another `notifly serve` is already serving {} (it holds {}): \
                     one server process at a time may use a SQLite database; \
                     stop it first, or run several nodes on PostgreSQL",
                    self.path.display(),
                    lock_path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Io(
                    format!("cannot lock {}", lock_path.display()),
                    e,
                ));
            }
        }
        *self.serving.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn read(&self) -> StoreResult<Box<dyn Conn>> {
        let conn = self.reader.acquire().await.map_err(StoreError::Backend)?;
        Ok(Box::new(Handle(conn)))
    }

    async fn write(&self) -> StoreResult<Box<dyn WriteTx>> {
        Ok(Box::new(Handle(self.writer.begin().await?)))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(StoreError::Backend)?;
        Ok(())
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
        // Another server may take the database from now on.
        self.serving
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    async fn start_serving(&self) -> StoreResult<u64> {
        self.lock_for_serving()?;
        // Only this process serves the database now, so every lease left
        // is a dead process's.
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE deliveries SET lease_until_ms = NULL, lease_owner = NULL
             WHERE lease_until_ms IS NOT NULL",
        )
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn claim(&self, r: &ClaimRequest) -> StoreResult<Vec<Claimed>> {
        let mut tx = self.writer.begin().await?;
        // The lease starts once this node holds the writer, not before it waited.
        let now_ms = crate::ids::now_ms();
        let lease_until_ms = now_ms + r.lease_ms;
        // In flight per endpoint, across every node holding a live lease.
        let busy: Vec<(String, i64)> = sqlx::query_as(
            "SELECT endpoint_id, COUNT(*) FROM deliveries WHERE lease_until_ms IS NOT NULL AND lease_until_ms > ? GROUP BY endpoint_id",
        )
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let used: std::collections::HashMap<String, i64> = busy.into_iter().collect();
        // Up to `per_endpoint` due, unleased deliveries of each enabled
        // endpoint: one index range per endpoint, so a backlog on one
        // endpoint never hides another's work.
        let candidates: Vec<(String, String, bool)> = sqlx::query_as(
            // CROSS JOIN makes endpoints the outer loop (SQLite keeps the
            // written order), so each endpoint costs one range of
            // `deliveries_queue` instead of a scan of every delivery.
            "SELECT d.id, d.endpoint_id, e.failing_since IS NOT NULL FROM endpoints e CROSS JOIN deliveries d
             WHERE e.enabled = 1 AND d.id IN (
                SELECT q.id FROM deliveries q
                WHERE q.endpoint_id = e.id AND q.status = 'pending' AND q.next_attempt_ms <= ?1
                  AND (q.lease_until_ms IS NULL OR q.lease_until_ms <= ?1)
                ORDER BY q.next_attempt_ms LIMIT ?2)
             ORDER BY d.next_attempt_ms",
        )
        .bind(now_ms)
        .bind(i64::from(r.per_endpoint))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?;
        let chosen = choose_claims(candidates, used, r);
        let mut claimed = Vec::with_capacity(chosen.len());
        for ids in chosen.chunks(200) {
            let mut q = QueryBuilder::<Sqlite>::new("UPDATE deliveries SET lease_until_ms = ");
            q.push_bind(lease_until_ms)
                .push(", lease_owner = ")
                .push_bind(&r.owner)
                .push(" WHERE id IN (");
            let mut sep = q.separated(", ");
            for id in ids {
                sep.push_bind(id);
            }
            q.push(")");
            q.build().execute(&mut *tx).await.map_err(backend)?;

            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT d.id AS delivery_id, d.account_id, d.endpoint_id, d.event_id, d.event_type,
                        d.attempts + 1 AS attempt, d.schedule_pos, e.url, e.secret, e.previous_secret,
                        e.previous_secret_expires_at, ev.body
                 FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id JOIN events ev ON ev.id = d.event_id
                 WHERE d.id IN (",
            );
            let mut sep = q.separated(", ");
            for id in ids {
                sep.push_bind(id);
            }
            q.push(")");
            claimed.extend(
                q.build_query_as::<Claimed>()
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(backend)?,
            );
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn record_attempts(
        &self,
        results: &[AttemptResult],
        disable_after_secs: i64,
    ) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        let now = crate::ids::now();
        // A handful of statements for the whole batch, not three per result:
        // each statement is a round trip to the single writer.
        for chunk in results.chunks(ROWS_PER_STATEMENT) {
            let mut q =
                QueryBuilder::<Sqlite>::new(format!("INSERT INTO attempts ({ATTEMPT_COLUMNS}) "));
            q.push_values(chunk, |mut row, r| {
                let a = &r.attempt;
                row.push_bind(&a.id)
                    .push_bind(&a.delivery_id)
                    .push_bind(a.attempt)
                    .push_bind(a.started_at_ms)
                    .push_bind(a.duration_ms)
                    .push_bind(&a.request_headers)
                    .push_bind(a.response_status)
                    .push_bind(&a.response_headers)
                    .push_bind(&a.response_body)
                    .push_bind(&a.error)
                    .push_bind(a.succeeded);
            });
            q.build().execute(&mut *tx).await.map_err(backend)?;

            // A delivery cancelled (endpoint deleted) or retried by hand while
            // in flight keeps its new state; only the lease holder moves it on.
            let mut q = QueryBuilder::<Sqlite>::new(
                "WITH r(id, owner, status, attempt, next_ms, pos, at, code) AS (",
            );
            q.push_values(chunk, |mut row, r| {
                let a = &r.attempt;
                let (status, next_ms, pos) = match &r.next {
                    NextStep::Succeeded => ("succeeded", None, None),
                    NextStep::Retry {
                        at_ms,
                        schedule_pos,
                    } => ("pending", Some(*at_ms), Some(*schedule_pos)),
                    NextStep::Failed => ("failed", None, None),
                };
                row.push_bind(&a.delivery_id)
                    .push_bind(&r.owner)
                    .push_bind(status)
                    .push_bind(a.attempt)
                    .push_bind(next_ms)
                    .push_bind(pos)
                    .push_bind(a.started_at_ms / 1000)
                    .push_bind(a.response_status);
            });
            q.push(
                ") UPDATE deliveries SET status = r.status, attempts = MAX(deliveries.attempts, r.attempt),
                    next_attempt_ms = r.next_ms, schedule_pos = COALESCE(r.pos, deliveries.schedule_pos),
                    lease_until_ms = NULL, lease_owner = NULL, last_attempt_at = r.at,
                    last_status_code = r.code, updated_at = ",
            )
            .push_bind(now)
            .push(
                " FROM r WHERE deliveries.id = r.id AND deliveries.status = 'pending'
                    AND deliveries.lease_owner = r.owner",
            );
            q.build().execute(&mut *tx).await.map_err(backend)?;
        }
        // Endpoint health, once per endpoint, from the order of its results.
        for (endpoint_id, health) in endpoint_health(results) {
            match health {
                Health::Recovered => {
                    sqlx::query("UPDATE endpoints SET failing_since = NULL WHERE id = ? AND failing_since IS NOT NULL")
                        .bind(endpoint_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                }
                Health::Failing { since_now } => {
                    let sql = if since_now {
                        "UPDATE endpoints SET failing_since = ? WHERE id = ?"
                    } else {
                        "UPDATE endpoints SET failing_since = COALESCE(failing_since, ?) WHERE id = ?"
                    };
                    sqlx::query(sql)
                        .bind(now)
                        .bind(endpoint_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    sqlx::query(
                        "UPDATE endpoints SET enabled = 0, updated_at = ?,
                            disabled_reason = 'failing continuously since ' || strftime('%Y-%m-%dT%H:%M:%SZ', failing_since, 'unixepoch')
                         WHERE id = ? AND enabled = 1 AND failing_since <= ?",
                    )
                    .bind(now)
                    .bind(endpoint_id)
                    .bind(now - disable_after_secs)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
                }
            }
        }
        for r in results {
            if let Some(reason) = &r.disable {
                sqlx::query("UPDATE endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? WHERE id = ? AND enabled = 1")
                    .bind(reason)
                    .bind(now)
                    .bind(&r.endpoint_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
        }
        tx.commit().await
    }

    async fn next_due_ms(&self) -> StoreResult<Option<i64>> {
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(d.next_attempt_ms) FROM deliveries d JOIN endpoints e ON e.id = d.endpoint_id
             WHERE d.status = 'pending' AND e.enabled = 1 AND d.lease_until_ms IS NULL",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(backend)?;
        let lease: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(d.lease_until_ms) FROM deliveries d INDEXED BY deliveries_leased
             JOIN endpoints e ON e.id = d.endpoint_id
             WHERE d.lease_until_ms IS NOT NULL AND d.status = 'pending' AND e.enabled = 1",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(backend)?;
        Ok(match (due, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    async fn release_leases(&self, node: &str) -> StoreResult<u64> {
        let mut tx = self.writer.begin().await?;
        let done = sqlx::query(
            "UPDATE deliveries SET lease_until_ms = NULL, lease_owner = NULL
             WHERE lease_until_ms IS NOT NULL AND substr(lease_owner, 1, length(?1) + 1) = ?1 || ':'",
        )
        .bind(node)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    async fn purge(
        &self,
        before: i64,
        keys_before: i64,
        sessions_at: i64,
        batch: u32,
    ) -> StoreResult<u64> {
        // Oldest first (by `seq`), a bounded number of rows per statement, in
        // one short write: the writer is never held for long.
        let statements = [
            ("DELETE FROM attempts WHERE seq IN (
                SELECT a.seq FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
                WHERE d.created_at < ?1 AND d.status <> 'pending' ORDER BY a.seq LIMIT ?2)", before),
            ("DELETE FROM deliveries WHERE seq IN (
                SELECT d.seq FROM deliveries d
                WHERE d.created_at < ?1 AND d.status <> 'pending'
                  AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = d.id)
                ORDER BY d.seq LIMIT ?2)", before),
            ("DELETE FROM events WHERE seq IN (
                SELECT e.seq FROM events e
                WHERE e.created_at < ?1 AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)
                ORDER BY e.seq LIMIT ?2)", before),
            ("DELETE FROM idempotency_keys WHERE rowid IN (
                SELECT rowid FROM idempotency_keys WHERE created_at < ?1 LIMIT ?2)", keys_before),
            ("DELETE FROM dashboard_sessions WHERE token_hash IN (
                SELECT token_hash FROM dashboard_sessions WHERE expires_at <= ?1
                ORDER BY expires_at LIMIT ?2)", sessions_at),
        ];
        let mut tx = self.writer.begin().await?;
        let mut deleted = 0;
        for (sql, cutoff) in statements {
            deleted += sqlx::query(sql)
                .bind(cutoff)
                .bind(i64::from(batch))
                .execute(&mut *tx)
                .await
                .map_err(backend)?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn queue_stats(&self, now_ms: i64) -> StoreResult<QueueStats> {
        let (pending, due, in_flight): (i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*),
                    COALESCE(SUM(next_attempt_ms <= ?1 AND (lease_until_ms IS NULL OR lease_until_ms <= ?1)), 0),
                    COALESCE(SUM(lease_until_ms IS NOT NULL AND lease_until_ms > ?1), 0)
             FROM deliveries WHERE status = 'pending'",
        )
        .bind(now_ms)
        .fetch_one(&self.reader)
        .await
        .map_err(backend)?;
        let disabled_endpoints: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM endpoints WHERE enabled = 0")
                .fetch_one(&self.reader)
                .await
                .map_err(backend)?;
        Ok(QueueStats {
            pending,
            due,
            in_flight,
            disabled_endpoints,
        })
    }
}

/// A connection or a transaction; both read the same way.
struct Handle<C>(C);

/// Reads one row of `table` by id, within `account`.
async fn get<T>(
    conn: &mut SqliteConnection,
    table: &'static str,
    columns: &'static str,
    account: &str,
    id: &str,
) -> StoreResult<Option<T>>
where
    T: for<'r> FromRow<'r, SqliteRow> + Send + Unpin,
{
    sqlx::query_as(&format!(
        "SELECT {columns} FROM {table} WHERE account_id = ? AND id = ?"
    ))
    .bind(account)
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(backend)
}

/// Deletes one row of `table` by id, within `account`.
async fn delete(
    conn: &mut SqliteConnection,
    table: &'static str,
    account: &str,
    id: &str,
) -> StoreResult<()> {
    sqlx::query(&format!(
        "DELETE FROM {table} WHERE account_id = ? AND id = ?"
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
    let items: Vec<T> = q.build_query_as().fetch_all(conn).await.map_err(backend)?;
    Ok(Listed::from_probe(items, page.limit, backwards))
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

    async fn dashboard_session(
        &mut self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<DashboardSession>> {
        sqlx::query_as(&format!(
            "SELECT {DASHBOARD_SESSION_COLUMNS} FROM dashboard_sessions s JOIN accounts a ON a.id = s.account_id
             WHERE s.token_hash = ? AND s.expires_at > ?"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn contact(&mut self, account: &str, id: &str) -> StoreResult<Option<Contact>> {
        get(&mut self.0, "contacts", CONTACT_COLUMNS, account, id).await
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
        get(
            &mut self.0,
            "conversations",
            CONVERSATION_COLUMNS,
            account,
            id,
        )
        .await
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
        get(&mut self.0, "messages", MESSAGE_COLUMNS, account, id).await
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
        get(&mut self.0, "groups", GROUP_COLUMNS, account, id).await
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
        get(&mut self.0, "attachments", ATTACHMENT_COLUMNS, account, id).await
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE account_id = ? AND id = ? AND is_test = 0"
        ))
        .bind(account)
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn delivered_event(
        &mut self,
        account: &str,
        id: &str,
    ) -> StoreResult<Option<EventRecord>> {
        get(&mut self.0, "events", EVENT_COLUMNS, account, id).await
    }

    async fn events_after(
        &mut self,
        account: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        let after_seq: i64 = match after {
            None => 0,
            Some(id) => sqlx::query_scalar(
                "SELECT seq FROM events WHERE account_id = ? AND id = ? AND is_test = 0",
            )
            .bind(account)
            .bind(id)
            .fetch_optional(&mut *self.0)
            .await
            .map_err(backend)?
            .ok_or(StoreError::UnknownCursor)?,
        };
        sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE account_id = ? AND seq > ? AND is_test = 0 ORDER BY seq LIMIT ?"
        ))
        .bind(account)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn latest_event_id(&mut self, account: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar(
            "SELECT id FROM events WHERE account_id = ? AND is_test = 0 ORDER BY seq DESC LIMIT 1",
        )
        .bind(account)
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
            .chain([Filter::Bool("is_test", false)])
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

    async fn endpoint(&mut self, account: &str, id: &str) -> StoreResult<Option<EndpointRecord>> {
        get(&mut self.0, "endpoints", ENDPOINT_COLUMNS, account, id).await
    }

    async fn list_endpoints(
        &mut self,
        account: &str,
        page: &Page,
    ) -> StoreResult<Listed<EndpointRecord>> {
        list(
            &mut self.0,
            "endpoints",
            ENDPOINT_COLUMNS,
            account,
            &[],
            page,
        )
        .await
    }

    async fn delivery(&mut self, account: &str, id: &str) -> StoreResult<Option<DeliveryRecord>> {
        get(&mut self.0, "deliveries", DELIVERY_COLUMNS, account, id).await
    }

    async fn list_deliveries(
        &mut self,
        account: &str,
        endpoint_id: &str,
        status: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<DeliveryRecord>> {
        let mut filters = vec![Filter::Text("endpoint_id", endpoint_id)];
        if let Some(status) = status {
            filters.push(Filter::Text("status", status));
        }
        list(
            &mut self.0,
            "deliveries",
            DELIVERY_COLUMNS,
            account,
            &filters,
            page,
        )
        .await
    }

    async fn attempts(
        &mut self,
        account: &str,
        delivery_id: &str,
    ) -> StoreResult<Vec<AttemptRecord>> {
        let columns = ATTEMPT_COLUMNS
            .split(", ")
            .map(|c| format!("a.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        sqlx::query_as(&format!(
            "SELECT {columns} FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.account_id = ? AND a.delivery_id = ? ORDER BY a.seq"
        ))
        .bind(account)
        .bind(delivery_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn attempt_buckets(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since_ms: i64,
        bucket_ms: i64,
    ) -> StoreResult<Vec<AttemptBucket>> {
        sqlx::query_as(
            "SELECT (a.started_at_ms - ?) / ? AS bucket, COUNT(*) AS attempts,
                    SUM(CASE WHEN a.succeeded THEN 1 ELSE 0 END) AS succeeded,
                    SUM(a.duration_ms) AS total_duration_ms,
                    MAX(a.duration_ms) AS max_duration_ms
             FROM attempts a JOIN deliveries d ON d.id = a.delivery_id
             WHERE d.account_id = ? AND d.endpoint_id = ? AND a.started_at_ms >= ?
             GROUP BY 1 ORDER BY 1",
        )
        .bind(since_ms)
        .bind(bucket_ms.max(1))
        .bind(account)
        .bind(endpoint_id)
        .bind(since_ms)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn last_attempt_at(
        &mut self,
        account: &str,
        endpoint_id: &str,
    ) -> StoreResult<Option<i64>> {
        sqlx::query_scalar(
            "SELECT MAX(last_attempt_at) FROM deliveries WHERE account_id = ? AND endpoint_id = ?",
        )
        .bind(account)
        .bind(endpoint_id)
        .fetch_one(&mut *self.0)
        .await
        .map_err(backend)
    }
}

#[async_trait]
impl WriteTx for Handle<WriterGuard> {
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

    async fn insert_dashboard_session(
        &mut self,
        account: &str,
        session: &DashboardSession,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO dashboard_sessions (token_hash, account_id, csrf, created_at, last_seen_at, expires_at, flash_kind, flash_message)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&session.token_hash)
        .bind(account)
        .bind(&session.csrf)
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .bind(session.expires_at)
        .bind(&session.flash_kind)
        .bind(&session.flash_message)
        .execute(&mut *self.0)
        .await
        .map_err(unique("dashboard session"))?;
        Ok(())
    }

    async fn trim_dashboard_sessions(&mut self, account: &str, keep: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM dashboard_sessions WHERE account_id = ?1 AND token_hash IN (
                SELECT token_hash FROM dashboard_sessions WHERE account_id = ?1
                ORDER BY last_seen_at DESC, created_at DESC, token_hash LIMIT -1 OFFSET ?2)",
        )
        .bind(account)
        .bind(i64::from(keep))
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
    }

    async fn touch_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
        last_seen_at: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE dashboard_sessions SET last_seen_at = ?, expires_at = ? WHERE account_id = ? AND token_hash = ?",
        )
        .bind(last_seen_at)
        .bind(expires_at)
        .bind(account)
        .bind(token_hash)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn set_dashboard_session_flash(
        &mut self,
        account: &str,
        token_hash: &str,
        flash: &SessionFlash,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE dashboard_sessions SET flash_kind = ?, flash_message = ? WHERE account_id = ? AND token_hash = ?",
        )
        .bind(&flash.kind)
        .bind(&flash.message)
        .bind(account)
        .bind(token_hash)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn take_dashboard_session_flash(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<Option<SessionFlash>> {
        // The single writer makes the read and the clear one step.
        let flash: Option<SessionFlash> = sqlx::query_as(
            "SELECT flash_kind AS kind, flash_message AS message FROM dashboard_sessions
             WHERE account_id = ? AND token_hash = ? AND flash_kind IS NOT NULL AND flash_message IS NOT NULL",
        )
        .bind(account)
        .bind(token_hash)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)?;
        if flash.is_some() {
            sqlx::query(
                "UPDATE dashboard_sessions SET flash_kind = NULL, flash_message = NULL WHERE account_id = ? AND token_hash = ?",
            )
            .bind(account)
            .bind(token_hash)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        }
        Ok(flash)
    }

    async fn delete_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE account_id = ? AND token_hash = ?")
            .bind(account)
            .bind(token_hash)
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
        delete(&mut self.0, "contacts", account, id).await
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
        delete(&mut self.0, "conversations", account, id).await
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
        delete(&mut self.0, "messages", account, id).await
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
        sqlx::query(
            "DELETE FROM group_members WHERE group_id IN (SELECT id FROM groups WHERE account_id = ? AND id = ?)",
        )
        .bind(account)
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
        delete(&mut self.0, "attachments", account, id).await
    }

    async fn insert_event(&mut self, account: &str, e: &EventRecord) -> StoreResult<u64> {
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
        let endpoints: Vec<String> = sqlx::query_scalar(
            "SELECT e.id FROM endpoints e WHERE e.account_id = ? AND e.enabled = 1
               AND EXISTS (SELECT 1 FROM endpoint_events s WHERE s.endpoint_id = e.id AND s.event_type IN (?, '*'))",
        )
        .bind(account)
        .bind(&e.event_type)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)?;
        fan_out(&mut self.0, account, e, &endpoints).await?;
        Ok(endpoints.len() as u64)
    }

    async fn insert_event_for_endpoint(
        &mut self,
        account: &str,
        e: &EventRecord,
        endpoint_id: &str,
    ) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO events (account_id, id, event_type, body, created_at, is_test) VALUES (?, ?, ?, ?, ?, 1)",
        )
        .bind(account)
        .bind(&e.id)
        .bind(&e.event_type)
        .bind(&e.body)
        .bind(e.created_at)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        insert_delivery(&mut self.0, account, e, endpoint_id).await
    }

    async fn insert_endpoint(&mut self, account: &str, ep: &EndpointRecord) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO endpoints (account_id, {ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(account)
        .bind(&ep.id)
        .bind(&ep.name)
        .bind(&ep.url)
        .bind(&ep.description)
        .bind(&ep.events)
        .bind(ep.enabled)
        .bind(&ep.disabled_reason)
        .bind(&ep.secret)
        .bind(&ep.previous_secret)
        .bind(ep.previous_secret_expires_at)
        .bind(ep.failing_since)
        .bind(ep.created_at)
        .bind(ep.updated_at)
        .execute(&mut *self.0)
        .await
        .map_err(unique("endpoint name"))?;
        set_subscription(&mut self.0, ep).await
    }

    async fn update_endpoint(&mut self, account: &str, ep: &EndpointRecord) -> StoreResult<()> {
        let updated = sqlx::query(
            "UPDATE endpoints SET name = ?, url = ?, description = ?, events = ?, enabled = ?, disabled_reason = ?,
                secret = ?, previous_secret = ?, previous_secret_expires_at = ?, failing_since = ?, updated_at = ?
             WHERE account_id = ? AND id = ?",
        )
        .bind(&ep.name)
        .bind(&ep.url)
        .bind(&ep.description)
        .bind(&ep.events)
        .bind(ep.enabled)
        .bind(&ep.disabled_reason)
        .bind(&ep.secret)
        .bind(&ep.previous_secret)
        .bind(ep.previous_secret_expires_at)
        .bind(ep.failing_since)
        .bind(ep.updated_at)
        .bind(account)
        .bind(&ep.id)
        .execute(&mut *self.0)
        .await
        .map_err(unique("endpoint name"))?;
        // Another account's endpoint id matches nothing, and keeps its subscription.
        if updated.rows_affected() == 0 {
            return Ok(());
        }
        set_subscription(&mut self.0, ep).await
    }

    async fn delete_endpoint(&mut self, account: &str, id: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE deliveries SET status = 'cancelled', next_attempt_ms = NULL, lease_until_ms = NULL, lease_owner = NULL, updated_at = ?
             WHERE account_id = ? AND endpoint_id = ? AND status = 'pending'",
        )
        .bind(crate::ids::now())
        .bind(account)
        .bind(id)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        // Its subscription goes with it (ON DELETE CASCADE).
        sqlx::query("DELETE FROM endpoints WHERE account_id = ? AND id = ?")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn retry_delivery(&mut self, account: &str, id: &str, now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_ms = ?, schedule_pos = 0,
                lease_until_ms = NULL, lease_owner = NULL, updated_at = ?
             WHERE account_id = ? AND id = ? AND (lease_until_ms IS NULL OR lease_until_ms <= ?)",
        )
        .bind(now_ms)
        .bind(now_ms / 1000)
        .bind(account)
        .bind(id)
        .bind(now_ms)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn recover_deliveries(
        &mut self,
        account: &str,
        endpoint_id: &str,
        since: i64,
        now_ms: i64,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_attempt_ms = ?, schedule_pos = 0,
                lease_until_ms = NULL, lease_owner = NULL, updated_at = ?
             WHERE account_id = ? AND endpoint_id = ? AND status = 'failed' AND created_at >= ?",
        )
        .bind(now_ms)
        .bind(now_ms / 1000)
        .bind(account)
        .bind(endpoint_id)
        .bind(since)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected())
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
        self.0.commit().await
    }
}

/// A pending delivery of `e` to one of the account's endpoints. The endpoint
/// must belong to the account: otherwise nothing is written and it is an
/// error, so one account's event can never go to another's endpoint.
async fn insert_delivery(
    conn: &mut SqliteConnection,
    account: &str,
    e: &EventRecord,
    endpoint_id: &str,
) -> StoreResult<String> {
    let id = crate::ids::new_id();
    let done = sqlx::query(
        "INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms, created_at, updated_at)
         SELECT ?, account_id, id, ?, ?, 'pending', ?, ?, ? FROM endpoints WHERE id = ? AND account_id = ?",
    )
    .bind(&id)
    .bind(&e.id)
    .bind(&e.event_type)
    .bind(crate::ids::now_ms())
    .bind(e.created_at)
    .bind(e.created_at)
    .bind(endpoint_id)
    .bind(account)
    .execute(conn)
    .await
    .map_err(backend)?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Backend(sqlx::Error::RowNotFound));
    }
    Ok(id)
}

/// Inserts one pending delivery of `e` per endpoint in `endpoints` (ids of
/// the account's endpoints, just read), in as few statements as SQLite's
/// variable limit allows: each statement is a round trip to the writer.
async fn fan_out(
    conn: &mut SqliteConnection,
    account: &str,
    e: &EventRecord,
    endpoints: &[String],
) -> StoreResult<()> {
    let now_ms = crate::ids::now_ms();
    for chunk in endpoints.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms, created_at, updated_at) ",
        );
        q.push_values(chunk, |mut row, endpoint| {
            row.push_bind(crate::ids::new_id())
                .push_bind(account)
                .push_bind(endpoint)
                .push_bind(&e.id)
                .push_bind(&e.event_type)
                .push_bind("pending")
                .push_bind(now_ms)
                .push_bind(e.created_at)
                .push_bind(e.created_at);
        });
        q.build().execute(&mut *conn).await.map_err(backend)?;
    }
    Ok(())
}

/// Rewrites an endpoint's subscription rows from its `events`.
async fn set_subscription(conn: &mut SqliteConnection, ep: &EndpointRecord) -> StoreResult<()> {
    sqlx::query("DELETE FROM endpoint_events WHERE endpoint_id = ?")
        .bind(&ep.id)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    for event_type in ep.events.iter() {
        sqlx::query("INSERT INTO endpoint_events (endpoint_id, event_type) VALUES (?, ?)")
            .bind(&ep.id)
            .bind(event_type)
            .execute(&mut *conn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}
