//! Accounts and their API keys.

use serde::Serialize;

use super::{DomainError, DomainResult, validate};
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

/// The account an API key belongs to, if any.
pub async fn authenticate(store: &dyn Store, api_key: &str) -> DomainResult<Option<Account>> {
    if !api_key.starts_with(ids::API_KEY_PREFIX) || api_key.len() > 128 {
        return Ok(None);
    }
    let mut conn = store.read().await?;
    conn.account_by_key_hash(&ids::hash_api_key(api_key))
        .await
        .map_err(DomainError::from)
}
