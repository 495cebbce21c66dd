//! `NOTIFLY_WEBHOOK_SECRET=whsec_… cargo run -p notifly-example-receiver`
//! then register `http://<this host>:3000/webhooks/notifly` as a webhook.

use anyhow::Context;
use notifly_example_receiver::{app, work};
use notifly_webhooks::Webhook;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let secret = std::env::var("NOTIFLY_WEBHOOK_SECRET")
        .context("set NOTIFLY_WEBHOOK_SECRET to the webhook's secret (whsec_…)")?;
    let webhook = Webhook::new(&secret).context("NOTIFLY_WEBHOOK_SECRET is not a whsec_ secret")?;
    let (router, events) = app(webhook);
    tokio::spawn(work(events, Default::default()));
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("receiving Notifly webhooks at http://{addr}/webhooks/notifly");
    axum::serve(listener, router).await?;
    Ok(())
}
