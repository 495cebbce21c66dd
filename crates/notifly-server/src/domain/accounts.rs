//! Accounts and their API keys.

use serde::Serialize;

use super::{DomainResult, validate};
use crate::ids;
use crate::store::{Account, Store};

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
    let name = validate::text("name", name, 128)?;
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

async fn insert(tx: &mut dyn crate::store::WriteTx, name: String) -> DomainResult<NewAccount> {
    let account = Account {
        id: ids::new_id(),
        name,
        created_at: ids::now(),
    };
    let api_key = ids::new_api_key();
    tx.insert_account(&account, &ids::hash_api_key(&api_key))
        .await?;
    Ok(NewAccount {
        id: account.id,
        name: account.name,
        api_key,
    })
}

/// Remembers which account an API key belongs to for a short while, so that
/// authenticating a request is usually a hash and a map look-up instead of a
/// database read. Keys are looked up by their hash; the map never holds a key.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: std::sync::RwLock<std::collections::HashMap<String, (Account, std::time::Instant)>>,
}

/// How long a known key is trusted without asking the database again (a
/// revoked key stops working within this time).
const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// Most keys remembered; past it the cache starts over.
const KEY_CACHE_MAX: usize = 10_000;

impl KeyCache {
    /// The account of `api_key`, from the cache or the store.
    pub async fn authenticate(
        &self,
        store: &dyn Store,
        api_key: &str,
    ) -> DomainResult<Option<Account>> {
        if !api_key.starts_with(ids::API_KEY_PREFIX) || api_key.len() > 128 {
            return Ok(None);
        }
        let hash = ids::hash_api_key(api_key);
        if let Ok(entries) = self.entries.read()
            && let Some((account, at)) = entries.get(&hash)
            && at.elapsed() < KEY_CACHE_TTL
        {
            return Ok(Some(account.clone()));
        }
        let mut conn = store.read().await?;
        let account = conn.account_by_key_hash(&hash).await?;
        if let (Some(account), Ok(mut entries)) = (&account, self.entries.write()) {
            if entries.len() >= KEY_CACHE_MAX {
                entries.clear();
            }
            entries.insert(hash, (account.clone(), std::time::Instant::now()));
        }
        Ok(account)
    }
}
