//! The HTTP side of `/metrics`: one middleware that counts every request
//! (API, dashboard, operations) by route template, method and status class,
//! times it, keeps the in-flight gauge, and notes writes refused because the
//! storage is full (and the next that succeeds: `metrics::StorageWatch`).
//!
//! It is added with `Router::layer`, which wraps each route and the fallback
//! after routing, so the matched route template is in the request's
//! extensions (the fallback has none: `unmatched`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::error::StorageFull;
use crate::metrics::{Metrics, Route};

/// Counts and times one request.
pub(super) async fn track(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let route = Route::new(req.extensions().get::<MatchedPath>().cloned());
    let method = method_label(req.method());
    // A write that succeeded (the dashboard's answer with a redirect).
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let _in_flight = metrics.request_started();
    let started = Instant::now();
    let res = next.run(req).await;
    metrics.observe_request(route, method, status_class(res.status()), started.elapsed());
    if res.extensions().get::<StorageFull>().is_some() {
        metrics.storage().refused();
    } else if writes && (res.status().is_success() || res.status().is_redirection()) {
        metrics.storage().wrote();
    }
    res
}

/// The method's label: one of the standard methods, or `other`, so that a
/// client's made-up methods cannot add series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// `2xx`, `4xx`, … (`other` for the non-standard 600-999).
fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label(&Method::GET), "GET");
        let made_up = Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(method_label(&made_up), "other");
        assert_eq!(status_class(StatusCode::CREATED), "2xx");
        assert_eq!(status_class(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), "5xx");
    }
}
