//! A Notifly webhook receiver: the shape a real integration takes.
//!
//! - `VerifiedEvent` verifies the signature over the raw body and parses the
//!   event; requests that do not verify never reach the handler.
//! - The handler answers at once and hands the event to a worker through a
//!   queue: Notifly retries anything slower than its timeout.
//! - The worker drops duplicates by event id (`webhook-id`): delivery is at
//!   least once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::routing::post;
use notifly_webhooks::{Event, VerifiedEvent, Webhook, WebhookEvent};
use tokio::sync::mpsc;

/// What the app shares between requests.
#[derive(Debug, Clone)]
pub struct AppState {
    webhook: Webhook,
    queue: mpsc::Sender<WebhookEvent>,
}

impl FromRef<AppState> for Webhook {
    fn from_ref(state: &AppState) -> Webhook {
        state.webhook.clone()
    }
}

/// The router, and the receiving end of its queue.
pub fn app(webhook: Webhook) -> (Router, mpsc::Receiver<WebhookEvent>) {
    let (queue, events) = mpsc::channel(1024);
    let router = Router::new()
        .route("/webhooks/notifly", post(receive))
        .with_state(AppState { webhook, queue });
    (router, events)
}

async fn receive(State(state): State<AppState>, VerifiedEvent(event): VerifiedEvent) -> StatusCode {
    // Acknowledge fast; the work happens in `work`.
    match state.queue.try_send(event) {
        Ok(()) => StatusCode::NO_CONTENT,
        // Full: ask Notifly to try again later rather than dropping it.
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// A handled event, as the worker describes it.
pub type Handled = Arc<Mutex<Vec<String>>>;

/// Handles events one by one, skipping ids already seen. In a real app the
/// seen ids live in the database, next to the effects of handling them.
pub async fn work(mut events: mpsc::Receiver<WebhookEvent>, handled: Handled) {
    let mut seen = HashSet::new();
    while let Some(event) = events.recv().await {
        if !seen.insert(event.id.clone()) {
            continue;
        }
        let line = match &event.event {
            Event::MessageCreated(m) => {
                format!("message {} in {}: {}", m.id, m.conversation_id, m.message)
            }
            Event::ContactCreated(c) => format!("new contact {} ({})", c.id, c.username),
            Event::ContactDeleted(c) => format!("contact {} deleted", c.id),
            other => format!(
                "{} for {}",
                other.event_type(),
                other.resource_id().unwrap_or("?")
            ),
        };
        println!("{line}");
        if let Ok(mut h) = handled.lock() {
            h.push(line);
        }
    }
}
