//! `notifly listen`: the account's events, forwarded to a local app exactly
//! as real deliveries would arrive, with no public URL needed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures_util::StreamExt;
use notifly_server::dispatch::{Signing, delivery_headers};
use notifly_webhooks::EventType;

use crate::client::{Api, ServerArgs, clock};

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Where to POST each event, e.g. http://localhost:3000/webhooks.
    #[arg(long)]
    forward_to: String,
    /// Only these event types, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    events: Vec<String>,
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
        let t: EventType = t
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("--events: {e}"))?;
        types.insert(t.as_str());
    }
    let api = Api::new(&args.server)?;
    // Fail fast on a wrong key or an unreachable server.
    api.get("/v1/events?limit=1").await?;

    let secret = notifly_server::domain::webhooks::new_secret();
    println!("Ready! Forwarding events to {forward}");
    println!("Session secret (verify signatures with it): {secret}");
    println!("Press Ctrl-C to stop.");

    let forwarder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
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
            secret,
            previous_secret: None,
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
        Err(e) => println!("{}  {event_type:<22} {id}  -> failed: {e}", clock()),
    }
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
