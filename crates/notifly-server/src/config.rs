//! Configuration: built-in defaults, then `notifly.toml`, then `NOTIFLY_*`
//! environment variables and flags (applied by the binary). Validated once, at
//! start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::dispatch::{DispatchConfig, RetrySchedule, parse_duration};
use crate::secrets::Keyring;

/// Everything `notifly serve` can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on. Env `NOTIFLY_LISTEN`.
    pub listen: SocketAddr,
    /// `sqlite://path` (or a plain path) for the embedded store, or
    /// `postgres://…` for PostgreSQL. Env `NOTIFLY_DATABASE_URL`.
    pub database_url: String,
    /// Most connections to PostgreSQL per process (SQLite ignores it).
    pub database_pool_size: u32,
    /// Directory for attachment bytes. Env `NOTIFLY_DATA_DIR`.
    pub data_dir: PathBuf,
    /// The URL clients reach this server at, used to build `file_url`s.
    /// Defaults to `http://<listen>`. Env `NOTIFLY_PUBLIC_URL`.
    pub public_url: Option<String>,
    /// Largest JSON request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest attachment, in bytes.
    pub max_attachment_bytes: usize,
    /// Delays between delivery attempts, e.g. `0s,5s,5m,30m,2h,5h,10h,10h`
    /// (the default). Env `NOTIFLY_RETRY_SCHEDULE`.
    pub retry_schedule: String,
    /// Allow webhook URLs on loopback and private networks (development and
    /// tests). Env `NOTIFLY_ALLOW_PRIVATE_URLS`.
    pub allow_private_urls: bool,
    /// Per-attempt timeout, e.g. `15s`. Env `NOTIFLY_DELIVERY_TIMEOUT`.
    pub delivery_timeout: String,
    /// Most delivery attempts in flight in this process. Env `NOTIFLY_DELIVERY_CONCURRENCY`.
    pub delivery_concurrency: u32,
    /// Most attempts in flight to one endpoint, across all nodes.
    pub endpoint_concurrency: u32,
    /// Disable an endpoint that has failed continuously this long, e.g. `5d`.
    pub disable_after: String,
    /// Failed attempts in a row that open an endpoint's circuit (default 5).
    pub circuit_failures: u32,
    /// Longest pause between looks for due retries, e.g. `1s`.
    pub poll_interval: String,
    /// How long events, finished deliveries and their attempts are kept,
    /// e.g. `30d`. Pending deliveries and their events are kept until done.
    pub retention: String,
    /// How often old data is purged, e.g. `10m`.
    pub purge_interval: String,
    /// The keys webhook signing secrets are sealed under at rest: base64 of
    /// 32 random bytes each, comma-separated; the first seals, all open.
    /// Unset with SQLite: a key file in `data_dir` (made on first start).
    /// Required with PostgreSQL, the same on every node. Env
    /// `NOTIFLY_ENCRYPTION_KEY`.
    pub encryption_key: Option<EncryptionKeys>,
}

/// The text of `encryption_key`; its `Debug` output hides it.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct EncryptionKeys(pub String);

impl std::fmt::Debug for EncryptionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKeys(<redacted>)")
    }
}

/// The name of the key file in `data_dir`.
pub const KEY_FILE: &str = "encryption.key";

/// Writes a new key file, readable by its owner alone, failing if one exists.
fn write_key_file(path: &Path, key: &str) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(format!("{key}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://notifly.db";

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            database_pool_size: 10,
            data_dir: PathBuf::from("notifly-data"),
            public_url: None,
            max_body_bytes: 1024 * 1024,
            max_attachment_bytes: 25 * 1024 * 1024,
            retry_schedule: "0s,5s,5m,30m,2h,5h,10h,10h".to_owned(),
            allow_private_urls: false,
            delivery_timeout: "15s".to_owned(),
            delivery_concurrency: 256,
            endpoint_concurrency: 16,
            disable_after: "5d".to_owned(),
            circuit_failures: 5,
            poll_interval: "1s".to_owned(),
            retention: "30d".to_owned(),
            purge_interval: "10m".to_owned(),
            encryption_key: None,
        }
    }
}

impl Config {
    /// Reads `path` if given (it must exist), else `notifly.toml` in the
    /// working directory if present, else the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from("notifly.toml"), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
            }
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Config::default())
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The dispatcher's settings, parsed.
    pub fn dispatch(&self) -> anyhow::Result<DispatchConfig> {
        let duration =
            |name: &str, v: &str| parse_duration(v).map_err(|e| anyhow::anyhow!("{name}: {e}"));
        let timeout = duration("delivery_timeout", &self.delivery_timeout)?;
        if timeout.is_zero() {
            bail!("delivery_timeout must be positive");
        }
        if self.delivery_concurrency == 0 || self.endpoint_concurrency == 0 {
            bail!("delivery_concurrency and endpoint_concurrency must be positive");
        }
        let disable_after = duration("disable_after", &self.disable_after)?;
        if disable_after < std::time::Duration::from_secs(1) {
            bail!("disable_after must be at least 1s");
        }
        if self.circuit_failures == 0 {
            bail!("circuit_failures must be at least 1");
        }
        Ok(DispatchConfig {
            schedule: self
                .retry_schedule
                .parse::<RetrySchedule>()
                .map_err(|e| anyhow::anyhow!("retry_schedule: {e}"))?,
            timeout,
            max_in_flight: self.delivery_concurrency,
            per_endpoint_in_flight: self.endpoint_concurrency,
            disable_after,
            circuit_failures: self.circuit_failures,
            poll_interval: duration("poll_interval", &self.poll_interval)?
                .max(std::time::Duration::from_millis(10)),
            allow_private_urls: self.allow_private_urls,
        })
    }

    /// How long data is kept, and how often old data is purged.
    pub fn retention(&self) -> anyhow::Result<(std::time::Duration, std::time::Duration)> {
        let keep =
            parse_duration(&self.retention).map_err(|e| anyhow::anyhow!("retention: {e}"))?;
        let every = parse_duration(&self.purge_interval)
            .map_err(|e| anyhow::anyhow!("purge_interval: {e}"))?;
        if keep < std::time::Duration::from_secs(1) || every < std::time::Duration::from_millis(100)
        {
            bail!("retention must be at least 1s and purge_interval at least 100ms");
        }
        Ok((keep, every))
    }

    /// Checks the values that serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.dispatch()?;
        self.retention()?;
        if self.max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024");
        }
        if self.max_attachment_bytes == 0 {
            bail!("max_attachment_bytes must be positive");
        }
        if self.database_pool_size < 2 {
            // A claim or write-back holds one connection while the API needs others.
            bail!("database_pool_size must be at least 2");
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("public_url must start with http:// or https://");
        }
        Ok(())
    }

    /// Whether the database is PostgreSQL (rather than the embedded SQLite).
    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://")
    }

    /// The key file used when no `encryption_key` is configured (SQLite).
    pub fn key_file(&self) -> PathBuf {
        self.data_dir.join(KEY_FILE)
    }

    /// The keyring secrets are sealed with: `encryption_key` if set;
    /// otherwise, for SQLite, the key file in `data_dir`, made (mode 0600)
    /// on first start. PostgreSQL's nodes must share a key, so there it
    /// must be configured.
    pub fn keyring(&self) -> anyhow::Result<Keyring> {
        if let Some(EncryptionKeys(list)) = &self.encryption_key {
            return Keyring::parse(list);
        }
        if self.is_postgres() {
            bail!(
                "encryption_key is required with PostgreSQL: set NOTIFLY_ENCRYPTION_KEY (or encryption_key in notifly.toml) to the same key on every node; make one with `openssl rand -base64 32`, and keep it with the database's backups"
            );
        }
        let path = self.key_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                Keyring::parse(text.trim()).with_context(|| format!("in {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Keyring::generate_key();
                write_key_file(&path, &key)?;
                tracing::warn!(
                    path = %path.display(),
                    "made an encryption key for webhook secrets; back it up with the database: without it no webhook secret can be read"
                );
                Keyring::parse(&key)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The base URL clients use, without a trailing slash.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"))
            .trim_end_matches('/')
            .to_owned()
    }
}
