//! Accounts, their API keys and dashboard sessions.

use super::*;

/// The columns of an API key row, as `ApiKeyRecord` reads them.
const API_KEY_COLUMNS: &str = "id, account_id, name, prefix, created_at, last_used_at";

async fn insert_key(tx: &mut PgTx, key: &ApiKeyRecord, key_hash: &str) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (key_hash, id, account_id, name, prefix, created_at, last_used_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(key_hash)
    .bind(&key.id)
    .bind(&key.account_id)
    .bind(&key.name)
    .bind(&key.prefix)
    .bind(key.created_at)
    .bind(key.last_used_at)
    .execute(&mut *tx.tx)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Locks the account's row, which orders its key changes (two revocations
/// of its last two keys: the second sees one left), and counts its keys.
async fn lock_account_keys(tx: &mut PgTx, account: &str) -> StoreResult<i64> {
    // NO KEY: concurrent inserts that refer to the account (its sessions,
    // its resources) need not wait.
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE")
        .bind(account)
        .execute(&mut *tx.tx)
        .await
        .map_err(backend)?;
    sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE account_id = $1")
        .bind(account)
        .fetch_one(&mut *tx.tx)
        .await
        .map_err(backend)
}

#[async_trait]
impl<C> AccountReads for Handle<C>
where
    C: Scope,
{
    async fn api_key_by_hash(
        &mut self,
        key_hash: &str,
    ) -> StoreResult<Option<(Account, ApiKeyRecord)>> {
        let found: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT a.id, a.name, a.created_at FROM api_keys k JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = $1",
        )
        .bind(key_hash)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)?;
        let Some((id, name, created_at)) = found else {
            return Ok(None);
        };
        let key: Option<ApiKeyRecord> = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"
        ))
        .bind(key_hash)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)?;
        Ok(key.map(|key| {
            (
                Account {
                    id,
                    name,
                    created_at,
                },
                key,
            )
        }))
    }

    async fn api_keys(&mut self, account: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE account_id = $1 ORDER BY created_at, id"
        ))
        .bind(account)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn account_count(&mut self) -> StoreResult<i64> {
        self.0.scope_accounts().await?;
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
             WHERE s.token_hash = $1 AND s.expires_at > $2
               AND (s.key_id IS NULL OR EXISTS (SELECT 1 FROM api_keys k WHERE k.id = s.key_id))"
        ))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }
}

#[async_trait]
impl AccountWrites for Handle<PgTx> {
    async fn insert_account(
        &mut self,
        account: &Account,
        key: &ApiKeyRecord,
        key_hash: &str,
    ) -> StoreResult<()> {
        self.0.scope_accounts().await?;
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&account.id)
            .bind(&account.name)
            .bind(account.created_at)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        insert_key(&mut self.0, key, key_hash).await
    }

    async fn insert_api_key(
        &mut self,
        key: &ApiKeyRecord,
        key_hash: &str,
        max: u32,
    ) -> StoreResult<()> {
        let count = lock_account_keys(&mut self.0, &key.account_id).await?;
        if count >= i64::from(max) {
            return Err(StoreError::Conflict("api key limit"));
        }
        insert_key(&mut self.0, key, key_hash).await
    }

    async fn revoke_api_key(&mut self, account: &str, id: &str) -> StoreResult<KeyRevocation> {
        let keys = lock_account_keys(&mut self.0, account).await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM api_keys WHERE account_id = $1 AND id = $2)",
        )
        .bind(account)
        .bind(id)
        .fetch_one(&mut *self.0)
        .await
        .map_err(backend)?;
        if !exists {
            return Ok(KeyRevocation::NotFound);
        }
        if keys <= 1 {
            return Ok(KeyRevocation::Last);
        }
        sqlx::query("DELETE FROM api_keys WHERE account_id = $1 AND id = $2")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        sqlx::query("DELETE FROM dashboard_sessions WHERE account_id = $1 AND key_id = $2")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(KeyRevocation::Revoked)
    }

    async fn touch_api_key(&mut self, id: &str, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
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
            "INSERT INTO dashboard_sessions (token_hash, account_id, csrf, created_at, last_seen_at, expires_at, flash_kind, flash_message, key_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&session.token_hash)
        .bind(account)
        .bind(&session.csrf)
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .bind(session.expires_at)
        .bind(&session.flash_kind)
        .bind(&session.flash_message)
        .bind(&session.key_id)
        .execute(&mut *self.0)
        .await
        .map_err(unique("dashboard session"))?;
        Ok(())
    }

    async fn trim_dashboard_sessions(&mut self, account: &str, keep: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM dashboard_sessions WHERE account_id = $1 AND token_hash IN (
                SELECT token_hash FROM dashboard_sessions WHERE account_id = $1
                ORDER BY last_seen_at DESC, created_at DESC, token_hash OFFSET $2)",
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
            "UPDATE dashboard_sessions SET last_seen_at = $1, expires_at = $2 WHERE account_id = $3 AND token_hash = $4",
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
            "UPDATE dashboard_sessions SET flash_kind = $1, flash_message = $2 WHERE account_id = $3 AND token_hash = $4",
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
        // Read and cleared in one statement: the row is locked, so of two
        // takes (on any nodes) the second sees it cleared.
        sqlx::query_as(
            "UPDATE dashboard_sessions s SET flash_kind = NULL, flash_message = NULL
             FROM (SELECT token_hash, flash_kind, flash_message FROM dashboard_sessions
                   WHERE account_id = $1 AND token_hash = $2 FOR UPDATE) old
             WHERE s.token_hash = old.token_hash
               AND old.flash_kind IS NOT NULL AND old.flash_message IS NOT NULL
             RETURNING old.flash_kind AS kind, old.flash_message AS message",
        )
        .bind(account)
        .bind(token_hash)
        .fetch_optional(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn delete_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE account_id = $1 AND token_hash = $2")
            .bind(account)
            .bind(token_hash)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
