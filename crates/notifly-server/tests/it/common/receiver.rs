//! A real HTTP webhook receiver for the delivery tests: an axum server on
//! `127.0.0.1:0` that records every request it gets (method, path, headers,
//! the exact body bytes, when it arrived) and answers as the test tells it,
//! per path or for every path: succeed, fail with a status, hang, answer 410,
//! ask to come back later (`Retry-After`), redirect, or send a large body.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// How the receiver answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// `200 ok`.
    Ok,
    /// This status, with the body `failed with <status>`.
    Status(u16),
    /// Waits this long before answering 200: set it longer than the
    /// server's delivery timeout.
    Hang(Duration),
    /// `410 Gone`.
    Gone,
    /// `status` (429 or 503) with `Retry-After: seconds`.
    RetryAfter { status: u16, seconds: u64 },
    /// `302 Found` with `Location` set to this receiver's URL of the path.
    Redirect(String),
    /// A `status` response whose body is `bytes` bytes of `x`.
    LargeBody { status: u16, bytes: usize },
    /// A `status` response with this body and a header `x-echo` of the same
    /// text (for showing attacker-controlled responses).
    Body { status: u16, body: String },
}

/// One request as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    /// The exact body bytes.
    pub body: Bytes,
    /// When the request (with its whole body) arrived.
    pub at: Instant,
}

impl Received {
    /// A header as text; panics (naming the request) if it is missing.
    #[track_caller]
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no `{name}` header in {self:?}"))
            .to_str()
            .unwrap_or_else(|_| panic!("`{name}` is not text in {self:?}"))
    }

    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `webhook-id`: the event id.
    pub fn event_id(&self) -> String {
        self.header("webhook-id").to_owned()
    }

    /// `x-notifly-attempt` as a number.
    pub fn attempt(&self) -> u32 {
        self.header("x-notifly-attempt")
            .parse()
            .expect("x-notifly-attempt is a number")
    }

    /// `x-notifly-delivery-id`.
    pub fn delivery_id(&self) -> String {
        self.header("x-notifly-delivery-id").to_owned()
    }
}

#[derive(Debug)]
struct Plan {
    default: Behavior,
    paths: HashMap<String, Behavior>,
    /// One-shot answers per path, used (in order) before the steady one.
    scripts: HashMap<String, VecDeque<Behavior>>,
}

#[derive(Debug)]
struct Shared {
    base: String,
    requests: Mutex<Vec<Received>>,
    arrived: Notify,
    plan: Mutex<Plan>,
}

/// A running receiver. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts a receiver that answers 200 to everything until told otherwise.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            requests: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            plan: Mutex::new(Plan {
                default: Behavior::Ok,
                paths: HashMap::new(),
                scripts: HashMap::new(),
            }),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver failed");
        });
        Receiver { addr, shared, task }
    }

    /// The absolute URL of `path` (which starts with `/`) on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.shared.base)
    }

    /// How every path without its own behaviour answers from now on.
    pub fn set_default(&self, behavior: Behavior) {
        self.shared.plan.lock().unwrap().default = behavior;
    }

    /// How `path` answers from now on (after any scripted answers).
    pub fn set(&self, path: &str, behavior: Behavior) {
        self.shared
            .plan
            .lock()
            .unwrap()
            .paths
            .insert(path.to_owned(), behavior);
    }

    /// The next requests to `path` get these answers, one each, in order;
    /// later ones get the steady behaviour.
    pub fn script(&self, path: &str, answers: impl IntoIterator<Item = Behavior>) {
        self.shared
            .plan
            .lock()
            .unwrap()
            .scripts
            .entry(path.to_owned())
            .or_default()
            .extend(answers);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests to `path` so far, in arrival order.
    pub fn requests_to(&self, path: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn count(&self) -> usize {
        self.shared.requests.lock().unwrap().len()
    }

    pub fn count_to(&self, path: &str) -> usize {
        self.requests_to(path).len()
    }

    /// Waits until at least `n` requests (to any path) have arrived and returns
    /// them all; fails the test after `deadline`.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Received> {
        self.wait_until("any path", n, deadline, |_| true).await
    }

    /// Waits until at least `n` requests to `path` have arrived and returns
    /// them (all of that path); fails the test after `deadline`.
    pub async fn wait_for_path(&self, path: &str, n: usize, deadline: Duration) -> Vec<Received> {
        self.wait_until(path, n, deadline, |r| r.path == path).await
    }

    async fn wait_until(
        &self,
        what: &str,
        n: usize,
        deadline: Duration,
        keep: impl Fn(&Received) -> bool,
    ) -> Vec<Received> {
        let end = Instant::now() + deadline;
        loop {
            // Register for the next arrival before looking, so none is missed.
            let notified = self.shared.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got: Vec<Received> = self.requests().into_iter().filter(&keep).collect();
            if got.len() >= n {
                return got;
            }
            let now = Instant::now();
            assert!(
                now < end,
                "the receiver got {} of {n} requests ({what}) within {deadline:?}; all requests: {:#?}",
                got.len(),
                self.requests()
                    .iter()
                    .map(|r| format!(
                        "{} {} attempt={:?} type={:?}",
                        r.method,
                        r.path,
                        r.headers.get("x-notifly-attempt"),
                        r.headers.get("x-notifly-event-type")
                    ))
                    .collect::<Vec<_>>()
            );
            let _ = tokio::time::timeout(end - now, notified).await;
        }
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let behavior = {
        let mut plan = shared.plan.lock().unwrap();
        let scripted = plan.scripts.get_mut(&path).and_then(VecDeque::pop_front);
        scripted
            .or_else(|| plan.paths.get(&path).cloned())
            .unwrap_or_else(|| plan.default.clone())
    };
    shared.requests.lock().unwrap().push(Received {
        method: parts.method,
        path,
        headers: parts.headers,
        body,
        at: Instant::now(),
    });
    shared.arrived.notify_waiters();
    answer(&shared, behavior).await
}

async fn answer(shared: &Shared, behavior: Behavior) -> Response {
    let text = |status: u16, body: String| {
        Response::builder()
            .status(StatusCode::from_u16(status).expect("a valid status"))
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(body))
            .unwrap()
    };
    match behavior {
        Behavior::Ok => text(200, "ok".into()),
        Behavior::Status(status) => text(status, format!("failed with {status}")),
        Behavior::Hang(d) => {
            tokio::time::sleep(d).await;
            text(200, "late".into())
        }
        Behavior::Gone => text(410, "gone".into()),
        Behavior::RetryAfter { status, seconds } => {
            let mut res = text(status, "come back later".into());
            res.headers_mut()
                .insert(header::RETRY_AFTER, seconds.to_string().parse().unwrap());
            res
        }
        Behavior::Redirect(to) => {
            let mut res = text(302, "moved".into());
            res.headers_mut().insert(
                header::LOCATION,
                format!("{}{to}", shared.base).parse().unwrap(),
            );
            res
        }
        Behavior::LargeBody { status, bytes } => Response::builder()
            .status(StatusCode::from_u16(status).expect("a valid status"))
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(vec![b'x'; bytes]))
            .unwrap(),
        Behavior::Body { status, body } => Response::builder()
            .status(StatusCode::from_u16(status).expect("a valid status"))
            .header(header::CONTENT_TYPE, "text/html")
            .header("x-echo", body.replace(['\r', '\n'], " "))
            .body(Body::from(body))
            .unwrap(),
    }
}
