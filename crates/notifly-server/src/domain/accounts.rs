//! Accounts and their API keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Begun, DomainError, DomainResult, Idempotency, Notifly, replay, validate};
use crate::ids;
use crate::store::{Account, ApiKeyRecord, KeyRevocation, Store, StoreError, WriteTx};

const KIND: &str = "api key";
/// Most keys an account may hold at once.
pub const MAX_KEYS_PER_ACCOUNT: u32 = 100;
/// Characters of a key kept to tell keys apart: `nfly_sk_` and four more.
const PREFIX_LEN: usize = ids::API_KEY_PREFIX.len() + 4;
/// The name of an account's first key.
const FIRST_KEY_NAME: &str = "first key";

/// An API key as the API shows it: never the key, except once, in the
/// response that created it.
#[derive(Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    #[schema(example = "CI deploys")]
    pub name: String,
    /// The key's first characters, to tell keys apart.
    #[schema(example = "nfly_sk_28Ox")]
    pub prefix: String,
    pub created_at: i64,
    /// When the key last authenticated a request (Unix seconds, recorded at
    /// most once a minute); `null` if never.
    pub last_used_at: Option<i64>,
    /// The key itself: only in the response to `POST /v1/api-keys`. It is
    /// not stored, so it cannot be shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl From<ApiKeyRecord> for ApiKey {
    fn from(r: ApiKeyRecord) -> Self {
        ApiKey {
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            key: None,
        }
    }
}

/// Body of `POST /v1/api-keys`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// What the key is for.
    #[schema(schema_with = validate::schema::name)]
    pub name: String,
}

/// A new key's record (for `account`) and the key.
fn new_key(account: &str, name: String, now: i64) -> (ApiKeyRecord, String) {
    let key = ids::new_api_key();
    let record = ApiKeyRecord {
        id: ids::new_id(),
        account_id: account.to_owned(),
        name,
        prefix: key[..PREFIX_LEN].to_owned(),
        created_at: now,
        last_used_at: None,
    };
    (record, key)
}

impl Notifly {
    /// Creates an API key; the response carries the key, once.
    pub async fn create_api_key(
        &self,
        account: &str,
        input: CreateApiKey,
        idempotency: Option<&Idempotency>,
    ) -> DomainResult<ApiKey> {
        let name = validate::NAME.check("name", &input.name)?;
        let mut tx = match self.begin(account, idempotency).await? {
            Begun::Replay(body) => return replay(&body),
            Begun::Fresh(tx) => tx,
        };
        let (record, key) = new_key(account, name, ids::now());
        let hash = ids::hash_api_key(&key);
        tx.insert_api_key(&record, &hash, MAX_KEYS_PER_ACCOUNT)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => DomainError::Conflict(format!(
                    "an account holds at most {MAX_KEYS_PER_ACCOUNT} API keys; revoke one first"
                )),
                e => e.into(),
            })?;
        let mut shown = ApiKey::from(record);
        // The remembered response omits the key, which is stored nowhere: a
        // replay answers without it.
        self.finish(tx, account, idempotency, &shown).await?;
        shown.key = Some(key);
        Ok(shown)
    }

    /// An account's API keys, oldest first.
    pub async fn api_keys(&self, account: &str) -> DomainResult<Vec<ApiKey>> {
        let mut conn = self.store.read().await?;
        Ok(conn
            .api_keys(account)
            .await?
            .into_iter()
            .map(ApiKey::from)
            .collect())
    }

    /// Revokes an API key: every node refuses it within a second (see
    /// [`KEY_CACHE_TTL`]) and the dashboard sessions opened with it end.
    /// The account's last key cannot be revoked.
    pub async fn revoke_api_key(&self, account: &str, id: &str) -> DomainResult<ApiKey> {
        let mut tx = self.write_tx().await?;
        let found = tx.api_keys(account).await?.into_iter().find(|k| k.id == id);
        match tx.revoke_api_key(account, id).await? {
            KeyRevocation::NotFound => Err(DomainError::not_found(KIND, id)),
            KeyRevocation::Last => Err(DomainError::Conflict(format!(
                "API key `{id}` is the account's last key; create another one before revoking it"
            ))),
            KeyRevocation::Revoked => {
                tx.commit().await?;
                found
                    .map(ApiKey::from)
                    .ok_or_else(|| DomainError::not_found(KIND, id))
            }
        }
    }
}

/// A freshly created account with its first API key, shown once.
#[derive(Clone, Serialize)]
pub struct NewAccount {
    pub id: String,
    pub name: String,
    pub api_key: String,
}

impl std::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccount")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// Creates an account and its first API key. Only the key's hash is stored.
pub async fn create(store: &dyn Store, name: &str) -> DomainResult<NewAccount> {
    let name = validate::NAME.check("name", name)?;
    let mut tx = store.write().await?;
    let account = insert(tx.as_mut(), name).await?;
    tx.commit().await?;
    Ok(account)
}

/// On an empty database, creates a first account named `default`; otherwise
/// does nothing. The check and the insert share one transaction.
pub async fn bootstrap(store: &dyn Store) -> DomainResult<Option<NewAccount>> {
    let mut tx = store.write().await?;
    if tx.account_count().await? > 0 {
        return Ok(None);
    }
    let account = insert(tx.as_mut(), "default".into()).await?;
    tx.commit().await?;
    Ok(Some(account))
}

async fn insert(tx: &mut dyn WriteTx, name: String) -> DomainResult<NewAccount> {
    let account = Account {
        id: ids::new_id(),
        name,
        created_at: ids::now(),
    };
    let (key, api_key) = new_key(&account.id, FIRST_KEY_NAME.to_owned(), account.created_at);
    tx.insert_account(&account, &key, &ids::hash_api_key(&api_key))
        .await?;
    Ok(NewAccount {
        id: account.id,
        name: account.name,
        api_key,
    })
}

/// Who an API key authenticates: the account, and which of its keys.
#[derive(Debug, Clone)]
pub struct KeyOwner {
    pub account: Account,
    pub key_id: String,
}

/// Remembers which account an API key belongs to for a moment, so that
/// authenticating a burst of requests is a hash and a map look-up instead of
/// a database read each. Keys are looked up by their hash; the map never
/// holds a key.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: std::sync::RwLock<std::collections::HashMap<String, (KeyOwner, Instant)>>,
    /// Keys whose use is being recorded, so a burst records it once.
    touching: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// How long a known key is trusted without asking the database again: a
/// revoked key stops working on every node within this time.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most keys remembered; past it the cache starts over.
const KEY_CACHE_MAX: usize = 10_000;
/// How stale a key's `last_used_at` may get before a use records it.
const TOUCH_AFTER_SECS: i64 = 60;

impl KeyCache {
    /// Who `api_key` authenticates, from the cache or the store. A read
    /// from the store also records the key's use, when the last one
    /// recorded is over a minute old (in the background: the request does
    /// not wait for that write).
    pub async fn authenticate(
        &self,
        store: &Arc<dyn Store>,
        api_key: &str,
    ) -> DomainResult<Option<KeyOwner>> {
        if !api_key.starts_with(ids::API_KEY_PREFIX) || api_key.len() > 128 {
            return Ok(None);
        }
        let hash = ids::hash_api_key(api_key);
        if let Ok(entries) = self.entries.read()
            && let Some((owner, at)) = entries.get(&hash)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(Some(owner.clone()));
        }
        let mut conn = store.read().await?;
        let found = conn.api_key_by_hash(&hash).await?;
        drop(conn);
        let Some((account, key)) = found else {
            if let Ok(mut entries) = self.entries.write() {
                entries.remove(&hash);
            }
            return Ok(None);
        };
        let now = ids::now();
        let stale = key.last_used_at.is_none_or(|t| now - t >= TOUCH_AFTER_SECS);
        let first = stale
            && self
                .touching
                .lock()
                .is_ok_and(|mut touching| touching.insert(key.id.clone()));
        if first {
            let store = store.clone();
            let id = key.id.clone();
            let touching = self.touching.clone();
            tokio::spawn(async move {
                let touched = async {
                    let mut tx = store.write().await?;
                    tx.touch_api_key(&id, now).await?;
                    tx.commit().await
                };
                if let Err(e) = touched.await {
                    tracing::debug!(error = %e, "could not record an API key's use");
                }
                if let Ok(mut touching) = touching.lock() {
                    touching.remove(&id);
                }
            });
        }
        let owner = KeyOwner {
            account,
            key_id: key.id,
        };
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= KEY_CACHE_MAX {
                entries.clear();
            }
            entries.insert(hash, (owner.clone(), Instant::now()));
        }
        Ok(Some(owner))
    }
}
