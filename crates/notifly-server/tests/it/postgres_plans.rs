//! The dispatcher's look-ups on PostgreSQL stay short index ranges however
//! large the backlog: over 100,000 pending deliveries to 100 endpoints (16
//! of each leased, as in flight) and as many finished ones, each query's
//! plan reads `deliveries` only through the indexes made for it, never by a
//! sequential scan, and reads a bounded number of buffers. Checked with the
//! planner settings the store's background connections use (one generic
//! plan per statement, made before the parameters are known), both before
//! the table is analyzed (statistics that lag the data, as on a fresh or
//! fast-growing database) and after.
//!
//! These queries run on every wake-up of every node; one that scans the
//! backlog makes a queue drain at a few dozen deliveries a second (issue 12).

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use sqlx::Connection;

use crate::common::{POSTGRES_ENV, PgTestDb};
use notifly_server::store::postgres::{dispatcher_sql, retention_sql};

const ENDPOINTS: i64 = 100;
const PER_ENDPOINT: i64 = 1000;

/// 100 endpoints, 1,000 events, one pending delivery of each event to each
/// endpoint (the first 16 of each endpoint leased: its 16 slots name them),
/// each event about its own resource, and as many succeeded.
const SEED: &str = "
INSERT INTO accounts (id, name, created_at) VALUES ('acct', 'acme', 0);
INSERT INTO endpoints (id, account_id, name, url, events, enabled, secret, created_at, updated_at)
  SELECT 'ep' || i, 'acct', 'ep' || i, 'https://hooks.example.com/' || i, '[\"*\"]', true, 'whsec_x', 0, 0
  FROM generate_series(1, 100) i;
INSERT INTO events (id, account_id, event_type, body, created_at)
  SELECT 'ev' || i, 'acct', 'contact.created', '{}', 0 FROM generate_series(1, 1000) i;
INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms, created_at, updated_at, resource_id)
  SELECT 'p' || e || '_' || v, 'acct', 'ep' || e, 'ev' || v, 'contact.created', 'pending', 1000000 + v, 0, 0, 'r' || v
  FROM generate_series(1, 100) e, generate_series(1, 1000) v;
INSERT INTO endpoint_slots (endpoint_id, n, delivery_id, owner, until_ms)
  SELECT 'ep' || e, n, 'p' || e || '_' || (n + 1), 'node-x:1', 9000000000000
  FROM generate_series(1, 100) e, generate_series(0, 15) n;
INSERT INTO deliveries (id, account_id, endpoint_id, event_id, event_type, status, next_attempt_ms, created_at, updated_at)
  SELECT 's' || e || '_' || v, 'acct', 'ep' || e, 'ev' || v, 'contact.created', 'succeeded', NULL, 0, 0
  FROM generate_series(1, 100) e, generate_series(1, 1000) v;
";

/// Every plan node (depth first).
fn nodes(plan: &Value, out: &mut Vec<Value>) {
    out.push(plan.clone());
    if let Some(children) = plan["Plans"].as_array() {
        for child in children {
            nodes(child, out);
        }
    }
}

/// Whether a plan reads `endpoint_slots` through its primary key, never by
/// a sequential scan.
fn reads_slots_by_key(plan: &Value) -> bool {
    let mut all = Vec::new();
    nodes(&plan[0]["Plan"], &mut all);
    all.iter().any(|n| n["Index Name"] == "endpoint_slots_pkey")
        && !all
            .iter()
            .any(|n| n["Node Type"] == "Seq Scan" && n["Relation Name"] == "endpoint_slots")
}

/// Checks one plan: `deliveries` is read only through `indexes`, and the
/// whole query touches fewer than `max_buffers` buffers.
fn check(name: &str, explained: &Value, indexes: &[&str], max_buffers: i64) {
    let root = &explained[0]["Plan"];
    let mut all = Vec::new();
    nodes(root, &mut all);
    let mut used = Vec::new();
    for node in &all {
        let kind = node["Node Type"].as_str().unwrap_or_default();
        let relation = node["Relation Name"].as_str().unwrap_or_default();
        assert!(
            !(kind == "Seq Scan" && relation == "deliveries"),
            "{name}: scans every delivery:\n{explained:#}"
        );
        if let Some(index) = node["Index Name"].as_str()
            && (relation == "deliveries" || index.starts_with("deliveries_"))
        {
            assert!(
                indexes.contains(&index),
                "{name}: reads deliveries through {index}, not {indexes:?}:\n{explained:#}"
            );
            used.push(index.to_owned());
        }
    }
    for index in indexes {
        assert!(
            used.iter().any(|u| u == index),
            "{name}: does not use {index}:\n{explained:#}"
        );
    }
    let buffers = root["Shared Hit Blocks"].as_i64().unwrap_or(0)
        + root["Shared Read Blocks"].as_i64().unwrap_or(0);
    assert!(
        buffers < max_buffers,
        "{name}: touched {buffers} buffers (the backlog's table has about 3,000 pages):\n{explained:#}"
    );
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of `sql`, prepared, executed with `args`
/// (SQL literals, one per parameter). A prepared statement runs the plan
/// the background connections run: one generic plan, made once for every
/// execution (`dispatcher_sql::SESSION`), which must stay an index probe
/// whatever the parameters turn out to be.
async fn explain_prepared(conn: &mut sqlx::PgConnection, sql: &str, args: &[String]) -> Value {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("plan_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    sqlx::raw_sql(&format!("PREPARE {name} AS {sql}"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let text = format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {name}({})",
        args.join(", ")
    );
    sqlx::query_scalar::<_, sqlx::types::Json<Value>>(&text)
        .fetch_one(&mut *conn)
        .await
        .unwrap()
        .0
}

/// `values` as an SQL array literal of `kind` (`text`, `int`, …).
fn array<T: std::fmt::Display>(values: &[T], kind: &str) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
    format!("ARRAY[{}]::{kind}[]", items.join(", "))
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of `sql` as the background connections
/// run it (see [`explain_prepared`]) with `binds` as `$1`, `$2`, ….
async fn explain(conn: &mut sqlx::PgConnection, sql: &str, binds: &[i64]) -> Value {
    let args: Vec<String> = binds.iter().map(i64::to_string).collect();
    explain_prepared(conn, sql, &args).await
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run with NOTIFLY_TEST_POSTGRES_URL set and --include-ignored"]
async fn dispatcher_queries_are_index_ranges_over_a_large_backlog() {
    let admin = std::env::var(POSTGRES_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{POSTGRES_ENV} is not set: this test needs PostgreSQL"));
    let (_db, url) = PgTestDb::create(&admin).await;
    // Opening the store runs the migrations: the schema under test.
    let store = notifly_server::open_store(&url).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    for (name, value) in dispatcher_sql::SESSION {
        sqlx::query("SELECT set_config($1, $2, false)")
            .bind(name)
            .bind(value)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    sqlx::raw_sql(SEED).execute(&mut conn).await.unwrap();
    let pending: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(pending, ENDPOINTS * PER_ENDPOINT);

    // The query and what the store makes of it agree.
    assert_eq!(store.next_due_ms().await.unwrap(), Some(1_000_017));

    check_plans(&mut conn, "not analyzed").await;
    sqlx::query("ANALYZE").execute(&mut conn).await.unwrap();
    check_plans(&mut conn, "analyzed").await;
}

async fn check_plans(conn: &mut sqlx::PgConnection, when: &str) {
    let now_ms = 2_000_000_i64;
    let plan = explain(conn, dispatcher_sql::NEXT_DUE, &[now_ms]).await;
    // Per endpoint, about 4 buffers for the head of its queue and 18 for
    // its 16 slots (its leases) through their key, or, once analyzed, 27
    // for a scan of this small table (1,600 slots): the planner takes the
    // key once the table is a few dozen pages.
    check(
        &format!("next due ({when})"),
        &plan,
        &["deliveries_queue", "deliveries_resource"],
        3_500,
    );
    // The claim locks what it reads: explain it in a transaction that is
    // rolled back.
    let mut tx = conn.begin().await.unwrap();
    let endpoints: Vec<String> = (1..=ENDPOINTS).map(|e| format!("ep{e}")).collect();
    let args = [
        array(&endpoints, "text"),
        array(&vec![32; endpoints.len()], "int"),
        now_ms.to_string(),
    ];
    let plan = explain_prepared(&mut tx, dispatcher_sql::FREE_SLOTS, &args).await;
    assert!(
        reads_slots_by_key(&plan),
        "free slots ({when}): not a range of endpoint_slots_pkey per endpoint:\n{plan:#}"
    );
    // 18 buffers per endpoint for its 32 slot rows, locked, and 2 for its
    // own row (whether it may still be sent to).
    check(&format!("free slots ({when})"), &plan, &[], 2_500);
    let plan = explain(&mut tx, dispatcher_sql::CANDIDATES, &[now_ms, 16]).await;
    tx.rollback().await.unwrap();
    // (The ordering probe is in the plan; with no ordered endpoint it never
    // runs.)
    check(
        &format!("claim candidates ({when})"),
        &plan,
        &["deliveries_queue", "deliveries_resource"],
        10_000,
    );
    // With per-resource ordering (each event about its own resource), each
    // candidate also costs one probe of `deliveries_resource`.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("UPDATE endpoints SET ordering = 'per_resource'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan = explain(&mut tx, dispatcher_sql::CANDIDATES, &[now_ms, 16]).await;
    tx.rollback().await.unwrap();
    check(
        &format!("ordered claim candidates ({when})"),
        &plan,
        &["deliveries_queue", "deliveries_resource"],
        20_000,
    );
    write_back_plan(conn, when).await;
    purge_plans(conn, when).await;
}

/// Checks that `plan` reads `relation` only through `index`, and does.
fn reads_only_through(name: &str, plan: &Value, relation: &str, index: &str) {
    let mut all = Vec::new();
    nodes(&plan[0]["Plan"], &mut all);
    let on: Vec<&Value> = all
        .iter()
        .filter(|n| n["Relation Name"] == relation)
        .collect();
    assert!(
        !on.is_empty() && on.iter().all(|n| n["Index Name"] == index),
        "{name}: does not read {relation} only through {index}:\n{plan:#}"
    );
}

/// What a purge window returns: its last `seq`, its size, whether it
/// reached a row not yet past the cutoff, and the `seq`s it locked.
type Window = (Option<i64>, i64, bool, Vec<i64>);

/// The purge reads each window through the primary key, whatever the
/// statistics: a window at the head of `deliveries` (pending deliveries,
/// as an endpoint down for days leaves them) locks none of them and ends
/// where the next starts; one over finished deliveries locks and deletes
/// them; the last, short, ends the walk. Likewise for events: a window of
/// events that deliveries hold, and one of free events, locked and
/// deleted. Every seeded row is past this cutoff (1).
async fn purge_plans(conn: &mut sqlx::PgConnection, when: &str) {
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(retention_sql::SETTINGS)
        .execute(&mut *tx)
        .await
        .unwrap();
    let (first, first_done, last_seq): (i64, i64, i64) = sqlx::query_as(
        "SELECT MIN(seq), MIN(seq) FILTER (WHERE status = 'succeeded'), MAX(seq) FROM deliveries",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let window = |after: i64| {
        sqlx::query_as::<_, (Option<i64>, i64, bool, Vec<i64>, Vec<String>)>(
            retention_sql::DELIVERIES_TO_DELETE,
        )
        .bind(1_i64)
        .bind(500_i64)
        .bind(after)
    };
    // The head: 500 pending deliveries, none locked.
    let plan = explain(&mut tx, retention_sql::DELIVERIES_TO_DELETE, &[1, 500, 0]).await;
    check(
        &format!("purge deliveries, held ({when})"),
        &plan,
        &["deliveries_pkey"],
        2_000,
    );
    let (last, size, reached, seqs, _) = window(0).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(
        (last, size, reached, seqs.len()),
        (Some(first + 499), 500, false, 0),
        "purge ({when}): a window of held deliveries"
    );
    // Finished deliveries: the window's batch, locked and deleted.
    let plan = explain(
        &mut tx,
        retention_sql::DELIVERIES_TO_DELETE,
        &[1, 500, first_done - 1],
    )
    .await;
    check(
        &format!("purge deliveries, finished ({when})"),
        &plan,
        &["deliveries_pkey"],
        2_000,
    );
    let (_, size, _, seqs, ids) = window(first_done - 1).fetch_one(&mut *tx).await.unwrap();
    assert_eq!((size, seqs.len()), (500, 500));
    sqlx::query(retention_sql::DELIVERIES)
        .bind(&seqs)
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .unwrap();
    let (pending, succeeded): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE status = 'pending'), COUNT(*) FILTER (WHERE status = 'succeeded')
         FROM deliveries",
    )
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        (pending, succeeded),
        (ENDPOINTS * PER_ENDPOINT, ENDPOINTS * PER_ENDPOINT - 500),
        "purge ({when}): a batch of finished deliveries, and no pending one"
    );
    // The end of the table: a short window, which ends the walk.
    let (last, size, reached, seqs, _) = window(last_seq - 100).fetch_one(&mut *tx).await.unwrap();
    assert_eq!(
        (last, size, reached, seqs.len()),
        (Some(last_seq), 100, false, 100)
    );

    // Events: the seeded ones each have deliveries; 20,000 free ones after
    // them (on a table of a few pages, reading it whole is the planner's
    // right choice).
    let held_last: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM events")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (id, account_id, event_type, body, created_at)
         SELECT 'free' || i, 'acct', 'contact.created', '{}', 0 FROM generate_series(1, 20000) i",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    for (after, locks) in [(0, 0), (held_last, 500)] {
        let name = format!("purge events after {after} ({when})");
        let plan = explain(&mut tx, retention_sql::EVENTS_TO_DELETE, &[1, 500, after]).await;
        reads_only_through(&name, &plan, "events", "events_pkey");
        check(&name, &plan, &["deliveries_event"], 4_000);
        let (_, size, reached, seqs): Window = sqlx::query_as(retention_sql::EVENTS_TO_DELETE)
            .bind(1_i64)
            .bind(500_i64)
            .bind(after)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!((size, reached, seqs.len()), (500, false, locks), "{name}");
        let gone = sqlx::query(retention_sql::EVENTS)
            .bind(&seqs)
            .execute(&mut *tx)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(gone, locks as u64, "{name}");
    }
    tx.rollback().await.unwrap();
}

/// The write-back of a batch of plain results (three, of two endpoints,
/// in flight on their slots; the first endpoint was failing) reads each
/// delivery by id and each slot by its endpoint's key: a few buffers per
/// result, whatever the backlog. And it writes the batch.
async fn write_back_plan(conn: &mut sqlx::PgConnection, when: &str) {
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(
        "UPDATE endpoints SET failing_since = 1, consecutive_failures = 2 WHERE id = 'ep1'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let deliveries = ["p1_1", "p1_2", "p2_1"];
    let headers = r#"[["content-type","application/json"]]"#;
    let args = [
        array(&deliveries, "text"),
        array(&["node-x:1"; 3], "text"),
        array(&["ep1", "ep1", "ep2"], "text"),
        array(&["succeeded"; 3], "text"),
        "ARRAY[NULL, NULL, NULL]::bigint[]".to_owned(),
        "ARRAY[NULL, NULL, NULL]::bigint[]".to_owned(),
        array(&["a1", "a2", "a3"], "text"),
        array(&[1; 3], "bigint"),
        array(&[2_000_000; 3], "bigint"),
        array(&[5; 3], "bigint"),
        array(&[headers; 3], "jsonb"),
        array(&[200; 3], "bigint"),
        array(&[headers; 3], "jsonb"),
        array(&[""; 3], "text"),
        "ARRAY[NULL, NULL, NULL]::text[]".to_owned(),
        array(&[true; 3], "bool"),
        "2000".to_owned(),
        array(&["ep1", "ep2"], "text"),
    ];
    let plan = explain_prepared(&mut tx, dispatcher_sql::PLAIN_WRITE_BACK, &args).await;
    let (moved, freed, attempts, healthy): (i64, i64, i64, bool) = sqlx::query_as(
        "SELECT
            (SELECT COUNT(*) FROM deliveries WHERE id = ANY($1) AND status = 'succeeded'
               AND attempts = 1 AND last_attempt_at = 2000 AND last_status_code = 200),
            (SELECT COUNT(*) FROM endpoint_slots WHERE delivery_id = ANY($1)),
            (SELECT COUNT(*) FROM attempts WHERE delivery_id = ANY($1) AND succeeded),
            (SELECT failing_since IS NULL AND consecutive_failures = 0 FROM endpoints WHERE id = 'ep1')",
    )
    .bind(deliveries)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        (moved, freed, attempts, healthy),
        (3, 0, 3, true),
        "write-back ({when}) did not write the batch"
    );
    assert!(
        reads_slots_by_key(&plan),
        "write-back ({when}): not a probe of endpoint_slots_pkey per result:\n{plan:#}"
    );
    // Its sub-statements are the root's init plans, which count their
    // buffers apart from it.
    let root = &plan[0]["Plan"];
    let buffers: i64 = std::iter::once(root)
        .chain(root["Plans"].as_array().into_iter().flatten())
        .map(|n| {
            n["Shared Hit Blocks"].as_i64().unwrap_or(0)
                + n["Shared Read Blocks"].as_i64().unwrap_or(0)
        })
        .sum();
    // About 380 (the endpoints it clears are also read locked, to note the
    // circuits it closes); a scan of the backlog would be thousands.
    assert!(
        buffers < 500,
        "write-back ({when}): touched {buffers} buffers:\n{plan:#}"
    );
    check(
        &format!("write-back ({when})"),
        &plan,
        &["deliveries_id_key"],
        400,
    );
}
