//! When an endpoint does not answer 2xx: retries on the (compressed)
//! schedule with every attempt recorded, timeouts, 410 Gone, `Retry-After`,
//! redirects not followed, capped response bodies, isolation of a hanging
//! endpoint from a healthy one, manual retry and bulk recovery, and automatic
//! disabling of an endpoint that keeps failing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::delivery_helpers as helpers;
use crate::common::receiver;
use crate::common::{UNKNOWN_ID, assert_invalid};
use helpers::{
    DEADLINE, deliveries, delivery, header_in, now, set_enabled, wait_deliveries, wait_delivery,
    wait_webhook, webhook,
};
use notifly_webhooks::{StandardSecret, sign_hex};
use receiver::{Behavior, Receiver};
use serde_json::{Value, json};

/// Asserts that every request carries valid signatures for `secret`.
#[track_caller]
fn assert_verifies(requests: &[receiver::Received], secret: &str) {
    let standard = StandardSecret::parse(secret).unwrap();
    for r in requests {
        assert_eq!(r.header("x-notifly-signature"), sign_hex(secret, &r.body));
        let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
        standard
            .verify(
                r.header("webhook-id"),
                ts,
                r.header("webhook-signature"),
                &r.body,
                now(),
                300,
            )
            .expect("webhook-signature verifies");
    }
}

/// The attempt log of a delivery.
fn log(d: &Value) -> &Vec<Value> {
    d["attempt_log"].as_array().expect("an attempt log")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_is_retried_on_the_schedule_then_fails_with_every_attempt_recorded() {
    let rx = Receiver::start().await;
    rx.set("/fail", Behavior::Status(500));
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let hook = webhook(&c, "failing", &rx.url("/fail"), &["contact.created"]).await;

    c.contact("dave").await;
    let first = rx.wait_for_path("/fail", 1, DEADLINE).await;
    let id = first[0].delivery_id();
    let d = wait_delivery(&c, &id, "failed").await;

    // Three attempts (the schedule has three entries), then no more.
    let got = rx.requests_to("/fail");
    assert_eq!(got.len(), 3, "{got:#?}");
    let attempts: Vec<u32> = got.iter().map(receiver::Received::attempt).collect();
    assert_eq!(attempts, [1, 2, 3], "x-notifly-attempt");
    let event_ids: BTreeSet<String> = got.iter().map(receiver::Received::event_id).collect();
    assert_eq!(event_ids.len(), 1, "webhook-id is stable across retries");
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "every attempt sends the same body"
    );
    assert!(got.iter().all(|r| r.delivery_id() == id));
    assert_verifies(&got, &hook.secret);

    assert_eq!(d["attempts"], 3, "{d:#}");
    assert_eq!(d["last_status_code"], 500, "{d:#}");
    assert_eq!(d["next_attempt_at"], Value::Null, "{d:#}");
    let log = log(&d);
    assert_eq!(log.len(), 3, "{d:#}");
    for (i, (a, r)) in log.iter().zip(&got).enumerate() {
        let n = i as i64 + 1;
        assert_eq!(a["attempt"], n, "{a:#}");
        assert_eq!(a["succeeded"], false, "{a:#}");
        assert_eq!(a["request"]["body"], *String::from_utf8_lossy(&r.body));
        let sent = &a["request"]["headers"];
        assert_eq!(
            header_in(sent, "x-notifly-attempt"),
            Some(n.to_string().as_str())
        );
        assert_eq!(header_in(sent, "webhook-id"), Some(r.header("webhook-id")));
        assert_eq!(
            header_in(sent, "x-notifly-signature"),
            Some(r.header("x-notifly-signature"))
        );
        assert_eq!(
            header_in(sent, "content-type"),
            Some("application/json"),
            "{a:#}"
        );
        assert_eq!(a["response"]["status"], 500, "{a:#}");
        assert_eq!(a["response"]["body"], "failed with 500", "{a:#}");
        assert_eq!(
            header_in(&a["response"]["headers"], "content-type"),
            Some("text/plain"),
            "{a:#}"
        );
        assert!(a["duration_ms"].as_i64().is_some_and(|ms| ms >= 0), "{a:#}");
        assert!(a["started_at"].as_i64().is_some(), "{a:#}");
        let error = a["error"].as_str().unwrap_or_default();
        assert!(error.contains("500"), "the error names the status: {a:#}");
    }
    let failed = deliveries(&c, &hook.id, Some("failed")).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(rx.count_to("/fail"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_then_a_200_succeeds() {
    let rx = Receiver::start().await;
    rx.script("/flaky", [Behavior::Status(500)]);
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let hook = webhook(&c, "flaky", &rx.url("/flaky"), &["*"]).await;

    c.contact("erin").await;
    let got = rx.wait_for_path("/flaky", 2, DEADLINE).await;
    assert_eq!(got[0].attempt(), 1);
    assert_eq!(got[1].attempt(), 2);
    assert_eq!(got[0].event_id(), got[1].event_id());
    assert_verifies(&got, &hook.secret);
    let d = wait_delivery(&c, &got[0].delivery_id(), "succeeded").await;
    assert_eq!(d["attempts"], 2);
    assert_eq!(d["last_status_code"], 200);
    let log = log(&d);
    assert_eq!(log.len(), 2, "{d:#}");
    assert_eq!(log[0]["succeeded"], false);
    assert_eq!(log[0]["response"]["status"], 500);
    assert_eq!(log[1]["succeeded"], true);
    assert_eq!(log[1]["response"]["status"], 200);
    assert_eq!(log[1]["error"], Value::Null, "{d:#}");
    assert_eq!(rx.count_to("/flaky"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_times_out_and_is_retried() {
    let rx = Receiver::start().await;
    // Far longer than the 300 ms delivery timeout.
    rx.set("/hang", Behavior::Hang(Duration::from_secs(30)));
    rx.script("/recovers", [Behavior::Hang(Duration::from_secs(30))]);
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let hang = webhook(&c, "hang", &rx.url("/hang"), &["*"]).await;
    let recovers = webhook(&c, "recovers", &rx.url("/recovers"), &["*"]).await;

    c.contact("frank").await;
    let hung = wait_deliveries(&c, &hang.id, 1, "failed").await;
    let d = delivery(&c, hung[0]["id"].as_str().unwrap()).await;
    assert_eq!(d["attempts"], 3, "{d:#}");
    assert_eq!(d["last_status_code"], Value::Null, "{d:#}");
    for a in log(&d) {
        assert_eq!(a["response"], Value::Null, "no response came: {a:#}");
        let error = a["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("300 ms") || error.to_lowercase().contains("timed out"),
            "the error names the timeout: {a:#}"
        );
    }
    let got = rx.requests_to("/hang");
    assert_eq!(got.len(), 3);
    let attempts: Vec<u32> = got.iter().map(receiver::Received::attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);

    // An endpoint that hangs once gets the retry and succeeds.
    let ok = wait_deliveries(&c, &recovers.id, 1, "succeeded").await;
    let d = delivery(&c, ok[0]["id"].as_str().unwrap()).await;
    let log = log(&d);
    assert_eq!(log.len(), 2, "{d:#}");
    assert_eq!(log[0]["response"], Value::Null);
    assert!(
        log[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("300 ms") || e.to_lowercase().contains("timed out")),
        "{d:#}"
    );
    assert_eq!(log[1]["succeeded"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_endpoint_and_fails_the_delivery() {
    let rx = Receiver::start().await;
    rx.set("/gone", Behavior::Gone);
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let hook = webhook(&c, "gone", &rx.url("/gone"), &["*"]).await;

    c.contact("gina").await;
    let got = rx.wait_for_path("/gone", 1, DEADLINE).await;
    let d = wait_delivery(&c, &got[0].delivery_id(), "failed").await;
    assert_eq!(d["attempts"], 1, "410 is not retried: {d:#}");
    assert_eq!(d["last_status_code"], 410);
    assert_eq!(log(&d)[0]["response"]["status"], 410);

    let w = wait_webhook(&c, &hook.id, "disabled", |w| w["enabled"] == false).await;
    let reason = w["disabled_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("410"), "the reason names the 410: {w:#}");

    // Nothing more is sent to it.
    c.contact("henry").await;
    assert_eq!(deliveries(&c, &hook.id, None).await.len(), 1);
    assert_eq!(rx.count_to("/gone"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_on_429_and_503_delays_the_next_attempt() {
    let rx = Receiver::start().await;
    for (path, status) in [("/busy", 429), ("/unavailable", 503)] {
        rx.script(path, [Behavior::RetryAfter { status, seconds: 1 }]);
    }
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    webhook(&c, "busy", &rx.url("/busy"), &["*"]).await;
    webhook(&c, "unavailable", &rx.url("/unavailable"), &["*"]).await;

    c.contact("ivan").await;
    for (path, status) in [("/busy", 429), ("/unavailable", 503)] {
        let got = rx.wait_for_path(path, 2, DEADLINE).await;
        let waited = got[1].at - got[0].at;
        // The schedule alone would retry after ~100 ms; Retry-After says 1 s.
        // (A couple of ms of slack for the millisecond clock the server uses.)
        assert!(
            waited >= Duration::from_millis(998),
            "{path}: the retry came {waited:?} after a `Retry-After: 1`"
        );
        assert_eq!(got[1].attempt(), 2);
        let d = wait_delivery(&c, &got[0].delivery_id(), "succeeded").await;
        let log = log(&d);
        assert_eq!(log.len(), 2, "{d:#}");
        assert_eq!(log[0]["response"]["status"], status);
        assert_eq!(
            header_in(&log[0]["response"]["headers"], "retry-after"),
            Some("1"),
            "{d:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let rx = Receiver::start().await;
    rx.set("/moved", Behavior::Redirect("/target".to_owned()));
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let hook = webhook(&c, "moved", &rx.url("/moved"), &["*"]).await;

    c.contact("judy").await;
    let failed = wait_deliveries(&c, &hook.id, 1, "failed").await;
    let d = delivery(&c, failed[0]["id"].as_str().unwrap()).await;
    assert_eq!(d["last_status_code"], 302, "{d:#}");
    for a in log(&d) {
        assert_eq!(a["succeeded"], false, "{a:#}");
        assert_eq!(a["response"]["status"], 302, "{a:#}");
        assert_eq!(
            header_in(&a["response"]["headers"], "location"),
            Some(rx.url("/target").as_str())
        );
        assert!(
            a["error"]
                .as_str()
                .is_some_and(|e| e.to_lowercase().contains("redirect")),
            "the error says why: {a:#}"
        );
    }
    assert_eq!(rx.count_to("/moved"), 3);
    assert_eq!(rx.count_to("/target"), 0, "the redirect was followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_bodies_are_capped() {
    let rx = Receiver::start().await;
    rx.set(
        "/big",
        Behavior::LargeBody {
            status: 200,
            bytes: 1024 * 1024,
        },
    );
    rx.set(
        "/big-error",
        Behavior::LargeBody {
            status: 500,
            bytes: 1024 * 1024,
        },
    );
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let big = webhook(&c, "big", &rx.url("/big"), &["*"]).await;
    let big_error = webhook(&c, "big-error", &rx.url("/big-error"), &["*"]).await;

    c.contact("kim").await;
    let ok = wait_deliveries(&c, &big.id, 1, "succeeded").await;
    let failed = wait_deliveries(&c, &big_error.id, 1, "failed").await;
    for id in [&ok[0]["id"], &failed[0]["id"]] {
        let d = delivery(&c, id.as_str().unwrap()).await;
        for a in log(&d) {
            let body = a["response"]["body"].as_str().expect("a response body");
            assert!(
                !body.is_empty() && body.len() <= 4096,
                "stored body is {} bytes",
                body.len()
            );
            assert!(body.bytes().all(|b| b == b'x'), "the start of the body");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_does_not_delay_a_healthy_one() {
    let rx = Receiver::start().await;
    rx.set("/slow", Behavior::Hang(Duration::from_secs(60)));
    let timeout = Duration::from_secs(8);
    let server = helpers::server(|c| {
        c.delivery_timeout = "8s".to_owned();
        c.endpoint_concurrency = 2;
    })
    .await;
    let c = server.account("acme").await;
    let slow = webhook(&c, "slow", &rx.url("/slow"), &["*"]).await;
    let healthy = webhook(&c, "healthy", &rx.url("/healthy"), &["*"]).await;

    const N: usize = 8;
    for i in 0..N {
        c.contact(&format!("user{i}")).await;
    }
    let slow_first = rx.wait_for_path("/slow", 1, DEADLINE).await[0].at;
    let got = rx.wait_for_path("/healthy", N, DEADLINE).await;
    wait_deliveries(&c, &healthy.id, N, "succeeded").await;

    // Every healthy delivery is done while the slow endpoint still hangs:
    // none of its attempts has finished, and it holds at most its two slots.
    let last_healthy = got.iter().map(|r| r.at).max().unwrap();
    assert!(
        last_healthy < slow_first + timeout,
        "the healthy endpoint waited for the hanging one"
    );
    let slow_deliveries = deliveries(&c, &slow.id, None).await;
    assert_eq!(slow_deliveries.len(), N);
    assert!(
        slow_deliveries
            .iter()
            .all(|d| d["status"] == "pending" && d["attempts"] == 0),
        "the slow endpoint's attempts have not ended yet: {slow_deliveries:#?}"
    );
    let in_flight = rx.count_to("/slow");
    assert!(
        (1..=2).contains(&in_flight),
        "endpoint_concurrency = 2, yet {in_flight} requests to the slow endpoint"
    );
    assert!(
        Instant::now() < slow_first + timeout,
        "the test ran too slowly to tell"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_can_be_retried_by_hand() {
    let rx = Receiver::start().await;
    rx.set("/hook", Behavior::Status(500));
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    webhook(&c, "hook", &rx.url("/hook"), &["*"]).await;

    c.contact("leo").await;
    let first = rx.wait_for_path("/hook", 1, DEADLINE).await;
    let id = first[0].delivery_id();
    wait_delivery(&c, &id, "failed").await;
    assert_eq!(rx.count_to("/hook"), 3);

    rx.set("/hook", Behavior::Ok);
    let (status, body) = c
        .post(&format!("/v1/deliveries/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["id"], id.as_str());
    let d = wait_delivery(&c, &id, "succeeded").await;
    let got = rx.requests_to("/hook");
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].event_id(), first[0].event_id());
    assert_eq!(got[3].body, first[0].body);
    assert_eq!(got[3].attempt(), 4);
    assert_eq!(log(&d).len(), 4, "{d:#}");
    assert_eq!(log(&d)[3]["succeeded"], true);

    let (status, body) = c
        .post(&format!("/v1/deliveries/{UNKNOWN_ID}/retry"), json!({}))
        .await;
    assert_invalid(&(status, body), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_resends_the_failed_deliveries_since_a_time() {
    let rx = Receiver::start().await;
    rx.set("/hook", Behavior::Status(500));
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let hook = webhook(&c, "hook", &rx.url("/hook"), &["contact.created"]).await;

    c.contact("older").await;
    let older = wait_deliveries(&c, &hook.id, 1, "failed").await[0].clone();
    let older_created = older["created_at"].as_i64().unwrap();
    // Let the clock reach the next second so that `since` can tell them apart.
    while now() <= older_created {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.contact("newer").await;
    let failed = wait_deliveries(&c, &hook.id, 2, "failed").await;
    let newer = failed
        .iter()
        .find(|d| d["id"] != older["id"])
        .unwrap()
        .clone();
    let newer_created = newer["created_at"].as_i64().unwrap();
    assert!(newer_created > older_created);

    // The status filter.
    assert!(deliveries(&c, &hook.id, Some("succeeded")).await.is_empty());
    assert!(deliveries(&c, &hook.id, Some("pending")).await.is_empty());
    assert_eq!(deliveries(&c, &hook.id, None).await.len(), 2);
    let (status, body) = c
        .get(&format!("/v1/webhooks/{}/deliveries?status=lost", hook.id))
        .await;
    assert_invalid(&(status, body), 400);

    rx.set("/hook", Behavior::Ok);
    let (status, body) = c
        .post(
            &format!("/v1/webhooks/{}/recover", hook.id),
            json!({"since": newer_created}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["recovered"], 1, "{body}");
    wait_delivery(&c, newer["id"].as_str().unwrap(), "succeeded").await;
    let d = delivery(&c, older["id"].as_str().unwrap()).await;
    assert_eq!(d["status"], "failed", "created before `since`: {d:#}");
    let failed = deliveries(&c, &hook.id, Some("failed")).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], older["id"]);
    let succeeded = deliveries(&c, &hook.id, Some("succeeded")).await;
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0]["id"], newer["id"]);

    let (status, body) = c
        .post(
            &format!("/v1/webhooks/{}/recover", hook.id),
            json!({"since": 0}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["recovered"], 1, "{body}");
    wait_delivery(&c, older["id"].as_str().unwrap(), "succeeded").await;
    assert!(deliveries(&c, &hook.id, Some("failed")).await.is_empty());
    assert_eq!(rx.count_to("/hook"), 3 + 3 + 2);

    let (status, body) = c
        .post(
            &format!("/v1/webhooks/{UNKNOWN_ID}/recover"),
            json!({"since": 0}),
        )
        .await;
    assert_invalid(&(status, body), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_continuously_is_disabled_and_resumes_when_re_enabled() {
    let rx = Receiver::start().await;
    rx.set("/down", Behavior::Status(500));
    let server = helpers::server(|c| {
        // Enough attempts to keep failing for well over `disable_after`.
        c.retry_schedule = std::iter::once("0s")
            .chain(std::iter::repeat_n("200ms", 24))
            .collect::<Vec<_>>()
            .join(",");
        c.disable_after = "1s".to_owned();
    })
    .await;
    let c = server.account("acme").await;
    let hook = webhook(&c, "down", &rx.url("/down"), &["contact.created"]).await;

    c.contact("mia").await;
    let first = rx.wait_for_path("/down", 1, DEADLINE).await;
    let id = first[0].delivery_id();
    let w = wait_webhook(&c, &hook.id, "disabled", |w| w["enabled"] == false).await;
    let reason = w["disabled_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("failing"),
        "the reason says it kept failing: {w:#}"
    );
    let d = delivery(&c, &id).await;
    assert_eq!(d["status"], "pending", "its delivery waits: {d:#}");
    let sent = rx.count_to("/down");
    assert!(sent >= 2, "it failed more than once before: {sent}");

    rx.set("/down", Behavior::Ok);
    let w = set_enabled(&c, &hook.id, true).await;
    assert_eq!(w["disabled_reason"], Value::Null);
    let d = wait_delivery(&c, &id, "succeeded").await;
    assert!(log(&d).last().unwrap()["succeeded"] == true, "{d:#}");

    c.contact("nora").await;
    wait_deliveries(&c, &hook.id, 2, "succeeded").await;
    let w = helpers::get_ok(&c, &format!("/v1/webhooks/{}", hook.id)).await;
    assert_eq!(w["enabled"], true, "{w:#}");
}
