//! The Notifly server as a library: [`run`] is the one entry point, used by the
//! `notifly` binary and by every integration test.
//!
//! Layers, from the outside in: [`api`] (HTTP) → [`domain`] (rules and the
//! outbox) → [`store`] (SQL). See `ARCHITECTURE.md` at the repository root.

pub mod api;
pub mod config;
pub mod dashboard;
pub mod dispatch;
pub mod domain;
pub mod filter;
pub mod ids;
pub mod metrics;
pub mod notices;
pub mod peers;
pub mod replayer;
pub mod retention;
pub mod secrets;
pub mod ssrf;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

pub use config::Config;
use domain::Notifly;
use store::Store;

/// Opens the store a database URL names, running its migrations: PostgreSQL
/// for `postgres://` and `postgresql://` URLs (with the default pool size),
/// SQLite otherwise. Its database metrics go nowhere.
pub async fn open_store(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    open_store_with(url, store::postgres::DEFAULT_POOL_SIZE, Arc::default()).await
}

/// [`open_store`], with at most `pool_size` PostgreSQL connections (SQLite
/// ignores it: it has one writer and a fixed pool of readers), observing its
/// transactions and waits for connections into `metrics`.
pub async fn open_store_with(
    url: &str,
    pool_size: u32,
    metrics: Arc<store::StoreMetrics>,
) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = store::postgres::PgStore::open(url, pool_size, metrics)
            .await
            .with_context(|| format!("cannot open the database at {}", redact_url(url)))?;
        return Ok(Arc::new(store));
    }
    let store = store::sqlite::SqliteStore::open(url, metrics)
        .await
        .with_context(|| format!("cannot open the database at {url}"))?;
    Ok(Arc::new(store))
}

/// Runs the server on `listener` until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish, and closes the database.
///
/// On an empty database it first creates an account named `default` and
/// prints its API key (once) on standard output.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let metrics = Arc::new(metrics::Metrics::default());
    metrics.storage().locate(storage_location(&config));
    let store = open_store_with(
        &config.database_url,
        config.database_pool_size,
        metrics.store(),
    )
    .await?;
    let released = store
        .start_serving()
        .await
        .context("cannot serve the database")?;
    if released > 0 {
        tracing::info!(
            released,
            "took back the deliveries a stopped server had in flight; sending them again"
        );
    }
    let keyring = Arc::new(config.keyring()?);
    let sealed = secrets::seal_stored(store.as_ref(), &keyring, false)
        .await
        .context("cannot read the webhook signing secrets with the configured encryption keys")?;
    if sealed.plaintext > 0 {
        tracing::info!(
            endpoints = sealed.plaintext,
            "sealed plaintext webhook signing secrets under the encryption key"
        );
    }
    let bound = listener.local_addr()?;
    let public_url = config.public_url(bound);
    if let Some(account) = domain::accounts::bootstrap(store.as_ref()).await? {
        let message = format!(
            "Created account `{}` ({}). Its API key, shown only this once:\n\n    {}\n\nTry: curl -H 'Authorization: Bearer {}' {}/v1/contacts\nOr open {}/dashboard and log in with the key.\n\n",
            account.name, account.id, account.api_key, account.api_key, public_url, public_url
        );
        // One write, and a closed stdout (a reader that took the key and
        // left) is no reason to stop serving.
        let mut stdout = std::io::stdout().lock();
        let _ = std::io::Write::write_all(&mut stdout, message.as_bytes())
            .and_then(|()| std::io::Write::flush(&mut stdout));
    }
    let notifly = Notifly::new(
        store.clone(),
        &public_url,
        config.data_dir.join("attachments"),
        config.allow_private_urls,
        keyring.clone(),
    );
    // Long-lived responses (event streams) end when shutdown begins, so that
    // the graceful shutdown does not wait for them forever.
    let stopping = tokio_util::sync::CancellationToken::new();
    let stop_dispatch = tokio_util::sync::CancellationToken::new();
    let node = format!("node-{}", ids::new_id());
    let dispatch_config = config.dispatch()?;
    let slots = Arc::new(dispatch::slots(&node, &dispatch_config));
    let notifly = notifly.paced_by(slots.clone());
    let notices = Arc::new(tokio::sync::Notify::new());
    let poll_interval = dispatch_config.poll_interval;
    let dispatcher = dispatch::Dispatcher::spawn(
        node.clone(),
        store.clone(),
        notifly.wake_signal(),
        notices.clone(),
        dispatch_config,
        slots,
        metrics.clone(),
        keyring.clone(),
        stop_dispatch.clone(),
    )?;
    if sealed.older > 0 {
        tokio::spawn(secrets::reseal_in_background(store.clone(), keyring));
    }
    let (keep, purge_every) = config.retention()?;
    let purger = tokio::spawn(retention::run(
        store.clone(),
        keep,
        purge_every,
        stop_dispatch.clone(),
    ));
    let publisher = tokio::spawn(notices::run(
        notifly.clone(),
        notices,
        poll_interval,
        stop_dispatch.clone(),
    ));
    let replaying = tokio::spawn(replayer::run(
        notifly.clone(),
        poll_interval,
        stop_dispatch.clone(),
    ));
    let announcer = tokio::spawn(peers::announce(
        store.clone(),
        notifly.announce_signal(),
        stop_dispatch.clone(),
    ));
    let follower = tokio::spawn(peers::follow(
        store.clone(),
        notifly.clone(),
        stop_dispatch.clone(),
    ));
    let state = api::AppState {
        notifly,
        limits: api::Limits {
            max_body_bytes: config.max_body_bytes,
            max_attachment_bytes: config.max_attachment_bytes,
        },
        metrics,
        shutdown: stopping.clone(),
        keys: Arc::default(),
        node: node.clone().into(),
    };
    if config.allow_private_urls {
        tracing::warn!("webhook URLs may point at private networks (allow_private_urls)");
    }
    tracing::info!(listen = %bound, database = %redact_url(&config.database_url), %node, "notifly serving");
    let signal = {
        let stopping = stopping.clone();
        async move {
            shutdown.await;
            stopping.cancel();
        }
    };
    let dashboard = dashboard::router(dashboard::Dashboard {
        app: state.clone(),
        sessions: dashboard::Sessions::new(state.notifly.clone()),
        secure_cookies: public_url.starts_with("https://"),
        logins: Arc::default(),
    });
    // The peer's address reaches handlers (the dashboard's login throttle).
    let app =
        api::router(state, dashboard).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await
        .context("server failed");
    // The API has stopped accepting work: let the deliveries in flight finish
    // and be recorded, then close the database.
    stop_dispatch.cancel();
    dispatcher.join().await;
    let _ = purger.await;
    let _ = publisher.await;
    let _ = replaying.await;
    let _ = announcer.await;
    let _ = follower.await;
    store.close().await;
    served?;
    tracing::info!("notifly stopped");
    Ok(())
}

/// Where the server's writes go, for an operator whose storage is full.
fn storage_location(config: &Config) -> String {
    let attachments = config.data_dir.join("attachments");
    let url = &config.database_url;
    let database = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        format!("PostgreSQL at {} (its data directory)", redact_url(url))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        format!("the SQLite database {path} (with its -wal file)")
    };
    format!("{database}; attachments in {}", attachments.display())
}

/// A database URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}
