//! Webhook pages: the list, the create and edit form, a webhook's page with
//! its secret, health and deliveries, a delivery's attempts, and every action
//! on them. Each handler calls the same `Notifly` method as the matching
//! REST handler in `api/webhooks.rs` or `api/deliveries.rs`.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::form::Form;
use super::session::{Current, Flash};
use std::collections::HashMap;

use notifly_webhooks::OperationalEventType;

use super::view::{self, Chart, Chrome, EventChoice, EventGroup, NoticeRow};
use super::{Dashboard, domain_error, render};
use crate::domain::DomainError;
use crate::domain::custom_headers::CustomHeaders;
use crate::domain::deliveries::{DeliveryDetail, Recover, STATUSES, WebhookHealth};
use crate::domain::replays::CreateReplay;
use crate::domain::webhooks::{
    self, CreateWebhook, DEFAULT_OVERLAP_SECS, MAX_RATE_LIMIT, Ordering, RotateSecret,
    SignatureScheme, TestEvent, UpdateWebhook, Webhook, WebhookSecret,
};
use crate::ids;
use crate::store::{Cursor, Page};

/// Webhooks per page of the list.
const WEBHOOKS_PER_PAGE: u32 = 25;
/// Deliveries per page of a webhook's page.
const DELIVERIES_PER_PAGE: u32 = 20;
/// The window of "recent" health: 24 hours, in hourly buckets on the chart.
const HEALTH_WINDOW_SECS: i64 = 24 * 60 * 60;
const HEALTH_BUCKETS: u32 = 24;
/// Operational events shown as notices, at most.
const NOTICES: usize = 5;
/// Replays shown on a webhook's page, at most.
const REPLAYS: u32 = 3;

/// A replay as a webhook's page shows it.
struct ReplayRow {
    id: String,
    status: String,
    total: i64,
    sent: i64,
    since: String,
    created: String,
    active: bool,
    /// The progress bar's value and maximum (at least 1, and the value
    /// within it, even if `sent` passed `total`).
    bar: (i64, i64),
}

/// `?after=<id>` (older) or `?before=<id>` (newer): keyset pages, newest first.
#[derive(Debug, Default, Deserialize)]
pub struct Paging {
    after: Option<String>,
    before: Option<String>,
    status: Option<String>,
    reveal: Option<String>,
    reveal_headers: Option<String>,
}

fn page_of(limit: u32, q: &Paging) -> Page {
    let after = q.after.clone().filter(|s| !s.is_empty());
    let before = q.before.clone().filter(|s| !s.is_empty());
    Page {
        limit,
        cursor: match (after, before) {
            (Some(a), _) => Some(Cursor::After(a)),
            (None, Some(b)) => Some(Cursor::Before(b)),
            (None, None) => None,
        },
    }
}

/// Links to the newer and older pages of a list (hrefs), given the page shown.
#[derive(Debug, Default)]
pub struct Pager {
    pub newer: Option<String>,
    pub older: Option<String>,
}

impl Pager {
    pub fn new(base: &str, ids: &[&str], has_more: bool, page: &Page, extra: &str) -> Pager {
        let link = |key: &str, id: &str| format!("{base}?{key}={}{extra}", view::urlencode(id));
        let first_page = format!("{base}{}", extra.replacen('&', "?", 1));
        let (first, last) = (ids.first(), ids.last());
        let newer = match (&page.cursor, first) {
            (None, _) => None,
            (Some(Cursor::Before(_)), Some(f)) if has_more => Some(link("before", f)),
            (Some(Cursor::Before(_)), _) => Some(first_page.clone()),
            (Some(Cursor::After(_)), Some(f)) => Some(link("before", f)),
            (Some(Cursor::After(_)), None) => Some(first_page.clone()),
        };
        let older = match (&page.cursor, last) {
            (Some(Cursor::Before(_)), Some(l)) => Some(link("after", l)),
            (_, Some(l)) if has_more => Some(link("after", l)),
            _ => None,
        };
        Pager { newer, older }
    }
}

/// Answers an action that failed: a missing webhook or delivery is a 404
/// page; a refusal the person can act on goes back to `to` with the reason.
async fn refused(state: &Dashboard, current: &Current, to: &str, e: DomainError) -> Response {
    match e {
        DomainError::Invalid(m) | DomainError::Conflict(m) | DomainError::BadRequest(m) => {
            state.sessions.flash(current, Flash::error(m)).await;
            Redirect::to(to).into_response()
        }
        e => domain_error(e),
    }
}

async fn done(state: &Dashboard, current: &Current, to: &str, message: String) -> Response {
    state.sessions.flash(current, Flash::ok(message)).await;
    Redirect::to(to).into_response()
}

// ---------------------------------------------------------------- the list

struct WebhookRow {
    id: String,
    name: String,
    url: String,
    events: String,
    enabled: bool,
    disabled_reason: Option<String>,
    rate: String,
    attempts: i64,
    /// `good`, `mixed`, `bad` or `idle`.
    health: &'static str,
    last_delivery: Option<(String, String)>,
}

#[derive(Template)]
#[template(path = "dashboard/webhooks.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<WebhookRow>,
    pager: Pager,
    /// The account's latest operational events.
    notices: Vec<NoticeRow>,
}

fn health_class(h: &WebhookHealth) -> &'static str {
    match h.success_rate() {
        None => "idle",
        Some(r) if r >= 0.99 => "good",
        Some(r) if r >= 0.5 => "mixed",
        Some(_) => "bad",
    }
}

pub async fn list(
    State(state): State<Dashboard>,
    current: Current,
    Query(q): Query<Paging>,
) -> Response {
    let notifly = &state.app.notifly;
    let page = page_of(WEBHOOKS_PER_PAGE, &q);
    let listed = match notifly.webhooks(&current.account_id, &page).await {
        Ok(l) => l,
        Err(e) => return domain_error(e),
    };
    let now = ids::now();
    let mut rows = Vec::with_capacity(listed.items.len());
    for w in &listed.items {
        let health = match notifly
            .webhook_health(&current.account_id, &w.id, HEALTH_WINDOW_SECS, 1)
            .await
        {
            Ok(h) => h,
            // Deleted since the list was read: leave it out.
            Err(DomainError::NotFound { .. }) => continue,
            Err(e) => return domain_error(e),
        };
        rows.push(WebhookRow {
            id: w.id.clone(),
            name: w.name.clone(),
            url: w.url.clone(),
            events: view::events_summary(&w.events),
            enabled: w.enabled,
            disabled_reason: w.disabled_reason.clone(),
            rate: view::percent(health.success_rate()),
            attempts: health.attempts,
            health: health_class(&health),
            last_delivery: health
                .last_attempt_at
                .map(|t| (view::ago(t, now), view::time(t))),
        });
    }
    let ids: Vec<&str> = listed.items.iter().map(|w| w.id.as_str()).collect();
    let pager = Pager::new("/dashboard/webhooks", &ids, listed.has_more, &page, "");
    let notices = match notifly
        .recent_notices(&current.account_id, None, NOTICES)
        .await
    {
        Ok(n) => n,
        Err(e) => return domain_error(e),
    };
    let names: HashMap<String, String> = listed
        .items
        .iter()
        .map(|w| (w.id.clone(), w.name.clone()))
        .collect();
    render(
        StatusCode::OK,
        &ListPage {
            chrome: Chrome::of(&current, "webhooks"),
            rows,
            pager,
            notices: view::notice_rows(notices, &names, now),
        },
    )
}

// ------------------------------------------------------ create and edit

/// What the form shows: the values as typed, and an error per field. Its
/// `Debug` output leaves out the custom headers, whose values are credentials.
#[derive(Default)]
struct FormValues {
    name: String,
    url: String,
    description: String,
    all_events: bool,
    events: Vec<String>,
    signature_scheme: String,
    /// As typed: empty for no limit.
    rate_limit: String,
    ordering: String,
    /// As typed: one `Name: value` per line (an existing value shown masked).
    headers: String,
    /// As typed: the content filter's JSON, empty for none.
    filter: String,
}

#[derive(Debug, Default)]
struct FieldErrors {
    name: Option<String>,
    url: Option<String>,
    events: Option<String>,
    description: Option<String>,
    rate_limit: Option<String>,
    headers: Option<String>,
    filter: Option<String>,
    general: Option<String>,
}

impl FieldErrors {
    fn any(&self) -> bool {
        self.name.is_some()
            || self.url.is_some()
            || self.events.is_some()
            || self.description.is_some()
            || self.rate_limit.is_some()
            || self.headers.is_some()
            || self.filter.is_some()
            || self.general.is_some()
    }
}

#[derive(Template)]
#[template(path = "dashboard/webhook_form.html")]
struct FormPage {
    chrome: Chrome,
    title: String,
    action: String,
    submit: &'static str,
    cancel: String,
    v: FormValues,
    errors: FieldErrors,
    groups: Vec<EventGroup>,
    operational: Vec<EventChoice>,
}

impl std::fmt::Debug for FormValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormValues")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl FormValues {
    fn from_form(form: &Form) -> Self {
        let events = form.all("events");
        FormValues {
            name: form.get("name").unwrap_or("").to_owned(),
            url: form.get("url").unwrap_or("").trim().to_owned(),
            description: form.get("description").unwrap_or("").to_owned(),
            all_events: events.iter().any(|e| e == "*"),
            events: events.into_iter().filter(|e| e != "*").collect(),
            signature_scheme: form
                .get("signature_scheme")
                .unwrap_or(SignatureScheme::default().as_str())
                .to_owned(),
            rate_limit: form.get("rate_limit").unwrap_or("").trim().to_owned(),
            ordering: form
                .get("ordering")
                .unwrap_or(Ordering::default().as_str())
                .to_owned(),
            headers: form.get("headers").unwrap_or("").to_owned(),
            filter: form.get("filter").unwrap_or("").trim().to_owned(),
        }
    }

    fn from_webhook(w: &Webhook) -> Self {
        FormValues {
            name: w.name.clone(),
            url: w.url.clone(),
            description: w.description.clone().unwrap_or_default(),
            all_events: w.events.iter().any(|e| e == "*"),
            events: w.events.iter().filter(|e| *e != "*").cloned().collect(),
            signature_scheme: w.signature_scheme.as_str().to_owned(),
            rate_limit: w.rate_limit.map(|r| r.to_string()).unwrap_or_default(),
            ordering: w.ordering.as_str().to_owned(),
            headers: w
                .headers
                .iter()
                .map(|(name, value)| format!("{name}: {value}\n"))
                .collect(),
            filter: w
                .filter
                .as_ref()
                .and_then(|f| serde_json::to_string_pretty(f).ok())
                .unwrap_or_default(),
        }
    }

    /// The content filter the form asks for (`None`: none), as JSON; the
    /// domain checks what it says.
    fn filter(&self) -> Result<Option<serde_json::Value>, String> {
        if self.filter.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&self.filter)
            .map(Some)
            .map_err(|e| format!("filter: not valid JSON ({e})"))
    }

    /// The custom headers the form asks for, one `Name: value` per line
    /// (the domain checks the names and values).
    fn headers(&self) -> Result<CustomHeaders, String> {
        let mut headers = CustomHeaders::default();
        for (n, line) in self.headers.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(format!(
                    "headers: line {} has no `:`; write one header per line, as `Name: value`",
                    n + 1
                ));
            };
            let name = name.trim();
            if headers
                .0
                .insert(name.to_owned(), value.trim().to_owned())
                .is_some()
            {
                return Err(format!("headers: `{name}` is given twice; give it once"));
            }
        }
        Ok(headers)
    }

    /// The rate limit the form asks for (`None`: no limit), checked by the
    /// domain's rule.
    fn rate_limit(&self) -> Result<Option<i64>, String> {
        if self.rate_limit.is_empty() {
            return Ok(None);
        }
        let value: i64 = self.rate_limit.parse().map_err(|_| {
            format!(
                "rate_limit must be a whole number of deliveries per second from 1 to {MAX_RATE_LIMIT}, or empty for no limit"
            )
        })?;
        webhooks::rate_limit(value)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The subscription the form asks for: "all resource events" wins over
    /// single resource types; operational types are added to either.
    fn event_list(&self) -> Vec<String> {
        if self.all_events {
            std::iter::once("*".to_owned())
                .chain(
                    self.events
                        .iter()
                        .filter(|e| e.parse::<OperationalEventType>().is_ok())
                        .cloned(),
                )
                .collect()
        } else {
            self.events.clone()
        }
    }

    fn description(&self) -> Option<String> {
        Some(self.description.clone()).filter(|d| !d.trim().is_empty())
    }
}

fn form_page(
    current: &Current,
    existing: Option<&Webhook>,
    v: FormValues,
    errors: FieldErrors,
) -> FormPage {
    let groups = view::event_groups(&v.events);
    let operational = view::operational_choices(&v.events);
    match existing {
        None => FormPage {
            chrome: Chrome::of(current, "webhooks"),
            title: "New webhook".to_owned(),
            action: "/dashboard/webhooks".to_owned(),
            submit: "Create webhook",
            cancel: "/dashboard/webhooks".to_owned(),
            v,
            errors,
            groups,
            operational,
        },
        Some(w) => FormPage {
            chrome: Chrome::of(current, "webhooks"),
            title: format!("Edit {}", w.name),
            action: format!("/dashboard/webhooks/{}/edit", w.id),
            submit: "Save changes",
            cancel: format!("/dashboard/webhooks/{}", w.id),
            v,
            errors,
            groups,
            operational,
        },
    }
}

/// Every field error of a refused form, by the domain's own rules.
async fn field_errors(
    state: &Dashboard,
    v: &FormValues,
    e: DomainError,
) -> Result<FieldErrors, DomainError> {
    let message = match e {
        DomainError::Invalid(m) | DomainError::BadRequest(m) => m,
        DomainError::Conflict(m) => {
            return Ok(FieldErrors {
                name: Some(m),
                ..FieldErrors::default()
            });
        }
        e => return Err(e),
    };
    let mut errors = FieldErrors::default();
    for (field, m) in state
        .app
        .notifly
        .webhook_field_errors(&v.name, &v.url, &v.event_list(), v.description().as_deref())
        .await
    {
        let slot = match field {
            "name" => &mut errors.name,
            "url" => &mut errors.url,
            "events" => &mut errors.events,
            _ => &mut errors.description,
        };
        // The API's wording names `["*"]`; this page has a checkbox for it.
        let m = if field == "events" && v.event_list().is_empty() {
            "Pick at least one event type, or “All resource events”.".to_owned()
        } else {
            m
        };
        slot.get_or_insert(m);
    }
    if let Err(m) = v.rate_limit() {
        errors.rate_limit = Some(m);
    }
    if let Err(m) = v.headers() {
        errors.headers = Some(m);
    } else if message.starts_with("headers: ") {
        errors.headers = Some(message.clone());
    }
    if let Err(m) = v.filter() {
        errors.filter = Some(m);
    } else if message.starts_with("filter: ") {
        errors.filter = Some(message.clone());
    }
    if !errors.any() {
        errors.general = Some(message);
    }
    Ok(errors)
}

pub async fn new_form(current: Current) -> Response {
    render(
        StatusCode::OK,
        &form_page(
            &current,
            None,
            FormValues::default(),
            FieldErrors::default(),
        ),
    )
}

pub async fn create(State(state): State<Dashboard>, current: Current, form: Form) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    let v = FormValues::from_form(&form);
    let input = CreateWebhook {
        name: v.name.clone(),
        url: v.url.clone(),
        events: v.event_list(),
        description: v.description(),
        signature_scheme: Some(v.signature_scheme.clone()),
        rate_limit: None,
        ordering: Some(v.ordering.clone()),
        headers: None,
        filter: None,
    };
    let input = match v
        .rate_limit()
        .and_then(|r| Ok((r, v.headers()?, v.filter()?)))
    {
        Ok((rate_limit, headers, filter)) => CreateWebhook {
            rate_limit,
            headers: Some(headers),
            filter,
            ..input
        },
        // Every field's error at once, this one among them.
        Err(m) => {
            return match field_errors(&state, &v, DomainError::Invalid(m)).await {
                Ok(errors) => render(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &form_page(&current, None, v, errors),
                ),
                Err(e) => domain_error(e),
            };
        }
    };
    match state
        .app
        .notifly
        .create_webhook(&current.account_id, input, None)
        .await
    {
        Ok(w) => {
            done(
                &state,
                &current,
                &format!("/dashboard/webhooks/{}?reveal=1#secret", w.id),
                format!(
                    "Webhook “{}” created. Verify its deliveries with the signing secret below.",
                    w.name
                ),
            )
            .await
        }
        Err(e) => match field_errors(&state, &v, e).await {
            Ok(errors) => render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &form_page(&current, None, v, errors),
            ),
            Err(e) => domain_error(e),
        },
    }
}

pub async fn edit_form(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
) -> Response {
    match state.app.notifly.webhook(&current.account_id, &id).await {
        Ok(w) => render(
            StatusCode::OK,
            &form_page(
                &current,
                Some(&w),
                FormValues::from_webhook(&w),
                FieldErrors::default(),
            ),
        ),
        Err(e) => domain_error(e),
    }
}

pub async fn update(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    let notifly = &state.app.notifly;
    let existing = match notifly.webhook(&current.account_id, &id).await {
        Ok(w) => w,
        Err(e) => return domain_error(e),
    };
    let v = FormValues::from_form(&form);
    let input = UpdateWebhook {
        name: Some(Some(v.name.clone())),
        url: Some(Some(v.url.clone())),
        events: Some(Some(v.event_list())),
        description: Some(v.description()),
        enabled: None,
        // A form without the field (rendered before it existed) changes
        // nothing: a missing field must not drop a key pair.
        signature_scheme: form.get("signature_scheme").map(|s| Some(s.to_owned())),
        rate_limit: None,
        ordering: form.get("ordering").map(|s| Some(s.to_owned())),
        headers: None,
        filter: None,
    };
    // Likewise the delivery controls, the custom headers and the filter.
    let given = |field: &str| form.get(field).is_some();
    let rate_limit = given("rate_limit").then(|| v.rate_limit()).transpose();
    let headers = given("headers").then(|| v.headers().map(Some)).transpose();
    let filter = given("filter").then(|| v.filter()).transpose();
    let input = match rate_limit.and_then(|r| Ok((r, headers?, filter?))) {
        Ok((rate_limit, headers, filter)) => UpdateWebhook {
            rate_limit,
            headers,
            filter,
            ..input
        },
        // Every field's error at once, this one among them.
        Err(m) => {
            return match field_errors(&state, &v, DomainError::Invalid(m)).await {
                Ok(errors) => render(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &form_page(&current, Some(&existing), v, errors),
                ),
                Err(e) => domain_error(e),
            };
        }
    };
    match notifly
        .update_webhook(&current.account_id, &id, input)
        .await
    {
        Ok(w) => {
            done(
                &state,
                &current,
                &format!("/dashboard/webhooks/{}", w.id),
                "Changes saved.".to_owned(),
            )
            .await
        }
        Err(e) => match field_errors(&state, &v, e).await {
            Ok(errors) => render(
                StatusCode::UNPROCESSABLE_ENTITY,
                &form_page(&current, Some(&existing), v, errors),
            ),
            Err(e) => domain_error(e),
        },
    }
}

// ---------------------------------------------------------- a webhook

struct DeliveryRow {
    id: String,
    event_type: String,
    status: String,
    attempts: i64,
    last_status: String,
    created: String,
    created_ago: String,
    next_attempt: Option<String>,
}

struct SecretView {
    secret: String,
    previous: Option<String>,
    previous_until: Option<String>,
    public_key: Option<String>,
    previous_public_key: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/webhook.html")]
struct WebhookPage {
    chrome: Chrome,
    w: Webhook,
    events: Vec<String>,
    all_events: bool,
    created: String,
    rate: String,
    attempts: i64,
    avg_ms: String,
    health: &'static str,
    last_delivery: Option<(String, String)>,
    chart: Chart,
    /// When the circuit last changed, if it is not closed.
    circuit_since: Option<String>,
    secret: Option<SecretView>,
    /// Custom headers: name and value, masked unless revealed.
    headers: Vec<(String, String)>,
    headers_revealed: bool,
    deliveries: Vec<DeliveryRow>,
    status_filter: String,
    statuses: [&'static str; 4],
    pager: Pager,
    live: bool,
    groups: Vec<EventGroup>,
    operational: Vec<EventChoice>,
    /// The latest operational events about this webhook.
    notices: Vec<NoticeRow>,
    /// Its latest replays.
    replays: Vec<ReplayRow>,
    self_href: String,
}

fn delivery_row(d: crate::domain::deliveries::Delivery, now: i64) -> DeliveryRow {
    DeliveryRow {
        last_status: match (d.last_status_code, d.attempts) {
            (Some(code), _) => code.to_string(),
            (None, 0) => "not yet sent".to_owned(),
            (None, _) => "no response".to_owned(),
        },
        created: view::time(d.created_at),
        created_ago: view::ago(d.created_at, now),
        next_attempt: d
            .next_attempt_at
            .filter(|_| d.status == "pending")
            .map(view::time),
        id: d.id,
        event_type: d.event_type,
        status: d.status,
        attempts: d.attempts,
    }
}

pub async fn show(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
    Query(q): Query<Paging>,
) -> Response {
    let notifly = &state.app.notifly;
    let account = &current.account_id;
    let w = match notifly.webhook(account, &id).await {
        Ok(w) => w,
        Err(e) => return domain_error(e),
    };
    let health = match notifly
        .webhook_health(account, &id, HEALTH_WINDOW_SECS, HEALTH_BUCKETS)
        .await
    {
        Ok(h) => h,
        Err(e) => return domain_error(e),
    };
    let status = q.status.clone().filter(|s| !s.is_empty());
    let page = page_of(DELIVERIES_PER_PAGE, &q);
    let listed = match notifly
        .deliveries(account, &id, status.as_deref(), &page)
        .await
    {
        Ok(l) => l,
        Err(e) => return domain_error(e),
    };
    // The secret leaves the server only when asked for.
    let secrets: Option<WebhookSecret> = if q.reveal.is_some() {
        match notifly.webhook_secret(account, &id).await {
            Ok(s) => Some(s),
            Err(e) => return domain_error(e),
        }
    } else {
        None
    };
    // Likewise the custom headers' values.
    let headers_revealed = q.reveal_headers.is_some() && !w.headers.is_empty();
    let headers: Vec<(String, String)> = if headers_revealed {
        match notifly.webhook_headers(account, &id).await {
            Ok(h) => h.headers.into_iter().collect(),
            Err(e) => return domain_error(e),
        }
    } else {
        w.headers.clone().into_iter().collect()
    };
    let notices = match notifly.recent_notices(account, Some(&id), NOTICES).await {
        Ok(n) => n,
        Err(e) => return domain_error(e),
    };
    let replays = match notifly.replays(account, &id, REPLAYS).await {
        Ok(r) => r,
        Err(e) => return domain_error(e),
    };
    let now = ids::now();
    let base = format!("/dashboard/webhooks/{}", w.id);
    let extra = status
        .as_deref()
        .map(|s| format!("&status={}", view::urlencode(s)))
        .unwrap_or_default();
    let ids: Vec<&str> = listed.items.iter().map(|d| d.id.as_str()).collect();
    let pager = Pager::new(&base, &ids, listed.has_more, &page, &extra);
    let page_view = WebhookPage {
        chrome: Chrome::of(&current, "webhooks"),
        events: w.events.iter().filter(|e| *e != "*").cloned().collect(),
        all_events: w.events.iter().any(|e| e == "*"),
        created: view::time(w.created_at),
        rate: view::percent(health.success_rate()),
        attempts: health.attempts,
        avg_ms: health
            .avg_duration_ms()
            .map_or("–".to_owned(), |ms| format!("{ms} ms")),
        health: health_class(&health),
        last_delivery: health
            .last_attempt_at
            .map(|t| (view::ago(t, now), view::time(t))),
        chart: Chart::new(&health),
        circuit_since: w.circuit_since.map(view::time),
        secret: secrets.map(|s| SecretView {
            previous_until: s.previous_secret_expires_at.map(view::time),
            secret: s.secret,
            previous: s.previous_secret,
            public_key: s.public_key,
            previous_public_key: s.previous_public_key,
        }),
        headers,
        headers_revealed,
        deliveries: listed
            .items
            .into_iter()
            .map(|d| delivery_row(d, now))
            .collect(),
        status_filter: status.unwrap_or_default(),
        statuses: STATUSES,
        live: page.cursor.is_none(),
        pager,
        groups: view::event_groups(&[]),
        operational: view::operational_choices(&[]),
        notices: view::notice_rows(notices, &HashMap::new(), now),
        replays: replays
            .into_iter()
            .map(|r| ReplayRow {
                active: r.status == "queued" || r.status == "running",
                bar: (r.sent.min(r.total.max(1)), r.total.max(1)),
                since: view::time(r.since),
                created: view::ago(r.created_at, now),
                id: r.id,
                status: r.status,
                total: r.total,
                sent: r.sent,
            })
            .collect(),
        self_href: base,
        w,
    };
    render(StatusCode::OK, &page_view)
}

pub async fn set_enabled(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    let enable = form.get("enabled") == Some("true");
    let input = UpdateWebhook {
        enabled: Some(Some(enable)),
        ..UpdateWebhook::default()
    };
    let back = format!("/dashboard/webhooks/{id}");
    match state
        .app
        .notifly
        .update_webhook(&current.account_id, &id, input)
        .await
    {
        Ok(_) if enable => {
            done(
                &state,
                &current,
                &back,
                "Webhook enabled. Deliveries that were waiting are being sent.".to_owned(),
            )
            .await
        }
        Ok(_) => {
            done(
                &state,
                &current,
                &back,
                "Webhook disabled. New events wait for it, undelivered, until you enable it again."
                    .to_owned(),
            )
            .await
        }
        Err(e) => refused(&state, &current, &back, e).await,
    }
}

pub async fn rotate(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    let back = format!("/dashboard/webhooks/{id}");
    let overlap = match form.get("overlap_seconds").map(str::parse::<i64>) {
        None => DEFAULT_OVERLAP_SECS,
        Some(Ok(s)) => s,
        Some(Err(_)) => {
            state
                .sessions
                .flash(
                    &current,
                    Flash::error("Pick how long the old secret stays valid."),
                )
                .await;
            return Redirect::to(&back).into_response();
        }
    };
    let input = RotateSecret {
        overlap_seconds: Some(overlap),
    };
    match state
        .app
        .notifly
        .rotate_webhook_secret(&current.account_id, &id, input)
        .await
    {
        Ok(s) => {
            let message = match s.previous_secret_expires_at {
                Some(t) => format!(
                    "Secret rotated. Until {}, deliveries are still signed with the old secret too (x-notifly-signature with the old one only); after that, with the new one alone. Let your receiver accept both secrets until then.",
                    view::time(t)
                ),
                None => {
                    "Secret rotated. Deliveries are signed with the new secret only, from now on."
                        .to_owned()
                }
            };
            done(
                &state,
                &current,
                &format!("{back}?reveal=1#secret"),
                message,
            )
            .await
        }
        Err(e) => refused(&state, &current, &back, e).await,
    }
}

pub async fn send_test(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    let back = format!("/dashboard/webhooks/{id}");
    let event_type = form.get("type").unwrap_or("").to_owned();
    let input = TestEvent {
        event_type: event_type.clone(),
    };
    match state
        .app
        .notifly
        .send_test_event(&current.account_id, &id, input)
        .await
    {
        Ok(_) => {
            done(
                &state,
                &current,
                &format!("{back}#deliveries"),
                format!("A test {event_type} event is on its way; its delivery is listed below."),
            )
            .await
        }
        Err(e) => refused(&state, &current, &back, e).await,
    }
}

/// How far back "recover" may reach from the picker, in seconds, with labels.
const RECOVER_PRESETS: [(i64, &str); 5] = [
    (3600, "the last hour"),
    (6 * 3600, "the last 6 hours"),
    (24 * 3600, "the last 24 hours"),
    (3 * 86_400, "the last 3 days"),
    (7 * 86_400, "the last 7 days"),
];

pub async fn recover(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    let back = format!("/dashboard/webhooks/{id}");
    let since = match since_of(&form, ids::now()) {
        Some(since) => since,
        None => return bad_time(&state, &current, &back).await,
    };
    match state
        .app
        .notifly
        .recover_webhook(&current.account_id, &id, Recover { since })
        .await
    {
        Ok(r) => {
            done(
                &state,
                &current,
                &format!("{back}#deliveries"),
                match r.recovered {
                    0 => format!("No failed deliveries since {}.", view::time(since)),
                    1 => format!(
                        "1 failed delivery since {} is being sent again.",
                        view::time(since)
                    ),
                    n => format!(
                        "{n} failed deliveries since {} are being sent again.",
                        view::time(since)
                    ),
                },
            )
            .await
        }
        Err(e) => refused(&state, &current, &back, e).await,
    }
}

#[derive(Template)]
#[template(path = "dashboard/delete.html")]
struct DeletePage {
    chrome: Chrome,
    w: Webhook,
}

pub async fn delete_page(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
) -> Response {
    match state.app.notifly.webhook(&current.account_id, &id).await {
        Ok(w) => render(
            StatusCode::OK,
            &DeletePage {
                chrome: Chrome::of(&current, "webhooks"),
                w,
            },
        ),
        Err(e) => domain_error(e),
    }
}

pub async fn delete(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    match state
        .app
        .notifly
        .delete_webhook(&current.account_id, &id)
        .await
    {
        Ok(w) => {
            done(
                &state,
                &current,
                "/dashboard/webhooks",
                format!(
                    "Webhook “{}” deleted; its pending deliveries were cancelled.",
                    w.name
                ),
            )
            .await
        }
        Err(e) => domain_error(e),
    }
}

// ---------------------------------------------------------- a delivery

struct ResponseView {
    status: i64,
    headers: Vec<(String, String)>,
    body: String,
}

struct AttemptView {
    number: i64,
    started: String,
    duration_ms: i64,
    succeeded: bool,
    request_headers: Vec<(String, String)>,
    request_body: String,
    response: Option<ResponseView>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "dashboard/delivery.html")]
struct DeliveryPage {
    chrome: Chrome,
    d: crate::domain::deliveries::Delivery,
    webhook_name: Option<String>,
    created: String,
    next_attempt: Option<String>,
    attempts: Vec<AttemptView>,
}

pub async fn delivery(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
) -> Response {
    let notifly = &state.app.notifly;
    let DeliveryDetail {
        delivery: d,
        attempt_log,
    } = match notifly.delivery(&current.account_id, &id).await {
        Ok(d) => d,
        Err(e) => return domain_error(e),
    };
    let webhook_name = match notifly.webhook(&current.account_id, &d.webhook_id).await {
        Ok(w) => Some(w.name),
        Err(DomainError::NotFound { .. }) => None,
        Err(e) => return domain_error(e),
    };
    let attempts = attempt_log
        .into_iter()
        .rev()
        .map(|a| AttemptView {
            number: a.attempt,
            started: view::time(a.started_at),
            duration_ms: a.duration_ms,
            succeeded: a.succeeded,
            request_headers: a.request.headers,
            request_body: view::pretty_json(&a.request.body),
            response: a.response.map(|r| ResponseView {
                status: r.status,
                headers: r.headers,
                body: view::pretty_json(&r.body),
            }),
            error: a.error,
        })
        .collect();
    render(
        StatusCode::OK,
        &DeliveryPage {
            chrome: Chrome::of(&current, "webhooks"),
            created: view::time(d.created_at),
            next_attempt: d
                .next_attempt_at
                .filter(|_| d.status == "pending")
                .map(view::time),
            webhook_name,
            attempts,
            d,
        },
    )
}

pub async fn retry(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    let back = format!("/dashboard/deliveries/{id}");
    match state
        .app
        .notifly
        .retry_delivery(&current.account_id, &id)
        .await
    {
        Ok(_) => {
            done(
                &state,
                &current,
                &back,
                "Delivery queued to be sent again now, with a fresh retry schedule.".to_owned(),
            )
            .await
        }
        Err(e) => refused(&state, &current, &back, e).await,
    }
}

/// The recovery picker's choices, for the template.
pub fn recover_presets() -> &'static [(i64, &'static str)] {
    &RECOVER_PRESETS
}

/// Back to `back`, saying the form's time did not parse.
async fn bad_time(state: &Dashboard, current: &Current, back: &str) -> Response {
    state
        .sessions
        .flash(
            current,
            Flash::error("Give the time as YYYY-MM-DD HH:MM, in UTC."),
        )
        .await;
    Redirect::to(back).into_response()
}

/// The start of a window a form asks for: a preset (`since`, seconds back
/// from now) or a UTC time (`since_utc`), which wins. `None`: a time that
/// does not parse.
fn since_of(form: &Form, now: i64) -> Option<i64> {
    match form
        .get("since_utc")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        Some(text) => view::parse_utc(text),
        None => {
            let back_secs = form
                .get("since")
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|s| RECOVER_PRESETS.iter().any(|(p, _)| p == s))
                .unwrap_or(24 * 3600);
            Some(now - back_secs)
        }
    }
}

pub async fn replay(
    State(state): State<Dashboard>,
    current: Current,
    Path(id): Path<String>,
    form: Form,
) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    let back = format!("/dashboard/webhooks/{id}");
    let since = match since_of(&form, ids::now()) {
        Some(since) => since,
        None => return bad_time(&state, &current, &back).await,
    };
    let input = CreateReplay { since, until: None };
    match state
        .app
        .notifly
        .create_replay(&current.account_id, &id, input)
        .await
    {
        Ok(r) => {
            let message = match r.total {
                0 => format!("No events of its types since {}.", view::time(since)),
                1 => format!("Replaying 1 event since {}.", view::time(since)),
                n => format!("Replaying {n} events since {}.", view::time(since)),
            };
            done(&state, &current, &format!("{back}#replays"), message).await
        }
        Err(e) => refused(&state, &current, &back, e).await,
    }
}

pub async fn cancel_replay(
    State(state): State<Dashboard>,
    current: Current,
    Path((id, replay_id)): Path<(String, String)>,
    form: Form,
) -> Response {
    if let Some(refused) = form.csrf_refusal(&current) {
        return refused;
    }
    let back = format!("/dashboard/webhooks/{id}");
    match state
        .app
        .notifly
        .cancel_replay(&current.account_id, &id, &replay_id)
        .await
    {
        Ok(r) => {
            let message = format!("Replay cancelled after {} of {} events.", r.sent, r.total);
            done(&state, &current, &format!("{back}#replays"), message).await
        }
        Err(e) => refused(&state, &current, &back, e).await,
    }
}
