//! `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Prometheus metrics: delivery attempts, outcomes and latency; queue depth,
/// due retries, delivery lag, disabled endpoints and open circuits; HTTP
/// requests by route template, method and status class, their duration and
/// those in flight; database write and commit durations, commit group sizes
/// and waits for a connection.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format, version 0.0.4", content_type = "text/plain; version=0.0.4; charset=utf-8")))]
async fn metrics(State(s): State<AppState>) -> impl axum::response::IntoResponse {
    let now_ms = crate::ids::now_ms();
    let queue = match s.notifly.store().queue_stats(now_ms).await {
        Ok(q) => Some(q),
        Err(e) => {
            tracing::warn!(error = ?e, "reading queue figures for metrics failed");
            None
        }
    };
    (
        [("content-type", crate::metrics::CONTENT_TYPE)],
        s.metrics.render(queue.as_ref(), &s.node, now_ms),
    )
}

/// The status of a health probe.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`; `storage_full` while writes are refused for want of space (the
    /// process still answers, and reads work); from `/readyz`, `database
    /// unavailable` when the database does not answer.
    #[schema(example = "ok")]
    status: &'static str,
    /// This process: the leases its dispatcher holds are tagged with it.
    #[schema(example = "node-4bW6rDkPq1aZxY3sT9uV2n")]
    #[schema(value_type = String)]
    node: Arc<str>,
    /// Present while writes are refused because the storage is full.
    #[serde(skip_serializing_if = "Option::is_none")]
    storage_full: Option<StorageFullHealth>,
}

/// Writes refused because the server's storage is full: since when, where
/// the storage is, and what to do.
#[derive(Debug, Serialize, ToSchema)]
pub struct StorageFullHealth {
    /// Since when (Unix seconds) writes have been refused.
    since: i64,
    /// Where the database and the attachments are.
    #[schema(
        example = "the SQLite database /var/lib/notifly/notifly.db (with its -wal file); attachments in /var/lib/notifly/attachments"
    )]
    location: String,
    /// What an operator should do.
    message: &'static str,
}

impl Health {
    fn new(status: &'static str, s: &AppState) -> Health {
        let storage = s.metrics.storage();
        Health {
            status,
            node: s.node.clone(),
            storage_full: storage.full_since().map(|since| StorageFullHealth {
                since,
                location: storage.location().to_owned(),
                message: "writes are refused (503) because this storage is full: free space there; \
                          writes resume by themselves",
            }),
        }
    }
}

/// Liveness: the process answers. It still answers 200 while the storage
/// is full (a restart would not free space), with `status` `storage_full`
/// and what to do.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
async fn healthz(State(s): State<AppState>) -> Json<Health> {
    let status = match s.metrics.storage().full_since() {
        Some(_) => "storage_full",
        None => "ok",
    };
    Json(Health::new(status, &s))
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn readyz(State(s): State<AppState>) -> (StatusCode, Json<Health>) {
    match s.notifly.store().ping().await {
        Ok(()) => (StatusCode::OK, Json(Health::new("ok", &s))),
        Err(e) => {
            tracing::warn!(error = ?e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health::new("database unavailable", &s)),
            )
        }
    }
}
