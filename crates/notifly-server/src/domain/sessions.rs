//! Dashboard login sessions, kept in the database: any node serves any
//! session, and sessions survive restarts.
//!
//! A session is started by logging in. The browser gets a random token; the
//! store keeps only its SHA-256 (a leaked table does not yield usable
//! cookies), the session's CSRF token, and a one-shot message. A session
//! ends [`IDLE`] after it was last used, [`LIFETIME`] after login, or when it
//! is ended (logout); `expires_at` holds the earlier of the first two, so a
//! read is one indexed comparison and retention deletes by it.
//!
//! Page views are reads: `last_seen_at` is written only when it is more than
//! [`TOUCH_AFTER`] old (so the idle timeout counts from at most that long
//! before the last use: a session may end up to a minute early, never late),
//! and the message is cleared only when there is one. Each account keeps at
//! most [`MAX_PER_ACCOUNT`] sessions; a login beyond it ends the least
//! recently used ones, so the table is bounded by the accounts (which only an
//! operator creates) even between retention rounds.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{DomainResult, Notifly};
use crate::ids;
use crate::store::DashboardSession;

pub use crate::store::SessionFlash;

/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(8 * 60 * 60);
/// A session ends this long after login, used or not.
pub const LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How stale `last_seen_at` may get before a page view writes it.
pub const TOUCH_AFTER: Duration = Duration::from_secs(60);
/// Most sessions one account keeps; a login past it ends the least recently
/// used.
pub const MAX_PER_ACCOUNT: u32 = 1_000;

/// A live session, as a request sees it.
#[derive(Clone)]
pub struct Session {
    /// Names the session in later calls (the token itself is never kept).
    pub token_hash: String,
    pub account_id: String,
    pub account_name: String,
    /// The API key the session was opened with, if known.
    pub key_id: Option<String>,
    /// The token every form of the session must carry.
    pub csrf: String,
    /// The message left for this page view, now taken: shown once.
    pub flash: Option<SessionFlash>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

/// A new random token: 32 bytes, URL-safe base64 (cookie-safe too).
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How a session token is stored and looked up: hex SHA-256.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn secs(d: Duration) -> i64 {
    d.as_secs() as i64
}

/// When a session created at `created_at` and last used at `last_seen_at` ends.
fn expiry(created_at: i64, last_seen_at: i64) -> i64 {
    (created_at + secs(LIFETIME)).min(last_seen_at + secs(IDLE))
}

impl Notifly {
    /// Starts a dashboard session for an account (whose API key was just
    /// checked); returns the token for the cookie. It is not stored.
    /// `key_id` names the key it was opened with: revoking it ends the session.
    pub async fn start_session(&self, account_id: &str, key_id: &str) -> DomainResult<String> {
        let token = random_token();
        let now = ids::now();
        let session = DashboardSession {
            token_hash: token_hash(&token),
            account_id: account_id.to_owned(),
            account_name: String::new(),
            csrf: random_token(),
            created_at: now,
            last_seen_at: now,
            expires_at: expiry(now, now),
            key_id: Some(key_id.to_owned()),
            flash_kind: None,
            flash_message: None,
        };
        let mut tx = self.write_tx().await?;
        // Room for the new one under the cap: the rest are the most recently used.
        tx.trim_dashboard_sessions(account_id, MAX_PER_ACCOUNT - 1)
            .await?;
        tx.insert_dashboard_session(account_id, &session).await?;
        // Sessions concern no other node and no delivery: a plain commit.
        tx.commit().await?;
        Ok(token)
    }

    /// The live session of a cookie token, if any. Takes its message, and
    /// records the use when the last one recorded is over a minute old; a
    /// page view otherwise writes nothing.
    pub async fn session(&self, token: &str) -> DomainResult<Option<Session>> {
        let hash = token_hash(token);
        let now = ids::now();
        let found = {
            let mut conn = self.store.read().await?;
            conn.dashboard_session(&hash, now).await?
        };
        let Some(s) = found else {
            return Ok(None);
        };
        let stale = now - s.last_seen_at >= secs(TOUCH_AFTER);
        let has_flash = s.flash_kind.is_some();
        let mut flash = None;
        if stale || has_flash {
            let mut tx = self.write_tx().await?;
            if stale {
                tx.touch_dashboard_session(&s.account_id, &hash, now, expiry(s.created_at, now))
                    .await?;
            }
            if has_flash {
                // Another request of the session may have taken it meanwhile.
                flash = tx
                    .take_dashboard_session_flash(&s.account_id, &hash)
                    .await?;
            }
            tx.commit().await?;
        }
        Ok(Some(Session {
            token_hash: hash,
            account_id: s.account_id,
            account_name: s.account_name,
            csrf: s.csrf,
            key_id: s.key_id,
            flash,
        }))
    }

    /// Whether a cookie token names a live session, without using it.
    pub async fn session_is_live(&self, token: &str) -> DomainResult<bool> {
        let mut conn = self.store.read().await?;
        Ok(conn
            .dashboard_session(&token_hash(token), ids::now())
            .await?
            .is_some())
    }

    /// Leaves a message for the session's next page view.
    pub async fn set_session_flash(
        &self,
        account_id: &str,
        token_hash: &str,
        flash: &SessionFlash,
    ) -> DomainResult<()> {
        let mut tx = self.write_tx().await?;
        tx.set_dashboard_session_flash(account_id, token_hash, flash)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a session, on every node.
    pub async fn end_session(&self, account_id: &str, token_hash: &str) -> DomainResult<()> {
        let mut tx = self.write_tx().await?;
        tx.delete_dashboard_session(account_id, token_hash).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_idle_or_at_its_lifetime_whichever_is_first() {
        let t = 1_000_000;
        assert_eq!(expiry(t, t), t + secs(IDLE));
        assert_eq!(expiry(t, t + 3600), t + 3600 + secs(IDLE));
        let late = t + secs(LIFETIME) - 60;
        assert_eq!(expiry(t, late), t + secs(LIFETIME));
    }

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }
}
