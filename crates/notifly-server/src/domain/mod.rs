//! The resources, their rules, and the transactional outbox.
//!
//! Every mutation runs in one store write transaction that also appends the
//! events it causes (see [`outbox`]) and, for `POST`s sent with an
//! `Idempotency-Key`, the response to replay. This layer knows nothing of HTTP.

pub mod accounts;
pub mod attachments;
pub mod contacts;
pub mod conversations;
pub mod custom_headers;
pub mod deliveries;
pub mod events;
pub mod groups;
pub mod messages;
pub mod notices;
mod outbox;
pub mod replays;
pub mod samples;
pub mod sessions;
pub(crate) mod validate;
pub mod webhooks;

use crate::secrets::Keyring;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use crate::ids;
use crate::store::{
    Cursor, HandOff, IdempotentResponse, Page, Store, StoreError, StoreResult, WriteTx,
};

pub use outbox::emit;

/// Errors of the domain layer. The API maps each variant to one status.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The request is malformed at the protocol level (bad cursor, bad parameter).
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but breaks a rule (missing field, bad reference).
    #[error("{0}")]
    Invalid(String),
    /// The addressed resource does not exist in this account.
    #[error("no {kind} with id `{id}`")]
    NotFound { kind: &'static str, id: String },
    /// The request conflicts with the current state (duplicate, still referenced).
    #[error("{0}")]
    Conflict(String),
    /// An upload is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The store failed.
    #[error("storage failure")]
    Store(#[from] StoreError),
    /// Attachment files could not be read or written.
    #[error("file storage failure")]
    Io(#[from] std::io::Error),
    /// A webhook's signing keys could not be opened (a misconfigured
    /// encryption key, or an altered row).
    #[error("cannot open a webhook's signing keys: {0}")]
    Sealed(#[from] crate::secrets::SealError),
}

/// Result alias for domain operations.
pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    /// Whether a write was refused for want of space, on the database's
    /// storage or the attachments' (see [`StoreError::is_storage_full`]).
    pub fn is_storage_full(&self) -> bool {
        match self {
            DomainError::Store(e) => e.is_storage_full(),
            DomainError::Io(e) => crate::store::io_full(e),
            _ => false,
        }
    }

    pub(crate) fn not_found(kind: &'static str, id: &str) -> Self {
        DomainError::NotFound {
            kind,
            id: ids::printable(id),
        }
    }
}

/// The service: the store plus what the domain needs to know about its setting.
#[derive(Clone)]
pub struct Notifly {
    pub(crate) store: Arc<dyn Store>,
    /// Base URL that `file_url`s are built on, without a trailing slash.
    pub(crate) public_url: Arc<str>,
    /// Where attachment bytes live.
    pub(crate) attachment_dir: Arc<PathBuf>,
    /// Whether webhook URLs may point at private networks.
    pub(crate) allow_private_urls: bool,
    /// Signals this process's dispatcher that new work was committed.
    pub(crate) wake: Arc<tokio::sync::Notify>,
    /// Counts commits (this process's and, as announced, other nodes'), for
    /// event streams to wake on.
    pub(crate) commits: Arc<tokio::sync::watch::Sender<u64>>,
    /// Signals that this process committed something other nodes should hear of.
    pub(crate) announce: Arc<tokio::sync::Notify>,
    /// Set when one of those commits left work for a claim (see
    /// [`Notifly::announce_signal`]).
    pub(crate) announce_claimable: Arc<std::sync::atomic::AtomicBool>,
    /// The dispatcher's slots, by which writes are paced (backpressure).
    pub(crate) pacing: Option<Arc<HandOff>>,
    /// Seals and opens endpoints' signing keys.
    pub(crate) keyring: Arc<Keyring>,
    /// Wakes the replayer (`crate::replayer`): a replay was made.
    pub(crate) replays: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Notifly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifly")
            .field("public_url", &self.public_url)
            .field("attachment_dir", &self.attachment_dir)
            .finish_non_exhaustive()
    }
}

/// The `Idempotency-Key` of a `POST`, with a hash of what it was sent with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    /// Hex SHA-256 over the method, path and body.
    pub request_hash: String,
}

/// A write transaction, or the remembered response of an idempotent replay.
pub(crate) enum Begun {
    Fresh(Box<dyn WriteTx>),
    Replay(String),
}

impl Notifly {
    /// Wraps a store. `public_url` is where this server is reached.
    pub fn new(
        store: Arc<dyn Store>,
        public_url: &str,
        attachment_dir: PathBuf,
        allow_private_urls: bool,
        keyring: Arc<Keyring>,
    ) -> Self {
        Notifly {
            store,
            public_url: public_url.trim_end_matches('/').into(),
            attachment_dir: Arc::new(attachment_dir),
            allow_private_urls,
            wake: Arc::new(tokio::sync::Notify::new()),
            commits: Arc::new(tokio::sync::watch::channel(0).0),
            announce: Arc::new(tokio::sync::Notify::new()),
            announce_claimable: Arc::default(),
            pacing: None,
            keyring,
            replays: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Paces writes by the dispatcher's `slots`: a write that queued
    /// deliveries to an endpoint that keeps up but is backed up answers
    /// only once that queue is short again (see [`HandOff::pace`]).
    pub fn paced_by(mut self, slots: Arc<HandOff>) -> Self {
        self.pacing = Some(slots);
        self
    }

    /// Changes whenever this process commits a write or another node
    /// announces one (event streams wait on it, and poll as a fallback).
    pub fn commit_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// The signal the dispatcher waits on.
    pub fn wake_signal(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// Starts a write transaction (a span of its own while traces are
    /// exported: on SQLite it includes the wait for the writer).
    pub(crate) async fn write_tx(&self) -> DomainResult<Box<dyn WriteTx>> {
        Ok(self
            .store
            .write()
            .instrument(crate::telemetry::begin_span())
            .await?)
    }

    /// Commits a write and wakes the dispatcher if it made work to claim
    /// (deliveries handed off to this process's dispatcher need no claim);
    /// then paces the caller if the write queued deliveries to a backed-up
    /// endpoint that keeps up (backpressure, see [`HandOff::pace`]).
    pub(crate) async fn commit(&self, tx: Box<dyn WriteTx>) -> DomainResult<()> {
        let queued = tx.queued_to();
        self.commit_unpaced(tx).await?;
        if !queued.is_empty()
            && let Some(slots) = &self.pacing
        {
            slots.pace(&queued).await;
        }
        Ok(())
    }

    /// Commits `tx` and tells whom it concerns (the dispatcher, the event
    /// streams, other nodes), without the pacing of [`Notifly::commit`]:
    /// for background writes, which no client waits for.
    pub(crate) async fn commit_unpaced(&self, tx: Box<dyn WriteTx>) -> DomainResult<()> {
        let claimable = tx.claimable_work();
        tx.commit()
            .instrument(crate::telemetry::commit_span())
            .await?;
        if claimable {
            self.wake.notify_one();
            self.announce_claimable
                .store(true, std::sync::atomic::Ordering::Release);
        }
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
        self.announce.notify_one();
        Ok(())
    }

    /// Another node committed writes: there are new events, and new work
    /// for a claim if `claimable` (deliveries that node handed off to its
    /// own dispatcher are none of ours).
    pub fn peer_committed(&self, claimable: bool) {
        if claimable {
            self.wake.notify_one();
        }
        self.commits.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Completes (one permit at a time) after this process committed writes
    /// that other nodes should hear of; the flag is set (until taken) when
    /// one of them left work for a claim.
    pub fn announce_signal(
        &self,
    ) -> (Arc<tokio::sync::Notify>, Arc<std::sync::atomic::AtomicBool>) {
        (self.announce.clone(), self.announce_claimable.clone())
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Starts a write. With an idempotency key that was seen before, returns
    /// the remembered response instead (or a 4xx if the request differs).
    pub(crate) async fn begin(
        &self,
        account: &str,
        idempotency: Option<&Idempotency>,
    ) -> DomainResult<Begun> {
        let mut tx = self.write_tx().await?;
        if let Some(idem) = idempotency
            && let Some(seen) = tx.idempotent_response(account, &idem.key).await?
        {
            if seen.request_hash != idem.request_hash {
                return Err(DomainError::Invalid(format!(
                    "Idempotency-Key `{}` was already used with a different request; use a new key for a new request",
                    ids::printable(&idem.key)
                )));
            }
            // The remembered write may still be in an uncommitted group:
            // replay it only once that group is durable.
            tx.commit().await?;
            return Ok(Begun::Replay(seen.body));
        }
        Ok(Begun::Fresh(tx))
    }

    /// Commits a write begun with [`Notifly::begin`], remembering `response`
    /// for the idempotency key in the same transaction.
    pub(crate) async fn finish<T: Serialize>(
        &self,
        mut tx: Box<dyn WriteTx>,
        account: &str,
        idempotency: Option<&Idempotency>,
        response: &T,
    ) -> DomainResult<()> {
        if let Some(idem) = idempotency {
            let body = serde_json::to_string(response).map_err(StoreError::Corrupt)?;
            let remembered = IdempotentResponse {
                request_hash: idem.request_hash.clone(),
                status: 201,
                body,
                created_at: ids::now(),
            };
            tx.insert_idempotent_response(account, &idem.key, &remembered)
                .await?;
        }
        self.commit(tx).await
    }
}

/// Decodes a replayed response.
pub(crate) fn replay<T: DeserializeOwned>(body: &str) -> DomainResult<T> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(e).into())
}

/// Maps a store error for a list read, turning an unknown cursor into a 400.
pub(crate) fn list_error(
    kind: &'static str,
    page: &Page,
) -> impl FnOnce(StoreError) -> DomainError {
    let cursor = page.cursor.clone();
    move |e| match (e, cursor) {
        (StoreError::UnknownCursor, Some(Cursor::After(id))) => DomainError::Invalid(format!(
            "starting_after: no {kind} with id `{}`",
            ids::printable(&id)
        )),
        (StoreError::UnknownCursor, Some(Cursor::Before(id))) => DomainError::Invalid(format!(
            "ending_before: no {kind} with id `{}`",
            ids::printable(&id)
        )),
        (e, _) => e.into(),
    }
}

/// Result of a store read that must find its row.
pub(crate) fn found<T>(
    row: StoreResult<Option<T>>,
    kind: &'static str,
    id: &str,
) -> DomainResult<T> {
    row?.ok_or_else(|| DomainError::not_found(kind, id))
}
