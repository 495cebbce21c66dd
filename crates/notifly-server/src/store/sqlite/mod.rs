//! The embedded SQLite store.
//!
//! SQLite allows one writer at a time, so writes go through one connection
//! with group commit (see `writer.rs`): each write runs in a savepoint of a
//! shared `BEGIN IMMEDIATE` transaction, and one `COMMIT` makes a whole group
//! durable. Taking the write lock up front means another process (such as
//! `notifly accounts create` beside a running server) waits on the busy
//! timeout instead of failing on a lock upgrade. Reads use a pool of
//! read-only connections and run concurrently thanks to WAL mode.
//! Durability: `synchronous=FULL`, so a write is on disk when its commit
//! returns.
//!
//! Statements go through rusqlite, in the calling task: a statement costs
//! microseconds of CPU and no thread hop (the hop per statement of an async
//! driver was half the server's CPU under load). Every statement is
//! prepared once per connection and cached. sqlx runs the migrations only.

use std::ops::DerefMut;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::ToSql;
use rusqlite::{Connection, params, params_from_iter};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub(crate) use self::rows::Decode;
use self::rows::{
    all, exec, one, placeholders, scalar, sqlite, to_json, unique_sqlite, value_rows,
};
use self::writer::{Readers, Writer, WriterGuard};
use super::*;

mod accounts;
mod deliveries;
mod endpoints;
mod events;
mod queue;
mod replays;
mod resources;
mod retention;
mod rows;
mod writer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Read-only connections in the pool.
const READERS: usize = 8;

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Writer,
    readers: Readers,
    /// The database file.
    path: std::path::PathBuf,
    /// While this process serves the database: the locked `<database>.lock`.
    serving: Arc<std::sync::Mutex<Option<std::fs::File>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or a
    /// plain path) and runs the migrations. Its writes, commits and waits for
    /// a connection are observed into `metrics`.
    pub async fn open(url: &str, metrics: Arc<StoreMetrics>) -> StoreResult<Self> {
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
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
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
        let writer = Writer::start(&path, metrics.clone())?;
        let readers = Readers::new(&path, READERS, metrics);
        Ok(SqliteStore {
            writer,
            readers,
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
        Ok(Box::new(Handle(self.readers.get().await?)))
    }

    async fn write(&self) -> StoreResult<Box<dyn WriteTx>> {
        Ok(Box::new(Handle(self.writer.begin().await?)))
    }

    async fn ping(&self) -> StoreResult<()> {
        let conn = self.readers.get().await?;
        scalar::<i64>(&conn, "SELECT 1", [])?;
        Ok(())
    }

    async fn close(&self) {
        self.readers.close();
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
        let tx = self.writer.begin().await?;
        let done = exec(
            &tx,
            "UPDATE deliveries SET lease_until_ms = NULL, lease_owner = NULL
             WHERE lease_until_ms IS NOT NULL",
            [],
        )
        .map_err(sqlite)?;
        tx.commit().await?;
        Ok(done as u64)
    }

    async fn hand_off(&self, hand_off: Arc<HandOff>) -> bool {
        self.writer.hand_off_to(hand_off).await;
        true
    }
}

/// A connection or a transaction; both read the same way.
struct Handle<C>(C);

impl<C> Conn for Handle<C> where C: DerefMut<Target = Connection> + Send {}

#[async_trait]
impl WriteTx for Handle<WriterGuard> {
    fn claimable_work(&self) -> bool {
        self.0.claimable || !self.0.hands_off()
    }

    fn queued_to(&self) -> Vec<String> {
        self.0.queued_to().to_vec()
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.0.commit().await
    }
}
