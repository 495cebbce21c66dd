//! `/v1/events`: the account's event log.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use notifly_webhooks::AnyEventType;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::extract::{Auth, Query, page};
use super::{AppState, List};
use crate::domain::events::{Event, StreamStart};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(stream_events))
        .routes(routes!(get_event))
}

/// Query of `GET /v1/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListEvents {
    /// 1 to 100, default 10.
    limit: Option<u32>,
    /// An event id: return the page after it.
    starting_after: Option<String>,
    /// An event id: return the page before it.
    ending_before: Option<String>,
    /// Only events of this type, e.g. `message.created`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
}

/// List the account's events, newest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(ListEvents),
    security(("api_key" = [])),
    responses((status = 200, body = List<Event>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list_events(
    State(s): State<AppState>,
    auth: Auth,
    Query(q): Query<ListEvents>,
) -> Result<Json<List<Event>>, ApiError> {
    let page = page("event", q.limit, q.starting_after, q.ending_before)?;
    Ok(Json(
        s.notifly
            .events(&auth.account_id, q.event_type.as_deref(), &page)
            .await?
            .into(),
    ))
}

/// Get an event.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 200, body = Event), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_event(
    State(s): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Event>, ApiError> {
    Ok(Json(s.notifly.event(&auth.account_id, &id).await?))
}

/// Query of `GET /v1/events/stream`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamEvents {
    /// Resume after this event id (the `Last-Event-ID` header does the same).
    after: Option<String>,
    /// Only these event types, comma-separated. Without it, every resource
    /// event; operational events (`webhook.disabled`, …) only when named.
    types: Option<String>,
}

/// How often a stream looks for new events without being woken (commits of
/// this process and announcements of other nodes wake it at once).
const STREAM_POLL: Duration = Duration::from_secs(2);

/// Stream the account's events as they happen, as Server-Sent Events: each
/// event's `id` is the event id, its `event` the type and its `data` the exact
/// webhook body. Reconnect with `Last-Event-ID` to resume without gaps.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(StreamEvents,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event")),
    security(("api_key" = [])),
    responses((status = 200, description = "An event stream", content_type = "text/event-stream"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn stream_events(
    State(s): State<AppState>,
    auth: Auth,
    headers: HeaderMap,
    Query(q): Query<StreamEvents>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let types = match q.types.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(list) => Some(
            list.split(',')
                .map(|t| {
                    t.trim()
                        .parse::<AnyEventType>()
                        .map_err(|e| ApiError::bad_request(format!("types: {e}")))
                })
                .collect::<Result<HashSet<_>, _>>()?,
        ),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(q.after);
    let start = resume.map_or(StreamStart::Now, StreamStart::After);
    let position = s.notifly.stream_position(&auth.account_id, start).await?;
    let state = Streaming {
        notifly: s.notifly.clone(),
        account: auth.account_id,
        position,
        types,
        commits: s.notifly.commit_signal(),
        shutdown: s.shutdown.clone(),
        pending: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.pending.pop_front() {
                return Some((Ok(event), st));
            }
            match st
                .notifly
                .events_after(&st.account, st.position.as_deref(), 100)
                .await
            {
                Ok(batch) if !batch.is_empty() => {
                    for record in batch {
                        st.position = Some(record.id.clone());
                        // Without `types`, every resource event: like
                        // `"*"`, not the operational ones.
                        let wanted =
                            record.event_type.parse().is_ok_and(|t: AnyEventType| {
                                match &st.types {
                                    Some(types) => types.contains(&t),
                                    None => !t.is_operational(),
                                }
                            });
                        if wanted {
                            st.pending.push_back(
                                SseEvent::default()
                                    .id(record.id)
                                    .event(record.event_type)
                                    .data(record.body),
                            );
                        }
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = ?e, "reading events for a stream failed"),
            }
            tokio::select! {
                _ = st.commits.changed() => {}
                () = tokio::time::sleep(STREAM_POLL) => {}
                () = st.shutdown.cancelled() => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The state of one event stream.
struct Streaming {
    notifly: crate::domain::Notifly,
    account: String,
    /// The last event read (sent or filtered out).
    position: Option<String>,
    types: Option<HashSet<AnyEventType>>,
    commits: tokio::sync::watch::Receiver<u64>,
    shutdown: tokio_util::sync::CancellationToken,
    pending: VecDeque<SseEvent>,
}
