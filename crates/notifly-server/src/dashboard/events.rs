//! The account's event log, with a type filter and each event's payload.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::session::Current;
use super::view::{self, Chrome, EventGroup};
use super::webhooks::Pager;
use super::{Dashboard, domain_error, render};
use crate::ids;
use crate::store::{Cursor, Page};

const EVENTS_PER_PAGE: u32 = 25;

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    after: Option<String>,
    before: Option<String>,
}

struct EventRow {
    id: String,
    event_type: String,
    created: String,
    created_ago: String,
    payload: String,
}

#[derive(Template)]
#[template(path = "dashboard/events.html")]
struct EventsPage {
    chrome: Chrome,
    rows: Vec<EventRow>,
    type_filter: String,
    groups: Vec<EventGroup>,
    operational: Vec<view::EventChoice>,
    pager: Pager,
}

pub async fn list(
    State(state): State<Dashboard>,
    current: Current,
    Query(q): Query<EventsQuery>,
) -> Response {
    let event_type = q.event_type.filter(|t| !t.is_empty());
    let page = Page {
        limit: EVENTS_PER_PAGE,
        cursor: match (
            q.after.filter(|s| !s.is_empty()),
            q.before.filter(|s| !s.is_empty()),
        ) {
            (Some(a), _) => Some(Cursor::After(a)),
            (None, Some(b)) => Some(Cursor::Before(b)),
            (None, None) => None,
        },
    };
    let listed = match state
        .app
        .notifly
        .events(&current.account_id, event_type.as_deref(), &page)
        .await
    {
        Ok(l) => l,
        Err(e) => return domain_error(e),
    };
    let now = ids::now();
    let extra = event_type
        .as_deref()
        .map(|t| format!("&type={}", view::urlencode(t)))
        .unwrap_or_default();
    let ids: Vec<&str> = listed.items.iter().map(|e| e.id.as_str()).collect();
    let pager = Pager::new("/dashboard/events", &ids, listed.has_more, &page, &extra);
    let rows = listed
        .items
        .into_iter()
        .map(|e| EventRow {
            created: view::time(e.created_at),
            created_ago: view::ago(e.created_at, now),
            payload: view::pretty_json(e.payload.get()),
            id: e.id,
            event_type: e.event_type,
        })
        .collect();
    render(
        StatusCode::OK,
        &EventsPage {
            chrome: Chrome::of(&current, "events"),
            rows,
            type_filter: event_type.unwrap_or_default(),
            groups: view::event_groups(&[]),
            operational: view::operational_choices(&[]),
            pager,
        },
    )
}
