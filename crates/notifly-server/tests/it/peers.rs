//! Nodes on one PostgreSQL database hear of each other's commits:
//! `Store::announce` on one is heard through `Store::follow` on another
//! (LISTEN/NOTIFY), with whether the writes left work for a claim, and a
//! node does not hear itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{POSTGRES_ENV, PgTestDb};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn admin_url() -> String {
    std::env::var(POSTGRES_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{POSTGRES_ENV} is not set: this test needs PostgreSQL"))
}

/// Waits until `heard` exceeds `n`; fails the test after 10 s.
async fn heard_more_than(heard: &AtomicUsize, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = heard.load(Ordering::SeqCst);
        if now > n {
            return now;
        }
        assert!(Instant::now() < deadline, "nothing was heard");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run with NOTIFLY_TEST_POSTGRES_URL set and --include-ignored"]
async fn a_node_hears_other_nodes_and_not_itself() {
    let (_db, url) = PgTestDb::create(&admin_url()).await;
    let one = notifly_server::open_store(&url).await.unwrap();
    let two = notifly_server::open_store(&url).await.unwrap();
    let heard = Arc::new(AtomicUsize::new(0));
    let claimable = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let follower = {
        let (two, heard, claimable, stop) =
            (two.clone(), heard.clone(), claimable.clone(), stop.clone());
        tokio::spawn(async move {
            two.follow(
                Box::new(move |claim| {
                    claimable.fetch_add(usize::from(claim), Ordering::SeqCst);
                    heard.fetch_add(1, Ordering::SeqCst);
                }),
                stop,
            )
            .await;
        })
    };
    // Following starts, once LISTEN is in effect, with one call: whatever
    // was announced before it is looked for then.
    let started = heard_more_than(&heard, 0).await;
    let claims_at_start = claimable.load(Ordering::SeqCst);

    // Its own announcements are not news to a node.
    two.announce(true).await.unwrap();
    // Another node's are, once each (the one after ours proves ours arrived
    // first and was skipped: notifications come in order), with whether
    // they left work to claim.
    one.announce(false).await.unwrap();
    let after = heard_more_than(&heard, started).await;
    assert_eq!(after, started + 1, "heard its own announcement");
    assert_eq!(claimable.load(Ordering::SeqCst), claims_at_start);
    one.announce(true).await.unwrap();
    heard_more_than(&heard, after).await;
    assert_eq!(claimable.load(Ordering::SeqCst), claims_at_start + 1);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("following stops when cancelled")
        .unwrap();
    one.close().await;
    two.close().await;
}
