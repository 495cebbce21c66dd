//! A node that shuts down hands back the work it will not finish: attempts
//! still in flight after a short grace are abandoned unrecorded and their
//! leases released, so the next node sends them at once instead of waiting
//! for the leases to expire.

use std::time::Duration;

use crate::common::delivery_helpers as helpers;
use crate::common::receiver;
use helpers::{deliveries, wait_delivery, webhook};
use receiver::{Behavior, Receiver};

#[tokio::test]
async fn shutdown_hands_back_the_leases_of_abandoned_attempts() {
    let rx = Receiver::start().await;
    rx.set("/slow", Behavior::Hang(Duration::from_secs(300)));
    // A long timeout makes a long lease (2 × timeout + 10 s = 250 s): far
    // longer than this test waits, so only a handed-back lease lets the
    // delivery go out again after the restart.
    let mut server = helpers::server(|c| c.delivery_timeout = "120s".to_owned()).await;
    let mut c = server.account("acme").await;
    let hook = webhook(&c, "slow", &rx.url("/slow"), &["contact.created"]).await;
    c.contact("ada").await;
    rx.wait_for_path("/slow", 1, helpers::DEADLINE).await;

    // The attempt is hanging; stop the node and start another on the same
    // database, now with the endpoint answering.
    rx.set("/slow", Behavior::Ok);
    server.restart_with(|_| {}).await;
    c.base = server.base.clone();

    let listed = deliveries(&c, &hook.id, None).await;
    assert_eq!(listed.len(), 1);
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    // Within the helpers' 10 s deadline, far inside the lease.
    let done = wait_delivery(&c, &id, "succeeded").await;
    assert_eq!(
        done["attempts"], 1,
        "the abandoned attempt is not recorded: {done}"
    );
    let log = done["attempt_log"].as_array().expect("the attempt log");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["succeeded"], true);
    // The receiver saw the abandoned request and the one that succeeded.
    assert_eq!(rx.count_to("/slow"), 2);
}
