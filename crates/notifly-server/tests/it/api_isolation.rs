//! Accounts see only their own data: another account's id answers 404 on
//! every route, lists and the event log never show it, and creates cannot
//! reference it.

use crate::common::{Client, TestServer, assert_invalid, id_of, ids};
use reqwest::Method;
use serde_json::{Value, json};

/// One of everything, in one account.
struct World {
    contact: String,
    /// A contact without a conversation, in no group.
    loner: String,
    conversation: String,
    group_conversation: String,
    message: String,
    group: String,
    attachment: String,
}

impl World {
    async fn build(c: &Client, tag: &str) -> World {
        let contact = c.contact(&format!("{tag}-contact")).await;
        let loner = c.contact(&format!("{tag}-loner")).await;
        let conversation = c.conversation_with(id_of(&contact)).await;
        let message = c
            .message(id_of(&conversation), &format!("{tag} says hi"))
            .await;
        let attachment = c.attachment(id_of(&message), &format!("{tag}.txt")).await;
        let group = c.group(&format!("{tag}-group"), &[id_of(&contact)]).await;
        let (status, group_conversation) = c
            .post("/v1/conversations", json!({"group_id": id_of(&group)}))
            .await;
        assert_eq!(status, 201, "{group_conversation}");
        World {
            contact: id_of(&contact).to_owned(),
            loner: id_of(&loner).to_owned(),
            conversation: id_of(&conversation).to_owned(),
            group_conversation: id_of(&group_conversation).to_owned(),
            message: id_of(&message).to_owned(),
            group: id_of(&group).to_owned(),
            attachment: id_of(&attachment).to_owned(),
        }
    }

    fn ids(&self) -> Vec<&str> {
        vec![
            &self.contact,
            &self.loner,
            &self.conversation,
            &self.group_conversation,
            &self.message,
            &self.group,
            &self.attachment,
        ]
    }

    /// The path of every object.
    fn resources(&self) -> Vec<String> {
        vec![
            format!("/v1/contacts/{}", self.contact),
            format!("/v1/contacts/{}", self.loner),
            format!("/v1/conversations/{}", self.conversation),
            format!("/v1/conversations/{}", self.group_conversation),
            format!("/v1/messages/{}", self.message),
            format!("/v1/groups/{}", self.group),
            format!("/v1/attachments/{}", self.attachment),
        ]
    }

    /// Everything the owner can read, to prove it did not change.
    async fn state(&self, c: &Client) -> Vec<Value> {
        let mut out = Vec::new();
        for path in self.resources() {
            let (status, body) = c.get(&path).await;
            assert_eq!(status, 200, "{path}: {body}");
            out.push(body);
        }
        let reply = c
            .send_raw(c.request(
                Method::GET,
                &format!("/v1/attachments/{}/content", self.attachment),
            ))
            .await;
        assert_eq!(reply.status, 200);
        out.push(json!(String::from_utf8_lossy(&reply.bytes)));
        out.extend(c.events().await);
        out
    }
}

async fn two_accounts() -> (TestServer, Client, World, Client, World) {
    let server = TestServer::start().await;
    let a = server.account("alpha").await;
    let b = server.account("bravo").await;
    let wa = World::build(&a, "alpha").await;
    let wb = World::build(&b, "bravo").await;
    (server, a, wa, b, wb)
}

#[tokio::test]
async fn another_accounts_ids_are_404_on_every_route() {
    let (server, a, _wa, b, wb) = two_accounts().await;
    let b_state = wb.state(&b).await;
    let b_events = ids(&b.events().await);
    let before = server.counts().await;

    let mut paths = wb.resources();
    paths.push(format!("/v1/attachments/{}/content", wb.attachment));
    for path in &paths {
        assert_invalid(&a.get(path).await, 404);
    }
    for path in wb.resources() {
        assert_invalid(&a.put(&path, json!({})).await, 404);
        assert_invalid(&a.delete(&path).await, 404);
    }
    // Updates that would change something, too.
    for (path, body) in [
        (
            format!("/v1/contacts/{}", wb.contact),
            json!({"display_name": "pwned"}),
        ),
        (
            format!("/v1/conversations/{}", wb.conversation),
            json!({"is_muted": true}),
        ),
        (
            format!("/v1/messages/{}", wb.message),
            json!({"message": "pwned"}),
        ),
        (format!("/v1/groups/{}", wb.group), json!({"name": "pwned"})),
        (
            format!("/v1/attachments/{}", wb.attachment),
            json!({"filename": "pwned"}),
        ),
    ] {
        assert_invalid(&a.put(&path, body).await, 404);
    }
    for id in &b_events {
        assert_invalid(&a.get(&format!("/v1/events/{id}")).await, 404);
    }
    // The 404 says no more than an unknown id's would.
    let (_, theirs) = a.get(&format!("/v1/contacts/{}", wb.contact)).await;
    let (_, unknown) = a.get("/v1/contacts/ZZZZZZZZZZZZZZZZ").await;
    assert_eq!(
        theirs["message"]
            .as_str()
            .unwrap()
            .replace(&wb.contact, "ID"),
        unknown["message"]
            .as_str()
            .unwrap()
            .replace("ZZZZZZZZZZZZZZZZ", "ID"),
    );

    assert_eq!(server.counts().await, before, "nothing was written");
    assert_eq!(wb.state(&b).await, b_state, "bravo's data is untouched");
}

#[tokio::test]
async fn lists_and_the_event_log_show_only_the_accounts_own_data() {
    let (_server, a, wa, b, wb) = two_accounts().await;
    for (me, mine, them, theirs) in [(&a, &wa, &b, &wb), (&b, &wb, &a, &wa)] {
        let lists = [
            ("/v1/contacts", vec![&mine.loner, &mine.contact]),
            (
                "/v1/conversations",
                vec![&mine.group_conversation, &mine.conversation],
            ),
            ("/v1/messages", vec![&mine.message]),
            ("/v1/groups", vec![&mine.group]),
            ("/v1/attachments", vec![&mine.attachment]),
        ];
        for (path, want) in lists {
            let got = me.list_all(path).await;
            let want: Vec<String> = want.into_iter().cloned().collect();
            assert_eq!(ids(&got), want, "{path}");
            let text = serde_json::to_string(&got).unwrap();
            for id in theirs.ids() {
                assert!(!text.contains(id), "{path} shows the other account's {id}");
            }
        }
        let events = me.events().await;
        assert!(!events.is_empty());
        let text = serde_json::to_string(&events).unwrap();
        for id in theirs.ids() {
            assert!(
                !text.contains(id),
                "the event log shows the other account's {id}"
            );
        }
        for id in mine.ids() {
            assert!(text.contains(id), "the event log mentions {id}");
        }
        // Filters naming the other account's objects find nothing.
        for path in [
            format!("/v1/messages?conversation_id={}", theirs.conversation),
            format!("/v1/attachments?message_id={}", theirs.message),
            format!("/v1/conversations?group_id={}", theirs.group),
        ] {
            assert_eq!(me.list_all(&path).await, Vec::<Value>::new(), "{path}");
        }
        // Cursors naming the other account's objects are unknown cursors: a
        // reference to an id that does not exist here (422).
        for path in [
            format!("/v1/contacts?starting_after={}", theirs.contact),
            format!("/v1/contacts?ending_before={}", theirs.loner),
            format!("/v1/conversations?starting_after={}", theirs.conversation),
            format!("/v1/messages?ending_before={}", theirs.message),
            format!("/v1/groups?starting_after={}", theirs.group),
            format!("/v1/attachments?starting_after={}", theirs.attachment),
        ] {
            assert_invalid(&me.get(&path).await, 422);
        }
        let their_event = ids(&them.events().await)[0].clone();
        assert_invalid(
            &me.get(&format!("/v1/events?starting_after={their_event}"))
                .await,
            422,
        );
    }
}

#[tokio::test]
async fn creates_cannot_reference_another_accounts_objects() {
    let (server, a, wa, b, wb) = two_accounts().await;
    let b_state = wb.state(&b).await;
    let cases = vec![
        ("/v1/conversations", json!({"contact_id": wb.loner})),
        ("/v1/conversations", json!({"group_id": wb.group})),
        (
            "/v1/messages",
            json!({"conversation_id": wb.conversation, "message": "hi"}),
        ),
        (
            "/v1/messages",
            json!({"conversation_id": wa.conversation, "message": "hi", "contact_id": wb.contact}),
        ),
        (
            "/v1/groups",
            json!({"name": "mixed", "contacts": [wa.contact, wb.contact]}),
        ),
    ];
    for (path, body) in cases {
        let before = server.counts().await;
        let got = a.post(path, body.clone()).await;
        assert!(
            (400..500).contains(&got.0) && got.0 != 404,
            "{path} {body}: {got:?}"
        );
        assert_invalid(&got, got.0);
        assert_eq!(server.counts().await, before, "{path} {body}");
    }
    // An upload to another account's message.
    let before = server.counts().await;
    let files = server.attachment_files();
    let got = a.upload(&wb.message, "x.txt", "text/plain", b"x").await;
    assert_invalid(&got, 422);
    assert_eq!(server.counts().await, before);
    assert_eq!(server.attachment_files(), files);
    // Updates that would point at another account's objects.
    for (path, body) in [
        (
            format!("/v1/conversations/{}", wa.conversation),
            json!({"pinned_message_id": wb.message}),
        ),
        (
            format!("/v1/groups/{}", wa.group),
            json!({"contacts": [wb.contact]}),
        ),
        (
            format!("/v1/messages/{}", wa.message),
            json!({"reactions": [{"contact_id": wb.contact, "emoji": "👍"}]}),
        ),
    ] {
        let before = server.counts().await;
        assert_invalid(&a.put(&path, body).await, 422);
        assert_eq!(server.counts().await, before, "{path}");
    }
    assert_eq!(wb.state(&b).await, b_state);
}

#[tokio::test]
async fn deleting_in_one_account_leaves_the_other_alone() {
    let (server, a, wa, b, wb) = two_accounts().await;
    let b_state = wb.state(&b).await;
    for path in [
        format!("/v1/attachments/{}", wa.attachment),
        format!("/v1/groups/{}", wa.group),
        format!("/v1/conversations/{}", wa.conversation),
        format!("/v1/contacts/{}", wa.contact),
        format!("/v1/contacts/{}", wa.loner),
    ] {
        let (status, body) = a.delete(&path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    for table in [
        "contacts",
        "conversations",
        "messages",
        "groups",
        "attachments",
    ] {
        assert_eq!(server.count_for(table, &a.account_id).await, 0, "{table}");
        assert!(server.count_for(table, &b.account_id).await > 0, "{table}");
    }
    assert_eq!(wb.state(&b).await, b_state);
}
