//! Custom headers: a webhook's `headers` arrive on every delivery and test
//! event to it, are answered masked everywhere but their own reveal, show
//! masked in the attempt log, and reserved or invalid ones are refused with
//! a 422 that names the header, writing nothing.

use crate::common::delivery_helpers as helpers;
use crate::common::receiver::{Behavior, Receiver};
use crate::common::{assert_invalid, id_of};
use helpers::{DEADLINE, get_ok, header_in, wait_delivery};
use notifly_webhooks::verify_hex;
use serde_json::{Value, json};

const TOKEN: &str = "Bearer 0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_arrive_and_are_shown_only_masked() {
    let rx = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let (status, hook) = c
        .post(
            "/v1/webhooks",
            json!({"name": "crm", "url": rx.url("/crm"), "events": ["*"],
                   "headers": {"Authorization": TOKEN, "X-Tenant": "t-1"}}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let id = id_of(&hook).to_owned();
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let masked = json!({"Authorization": "••••••••cdef", "X-Tenant": "••••••••"});
    assert_eq!(hook["headers"], masked);
    assert!(!hook.to_string().contains("0123456789"), "{hook}");

    // On a delivery, beside the signed headers, which still verify.
    c.contact("alice").await;
    let got = rx.wait_for_path("/crm", 1, DEADLINE).await;
    assert_eq!(got[0].header("authorization"), TOKEN);
    assert_eq!(got[0].header("x-tenant"), "t-1");
    verify_hex(&secret, &got[0].body, got[0].header("x-notifly-signature"))
        .expect("the signature still verifies");

    // On a test event.
    let (status, test) = c
        .post(
            &format!("/v1/webhooks/{id}/test"),
            json!({"type": "message.created"}),
        )
        .await;
    assert_eq!(status, 202, "{test}");
    let got = rx.wait_for_path("/crm", 2, DEADLINE).await;
    assert_eq!(got[1].header("authorization"), TOKEN);

    // The attempt log names them, values masked.
    let done = wait_delivery(&c, id_of(&test), "succeeded").await;
    let sent = &done["attempt_log"][0]["request"]["headers"];
    assert_eq!(
        header_in(sent, "authorization"),
        Some("••••••••cdef"),
        "{sent}"
    );
    assert_eq!(header_in(sent, "x-tenant"), Some("••••••••"), "{sent}");
    assert!(!done.to_string().contains("0123456789"), "{done}");

    // Masked in reads and lists; in clear only from their own resource.
    assert_eq!(
        get_ok(&c, &format!("/v1/webhooks/{id}")).await["headers"],
        masked
    );
    let listed = get_ok(&c, "/v1/webhooks").await;
    assert_eq!(listed["data"][0]["headers"], masked);
    assert_eq!(
        get_ok(&c, &format!("/v1/webhooks/{id}/headers")).await,
        json!({"headers": {"Authorization": TOKEN, "X-Tenant": "t-1"}})
    );
    let metrics = helpers::metrics(&server).await;
    assert!(!metrics.contains("0123456789") && !metrics.contains("t-1"));

    // What was read, written back with one value changed, keeps the rest.
    let mut back = masked.clone();
    back["X-Tenant"] = json!("t-2");
    let (status, updated) = c
        .put(&format!("/v1/webhooks/{id}"), json!({"headers": back}))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        get_ok(&c, &format!("/v1/webhooks/{id}/headers")).await["headers"],
        json!({"Authorization": TOKEN, "X-Tenant": "t-2"})
    );
    c.contact("bob").await;
    let got = rx.wait_for_path("/crm", 3, DEADLINE).await;
    assert_eq!(
        (got[2].header("authorization"), got[2].header("x-tenant")),
        (TOKEN, "t-2")
    );

    // `null` removes them all.
    let (status, updated) = c
        .put(&format!("/v1/webhooks/{id}"), json!({"headers": null}))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["headers"], json!({}));
    c.contact("carol").await;
    let got = rx.wait_for_path("/crm", 4, DEADLINE).await;
    assert!(got[3].headers.get("authorization").is_none());
    assert!(got[3].headers.get("x-tenant").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_and_invalid_custom_headers_are_refused_by_name() {
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    let create = |headers: Value| json!({"name": "h", "url": "https://example.com/h", "events": ["*"], "headers": headers});
    let refused = |body: &Value, needle: &str| {
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "`{needle}` not in {body}");
    };
    for name in [
        "Host",
        "content-type",
        "Content-Length",
        "Transfer-Encoding",
        "connection",
        "User-Agent",
        "webhook-id",
        "Webhook-Timestamp",
        "webhook-signature",
        "X-Notifly-Signature",
        "x-notifly-anything",
    ] {
        let got = c.post("/v1/webhooks", create(json!({name: "v"}))).await;
        assert_invalid(&got, 422);
        refused(&got.1, name);
        refused(&got.1, "reserved");
    }
    let cases = [
        (json!({"Bad Name": "v"}), "Bad Name"),
        (json!({"": "v"}), "not a valid HTTP header name"),
        (json!({"X-Split": "a\r\nInjected: 1"}), "X-Split"),
        (json!({"X-Utf8": "caf\u{e9}"}), "X-Utf8"),
        (json!({"X-Mask": "••••••••cdef"}), "masked value"),
        (json!({"X-A": "1", "x-a": "2"}), "the same header"),
        (json!({"X-Big": "v".repeat(8 * 1024)}), "8 KiB"),
        (
            Value::Object((0..21).map(|i| (format!("X-H{i}"), json!("v"))).collect()),
            "at most 20",
        ),
    ];
    for (headers, needle) in cases {
        let got = c.post("/v1/webhooks", create(headers)).await;
        assert_invalid(&got, 422);
        refused(&got.1, needle);
    }
    // Not an object of strings: refused by shape.
    for headers in [json!({"X-N": 1}), json!(["X-A", "v"]), json!("X-A: v")] {
        let got = c.post("/v1/webhooks", create(headers.clone())).await;
        assert_invalid(&got, 422);
    }
    assert_eq!(get_ok(&c, "/v1/webhooks").await["data"], json!([]));

    // An update refused the same way changes nothing.
    let (status, hook) = c
        .post("/v1/webhooks", create(json!({"X-Tenant": "t-1"})))
        .await;
    assert_eq!(status, 201, "{hook}");
    let id = id_of(&hook);
    let got = c
        .put(
            &format!("/v1/webhooks/{id}"),
            json!({"name": "renamed", "headers": {"Host": "evil.example"}}),
        )
        .await;
    assert_invalid(&got, 422);
    refused(&got.1, "Host");
    let now = get_ok(&c, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(now["name"], "h");
    assert_eq!(
        get_ok(&c, &format!("/v1/webhooks/{id}/headers")).await["headers"],
        json!({"X-Tenant": "t-1"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_echoes_a_credential_does_not_log_it_in_clear() {
    let rx = Receiver::start().await;
    let server = helpers::server(|_| {}).await;
    let c = server.account("acme").await;
    // A gateway's error page, or a test endpoint, that quotes the request.
    rx.set(
        "/crm",
        Behavior::Body {
            status: 401,
            body: format!("invalid credentials: {TOKEN}"),
        },
    );
    let (status, hook) = c
        .post(
            "/v1/webhooks",
            json!({"name": "crm", "url": rx.url("/crm"), "events": ["*"],
                   "headers": {"Authorization": TOKEN}}),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    let (status, sent) = c
        .post(
            &format!("/v1/webhooks/{}/test", id_of(&hook)),
            json!({"type": "contact.created"}),
        )
        .await;
    assert_eq!(status, 202, "{sent}");
    let refused = helpers::wait_delivery_until(&c, id_of(&sent), "an attempt", |d| {
        d["attempt_log"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let response = &refused["attempt_log"][0]["response"];
    assert_eq!(
        response["body"], "invalid credentials: ••••••••cdef",
        "{refused:#}"
    );
    assert_eq!(
        header_in(&response["headers"], "x-echo"),
        Some("invalid credentials: ••••••••cdef")
    );
    assert!(!refused.to_string().contains("0123456789"), "{refused}");
}
