//! Cursor pagination: `limit`, `starting_after`, `ending_before`, `has_more`,
//! and the list filters.

use std::collections::HashSet;

use crate::common::{Client, TestServer, UNKNOWN_ID, assert_invalid, id_of, ids, message_of};
use serde_json::{Value, json};

/// One page: its ids and `has_more`.
async fn page(c: &Client, path: &str) -> (Vec<String>, bool) {
    let (status, body) = c.get(path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    let obj = body.as_object().expect("a list is an object");
    assert_eq!(obj.len(), 2, "a list has exactly has_more and data: {body}");
    let data = body["data"].as_array().expect("data is an array");
    (ids(data), body["has_more"].as_bool().expect("has_more"))
}

fn join(path: &str, query: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{query}")
}

/// Walks `path` in both directions with `limit` and checks the pages against
/// `expected` (every id of the list, newest first).
async fn walk(c: &Client, path: &str, limit: usize, expected: &[String]) {
    assert!(expected.len() > limit, "walk needs more than one page");

    // Forwards (towards older items) from the start.
    let mut got: Vec<String> = Vec::new();
    let (mut items, mut has_more) = page(c, &join(path, &format!("limit={limit}"))).await;
    loop {
        assert!(items.len() <= limit, "page longer than the limit");
        let end = got.len() + items.len();
        assert_eq!(
            has_more,
            end < expected.len(),
            "has_more forwards after {end} of {} items",
            expected.len()
        );
        got.extend(items.iter().cloned());
        if !has_more {
            break;
        }
        assert_eq!(items.len(), limit, "a full page before the end");
        let last = items.last().unwrap().clone();
        (items, has_more) = page(
            c,
            &join(path, &format!("limit={limit}&starting_after={last}")),
        )
        .await;
    }
    assert_eq!(
        got, expected,
        "forward walk: no duplicates, no gaps, newest first"
    );

    // Backwards (towards newer items) from the oldest one.
    let oldest = expected.last().unwrap().clone();
    let mut got: Vec<String> = vec![oldest.clone()];
    let mut before = oldest;
    loop {
        let (items, has_more) = page(
            c,
            &join(path, &format!("limit={limit}&ending_before={before}")),
        )
        .await;
        assert!(!items.is_empty(), "an empty page while walking backwards");
        assert!(items.len() <= limit);
        let mut next = items.clone();
        next.extend(got);
        got = next;
        assert_eq!(
            has_more,
            got.len() < expected.len(),
            "has_more backwards with {} of {} items seen",
            got.len(),
            expected.len()
        );
        if !has_more {
            break;
        }
        before = items.first().unwrap().clone();
    }
    assert_eq!(got, expected, "backward walk: no duplicates, no gaps");

    // Both ends.
    let newest = &expected[0];
    let oldest = expected.last().unwrap();
    assert_eq!(
        page(c, &join(path, &format!("ending_before={newest}"))).await,
        (vec![], false),
        "nothing is newer than the newest"
    );
    assert_eq!(
        page(c, &join(path, &format!("starting_after={oldest}"))).await,
        (vec![], false),
        "nothing is older than the oldest"
    );
    // A page that ends exactly at the end says so.
    let n = expected.len();
    let (items, has_more) = page(
        c,
        &join(
            path,
            &format!("limit={limit}&starting_after={}", expected[n - limit - 1]),
        ),
    )
    .await;
    assert_eq!(items, expected[n - limit..].to_vec());
    assert!(!has_more);
    let (items, has_more) = page(
        c,
        &join(
            path,
            &format!("limit={limit}&ending_before={}", expected[limit]),
        ),
    )
    .await;
    assert_eq!(items, expected[..limit].to_vec());
    assert!(!has_more);
}

#[tokio::test]
async fn limit_defaults_to_10_and_goes_up_to_100() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let mut created = Vec::new();
    for i in 0..101 {
        created.push(id_of(&c.group(&format!("g{i}"), &[]).await).to_owned());
    }
    created.reverse();

    let (items, has_more) = page(&c, "/v1/groups").await;
    assert_eq!(items, created[..10].to_vec(), "default: the 10 newest");
    assert!(has_more);
    let (items, has_more) = page(&c, "/v1/groups?limit=100").await;
    assert_eq!(items, created[..100].to_vec());
    assert!(has_more);
    let (items, has_more) = page(&c, "/v1/groups?limit=1").await;
    assert_eq!(items, created[..1].to_vec());
    assert!(has_more);
    let (items, has_more) = page(
        &c,
        &format!("/v1/groups?limit=100&starting_after={}", created[0]),
    )
    .await;
    assert_eq!(items, created[1..].to_vec());
    assert!(!has_more);

    // The event log pages the same way.
    let (items, has_more) = page(&c, "/v1/events").await;
    assert_eq!(items.len(), 10);
    assert!(has_more);
    let (items, has_more) = page(&c, "/v1/events?limit=100").await;
    assert_eq!(items.len(), 100);
    assert!(has_more);
}

#[tokio::test]
async fn every_list_walks_both_ways_without_duplicates_or_gaps() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let n = 25;

    let mut contacts = Vec::new();
    let mut conversations = Vec::new();
    for i in 0..n {
        let contact = c.contact(&format!("contact{i}")).await;
        let conv = c.conversation_with(id_of(&contact)).await;
        contacts.push(id_of(&contact).to_owned());
        conversations.push(id_of(&conv).to_owned());
    }
    let conv0 = conversations[0].clone();
    let mut messages = Vec::new();
    for i in 0..n {
        messages.push(id_of(&c.message(&conv0, &format!("m{i}")).await).to_owned());
    }
    let mut attachments = Vec::new();
    for i in 0..n {
        let a = c.attachment(&messages[0], &format!("f{i}.txt")).await;
        attachments.push(id_of(&a).to_owned());
    }
    let mut groups = Vec::new();
    for i in 0..n {
        groups.push(id_of(&c.group(&format!("g{i}"), &[]).await).to_owned());
    }
    for list in [
        &mut contacts,
        &mut conversations,
        &mut messages,
        &mut attachments,
        &mut groups,
    ] {
        list.reverse();
    }
    let mut events = ids(&c.events().await);
    events.reverse();

    walk(&c, "/v1/contacts", 7, &contacts).await;
    walk(&c, "/v1/conversations", 7, &conversations).await;
    walk(&c, "/v1/messages", 7, &messages).await;
    walk(&c, "/v1/attachments", 7, &attachments).await;
    walk(&c, "/v1/groups", 7, &groups).await;
    walk(&c, "/v1/events", 7, &events).await;
    // A limit that divides the list evenly.
    walk(&c, "/v1/contacts", 5, &contacts).await;
    // Filtered lists page too.
    walk(
        &c,
        &format!("/v1/messages?conversation_id={conv0}"),
        4,
        &messages,
    )
    .await;
    walk(
        &c,
        &format!("/v1/attachments?message_id={}", messages[n - 1]),
        4,
        &attachments,
    )
    .await;
    let mut created = ids(&c.list_all("/v1/events?type=contact.created").await);
    assert_eq!(created.len(), n);
    walk(&c, "/v1/events?type=contact.created", 6, &created).await;
    created.reverse();
    let all_events = c.events().await;
    let from_log: Vec<String> = all_events
        .iter()
        .filter(|e| e["type"] == "contact.created")
        .map(|e| id_of(e).to_owned())
        .collect();
    assert_eq!(created, from_log);
}

#[tokio::test]
async fn bad_pagination_parameters_are_refused() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let g1 = c.group("one", &[]).await;
    let g2 = c.group("two", &[]).await;
    let contact = c.contact("kevin").await;
    let (a, b) = (id_of(&g1), id_of(&g2));

    for path in [
        "/v1/contacts",
        "/v1/conversations",
        "/v1/messages",
        "/v1/groups",
        "/v1/attachments",
        "/v1/events",
    ] {
        for query in ["limit=0", "limit=101", "limit=abc", "limit=-1", "limit="] {
            let got = c.get(&format!("{path}?{query}")).await;
            assert_invalid(&got, 400);
            assert!(
                message_of(&got.1).contains("limit"),
                "{path}?{query}: the message names the parameter: {}",
                got.1
            );
            let message = message_of(&got.1);
            assert!(
                message.matches("query string").count() <= 1
                    && !message.contains("Failed to deserialize"),
                "{path}?{query}: one plain message, not a prefix twice: {message}"
            );
        }
        let got = c
            .get(&format!("{path}?starting_after={a}&ending_before={b}"))
            .await;
        assert_invalid(&got, 400);
        for cursor in ["starting_after", "ending_before"] {
            for (bad, status) in [("abc", 400), ("not-an-id-at-all!", 400), (UNKNOWN_ID, 422)] {
                // A malformed id is a bad parameter; a well-formed one that
                // names nothing is a reference to a missing id.
                let got = c.get(&format!("{path}?{cursor}={bad}")).await;
                assert_invalid(&got, status);
                assert!(
                    message_of(&got.1).contains(cursor),
                    "{path}?{cursor}={bad}: the message names the cursor: {}",
                    got.1
                );
            }
        }
        assert_invalid(&c.get(&format!("{path}?page=2")).await, 400);
    }
    // A cursor must be an item of the list itself.
    assert_invalid(
        &c.get(&format!("/v1/contacts?starting_after={a}")).await,
        422,
    );
    assert_invalid(
        &c.get(&format!("/v1/groups?ending_before={}", id_of(&contact)))
            .await,
        422,
    );
    // Valid cursors work.
    let (status, body) = c.get(&format!("/v1/groups?starting_after={b}")).await;
    assert_eq!(status, 200);
    assert_eq!(ids(body["data"].as_array().unwrap()), vec![a.to_owned()]);
}

#[tokio::test]
async fn conversation_filters() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let plain = c.conversation("plain").await;
    let contact = c.contact("muted").await;
    let (_, muted) = c
        .post(
            "/v1/conversations",
            json!({"contact_id": id_of(&contact), "is_muted": true}),
        )
        .await;
    let contact = c.contact("pinned").await;
    let (_, pinned) = c
        .post(
            "/v1/conversations",
            json!({"contact_id": id_of(&contact), "is_pinned": true}),
        )
        .await;
    let archived = c.conversation("archived").await;
    let (status, _) = c
        .put(
            &format!("/v1/conversations/{}", id_of(&archived)),
            json!({"archived": true}),
        )
        .await;
    assert_eq!(status, 200);
    let group = c.group("family", &[]).await;
    let (_, grouped) = c
        .post("/v1/conversations", json!({"group_id": id_of(&group)}))
        .await;
    let other_group = c.group("friends", &[]).await;

    let list = |query: &'static str| {
        let c = c.clone();
        async move { ids(&c.list_all(&format!("/v1/conversations?{query}")).await) }
    };
    let id = |v: &Value| id_of(v).to_owned();
    assert_eq!(list("muted=true").await, vec![id(&muted)]);
    assert_eq!(
        list("muted=false").await,
        vec![id(&grouped), id(&archived), id(&pinned), id(&plain)]
    );
    assert_eq!(list("pinned=true").await, vec![id(&pinned)]);
    assert_eq!(list("archived=true").await, vec![id(&archived)]);
    assert_eq!(
        list("archived=false").await,
        vec![id(&grouped), id(&pinned), id(&muted), id(&plain)]
    );
    assert_eq!(list("muted=true&pinned=true").await, Vec::<String>::new());
    assert_eq!(list("muted=false&archived=false&pinned=false").await, {
        vec![id(&grouped), id(&plain)]
    });
    assert_eq!(
        ids(&c
            .list_all(&format!("/v1/conversations?group_id={}", id_of(&group)))
            .await),
        vec![id(&grouped)]
    );
    assert_eq!(
        ids(&c
            .list_all(&format!(
                "/v1/conversations?group_id={}",
                id_of(&other_group)
            ))
            .await),
        Vec::<String>::new()
    );
    // Pages of a filtered list.
    let (items, has_more) = page(&c, "/v1/conversations?archived=false&limit=2").await;
    assert_eq!(items, vec![id(&grouped), id(&pinned)]);
    assert!(has_more);
    let (items, has_more) = page(
        &c,
        &format!(
            "/v1/conversations?archived=false&limit=2&starting_after={}",
            id(&pinned)
        ),
    )
    .await;
    assert_eq!(items, vec![id(&muted), id(&plain)]);
    assert!(!has_more);

    for bad in ["muted=yes", "archived=1x", "pinned=", "color=red"] {
        assert_invalid(&c.get(&format!("/v1/conversations?{bad}")).await, 400);
    }
}

#[tokio::test]
async fn message_attachment_and_event_filters() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let conv_a = c.conversation("a").await;
    let conv_b = c.conversation("b").await;
    let a1 = c.message(id_of(&conv_a), "a1").await;
    let b1 = c.message(id_of(&conv_b), "b1").await;
    let a2 = c.message(id_of(&conv_a), "a2").await;
    let f1 = c.attachment(id_of(&a1), "f1").await;
    let f2 = c.attachment(id_of(&b1), "f2").await;
    let f3 = c.attachment(id_of(&a1), "f3").await;

    let listed = |path: String| {
        let c = c.clone();
        async move { ids(&c.list_all(&path).await) }
    };
    let id = |v: &Value| id_of(v).to_owned();
    assert_eq!(
        listed(format!("/v1/messages?conversation_id={}", id_of(&conv_a))).await,
        vec![id(&a2), id(&a1)]
    );
    assert_eq!(
        listed(format!("/v1/messages?conversation_id={}", id_of(&conv_b))).await,
        vec![id(&b1)]
    );
    assert_eq!(
        listed(format!("/v1/messages?conversation_id={UNKNOWN_ID}")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        listed(format!("/v1/attachments?message_id={}", id_of(&a1))).await,
        vec![id(&f3), id(&f1)]
    );
    assert_eq!(
        listed(format!("/v1/attachments?message_id={}", id_of(&b1))).await,
        vec![id(&f2)]
    );
    assert_eq!(
        listed(format!("/v1/attachments?message_id={}", id_of(&a2))).await,
        Vec::<String>::new()
    );

    // Events by type: exactly the events of that type, newest first.
    let all = c.list_all("/v1/events").await;
    for t in [
        "contact.created",
        "contact.updated",
        "conversation.created",
        "message.created",
        "message.updated",
        "attachment.created",
        "group.deleted",
    ] {
        let want: Vec<String> = all
            .iter()
            .filter(|e| e["type"] == t)
            .map(|e| id_of(e).to_owned())
            .collect();
        let got = c.list_all(&format!("/v1/events?type={t}")).await;
        assert!(got.iter().all(|e| e["type"] == t), "{t}");
        assert_eq!(ids(&got), want, "{t}");
    }
    assert_eq!(
        c.list_all("/v1/events?type=attachment.created").await.len(),
        3
    );
    for bad in ["contact", "contact.archived", "Contact.created", "", "*"] {
        let got = c.get(&format!("/v1/events?type={bad}")).await;
        assert_invalid(&got, 400);
        assert!(message_of(&got.1).contains("type"), "type={bad}: {}", got.1);
    }
}

/// Items created while a client pages do not shift the pages: walking towards
/// older items sees exactly the items that existed, and walking towards newer
/// items sees the new ones once, at the newest end.
#[tokio::test]
async fn pages_are_stable_under_concurrent_inserts() {
    let server = TestServer::start().await;
    let c = server.account("acme").await;
    let mut existing = Vec::new();
    for i in 0..20 {
        existing.push(id_of(&c.contact(&format!("old{i}")).await).to_owned());
    }
    existing.reverse();

    // Forwards, with inserts between every page.
    let mut seen: Vec<String> = Vec::new();
    let mut added = 0;
    let (mut items, mut has_more) = page(&c, "/v1/contacts?limit=6").await;
    loop {
        seen.extend(items.iter().cloned());
        for _ in 0..3 {
            c.contact(&format!("new{added}")).await;
            added += 1;
        }
        if !has_more {
            break;
        }
        (items, has_more) = page(
            &c,
            &format!(
                "/v1/contacts?limit=6&starting_after={}",
                seen.last().unwrap()
            ),
        )
        .await;
    }
    assert_eq!(seen, existing, "the forward walk is the list as it was");

    // Backwards from the oldest, with inserts between every page.
    let before_walk: Vec<String> = ids(&c.list_all("/v1/contacts").await);
    let oldest = before_walk.last().unwrap().clone();
    let mut seen: Vec<String> = vec![oldest.clone()];
    let mut inserted_during: Vec<String> = Vec::new();
    let mut cursor = oldest;
    loop {
        let (items, has_more) =
            page(&c, &format!("/v1/contacts?limit=6&ending_before={cursor}")).await;
        let mut next = items.clone();
        next.extend(seen);
        seen = next;
        if !has_more {
            break;
        }
        cursor = items.first().unwrap().clone();
        if inserted_during.len() < 9 {
            for _ in 0..3 {
                let id =
                    id_of(&c.contact(&format!("during{}", inserted_during.len())).await).to_owned();
                inserted_during.push(id);
            }
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
    let mut expected = inserted_during.clone();
    expected.reverse();
    expected.extend(before_walk);
    assert_eq!(seen, expected, "every item once, newest first");

    // Concurrent writers while a reader pages through everything.
    let writer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..15 {
                c.contact(&format!("bg{i}")).await;
            }
        })
    };
    let snapshot_first = ids(&c.list_all("/v1/contacts").await);
    let unique: HashSet<&String> = snapshot_first.iter().collect();
    assert_eq!(unique.len(), snapshot_first.len(), "no duplicates");
    writer.await.unwrap();
    let all = ids(&c.list_all("/v1/contacts").await);
    assert_eq!(all.len(), 20 + added + inserted_during.len() + 15);
    // The reader saw a suffix of the final list: everything from the newest
    // item of its first page down to the oldest, each once.
    assert!(
        all.ends_with(&snapshot_first),
        "a walk under concurrent inserts is a contiguous slice of the list"
    );
}
