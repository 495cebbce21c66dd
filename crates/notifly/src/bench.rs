//! `notifly bench`: measurements against a real server process.
//!
//! By default the benchmark starts `notifly serve` itself (this same binary)
//! on a fresh SQLite database in a temporary directory, so the server and the
//! load generator are separate processes on the same machine. Figures depend
//! on the machine: report them with it.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    kind: BenchKind,
}

#[derive(Debug, Subcommand)]
enum BenchKind {
    /// API write throughput: message creations per second (each with its
    /// `message.created` event, in one transaction) at several concurrency
    /// levels, with p50/p99 latency and the server's memory.
    Api(ApiBench),
    /// Delivery: (i) the API alone (no endpoint), (a) sustained deliveries/s
    /// with 1 and 10 endpoints, 32 writers in a closed loop, (b)
    /// acknowledgement-to-receiver latency at a fixed rate, (c) the same while
    /// a second endpoint hangs, (e) draining a backlog over 100 endpoints,
    /// (d) peak server memory with many deliveries pending to an endpoint
    /// that is down. A real receiver runs in this process, the server in
    /// its own.
    Delivery(DeliveryBench),
    /// Content filters: what one costs per event at fan-out (parsing the
    /// stored filter and matching it), beside parsing the event once, for
    /// a few typical filters on a sample `message.created` event. Runs in
    /// this process; no server.
    Filter(FilterBench),
}

#[derive(Debug, Args)]
struct FilterBench {
    /// Events to evaluate each filter on.
    #[arg(long, default_value_t = 500_000)]
    events: u32,
}

#[derive(Debug, Args)]
struct DeliveryBench {
    /// Seconds of load for each throughput and latency run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Offered rate for the latency runs, events per second.
    #[arg(long, default_value_t = 400)]
    rate: u64,
    /// Deliveries to leave pending to a down endpoint for the memory run (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    pending: u64,
    /// Deliveries in the backlog-drain run, over 100 endpoints (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    backlog: u64,
    /// `sqlite`, or a PostgreSQL URL through which a scratch database is
    /// created for each run (and dropped after it).
    #[arg(long, default_value = "sqlite")]
    database: String,
    /// `notifly serve` processes sharing the database (PostgreSQL only); the
    /// load is spread over them.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Accounts the writes are spread over (each registers the same
    /// webhooks).
    #[arg(long, default_value_t = 1)]
    accounts: usize,
    /// A content filter (JSON) every webhook gets, to measure what
    /// filtering costs. It must pass every message the load sends (for
    /// example `{"payload":{"conversation_id":{"$exists":true}}}`), or the
    /// runs wait for deliveries that never come.
    #[arg(long, value_parser = parse_json)]
    filter: Option<serde_json::Value>,
}

fn parse_json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

#[derive(Debug, Args)]
struct ApiBench {
    /// Concurrency levels to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// How long to measure each level, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up before each level, in seconds.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.kind {
        BenchKind::Api(a) => api(a).await,
        BenchKind::Filter(f) => {
            filter(&f);
            Ok(())
        }
        BenchKind::Delivery(d) => {
            let database = Database::parse(&d.database)?;
            if d.nodes == 0 || d.accounts == 0 {
                bail!("--nodes and --accounts must be at least 1");
            }
            let setup = crate::bench_delivery::Cluster {
                database: &database,
                nodes: d.nodes,
                accounts: d.accounts,
                filter: d.filter.as_ref(),
            };
            crate::bench_delivery::run(&setup, d.seconds, d.rate, d.pending, d.backlog).await
        }
    }
}

/// Where a benchmark's servers keep their data.
#[derive(Debug, Clone)]
pub(crate) enum Database {
    /// A fresh SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database created (and dropped afterwards) through this
    /// PostgreSQL URL.
    Postgres(String),
}

impl Database {
    pub(crate) fn parse(s: &str) -> anyhow::Result<Database> {
        match s {
            "sqlite" => Ok(Database::Sqlite),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Database::Postgres(url.to_owned()))
            }
            _ => bail!(
                "--database is `sqlite` or a postgres:// URL to create a scratch database through"
            ),
        }
    }

    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Database::Sqlite => "SQLite (WAL, synchronous=FULL)",
            Database::Postgres(_) => "PostgreSQL",
        }
    }
}

/// `notifly serve` child processes (one, or several nodes on one
/// PostgreSQL database) on a scratch database.
pub(crate) struct Server {
    children: Vec<Child>,
    /// The first node's URL.
    pub(crate) url: String,
    /// Every node's URL.
    pub(crate) urls: Vec<String>,
    /// The first account's API key.
    pub(crate) api_key: String,
    /// Every account's API key.
    pub(crate) api_keys: Vec<String>,
    scratch: Option<ScratchDb>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub(crate) async fn start() -> anyhow::Result<Server> {
        Self::start_with(&[]).await
    }

    /// Starts one `notifly serve` on SQLite with extra flags.
    pub(crate) async fn start_with(extra: &[&str]) -> anyhow::Result<Server> {
        Self::start_nodes(&Database::Sqlite, 1, 1, extra).await
    }

    /// Starts `nodes` `notifly serve` processes on one scratch database
    /// with `accounts` accounts.
    pub(crate) async fn start_nodes(
        database: &Database,
        nodes: usize,
        accounts: usize,
        extra: &[&str],
    ) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let exe = std::env::current_exe()?;
        let (db, scratch) = match database {
            Database::Sqlite => {
                if nodes != 1 {
                    bail!("several nodes need a PostgreSQL database (--database postgres://…)");
                }
                (
                    format!("sqlite://{}", dir.path().join("bench.db").display()),
                    None,
                )
            }
            Database::Postgres(admin) => {
                let scratch = ScratchDb::create(admin).await?;
                (scratch.url.clone(), Some(scratch))
            }
        };
        let mut api_keys = Vec::new();
        for n in 0..accounts.max(1) {
            let out = Command::new(&exe)
                .args(["accounts", "create", "--name", &format!("bench{n}")])
                .args(["--json", "--database", &db])
                .output()
                .await?;
            if !out.status.success() {
                bail!(
                    "accounts create failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let account: Value = serde_json::from_slice(&out.stdout)?;
            api_keys.push(
                account["api_key"]
                    .as_str()
                    .context("no api_key")?
                    .to_owned(),
            );
        }
        let api_key = api_keys[0].clone();
        let mut children = Vec::new();
        let mut urls = Vec::new();
        // Every node must open the others' sealed secrets.
        let encryption_key = notifly_server::secrets::Keyring::generate_key();
        for node in 0..nodes {
            let port = free_port()?;
            children.push(
                Command::new(&exe)
                    .args([
                        "serve",
                        "--listen",
                        &format!("127.0.0.1:{port}"),
                        "--database",
                        &db,
                    ])
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("data{node}")))
                    .args(extra)
                    .env("NOTIFLY_LOG", "warn")
                    .env("NOTIFLY_ENCRYPTION_KEY", &encryption_key)
                    .stdout(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()?,
            );
            urls.push(format!("http://127.0.0.1:{port}"));
        }
        let server = Server {
            children,
            url: urls[0].clone(),
            urls,
            api_key,
            api_keys,
            scratch,
            _dir: dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in &self.urls {
            loop {
                if let Ok(r) = client.get(format!("{url}/readyz")).send().await
                    && r.status().is_success()
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the server at {url} did not become ready");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Stops the servers and drops the scratch database, if any.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        for child in &mut self.children {
            let _ = child.kill().await;
        }
        if let Some(scratch) = self.scratch.take() {
            scratch.drop_database().await?;
        }
        Ok(())
    }

    /// Resident memory of the first node.
    pub(crate) fn rss_mib(&self) -> Option<f64> {
        self.status_mib("VmRSS:")
    }

    /// Peak resident memory of the first node so far.
    pub(crate) fn peak_rss_mib(&self) -> Option<f64> {
        self.status_mib("VmHWM:")
    }

    /// CPU time (user + system) the nodes have used so far, in seconds.
    pub(crate) fn cpu_seconds(&self) -> Option<f64> {
        let mut ticks = 0;
        for child in &self.children {
            let (_, fields) = proc_stat(child.id()?)?;
            ticks += fields[UTIME] + fields[STIME];
        }
        Some(ticks as f64 / TICKS_PER_SECOND)
    }

    fn status_mib(&self, field: &str) -> Option<f64> {
        let pid = self.children.first()?.id()?;
        status_kib(
            &Path::new("/proc").join(pid.to_string()).join("status"),
            field,
        )
        .map(|k| k as f64 / 1024.0)
    }
}

/// What the database did for one measured window of a run: the CPU time
/// of this machine's PostgreSQL server (see [`postgres_cpu_seconds`]), the
/// row versions the run's database wrote (`pg_stat_user_tables`) and,
/// where the server loads `pg_stat_statements`, the statements it
/// executed. On SQLite the database's work is the server's own.
pub(crate) struct DbCost {
    server_cpu: Option<f64>,
    postgres_cpu: Option<f64>,
    /// A connection to the run's PostgreSQL database, whose table
    /// statistics were reset at the start.
    conn: Option<sqlx::PgConnection>,
    /// Whether `pg_stat_statements` is loaded (and its statistics for the
    /// run's database were reset at the start).
    statements: bool,
}

/// One statement's share of a window, from `pg_stat_statements`.
#[derive(sqlx::FromRow)]
struct StatementCost {
    query: String,
    calls: i64,
    exec_ms: f64,
}

/// One table's row versions in a window, from `pg_stat_user_tables`.
#[derive(sqlx::FromRow)]
struct TableWrites {
    relname: String,
    inserted: i64,
    updated: i64,
    hot: i64,
    deleted: i64,
}

impl Server {
    /// Starts measuring what the database does from now on.
    pub(crate) async fn db_cost(&self) -> DbCost {
        let mut cost = DbCost {
            server_cpu: self.cpu_seconds(),
            postgres_cpu: None,
            conn: None,
            statements: false,
        };
        if let Some(scratch) = &self.scratch
            && let Some((conn, statements)) = reset_statistics(&scratch.url).await
        {
            cost.conn = Some(conn);
            cost.statements = statements;
        }
        cost.postgres_cpu = postgres_cpu_seconds();
        cost
    }
}

/// Connects to `url` and resets its database's table statistics and, if
/// the server loads the extension, its `pg_stat_statements`; returns the
/// connection and whether it does.
async fn reset_statistics(url: &str) -> Option<(sqlx::PgConnection, bool)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    sqlx::query("SELECT pg_stat_reset()")
        .execute(&mut conn)
        .await
        .ok()?;
    let loaded: bool = sqlx::query_scalar(
        "SELECT current_setting('shared_preload_libraries') LIKE '%pg_stat_statements%'",
    )
    .fetch_one(&mut conn)
    .await
    .ok()?;
    if !loaded {
        return Some((conn, false));
    }
    let reset = async {
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&mut conn)
            .await?;
        sqlx::query(
            "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)",
        )
        .execute(&mut conn)
        .await
    };
    let statements = reset.await.is_ok();
    Some((conn, statements))
}

impl DbCost {
    /// What the window cost per event (`events`: deliveries, or writes
    /// when nothing is delivered): a line of CPU per event and, on
    /// PostgreSQL, the row versions written per event and, where known,
    /// the statements per event and those that took the most of
    /// PostgreSQL's time.
    pub(crate) async fn report(mut self, server: &Server, events: u64) -> String {
        let per = |n: f64| n / events.max(1) as f64;
        let per_event_us = |before: Option<f64>, after: Option<f64>| {
            before
                .zip(after)
                .map(|(b, a)| format!("{:.0} µs", per((a - b) * 1e6)))
                .unwrap_or_else(|| "n/a".to_owned())
        };
        let mut out = format!(
            "    per event: server CPU {}",
            per_event_us(self.server_cpu, server.cpu_seconds())
        );
        if server.scratch.is_none() {
            return out;
        }
        out += &format!(
            ", PostgreSQL CPU {}",
            per_event_us(self.postgres_cpu, postgres_cpu_seconds())
        );
        let Some(conn) = &mut self.conn else {
            return out
                + "\n    row versions and statements: n/a (cannot query the run's database)";
        };
        // A backend reports its table counts at most once a second while
        // busy, and within 10 s once idle (PostgreSQL 15).
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        match sqlx::query_as::<_, TableWrites>(
            "SELECT relname::text, n_tup_ins AS inserted, n_tup_upd AS updated,
                    n_tup_hot_upd AS hot, n_tup_del AS deleted
             FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0
             ORDER BY n_tup_ins + n_tup_upd + n_tup_del DESC",
        )
        .fetch_all(&mut *conn)
        .await
        {
            Ok(tables) => {
                let versions: i64 = tables.iter().map(|t| t.inserted + t.updated).sum();
                out += &format!(
                    "\n    row versions written per event: {:.2} (inserts and updates; HOT: an update that wrote no index)",
                    per(versions as f64)
                );
                for t in tables.iter().take(6) {
                    out += &format!(
                        "\n      {:<16} inserted {:.2}, updated {:.2} ({:.0} % HOT), deleted {:.2}",
                        t.relname,
                        per(t.inserted as f64),
                        per(t.updated as f64),
                        100.0 * t.hot as f64 / t.updated.max(1) as f64,
                        per(t.deleted as f64)
                    );
                }
            }
            Err(e) => out += &format!("\n    row versions per event: n/a ({e})"),
        }
        if !self.statements {
            return out
                + "\n    statements per event: n/a (pg_stat_statements is not loaded: add it to shared_preload_libraries and restart PostgreSQL)";
        }
        let costs: Vec<StatementCost> = match sqlx::query_as(
            "SELECT query, calls, total_exec_time AS exec_ms FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND query NOT LIKE '%pg_stat%'
             ORDER BY total_exec_time DESC",
        )
        .fetch_all(&mut *conn)
        .await
        {
            Ok(costs) => costs,
            Err(e) => return out + &format!("\n    statements per event: n/a ({e})"),
        };
        let calls: i64 = costs.iter().map(|c| c.calls).sum();
        let exec_ms: f64 = costs.iter().map(|c| c.exec_ms).sum();
        out += &format!(
            "\n    statements per event: {:.2} (each a round trip; BEGIN and COMMIT count), executing {:.0} µs",
            per(calls as f64),
            per(exec_ms * 1000.0)
        );
        for c in costs.iter().take(6) {
            let query: String = c.query.split_whitespace().collect::<Vec<_>>().join(" ");
            let query: String = query.chars().take(90).collect();
            out += &format!(
                "\n      {:>5.2}/event {:>6.0} µs/event  {query}",
                per(c.calls as f64),
                per(c.exec_ms * 1000.0)
            );
        }
        out
    }
}

/// CPU time (user + system) of this machine's PostgreSQL server so far, in
/// seconds: every process named `postgres` (the postmaster, its backends
/// and background workers), plus what the postmaster counts for its
/// children that have exited (connections closed, autovacuum workers), so
/// that work done by a process that ends within the window is not lost.
/// `None` when no such process runs here (a server on another machine).
pub(crate) fn postgres_cpu_seconds() -> Option<f64> {
    let stats: Vec<(u32, Vec<u64>)> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (command, fields) = proc_stat(pid)?;
            (command == "postgres").then_some((pid, fields))
        })
        .collect();
    if stats.is_empty() {
        return None;
    }
    let ticks: u64 = stats
        .iter()
        .map(|(_, f)| {
            let postmaster = !stats.iter().any(|(pid, _)| u64::from(*pid) == f[PPID]);
            let exited = if postmaster { f[CUTIME] + f[CSTIME] } else { 0 };
            f[UTIME] + f[STIME] + exited
        })
        .sum();
    Some(ticks as f64 / TICKS_PER_SECOND)
}

/// Positions in [`proc_stat`]'s fields (`proc(5)`, counted from the state,
/// the field after the command name): the parent's pid, and user and system
/// CPU time of the process and of its waited-for children that have exited.
const PPID: usize = 1;
const UTIME: usize = 11;
const STIME: usize = 12;
const CUTIME: usize = 13;
const CSTIME: usize = 14;
/// `/proc` counts CPU time in clock ticks of 1/100 s on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// A process's command name and the numeric fields of `/proc/<pid>/stat`
/// after it (the state, not a number, reads as 0), if it is running and
/// has them all up to [`CSTIME`].
fn proc_stat(pid: u32) -> Option<(String, Vec<u64>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold any character.
    let (head, rest) = stat.rsplit_once(')')?;
    let (_, command) = head.split_once('(')?;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    (fields.len() > CSTIME).then(|| (command.to_owned(), fields))
}

/// A PostgreSQL database made for one benchmark run.
struct ScratchDb {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDb {
    async fn create(admin_url: &str) -> anyhow::Result<ScratchDb> {
        use sqlx::Connection;
        let name = format!(
            "notifly_bench_{}",
            notifly_server::ids::new_id().to_lowercase()
        );
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .context("connecting to PostgreSQL to create a scratch database")?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await?;
        let url = notifly_server::store::postgres::url_with_database(admin_url, &name);
        Ok(ScratchDb {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        Ok(())
    }
}

fn status_kib(status: &Path, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Times `f` over `n` runs; nanoseconds per run.
fn per_run(n: u32, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        f();
    }
    started.elapsed().as_nanos() as f64 / f64::from(n)
}

fn filter(args: &FilterBench) {
    use notifly_server::filter::Filter;
    use std::hint::black_box;
    let payload = notifly_server::domain::samples::payload(
        notifly_webhooks::ResourceKind::Message,
        "https://notifly.example.com",
    );
    let body = json!({"id": "8E9whF4YTcA1gkOW", "type": "message.created", "payload": payload})
        .to_string();
    let n = args.events;
    println!(
        "notifly bench filter: {n} events of {} bytes (a sample message.created), one thread",
        body.len()
    );
    let parse = per_run(n, || {
        black_box(serde_json::from_str::<Value>(black_box(&body)).ok());
    });
    println!("parse the event once (for all its filtered endpoints): {parse:.0} ns");
    let envelope: Value = serde_json::from_str(&body).unwrap_or_default();
    let filters = [
        (
            "by example",
            json!({"payload": {"conversation_id": payload["conversation_id"]}}),
        ),
        (
            "$in and $exists",
            json!({"type": {"$in": ["message.created", "message.updated"]},
                   "payload": {"contact": {"$exists": true}}}),
        ),
        (
            "$or of three, with numbers",
            json!({"$or": [{"payload": {"conversation_id": "other"}},
                           {"payload": {"created_at": {"$gt": 0, "$lt": 4_000_000_000_i64}}},
                           {"$not": {"payload": {"message": {"$ne": "x"}}}}]}),
        ),
    ];
    for (name, filter) in filters {
        let stored = filter.to_string();
        let passes = Filter::from_stored(&stored).is_ok_and(|f| f.matches(&envelope));
        let each = per_run(n, || {
            let f = Filter::from_stored(black_box(&stored));
            black_box(f.is_ok_and(|f| f.matches(black_box(&envelope))));
        });
        println!(
            "{name} ({} bytes, {}): {each:.0} ns per event and filtered endpoint",
            stored.len(),
            if passes { "passes" } else { "fails" }
        );
    }
}

async fn api(args: ApiBench) -> anyhow::Result<()> {
    let server = Server::start().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = server.rss_mib();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let auth = format!("Bearer {}", server.api_key);
    let post = |path: &str, body: Value| {
        client
            .post(format!("{}{path}", server.url))
            .header("authorization", &auth)
            .json(&body)
    };
    let contact: Value = post(
        "/v1/contacts",
        json!({"username": "kevin", "phone_number": "1-800-759-3000"}),
    )
    .send()
    .await?
    .error_for_status()?
    .json()
    .await?;
    let conversation: Value = post("/v1/conversations", json!({"contact_id": contact["id"]}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let body = Arc::new(json!({
        "conversation_id": conversation["id"],
        "contact_id": contact["id"],
        "message": "I’m traveling with my dad. He’s at a meeting. I hate meetings.",
    }));

    println!("notifly bench api: POST /v1/messages (message + message.created event per request)");
    println!(
        "server: {} (SQLite, synchronous=FULL); idle RSS {:.1} MiB",
        server.url,
        idle.unwrap_or(f64::NAN)
    );
    println!(
        "{:>11} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "concurrency", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors"
    );
    for &c in &args.concurrency {
        let _ = load(
            &client,
            &server,
            &auth,
            &body,
            c,
            Duration::from_secs(args.warmup),
        )
        .await;
        let started = Instant::now();
        let (mut lat, errors) = load(
            &client,
            &server,
            &auth,
            &body,
            c,
            Duration::from_secs(args.seconds),
        )
        .await;
        let elapsed = started.elapsed();
        lat.sort_unstable();
        println!(
            "{:>11} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>8}",
            c,
            lat.len(),
            lat.len() as f64 / elapsed.as_secs_f64(),
            ms(percentile(&lat, 0.50)),
            ms(percentile(&lat, 0.99)),
            ms(lat.last().copied().unwrap_or_default()),
            errors
        );
    }
    let events: Value = client
        .get(format!(
            "{}/v1/events?limit=1&type=message.created",
            server.url
        ))
        .header("authorization", &auth)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        events["data"][0]["type"] == "message.created",
        "the server did not record message.created events"
    );
    println!(
        "server RSS after load: {:.1} MiB",
        server.rss_mib().unwrap_or(f64::NAN)
    );
    Ok(())
}

/// Runs `concurrency` loops of message creation for `duration`; returns the
/// latencies of successful requests and the number of failures.
async fn load(
    client: &reqwest::Client,
    server: &Server,
    auth: &str,
    body: &Arc<Value>,
    concurrency: usize,
    duration: Duration,
) -> (Vec<Duration>, usize) {
    let deadline = Instant::now() + duration;
    let url = format!("{}/v1/messages", server.url);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.clone();
        let auth = auth.to_owned();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                match client
                    .post(&url)
                    .header("authorization", &auth)
                    .json(&*body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    (all, errors)
}
