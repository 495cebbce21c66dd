//! Accounts, their API keys and dashboard sessions.

use async_trait::async_trait;

use super::*;

/// Reads of accounts, API keys and dashboard sessions.
#[async_trait]
pub trait AccountReads: Send {
    /// The key with this hash and its account.
    async fn api_key_by_hash(
        &mut self,
        key_hash: &str,
    ) -> StoreResult<Option<(Account, ApiKeyRecord)>>;
    /// An account's keys, oldest first.
    async fn api_keys(&mut self, account: &str) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn account_count(&mut self) -> StoreResult<i64>;
    /// The dashboard session whose token hashes to `token_hash`, with its
    /// account's name, unless it has expired at `now` (Unix seconds). Looked
    /// up by the hash alone, like an API key: the account is not known yet.
    async fn dashboard_session(
        &mut self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<DashboardSession>>;
}

/// Writes of accounts, API keys and dashboard sessions.
#[async_trait]
pub trait AccountWrites: Send {
    /// A new account with its first key.
    async fn insert_account(
        &mut self,
        account: &Account,
        key: &ApiKeyRecord,
        key_hash: &str,
    ) -> StoreResult<()>;
    /// A new key of `account` (the record's); `Conflict` if the account
    /// already has `max` keys. Serialized with the account's other key
    /// changes.
    async fn insert_api_key(
        &mut self,
        key: &ApiKeyRecord,
        key_hash: &str,
        max: u32,
    ) -> StoreResult<()>;
    /// Revokes a key of `account`, and ends the dashboard sessions opened
    /// with it, unless it is the account's last key. Serialized with the
    /// account's other key changes, so two revocations cannot remove the
    /// last two keys.
    async fn revoke_api_key(&mut self, account: &str, id: &str) -> StoreResult<KeyRevocation>;
    /// Records that a key was used at `now`.
    async fn touch_api_key(&mut self, id: &str, now: i64) -> StoreResult<()>;

    /// Starts a dashboard session of `account` (`session.account_name` is
    /// not stored).
    async fn insert_dashboard_session(
        &mut self,
        account: &str,
        session: &DashboardSession,
    ) -> StoreResult<()>;
    /// Ends the account's least recently used sessions beyond the `keep`
    /// most recently used. Returns how many it ended.
    async fn trim_dashboard_sessions(&mut self, account: &str, keep: u32) -> StoreResult<u64>;
    /// Records that a session was used at `last_seen_at`, and when it now expires.
    async fn touch_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
        last_seen_at: i64,
        expires_at: i64,
    ) -> StoreResult<()>;
    /// Leaves a message for the session's next page, replacing any other.
    async fn set_dashboard_session_flash(
        &mut self,
        account: &str,
        token_hash: &str,
        flash: &SessionFlash,
    ) -> StoreResult<()>;
    /// Removes the session's message and returns it, if it had one. Of two
    /// takes of one message, only the first gets it.
    async fn take_dashboard_session_flash(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<Option<SessionFlash>>;
    /// Ends a session (nothing happens if there is none).
    async fn delete_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<()>;
}
