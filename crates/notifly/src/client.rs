//! The HTTP client of the client subcommands (`listen`, `trigger`), with
//! errors a person can act on.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use serde_json::Value;

/// Where the server is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The Notifly server.
    #[arg(
        long,
        env = "NOTIFLY_URL",
        default_value = "http://127.0.0.1:8080",
        hide_env_values = true
    )]
    pub url: String,
    /// An API key of the account (`notifly accounts create` prints one),
    /// or the environment variable NOTIFLY_API_KEY.
    #[arg(long, env = "NOTIFLY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

impl ServerArgs {
    /// The API key, or an error that says how to give one.
    pub fn key(&self) -> anyhow::Result<&str> {
        match self.api_key.as_deref().map(str::trim) {
            Some(key) if !key.is_empty() => Ok(key),
            _ => bail!(
                "no API key: pass --api-key nfly_sk_… or set NOTIFLY_API_KEY (the first `notifly serve` printed one; `notifly accounts create` makes another)"
            ),
        }
    }
}

/// An authenticated API client.
#[derive(Debug, Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    auth: String,
}

impl Api {
    pub fn new(args: &ServerArgs) -> anyhow::Result<Api> {
        let key = args.key()?;
        let base = args.url.trim_end_matches('/').to_owned();
        let parsed =
            reqwest::Url::parse(&base).with_context(|| format!("--url `{base}` is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("--url must be an http:// or https:// URL");
        }
        Ok(Api {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()?,
            base,
            auth: format!("Bearer {key}"),
        })
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", &self.auth)
    }

    /// Sends a request and returns its JSON body, or an error that says what
    /// went wrong (unreachable server, refused key, the API's own message).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        if status == 401 {
            bail!("the server refused the API key (401): check --api-key / NOTIFLY_API_KEY");
        }
        let message = body["message"].as_str().unwrap_or("no details");
        Err(anyhow!("the server answered {status}: {message}"))
    }

    pub fn unreachable(&self, e: &reqwest::Error) -> anyhow::Error {
        if e.is_connect() || e.is_timeout() {
            anyhow!(
                "cannot reach the Notifly server at {} ({e}); is `notifly serve` running? (--url / NOTIFLY_URL)",
                self.base
            )
        } else {
            anyhow!("request to {} failed: {e}", self.base)
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::PUT, path).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }
}

/// `HH:MM:SS` (UTC) of now, for log lines.
pub fn clock() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}
