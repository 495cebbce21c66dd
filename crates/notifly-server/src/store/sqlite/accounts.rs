//! Accounts, their API keys and dashboard sessions.

use super::*;

/// The columns of an API key row (`k`), in [`api_key_at`]'s order.
const API_KEY_COLUMNS: &str = "k.id, k.account_id, k.name, k.prefix, k.created_at, k.last_used_at";

/// An API key from `API_KEY_COLUMNS`, starting at column `at`.
fn api_key_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.get(at)?,
        account_id: row.get(at + 1)?,
        name: row.get(at + 2)?,
        prefix: row.get(at + 3)?,
        created_at: row.get(at + 4)?,
        last_used_at: row.get(at + 5)?,
    })
}

fn insert_key(c: &Connection, key: &ApiKeyRecord, key_hash: &str) -> StoreResult<()> {
    exec(
        c,
        "INSERT INTO api_keys (key_hash, id, account_id, name, prefix, created_at, last_used_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        params![
            key_hash,
            key.id,
            key.account_id,
            key.name,
            key.prefix,
            key.created_at,
            key.last_used_at
        ],
    )
    .map_err(sqlite)?;
    Ok(())
}
#[async_trait]
impl<C> AccountReads for Handle<C>
where
    C: DerefMut<Target = Connection> + Send,
{
    async fn api_key_by_hash(
        &mut self,
        key_hash: &str,
    ) -> StoreResult<Option<(Account, ApiKeyRecord)>> {
        one(
            &self.0,
            &format!(
                "SELECT a.id, a.name, a.created_at, {API_KEY_COLUMNS} FROM api_keys k JOIN accounts a ON a.id = k.account_id
                 WHERE k.key_hash = ?"
            ),
            [key_hash],
            |row| {
                Ok((
                    Account {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        created_at: row.get(2)?,
                    },
                    api_key_at(row, 3)?,
                ))
            },
        )
    }

    async fn api_keys(&mut self, account: &str) -> StoreResult<Vec<ApiKeyRecord>> {
        all(
            &self.0,
            &format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys k WHERE k.account_id = ? ORDER BY k.created_at, k.id"
            ),
            [account],
            |row| api_key_at(row, 0),
        )
    }

    async fn account_count(&mut self) -> StoreResult<i64> {
        scalar(&self.0, "SELECT COUNT(*) FROM accounts", [])
    }

    async fn dashboard_session(
        &mut self,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<Option<DashboardSession>> {
        one(
            &self.0,
            &format!(
                "SELECT {DASHBOARD_SESSION_COLUMNS} FROM dashboard_sessions s JOIN accounts a ON a.id = s.account_id
                 WHERE s.token_hash = ?1 AND s.expires_at > ?2
                   AND (s.key_id IS NULL OR EXISTS (SELECT 1 FROM api_keys k WHERE k.id = s.key_id))"
            ),
            params![token_hash, now],
            DashboardSession::decode,
        )
    }
}

#[async_trait]
impl AccountWrites for Handle<WriterGuard> {
    async fn insert_account(
        &mut self,
        account: &Account,
        key: &ApiKeyRecord,
        key_hash: &str,
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "INSERT INTO accounts (id, name, created_at) VALUES (?, ?, ?)",
            params![account.id, account.name, account.created_at],
        )
        .map_err(sqlite)?;
        insert_key(&self.0, key, key_hash)
    }

    async fn insert_api_key(
        &mut self,
        key: &ApiKeyRecord,
        key_hash: &str,
        max: u32,
    ) -> StoreResult<()> {
        // The writer is one connection: nothing runs between the count and
        // the insert.
        let count: i64 = scalar(
            &self.0,
            "SELECT COUNT(*) FROM api_keys WHERE account_id = ?",
            [&key.account_id],
        )?;
        if count >= i64::from(max) {
            return Err(StoreError::Conflict("api key limit"));
        }
        insert_key(&self.0, key, key_hash)
    }

    async fn revoke_api_key(&mut self, account: &str, id: &str) -> StoreResult<KeyRevocation> {
        let keys: i64 = scalar(
            &self.0,
            "SELECT COUNT(*) FROM api_keys WHERE account_id = ?",
            [account],
        )?;
        let exists: i64 = scalar(
            &self.0,
            "SELECT COUNT(*) FROM api_keys WHERE account_id = ? AND id = ?",
            [account, id],
        )?;
        if exists == 0 {
            return Ok(KeyRevocation::NotFound);
        }
        if keys <= 1 {
            return Ok(KeyRevocation::Last);
        }
        exec(
            &self.0,
            "DELETE FROM api_keys WHERE account_id = ? AND id = ?",
            [account, id],
        )
        .map_err(sqlite)?;
        exec(
            &self.0,
            "DELETE FROM dashboard_sessions WHERE account_id = ? AND key_id = ?",
            [account, id],
        )
        .map_err(sqlite)?;
        Ok(KeyRevocation::Revoked)
    }

    async fn touch_api_key(&mut self, id: &str, now: i64) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE api_keys SET last_used_at = ? WHERE id = ?",
            params![now, id],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn insert_dashboard_session(
        &mut self,
        account: &str,
        session: &DashboardSession,
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "INSERT INTO dashboard_sessions (token_hash, account_id, csrf, created_at, last_seen_at, expires_at, flash_kind, flash_message, key_id)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                session.token_hash,
                account,
                session.csrf,
                session.created_at,
                session.last_seen_at,
                session.expires_at,
                session.flash_kind,
                session.flash_message,
                session.key_id,
            ],
        )
        .map_err(unique_sqlite("dashboard session"))?;
        Ok(())
    }

    async fn trim_dashboard_sessions(&mut self, account: &str, keep: u32) -> StoreResult<u64> {
        let done = exec(
            &self.0,
            "DELETE FROM dashboard_sessions WHERE account_id = ?1 AND token_hash IN (
                SELECT token_hash FROM dashboard_sessions WHERE account_id = ?1
                ORDER BY last_seen_at DESC, created_at DESC, token_hash LIMIT -1 OFFSET ?2)",
            params![account, i64::from(keep)],
        )
        .map_err(sqlite)?;
        Ok(done as u64)
    }

    async fn touch_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
        last_seen_at: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE dashboard_sessions SET last_seen_at = ?, expires_at = ? WHERE account_id = ? AND token_hash = ?",
            params![last_seen_at, expires_at, account, token_hash],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn set_dashboard_session_flash(
        &mut self,
        account: &str,
        token_hash: &str,
        flash: &SessionFlash,
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "UPDATE dashboard_sessions SET flash_kind = ?, flash_message = ? WHERE account_id = ? AND token_hash = ?",
            params![flash.kind, flash.message, account, token_hash],
        )
        .map_err(sqlite)?;
        Ok(())
    }

    async fn take_dashboard_session_flash(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<Option<SessionFlash>> {
        // The single writer makes the read and the clear one step.
        let flash = one(
            &self.0,
            "SELECT flash_kind, flash_message FROM dashboard_sessions
             WHERE account_id = ? AND token_hash = ? AND flash_kind IS NOT NULL AND flash_message IS NOT NULL",
            [account, token_hash],
            SessionFlash::decode,
        )?;
        if flash.is_some() {
            exec(
                &self.0,
                "UPDATE dashboard_sessions SET flash_kind = NULL, flash_message = NULL WHERE account_id = ? AND token_hash = ?",
                [account, token_hash],
            )
            .map_err(sqlite)?;
        }
        Ok(flash)
    }

    async fn delete_dashboard_session(
        &mut self,
        account: &str,
        token_hash: &str,
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "DELETE FROM dashboard_sessions WHERE account_id = ? AND token_hash = ?",
            [account, token_hash],
        )
        .map_err(sqlite)?;
        Ok(())
    }
}
