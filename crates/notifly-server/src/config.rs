//! Configuration: built-in defaults, then `notifly.toml`, then `NOTIFLY_*`
//! environment variables and flags (applied by the binary). Validated once, at
//! start-up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// Everything `notifly serve` can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on. Env `NOTIFLY_LISTEN`.
    pub listen: SocketAddr,
    /// `sqlite://path` (or a plain path) for the embedded store. Env
    /// `NOTIFLY_DATABASE_URL`.
    pub database_url: String,
    /// Directory for attachment bytes. Env `NOTIFLY_DATA_DIR`.
    pub data_dir: PathBuf,
    /// The URL clients reach this server at, used to build `file_url`s.
    /// Defaults to `http://<listen>`. Env `NOTIFLY_PUBLIC_URL`.
    pub public_url: Option<String>,
    /// Largest JSON request body, in bytes.
    pub max_body_bytes: usize,
    /// Largest attachment, in bytes.
    pub max_attachment_bytes: usize,
}

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://notifly.db";

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            data_dir: PathBuf::from("notifly-data"),
            public_url: None,
            max_body_bytes: 1024 * 1024,
            max_attachment_bytes: 25 * 1024 * 1024,
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

    /// Checks the values that serde cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024");
        }
        if self.max_attachment_bytes == 0 {
            bail!("max_attachment_bytes must be positive");
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("public_url must start with http:// or https://");
        }
        Ok(())
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
