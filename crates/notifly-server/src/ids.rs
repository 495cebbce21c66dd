//! Identifiers, API keys and the clock.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// Length of every public id.
pub const ID_LEN: usize = 16;

/// The base62 digits in ASCII order, so that fixed-width base62 numbers sort
/// as strings in the order of their values.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Characters of an id that encode its creation time (microseconds since the
/// Unix epoch: 62^9 µs is about 428 years).
const TIME_LEN: usize = 9;

/// A new 16-character base62 id: 9 characters of the current time in
/// microseconds, then 7 random ones (about 41 bits, per microsecond).
///
/// Ids made close in time sort close together, so the database's indexes on
/// ids take new rows at one end, as with an auto-increment key, instead of
/// on a random page of every index: each commit then writes a few pages, not
/// one per row and index (a profile of SQLite's write-ahead log showed about
/// 29 page writes per event with random ids). An id therefore tells when its
/// object was made, which `created_at` says anyway. Ids are names, not
/// secrets: every look-up is scoped to its account.
pub fn new_id() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    let mut id = String::with_capacity(ID_LEN);
    let mut time = [b'0'; TIME_LEN];
    let mut rest = micros;
    for digit in time.iter_mut().rev() {
        *digit = BASE62[(rest % 62) as usize];
        rest /= 62;
    }
    id.extend(time.iter().map(|&b| char::from(b)));
    id.push_str(&random_base62(ID_LEN - TIME_LEN));
    id
}

/// Whether `s` has the shape of an id. Anything else cannot name a row.
pub fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn random_base62(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Current time in Unix seconds.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Prefix of every API key, so that leaked keys are recognisable by scanners.
pub const API_KEY_PREFIX: &str = "nfly_sk_";

/// A new API key: the prefix and 40 base62 characters (about 238 bits).
pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", random_base62(40))
}

/// How an API key is stored: hex SHA-256. Keys are long random tokens, so a
/// fast hash is enough (no password stretching needed), and looking a key up
/// by its hash means the key itself is never compared byte by byte.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A user-supplied string made safe to echo back in an error message: at most
/// 64 characters, with control characters replaced.
pub fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape() {
        for _ in 0..100 {
            let id = new_id();
            assert!(is_id(&id), "{id}");
        }
        assert!(!is_id("short"));
        assert!(!is_id("a056V7R7NmNRjl7-"));
        assert!(is_id("a056V7R7NmNRjl70"));
    }

    #[test]
    fn ids_made_later_sort_later() {
        let first = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = new_id();
        assert!(first < second, "{first} then {second}");
        assert_ne!(first[TIME_LEN..], second[TIME_LEN..]);
    }

    #[test]
    fn api_keys_hash_stably() {
        let key = new_api_key();
        assert!(key.starts_with(API_KEY_PREFIX));
        assert_eq!(hash_api_key(&key), hash_api_key(&key));
        assert_ne!(hash_api_key(&key), hash_api_key(&new_api_key()));
    }
}
