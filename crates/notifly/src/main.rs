//! `notifly`: the server, account administration and benchmarks in one program.

mod bench;
mod bench_delivery;
mod client;
mod listen;
mod telemetry;
mod trigger;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use notifly_server::Config;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

#[derive(Debug, Parser)]
#[command(
    name = "notifly",
    version,
    about = "Notifly: a messaging API whose every change reaches your webhooks, signed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API server.
    Serve(ServeArgs),
    /// Manage accounts.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Forward the account's events to a local app, signed like real deliveries.
    Listen(listen::ListenArgs),
    /// Make an event of a given type happen on a server.
    Trigger(trigger::TriggerArgs),
    /// Measure a real server on this machine: API writes, deliveries,
    /// content filters.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "NOTIFLY_LISTEN", hide_env_values = true)]
    listen: Option<SocketAddr>,
    /// Database URL [default: sqlite://notifly.db in the working directory].
    #[arg(long, env = "NOTIFLY_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// Directory for attachment files [default: ./notifly-data].
    #[arg(long, env = "NOTIFLY_DATA_DIR", hide_env_values = true)]
    data_dir: Option<PathBuf>,
    /// The URL clients reach this server at [default: http://<listen>].
    #[arg(long, env = "NOTIFLY_PUBLIC_URL", hide_env_values = true)]
    public_url: Option<String>,
    /// Configuration file [default: ./notifly.toml if it exists].
    #[arg(long, env = "NOTIFLY_CONFIG", hide_env_values = true)]
    config: Option<PathBuf>,
    /// Allow webhook URLs on loopback and private networks (development, tests).
    #[arg(long, env = "NOTIFLY_ALLOW_PRIVATE_URLS", num_args = 0..=1, default_missing_value = "true", hide_env_values = true)]
    allow_private_urls: Option<bool>,
    /// Delays between delivery attempts [default: 0s,5s,5m,30m,2h,5h,10h,10h].
    #[arg(long, env = "NOTIFLY_RETRY_SCHEDULE", hide_env_values = true)]
    retry_schedule: Option<String>,
    /// Per-attempt timeout [default: 15s].
    #[arg(long, env = "NOTIFLY_DELIVERY_TIMEOUT", hide_env_values = true)]
    delivery_timeout: Option<String>,
    /// Most delivery attempts in flight in this process [default: 256].
    #[arg(long, env = "NOTIFLY_DELIVERY_CONCURRENCY", hide_env_values = true)]
    delivery_concurrency: Option<u32>,
    /// Most attempts in flight to one endpoint, across nodes [default: 16].
    #[arg(long, env = "NOTIFLY_ENDPOINT_CONCURRENCY", hide_env_values = true)]
    endpoint_concurrency: Option<u32>,
    /// Development mode: webhooks may target this machine and private
    /// networks (http://localhost:3000/… works), as with --allow-private-urls.
    /// Never on a server reachable by others.
    #[arg(long, env = "NOTIFLY_DEV", hide_env_values = true)]
    dev: bool,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "NOTIFLY_LOG_JSON", hide_env_values = true)]
    log_json: bool,
}

#[derive(Debug, Subcommand)]
enum AccountsCommand {
    /// Create an account and print its first API key (shown once).
    Create {
        /// The account's name.
        #[arg(long)]
        name: String,
        /// Print `{"id", "name", "api_key"}` as JSON.
        #[arg(long)]
        json: bool,
        /// Database URL [default: sqlite://notifly.db in the working directory].
        #[arg(long, env = "NOTIFLY_DATABASE_URL", hide_env_values = true)]
        database: Option<String>,
        /// Configuration file [default: ./notifly.toml if it exists].
        #[arg(long, env = "NOTIFLY_CONFIG", hide_env_values = true)]
        config: Option<PathBuf>,
    },
}

/// Logs to stderr, filtered by `NOTIFLY_LOG`; and, when the environment
/// asks for them (see [`telemetry`]), traces of the server's own spans,
/// whatever `NOTIFLY_LOG` says.
fn init_logging(json: bool) -> anyhow::Result<Option<telemetry::Traces>> {
    let filter = EnvFilter::try_from_env("NOTIFLY_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    // Colours only for a person at a terminal: a log file or a pipe gets
    // plain text, not escape codes.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let logs = tracing_subscriber::registry().with(fmt.with_filter(filter));
    if !telemetry::requested() {
        logs.init();
        return Ok(None);
    }
    let (traces, layer) = telemetry::Traces::start(tokio::runtime::Handle::current())?;
    // Notifly's own spans (targets are prefixes: `notifly` covers
    // `notifly_server`), not those of the crates below it; of its log
    // lines, only warnings and errors become span events (a request's
    // "response" line would double each request span's size).
    let spans = FilterExt::and(
        Targets::new().with_target("notifly", LevelFilter::INFO),
        tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() || *meta.level() <= tracing::Level::WARN
        }),
    );
    logs.with(layer.with_filter(spans)).init();
    notifly_server::telemetry::enable();
    tracing::info!("traces: exporting spans over OTLP/HTTP (OTEL_EXPORTER_OTLP_*)");
    Ok(Some(traces))
}

/// mimalloc instead of the system allocator: under load, glibc's malloc
/// (per-arena locks, consolidation) took about a fifth of the server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            runtime.block_on(async move {
                match cli.command {
                    Command::Serve(args) => serve(args).await,
                    Command::Accounts {
                        command:
                            AccountsCommand::Create {
                                name,
                                json,
                                database,
                                config,
                            },
                    } => create_account(&name, json, database, config).await,
                    Command::Listen(args) => listen::run(args).await,
                    Command::Trigger(args) => trigger::run(args).await,
                    Command::Bench(args) => bench::run(args).await,
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The causes, one line, and never a backtrace: these are for people.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let traces = init_logging(args.log_json)?;
    let served = serve_logged(args).await;
    if let Some(traces) = traces {
        traces.shutdown().await;
    }
    served
}

async fn serve_logged(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(database) = args.database {
        config.database_url = database;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(url) = args.public_url {
        config.public_url = Some(url);
    }
    if let Some(allow) = args.allow_private_urls {
        config.allow_private_urls = allow;
    }
    if args.dev {
        config.allow_private_urls = true;
        tracing::warn!(
            "development mode (--dev): webhooks may target localhost and private networks; \
             do not run a server that others can reach this way"
        );
    }
    if let Some(schedule) = args.retry_schedule {
        config.retry_schedule = schedule;
    }
    if let Some(timeout) = args.delivery_timeout {
        config.delivery_timeout = timeout;
    }
    if let Some(n) = args.delivery_concurrency {
        config.delivery_concurrency = n;
    }
    if let Some(n) = args.endpoint_concurrency {
        config.endpoint_concurrency = n;
    }
    // From the environment only: a flag would show the key in `ps`.
    if let Ok(keys) = std::env::var("NOTIFLY_ENCRYPTION_KEY")
        && !keys.is_empty()
    {
        config.encryption_key = Some(notifly_server::config::EncryptionKeys(keys));
    }
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "cannot listen on {}: the address is already in use (another notifly, or another program, is on that port); pick another with --listen 127.0.0.1:8081 or NOTIFLY_LISTEN",
            config.listen
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot listen on {}", config.listen));
        }
    };
    notifly_server::run(config, listener, shutdown_signal()).await
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn create_account(
    name: &str,
    json: bool,
    database: Option<String>,
    config: Option<PathBuf>,
) -> anyhow::Result<()> {
    let config = Config::load(config.as_deref())?;
    let url = database.unwrap_or(config.database_url);
    let store = notifly_server::open_store(&url).await?;
    let account = notifly_server::domain::accounts::create(store.as_ref(), name)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.close().await;
    if json {
        println!("{}", serde_json::to_string(&account)?);
    } else {
        println!(
            "Created account `{}` ({}).\nAPI key (shown only this once): {}",
            account.name, account.id, account.api_key
        );
    }
    Ok(())
}
