//! Group commit for SQLite's single writer.
//!
//! SQLite has one writer at a time and, with `synchronous=FULL`, every
//! `COMMIT` is an fsync. Committing each API write on its own would make the
//! disk's fsync rate the API's write rate. Instead, writes share one database
//! transaction: each write runs inside its own `SAVEPOINT` (so a failing write
//! rolls back alone), releases it when done, and waits; a committer task then
//! commits everything released so far with one fsync and tells every waiter.
//! A write is acknowledged only after the `COMMIT` that contains it returned.
//!
//! The connection sits behind a fair (FIFO) mutex: the committer queues like
//! any writer, so everyone who arrived before it is in its group.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::{Connection, SqliteConnection};
use tokio::sync::{Mutex, Notify, OwnedMutexGuard, watch};

use super::{StoreError, StoreResult};

/// The outcome of one group's `COMMIT`: `None` while the group is open.
type GroupOutcome = Option<Result<(), Arc<sqlx::Error>>>;

struct State {
    conn: SqliteConnection,
    /// A group transaction is open (`BEGIN IMMEDIATE` done).
    in_tx: bool,
    /// The last holder dropped its write without committing: roll its
    /// savepoint back before anything else.
    rollback_pending: bool,
    /// Tells the open group's writers how its `COMMIT` went.
    group: watch::Sender<GroupOutcome>,
}

/// The single writer connection with its committer.
#[derive(Clone)]
pub(crate) struct Writer {
    state: Arc<Mutex<State>>,
    kick: Arc<Notify>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

async fn exec(conn: &mut SqliteConnection, sql: &str) -> StoreResult<()> {
    sqlx::query(sql)
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(StoreError::Backend)
}

impl State {
    /// Finishes the previous holder's abandoned savepoint. If even that fails
    /// the whole group is rolled back and its writers are told.
    async fn settle(&mut self) {
        if !self.rollback_pending {
            return;
        }
        self.rollback_pending = false;
        let undone = match exec(&mut self.conn, "ROLLBACK TO w").await {
            Ok(()) => exec(&mut self.conn, "RELEASE w").await,
            Err(e) => Err(e),
        };
        if let Err(StoreError::Backend(e)) = undone {
            tracing::error!(error = ?e, "rolling back a savepoint failed; abandoning the group");
            let _ = exec(&mut self.conn, "ROLLBACK").await;
            self.finish_group(Err(Arc::new(e)));
        }
    }

    fn finish_group(&mut self, outcome: Result<(), Arc<sqlx::Error>>) {
        self.in_tx = false;
        self.group.send_replace(Some(outcome));
        self.group = watch::channel(None).0;
    }
}

impl Writer {
    /// Takes `conn` (already migrated) and starts the committer task.
    pub(crate) fn start(conn: SqliteConnection) -> Writer {
        let writer = Writer {
            state: Arc::new(Mutex::new(State {
                conn,
                in_tx: false,
                rollback_pending: false,
                group: watch::channel(None).0,
            })),
            kick: Arc::new(Notify::new()),
        };
        let committer = writer.clone();
        tokio::spawn(async move { committer.commit_loop().await });
        writer
    }

    /// Starts a write: the connection, inside the open group and a fresh savepoint.
    ///
    /// The steps that change the connection's transaction state run in their
    /// own task, so that a caller dropped mid-way (a client that hung up)
    /// cannot leave the bookkeeping out of step with SQLite: if nobody takes
    /// the guard, dropping it rolls the savepoint back.
    pub(crate) async fn begin(&self) -> StoreResult<WriterGuard> {
        let state = self.state.clone();
        let kick = self.kick.clone();
        tokio::spawn(async move {
            let mut state = state.lock_owned().await;
            state.settle().await;
            if !state.in_tx {
                exec(&mut state.conn, "BEGIN IMMEDIATE").await?;
                state.in_tx = true;
            }
            if let Err(e) = exec(&mut state.conn, "SAVEPOINT w").await {
                // Nothing of this write exists; let the committer finish the
                // group for the others.
                kick.notify_one();
                return Err(e);
            }
            Ok(WriterGuard {
                state,
                kick,
                released: false,
            })
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }

    async fn commit_loop(self) {
        loop {
            self.kick.notified().await;
            let mut state = self.state.lock().await;
            state.settle().await;
            if !state.in_tx {
                continue;
            }
            let outcome = match sqlx::query("COMMIT").execute(&mut state.conn).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    tracing::error!(error = ?e, "group commit failed; its writes are rolled back");
                    let _ = exec(&mut state.conn, "ROLLBACK").await;
                    Err(Arc::new(e))
                }
            };
            state.finish_group(outcome);
        }
    }

    /// Commits whatever is open and closes the connection.
    pub(crate) async fn close(&self) {
        let mut state = self.state.lock().await;
        state.settle().await;
        if state.in_tx {
            let outcome = sqlx::query("COMMIT")
                .execute(&mut state.conn)
                .await
                .map(|_| ())
                .map_err(Arc::new);
            state.finish_group(outcome);
        }
        // Fold the WAL into the database file so that it is complete on its own.
        let _ = exec(&mut state.conn, "PRAGMA wal_checkpoint(TRUNCATE)").await;
    }
}

/// One write in progress: holds the connection until committed or dropped.
/// Dropping it uncommitted rolls its savepoint back.
pub(crate) struct WriterGuard {
    state: OwnedMutexGuard<State>,
    kick: Arc<Notify>,
    released: bool,
}

impl WriterGuard {
    /// Releases this write's savepoint into the group, lets the next writer
    /// in, and waits until the group's `COMMIT` is durable. The release runs
    /// in its own task, so a dropped caller cannot interrupt it half-way.
    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        let mut outcome = tokio::spawn(async move {
            // On failure `self` drops unreleased, which rolls the savepoint back.
            exec(&mut self.state.conn, "RELEASE w").await?;
            self.released = true;
            Ok::<_, StoreError>(self.state.group.subscribe())
        })
        .await
        .map_err(|_| StoreError::WriterGone)??;
        let done = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        match done.as_ref() {
            Some(Ok(())) => Ok(()),
            Some(Err(cause)) => Err(StoreError::CommitFailed(cause.clone())),
            None => Err(StoreError::WriterGone),
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if !self.released {
            self.state.rollback_pending = true;
        }
        // Either way the group has something to finish.
        self.kick.notify_one();
    }
}

impl Deref for WriterGuard {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.state.conn
    }
}

impl DerefMut for WriterGuard {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.state.conn
    }
}

/// Opens the writer connection.
pub(crate) async fn connect(
    options: &sqlx::sqlite::SqliteConnectOptions,
) -> StoreResult<SqliteConnection> {
    SqliteConnection::connect_with(options)
        .await
        .map_err(StoreError::Backend)
}
