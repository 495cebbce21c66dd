//! The `VerifiedEvent` extractor in a real router, driven with
//! `tower::ServiceExt::oneshot`.

use std::time::{SystemTime, UNIX_EPOCH};

use axum_minimal as axum;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::{Request, StatusCode};
use axum::routing::post;
use notifly_webhooks::sign::sign_request;
use notifly_webhooks::{
    Event, HEADER_NOTIFLY_SIGNATURE, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP,
    VerifiedEvent, Webhook,
};
use tower::ServiceExt;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ID: &str = "a056V7R7NmNRjl70";
const BODY: &str = r#"{"id":"a056V7R7NmNRjl70","type":"message.created","payload":{"id":"SIuAFUNKdSYHZF2w","conversation_id":"xgQQXg3hrtjh7AvZ","contact":null,"message":"Keep the change, ya filthy animal.","reactions":[],"attachments":[],"read_at":null,"created_at":1700000060,"updated_at":1700000060}}"#;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

async fn handler(VerifiedEvent(event): VerifiedEvent) -> String {
    match event.event {
        Event::MessageCreated(m) => format!("{} {}", event.id, m.message),
        other => other.event_type().to_owned(),
    }
}

fn app() -> Router {
    Router::new()
        .route("/webhooks", post(handler))
        .with_state(Webhook::new(SECRET).unwrap())
}

/// A request signed at `timestamp`, with `edit` applied to its headers.
fn request(
    body: &str,
    timestamp: i64,
    edit: impl FnOnce(&mut axum::http::HeaderMap),
) -> Request<Body> {
    let mut req = Request::post("/webhooks")
        .body(Body::from(body.to_owned()))
        .unwrap();
    for (name, value) in sign_request(SECRET, ID, timestamp, BODY.as_bytes()) {
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    edit(req.headers_mut());
    req
}

async fn send(app: Router, req: Request<Body>) -> (StatusCode, String) {
    let response = app.oneshot(req).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    if status != StatusCode::OK && status != StatusCode::PAYLOAD_TOO_LARGE {
        assert_eq!(content_type.as_deref(), Some("text/plain; charset=utf-8"));
    }
    (status, body)
}

#[tokio::test]
async fn a_signed_request_reaches_the_handler() {
    let (status, body) = send(app(), request(BODY, now(), |_| {})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "a056V7R7NmNRjl70 Keep the change, ya filthy animal.");

    // With x-notifly-signature alone, too.
    let req = request(BODY, now(), |h| {
        h.remove(HEADER_WEBHOOK_SIGNATURE);
    });
    assert_eq!(send(app(), req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn bad_signatures_and_stale_timestamps_are_401() {
    let tampered = BODY.replace("filthy", "lovely");
    assert_eq!(
        send(app(), request(&tampered, now(), |_| {})).await,
        (
            StatusCode::UNAUTHORIZED,
            "no `webhook-signature` signature matched the webhook secret".to_owned()
        )
    );
    let (status, body) = send(app(), request(BODY, now() - 3600, |_| {})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body.starts_with("`webhook-timestamp` is 3600 s in the past"),
        "{body}"
    );
}

#[tokio::test]
async fn missing_or_malformed_headers_and_bad_bodies_are_400() {
    let (status, body) = send(
        app(),
        request(BODY, now(), |h| {
            h.remove(HEADER_WEBHOOK_SIGNATURE);
            h.remove(HEADER_NOTIFLY_SIGNATURE);
        }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.starts_with("missing signature"), "{body}");

    let req = request(BODY, now(), |h| {
        h.remove(HEADER_WEBHOOK_TIMESTAMP);
    });
    assert_eq!(
        send(app(), req).await,
        (
            StatusCode::BAD_REQUEST,
            "missing `webhook-timestamp` header".to_owned()
        )
    );

    // A body that is signed but is not an event.
    let not_an_event = r#"{"hello": "world"}"#;
    let mut req = Request::post("/webhooks")
        .body(Body::from(not_an_event))
        .unwrap();
    for (name, value) in sign_request(SECRET, ID, now(), not_an_event.as_bytes()) {
        req.headers_mut().insert(name, value.parse().unwrap());
    }
    let (status, body) = send(app(), req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.starts_with("invalid webhook body: "), "{body}");
}

#[tokio::test]
async fn an_oversized_body_is_refused_as_axum_refuses_it() {
    let app = app().layer(DefaultBodyLimit::max(64));
    let (status, _) = send(app, request(BODY, now(), |_| {})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[derive(Clone)]
struct AppState {
    webhook: Webhook,
    name: &'static str,
}

impl FromRef<AppState> for Webhook {
    fn from_ref(state: &AppState) -> Webhook {
        state.webhook.clone()
    }
}

#[tokio::test]
async fn the_webhook_can_be_part_of_a_larger_state() {
    async fn handler(State(state): State<AppState>, VerifiedEvent(event): VerifiedEvent) -> String {
        format!("{}: {}", state.name, event.event_type())
    }
    let app = Router::new()
        .route("/webhooks", post(handler))
        .with_state(AppState {
            webhook: Webhook::with_secrets([
                "whsec_bm90aWZseSBuZXcgc2VjcmV0IGZvciB0ZXN0cyE=",
                SECRET,
            ])
            .unwrap(),
            name: "acme",
        });
    assert_eq!(
        send(app.clone(), request(BODY, now(), |_| {})).await,
        (StatusCode::OK, "acme: message.created".to_owned())
    );
    let (status, _) = send(app, request(BODY, now(), |h| h.clear())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
