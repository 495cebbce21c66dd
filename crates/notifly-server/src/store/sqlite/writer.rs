//! SQLite's connections: the single writer with group commit, and the pool
//! of read-only connections.
//!
//! SQLite has one writer at a time and, with `synchronous=FULL`, every
//! `COMMIT` is an fsync. Committing each API write on its own would make the
//! disk's fsync rate the API's write rate. Instead, writes share one database
//! transaction: each write runs inside its own `SAVEPOINT` (so a failing write
//! rolls back alone), releases it when done, and waits; the committer thread
//! then commits everything released so far with one fsync and tells every
//! waiter. A write is acknowledged only after the `COMMIT` that contains it
//! returned.
//!
//! Statements run in the calling task, on the connection, while it holds the
//! writer: each is a few microseconds of CPU (indexed, bounded), with no hop
//! to another thread. Only the `COMMIT`, which waits for the disk, runs on the
//! committer's own thread, so no async worker ever waits for an fsync. The
//! connection sits behind a fair (FIFO) mutex: the committer queues like any
//! writer, so everyone who arrived before it is in its group.
//!
//! Cancellation: a write's task can only be dropped where it awaits, that is
//! between statements, never inside one; a write dropped before it released
//! its savepoint is rolled back on the spot (see [`WriterGuard`]'s `Drop`).

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Mutex, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, watch};

use super::rows::{exec, sqlite};
use super::{HandOff, Pool, Ready, StoreError, StoreMetrics, StoreResult};

/// The outcome of one group's `COMMIT`: `None` while the group is open.
type GroupOutcome = Option<Result<(), Arc<rusqlite::Error>>>;

/// How long a statement waits for another process's lock on the database
/// (`notifly accounts create` beside a running server) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements kept per connection: every statement the store runs
/// is prepared once per connection, not once per use.
const STATEMENT_CACHE: usize = 256;

struct State {
    conn: Connection,
    /// A group transaction is open (`BEGIN IMMEDIATE` done).
    in_tx: bool,
    /// Tells the open group's writers how its `COMMIT` went.
    group: watch::Sender<GroupOutcome>,
    /// Where new deliveries go once durable, if this process hands them off.
    hand_off: Option<Arc<HandOff>>,
    /// Handed-off deliveries of the write in progress.
    staged: Vec<Ready>,
    /// Endpoints of the write in progress's deliveries that found no slot.
    staged_queued: Vec<String>,
    /// Handed-off deliveries of the open group's released writes.
    group_ready: Vec<Ready>,
    /// Endpoints of their deliveries that found no slot.
    group_queued: Vec<String>,
    /// Writes released into the open group: its `COMMIT` makes them durable.
    group_writes: u64,
}

impl State {
    fn finish_group(&mut self, outcome: Result<(), Arc<rusqlite::Error>>) {
        self.in_tx = false;
        self.group_writes = 0;
        let ready = std::mem::take(&mut self.group_ready);
        let queued = std::mem::take(&mut self.group_queued);
        if let Some(hand_off) = &self.hand_off {
            if outcome.is_ok() {
                hand_off.deliver(ready);
            } else {
                for (c, _) in &ready {
                    hand_off.release(&c.endpoint_id);
                }
                for endpoint in &queued {
                    hand_off.unqueue(endpoint);
                }
            }
        }
        self.group.send_replace(Some(outcome));
        self.group = watch::channel(None).0;
    }

    /// Gives back the slots of the write in progress's hand-offs: the
    /// write is undone.
    fn unstage(&mut self) {
        let staged = std::mem::take(&mut self.staged);
        let queued = std::mem::take(&mut self.staged_queued);
        if let Some(hand_off) = &self.hand_off {
            for (c, _) in &staged {
                hand_off.release(&c.endpoint_id);
            }
            for endpoint in &queued {
                hand_off.unqueue(endpoint);
            }
        }
    }

    /// Rolls back the open savepoint. If even that fails, the whole group is
    /// rolled back and its writers are told.
    fn roll_back_savepoint(&mut self) {
        self.unstage();
        let undone =
            exec(&self.conn, "ROLLBACK TO w", []).and_then(|_| exec(&self.conn, "RELEASE w", []));
        if let Err(e) = undone {
            tracing::error!(error = ?e, "rolling back a savepoint failed; abandoning the group");
            let _ = exec(&self.conn, "ROLLBACK", []);
            self.finish_group(Err(Arc::new(e)));
        }
    }
}

/// The single writer connection with its committer.
#[derive(Clone)]
pub(crate) struct Writer {
    state: Arc<Mutex<State>>,
    /// Wakes the committer; one pending wake-up is enough.
    kick: mpsc::SyncSender<()>,
    metrics: Arc<StoreMetrics>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    /// Opens the writer connection on the (migrated) database at `path` and
    /// starts the committer thread, which ends when the last handle is dropped.
    /// Writes, commits and waits for the writer are observed into `metrics`.
    pub(crate) fn start(path: &Path, metrics: Arc<StoreMetrics>) -> StoreResult<Writer> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        configure(&conn)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
        )
        .map_err(sqlite)?;
        let state = Arc::new(Mutex::new(State {
            conn,
            in_tx: false,
            group: watch::channel(None).0,
            hand_off: None,
            staged: Vec::new(),
            staged_queued: Vec::new(),
            group_ready: Vec::new(),
            group_queued: Vec::new(),
            group_writes: 0,
        }));
        let (kick, kicks) = mpsc::sync_channel(1);
        let committer = state.clone();
        let observed = metrics.clone();
        std::thread::Builder::new()
            .name("sqlite-committer".into())
            .spawn(move || commit_loop(&committer, &kicks, &observed))
            .map_err(|e| StoreError::Io("cannot start the SQLite committer".into(), e))?;
        Ok(Writer {
            state,
            kick,
            metrics,
        })
    }

    /// Starts a write: the connection, inside the open group and a fresh savepoint.
    pub(crate) async fn begin(&self) -> StoreResult<WriterGuard> {
        let asked = Instant::now();
        let mut state = self.state.clone().lock_owned().await;
        let began = Instant::now();
        self.metrics.waited(Pool::Writer, began - asked);
        if !state.in_tx {
            begin_immediate(&state.conn).map_err(sqlite)?;
            state.in_tx = true;
        }
        if let Err(e) = exec(&state.conn, "SAVEPOINT w", []) {
            // Nothing of this write exists; let the committer finish the
            // group for the others.
            self.wake_committer();
            return Err(sqlite(e));
        }
        Ok(WriterGuard {
            state: Some(state),
            kick: self.kick.clone(),
            claimable: false,
            queued_to: Vec::new(),
            began,
            metrics: self.metrics.clone(),
        })
    }

    /// From now on, new deliveries are handed to `hand_off` once durable.
    pub(crate) async fn hand_off_to(&self, hand_off: Arc<HandOff>) {
        self.state.lock().await.hand_off = Some(hand_off);
    }

    fn wake_committer(&self) {
        let _ = self.kick.try_send(());
    }

    /// Commits whatever is open and folds the WAL into the database file, so
    /// that it is complete on its own.
    pub(crate) async fn close(&self) {
        let mut state = self.state.lock().await;
        if state.in_tx {
            let writes = state.group_writes;
            let committing = Instant::now();
            let outcome = exec(&state.conn, "COMMIT", [])
                .map(|_| ())
                .map_err(Arc::new);
            if outcome.is_ok() {
                self.metrics.committed(committing.elapsed(), writes);
            }
            state.finish_group(outcome);
        }
        let _ = state.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    }
}

/// Opens the group's transaction. If another process holds the write lock
/// (`notifly accounts create` beside the server), waits for it, at most the
/// busy timeout, outside the async workers' turn where the runtime allows.
fn begin_immediate(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::ZERO)?;
    let first = exec(conn, "BEGIN IMMEDIATE", []);
    conn.busy_timeout(BUSY_TIMEOUT)?;
    match first {
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {
            let wait = || exec(conn, "BEGIN IMMEDIATE", []).map(|_| ());
            let multi_thread = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            if multi_thread {
                tokio::task::block_in_place(wait)
            } else {
                wait()
            }
        }
        other => other.map(|_| ()),
    }
}

/// The committer: on each wake-up, commits the open group (waiting its turn
/// for the connection behind the writers already queued) and tells its writers.
fn commit_loop(state: &Mutex<State>, kicks: &mpsc::Receiver<()>, metrics: &StoreMetrics) {
    while kicks.recv().is_ok() {
        let mut state = state.blocking_lock();
        if !state.in_tx {
            continue;
        }
        let writes = state.group_writes;
        let committing = Instant::now();
        let outcome = match exec(&state.conn, "COMMIT", []) {
            Ok(_) => {
                metrics.committed(committing.elapsed(), writes);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = ?e, "group commit failed; its writes are rolled back");
                let _ = exec(&state.conn, "ROLLBACK", []);
                Err(Arc::new(e))
            }
        };
        state.finish_group(outcome);
    }
}

/// One write in progress: holds the connection until committed or dropped.
/// Dropping it uncommitted rolls its savepoint back.
pub(crate) struct WriterGuard {
    /// `None` once handed on by [`WriterGuard::commit`].
    state: Option<OwnedMutexGuard<State>>,
    kick: mpsc::SyncSender<()>,
    /// This write made work that the dispatcher must claim (it was not
    /// handed off).
    pub(crate) claimable: bool,
    /// Endpoints this write queued deliveries to (no slot was free).
    queued_to: Vec<String>,
    /// When it got the writer.
    began: Instant,
    metrics: Arc<StoreMetrics>,
}

impl WriterGuard {
    /// Releases this write's savepoint into the group, lets the next writer
    /// in, and waits until the group's `COMMIT` is durable.
    pub(crate) async fn commit(mut self) -> StoreResult<()> {
        let mut state = self.state.take().ok_or(StoreError::WriterGone)?;
        if let Err(e) = exec(&state.conn, "RELEASE w", []) {
            state.roll_back_savepoint();
            drop(state);
            let _ = self.kick.try_send(());
            return Err(sqlite(e));
        }
        let staged = std::mem::take(&mut state.staged);
        state.group_ready.extend(staged);
        let queued = std::mem::take(&mut state.staged_queued);
        state.group_queued.extend(queued);
        state.group_writes += 1;
        let mut outcome = state.group.subscribe();
        drop(state);
        let _ = self.kick.try_send(());
        let done = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        match done.as_ref() {
            Some(Ok(())) => {
                self.metrics.wrote(self.began.elapsed());
                Ok(())
            }
            Some(Err(cause)) => Err(StoreError::CommitFailed(cause.clone())),
            None => Err(StoreError::WriterGone),
        }
    }
}

impl WriterGuard {
    fn state(&self) -> &State {
        // Only `commit` and `drop` take the state, and both consume the guard.
        self.state
            .as_ref()
            .expect("a live write holds the connection")
    }

    /// Where this process hands off new deliveries, if it does.
    pub(crate) fn hand_off(&self) -> Option<Arc<HandOff>> {
        self.state().hand_off.clone()
    }

    /// Whether this process hands off new deliveries.
    pub(crate) fn hands_off(&self) -> bool {
        self.state().hand_off.is_some()
    }

    /// Hands `ready` (whose slots are taken) to the dispatcher once this
    /// write is durable; if it is rolled back instead, their slots are freed.
    pub(crate) fn stage(&mut self, ready: Vec<Ready>) {
        if let Some(state) = self.state.as_mut() {
            state.staged.extend(ready);
        }
    }

    /// Notes a delivery to `endpoint` that found no slot: it waits for a
    /// claim, and counts in the endpoint's queue from now on (a claim in
    /// this same group may take it), unless this write is rolled back.
    pub(crate) fn stage_queued(&mut self, endpoint: &str) {
        self.claimable = true;
        if !self.queued_to.iter().any(|e| e == endpoint) {
            self.queued_to.push(endpoint.to_owned());
        }
        if let Some(state) = self.state.as_mut() {
            if let Some(hand_off) = &state.hand_off {
                hand_off.queued(endpoint);
            }
            state.staged_queued.push(endpoint.to_owned());
        }
    }

    /// The endpoints this write queued deliveries to.
    pub(crate) fn queued_to(&self) -> &[String] {
        &self.queued_to
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if let Some(mut state) = self.state.take() {
            state.roll_back_savepoint();
            drop(state);
            // The group may hold others' writes: let the committer finish it.
            let _ = self.kick.try_send(());
        }
    }
}

impl Deref for WriterGuard {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.state().conn
    }
}

impl DerefMut for WriterGuard {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self
            .state
            .as_mut()
            .expect("a live write holds the connection")
            .conn
    }
}

/// Settings every connection gets.
fn configure(conn: &Connection) -> StoreResult<()> {
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch("PRAGMA cache_size = -16000;")
        .map_err(sqlite)
}

/// A pool of read-only connections. With WAL, readers never wait for the
/// writer, and each sees the last committed state when its statement starts.
#[derive(Debug, Clone)]
pub(crate) struct Readers {
    inner: Arc<ReadersInner>,
}

#[derive(Debug)]
struct ReadersInner {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<ReadConn>>,
    permits: Arc<Semaphore>,
    metrics: Arc<StoreMetrics>,
}

/// A `Connection` is `Debug` only by path; the pool does not need more.
struct ReadConn(Connection);

impl std::fmt::Debug for ReadConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadConn")
    }
}

/// How long a read waits for a free connection before it is refused (503).
const READ_WAIT: Duration = Duration::from_secs(30);

impl Readers {
    /// At most `size` connections to the database at `path`, opened as
    /// needed; waits for one are observed into `metrics`.
    pub(crate) fn new(path: &Path, size: usize, metrics: Arc<StoreMetrics>) -> Readers {
        Readers {
            inner: Arc::new(ReadersInner {
                path: path.to_owned(),
                idle: std::sync::Mutex::default(),
                permits: Arc::new(Semaphore::new(size)),
                metrics,
            }),
        }
    }

    /// A connection, once one is free.
    pub(crate) async fn get(&self) -> StoreResult<Reader> {
        let asked = Instant::now();
        let permit = tokio::time::timeout(READ_WAIT, self.inner.permits.clone().acquire_owned())
            .await
            .map_err(|_| StoreError::Busy("no database connection came free within 30 s"))?
            .map_err(|_| StoreError::WriterGone)?;
        self.inner.metrics.waited(Pool::Readers, asked.elapsed());
        let idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let conn = match idle {
            Some(ReadConn(conn)) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.inner.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(sqlite)?;
                configure(&conn)?;
                conn
            }
        };
        Ok(Reader {
            conn: Some(conn),
            pool: self.inner.clone(),
            _permit: permit,
        })
    }

    /// Closes the idle connections and refuses new reads.
    pub(crate) fn close(&self) {
        self.inner.permits.close();
        self.inner
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// A pooled read-only connection; back to the pool when dropped.
pub(crate) struct Reader {
    conn: Option<Connection>,
    pool: Arc<ReadersInner>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !self.pool.permits.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(ReadConn(conn));
        }
    }
}

impl Deref for Reader {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a pooled connection until dropped")
    }
}

impl DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .expect("a pooled connection until dropped")
    }
}
