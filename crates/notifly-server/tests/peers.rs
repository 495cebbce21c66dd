//! Nodes on one PostgreSQL database hear of each other's commits
//! (`Store::announce` → `Store::follow`, LISTEN/NOTIFY), and two in-process
//! servers on one database stream each other's events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{POSTGRES_ENV, PgTestDb};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

fn admin_url() -> String {
    std::env::var(POSTGRES_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{POSTGRES_ENV} is not set: this test needs PostgreSQL"))
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run with NOTIFLY_TEST_POSTGRES_URL set and --include-ignored"]
async fn a_node_hears_another_nodes_announcements() {
    let (_db, url) = PgTestDb::create(&admin_url()).await;
    let one = notifly_server::open_store(&url).await.unwrap();
    let two = notifly_server::open_store(&url).await.unwrap();
    let heard = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let follower = {
        let (two, heard, stop) = (two.clone(), heard.clone(), stop.clone());
        tokio::spawn(async move {
            two.follow(Box::new(move || heard.notify_one()), stop).await;
        })
    };
    // Following starts with one call (whatever was announced before LISTEN
    // took effect is looked for once).
    tokio::time::timeout(Duration::from_secs(10), heard.notified())
        .await
        .expect("the follower starts by looking once");
    // Announce until heard: LISTEN may take effect just after the first look.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        one.announce().await.unwrap();
        if tokio::time::timeout(Duration::from_millis(200), heard.notified())
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the announcement was never heard"
        );
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("following stops when cancelled")
        .unwrap();
    one.close().await;
    two.close().await;
}
