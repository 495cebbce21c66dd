//! `notifly listen`: the account's events, forwarded to a local app exactly
//! as real deliveries would arrive, with no public URL needed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use notifly_server::dispatch::{Signing, delivery_headers};
use notifly_webhooks::{AnyEventType, EventType};

use crate::client::{Api, ServerArgs, clock};

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Where to POST each event, e.g. http://localhost:3000/webhooks.
    #[arg(long)]
    forward_to: String,
    /// Only these event types, comma-separated. Default: every resource
    /// event (`*`). Operational events (`webhook.disabled`,
    /// `webhook.circuit_opened`, `webhook.circuit_closed`,
    /// `delivery.exhausted`) come only when named, e.g.
    /// `--events '*,webhook.disabled'`.
    #[arg(long, value_delimiter = ',')]
    events: Vec<String>,
    /// Sign with this secret (`whsec_…`) instead of the one remembered for
    /// this server and API key.
    #[arg(long, env = "NOTIFLY_LISTEN_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Make a new session secret, remember it in place of the old one.
    #[arg(long, conflicts_with = "secret")]
    new_secret: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// One Server-Sent Event.
#[derive(Debug, Default)]
struct SseEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Parses complete events off the front of `buf` (text/event-stream).
fn parse_events(buf: &mut String) -> Vec<SseEvent> {
    let mut out = Vec::new();
    loop {
        let normalized_end = buf
            .find("\n\n")
            .map(|i| (i, 2))
            .or_else(|| buf.find("\r\n\r\n").map(|i| (i, 4)));
        let Some((end, sep)) = normalized_end else {
            return out;
        };
        let block: String = buf.drain(..end + sep).collect();
        let mut event = SseEvent::default();
        let mut has_data = false;
        for line in block.lines() {
            if line.starts_with(':') {
                continue; // keep-alive comment
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => event.id = Some(value.to_owned()),
                "event" => event.event = Some(value.to_owned()),
                "data" => {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
        if has_data {
            out.push(event);
        }
    }
}

pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let forward = reqwest::Url::parse(&args.forward_to)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .with_context(|| {
            format!(
                "--forward-to `{}` is not an http:// or https:// URL",
                args.forward_to
            )
        })?;
    let mut types = HashSet::new();
    for t in &args.events {
        let t = t.trim();
        if t == "*" {
            types.extend(EventType::ALL.map(EventType::as_str));
            continue;
        }
        let t: AnyEventType = t.parse().map_err(|e| anyhow::anyhow!("--events: {e}"))?;
        types.insert(t.as_str());
    }
    let api = Api::new(&args.server)?;
    // Fail fast on a wrong key or an unreachable server.
    api.get("/v1/events?limit=1").await?;

    let (secret, origin) = match args.secret {
        Some(secret) => (check_secret(secret)?, "from --secret"),
        None => remembered_secret(&args.server, args.new_secret)?,
    };
    println!("Ready! Forwarding events to {forward}");
    println!("Session secret (verify signatures with it, {origin}): {secret}");
    println!("Press Ctrl-C to stop.");

    let forwarder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FORWARD_TIMEOUT)
        .build()?;
    let mut last: Option<String> = None;
    let mut backoff = Duration::from_millis(500);
    let mut stop = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let mut req = api.request(reqwest::Method::GET, "/v1/events/stream");
        if !types.is_empty() {
            let list: Vec<&str> = types.iter().copied().collect();
            req = req.query(&[("types", list.join(","))]);
        }
        if let Some(id) = &last {
            req = req.header("last-event-id", id);
        }
        let connected = tokio::select! {
            r = req.send() => r,
            _ = &mut stop => { println!("Stopped."); return Ok(()); }
        };
        let response = match connected {
            Ok(r) if r.status().is_success() => r,
            Ok(r) if r.status() == 401 => bail!("the server refused the API key (401)"),
            Ok(r) => {
                let status = r.status();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                bail!(
                    "the server answered {status}: {}",
                    body["message"].as_str().unwrap_or("no details")
                );
            }
            Err(e) => {
                eprintln!(
                    "{}  connection to {} failed ({e}); retrying in {:.1} s",
                    clock(),
                    api.base,
                    backoff.as_secs_f64()
                );
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = &mut stop => { println!("Stopped."); return Ok(()); }
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if last.is_some() {
            eprintln!(
                "{}  reconnected; resuming after {}",
                clock(),
                last.as_deref().unwrap_or("")
            );
        }
        backoff = Duration::from_millis(500);
        let mut body = response.bytes_stream();
        let mut buf = String::new();
        loop {
            let chunk = tokio::select! {
                c = body.next() => c,
                _ = &mut stop => { println!("Stopped."); return Ok(()); }
            };
            match chunk {
                Some(Ok(bytes)) => {
                    buf.push_str(&String::from_utf8_lossy(&bytes));
                    for event in parse_events(&mut buf) {
                        forward_one(&forwarder, &forward, &secret, &event).await;
                        if event.id.is_some() {
                            last = event.id;
                        }
                    }
                }
                Some(Err(e)) => {
                    eprintln!("{}  stream interrupted ({e}); reconnecting", clock());
                    break;
                }
                None => {
                    eprintln!("{}  the server closed the stream; reconnecting", clock());
                    break;
                }
            }
        }
    }
}

/// POSTs one event to the local app, signed like a real delivery, and prints
/// what happened. Failures are reported and listening goes on.
async fn forward_one(client: &reqwest::Client, to: &reqwest::Url, secret: &str, event: &SseEvent) {
    let id = event.id.as_deref().unwrap_or("-");
    let event_type = event.event.as_deref().unwrap_or("-");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let headers = delivery_headers(
        &Signing {
            event_id: id,
            event_type,
            attempt: 1,
            delivery_id: "listen",
            keys: notifly_webhooks::EndpointKeys::new(secret),
            previous: None,
        },
        event.data.as_bytes(),
        now,
    );
    let mut req = client.post(to.clone()).body(event.data.clone());
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let started = Instant::now();
    match req.send().await {
        Ok(r) => println!(
            "{}  {event_type:<22} {id}  -> {} ({} ms)",
            clock(),
            r.status(),
            started.elapsed().as_millis()
        ),
        Err(e) => println!(
            "{}  {event_type:<22} {id}  -> failed: {} (not retried)",
            clock(),
            forward_failure(&e)
        ),
    }
}

/// Why a forward failed, in the words a person debugging their app needs.
fn forward_failure(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if e.is_timeout() {
        format!("no answer within {} s", FORWARD_TIMEOUT.as_secs())
    } else if e.is_connect() {
        format!("cannot connect ({cause}); is your app listening there?")
    } else {
        cause.to_string()
    }
}

/// How long the local app has to answer one forward.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// A secret given with `--secret`: the `whsec_…` form the server hands out.
fn check_secret(secret: String) -> anyhow::Result<String> {
    let secret = secret.trim().to_owned();
    notifly_webhooks::Webhook::new(&secret).map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    Ok(secret)
}

/// Where remembered session secrets live: `$XDG_CONFIG_HOME/notifly` or
/// `~/.config/notifly`.
fn secrets_file() -> anyhow::Result<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".config")))
        .context("cannot tell where to remember the session secret: set HOME or XDG_CONFIG_HOME, or pass --secret")?;
    Ok(base.join("notifly").join("listen-secrets.json"))
}

/// The session secret for this server and API key, made and remembered on
/// first use (or when `renew`), so that a local app keeps verifying across
/// restarts of `listen`. The file maps the server URL and a hash of the key
/// (never the key itself) to the secret, and only its owner can read it.
fn remembered_secret(server: &ServerArgs, renew: bool) -> anyhow::Result<(String, &'static str)> {
    use sha2::{Digest, Sha256};
    let path = secrets_file()?;
    let key_hash = hex::encode(&Sha256::digest(server.key()?.as_bytes())[..8]);
    let slot = format!("{} {key_hash}", server.url.trim_end_matches('/'));
    let mut secrets: std::collections::BTreeMap<String, String> = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a JSON object of secrets", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if !renew && let Some(secret) = secrets.get(&slot) {
        return Ok((secret.clone(), "remembered"));
    }
    let secret = notifly_server::secrets::new_secret();
    secrets.insert(slot, secret.clone());
    write_private(&path, &serde_json::to_vec_pretty(&secrets)?)
        .with_context(|| format!("cannot remember the session secret in {}", path.display()))?;
    Ok((secret, "new, remembered for next time"))
}

/// Writes a file only its owner can read, replacing it atomically.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_keepalives_and_partial_frames() {
        let mut buf = String::from(
            ": keep-alive\n\nid: a\nevent: contact.created\ndata: {\"x\":1}\n\nid: b\nda",
        );
        let events = parse_events(&mut buf);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id.as_deref(), Some("a"));
        assert_eq!(events[0].event.as_deref(), Some("contact.created"));
        assert_eq!(events[0].data, "{\"x\":1}");
        assert_eq!(buf, "id: b\nda");
        buf.push_str("ta: two\ndata: lines\n\n");
        let events = parse_events(&mut buf);
        assert_eq!(events[0].data, "two\nlines");
        assert!(buf.is_empty());
    }
}
