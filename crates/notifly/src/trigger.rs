//! `notifly trigger TYPE`: makes a realistic event of any type happen on a
//! server, by creating (and then changing or deleting) what it needs through
//! the API.

use clap::Args;
use notifly_webhooks::{Action, EventType, ResourceKind};
use serde_json::{Value, json};

use crate::client::{Api, ServerArgs};

/// The valid types, for `--help` and for errors.
pub const TYPES_HELP: &str = "Event types:
  contact.created       contact.updated       contact.deleted
  conversation.created  conversation.updated  conversation.deleted
  message.created       message.updated       message.deleted
  group.created         group.updated         group.deleted
  attachment.created    attachment.updated    attachment.deleted";

#[derive(Debug, Args)]
#[command(after_help = TYPES_HELP)]
pub struct TriggerArgs {
    /// The event type to make happen, e.g. message.created.
    #[arg(value_parser = parse_type)]
    event_type: EventType,
    #[command(flatten)]
    server: ServerArgs,
}

fn parse_type(s: &str) -> Result<EventType, String> {
    s.parse()
        .map_err(|_| format!("unknown event type `{s}`\n\n{TYPES_HELP}"))
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

/// Builds the resources an event needs, printing each step.
struct Scenario {
    api: Api,
    tag: String,
}

impl Scenario {
    async fn contact(&self) -> anyhow::Result<Value> {
        let c = self
            .api
            .post(
                "/v1/contacts",
                &json!({
                    "username": format!("kevin_{}", self.tag),
                    "phone_number": "1-800-759-3000",
                    "display_name": "Kevin McCallister",
                    "avatar_url": "https://assets.notifly.chat/avatars/kevin.jpg",
                }),
            )
            .await?;
        println!("  created contact {} (contact.created)", id(&c));
        Ok(c)
    }

    async fn conversation(&self, contact: &Value) -> anyhow::Result<Value> {
        let c = self
            .api
            .post("/v1/conversations", &json!({"contact_id": id(contact)}))
            .await?;
        println!(
            "  created conversation {} (conversation.created, contact.updated)",
            id(&c)
        );
        Ok(c)
    }

    async fn message(&self) -> anyhow::Result<Value> {
        let contact = self.contact().await?;
        let conversation = self.conversation(&contact).await?;
        let m = self
            .api
            .post(
                "/v1/messages",
                &json!({
                    "conversation_id": id(&conversation),
                    "contact_id": id(&contact),
                    "message": "I’m traveling with my dad. He’s at a meeting. I hate meetings.",
                }),
            )
            .await?;
        println!("  created message {} (message.created)", id(&m));
        Ok(m)
    }

    async fn group(&self) -> anyhow::Result<Value> {
        let contact = self.contact().await?;
        let g = self
            .api
            .post(
                "/v1/groups",
                &json!({
                    "name": format!("McCallister family {}", self.tag),
                    "description": "Paris trip planning",
                    "contacts": [id(&contact)],
                }),
            )
            .await?;
        println!("  created group {} (group.created)", id(&g));
        Ok(g)
    }

    async fn attachment(&self) -> anyhow::Result<Value> {
        let message = self.message().await?;
        let form = reqwest::multipart::Form::new()
            .text("message_id", id(&message))
            .part(
                "file",
                reqwest::multipart::Part::bytes(
                    b"Flight AA 1402, Chicago O'Hare to Paris CDG".to_vec(),
                )
                .file_name("itinerary.txt")
                .mime_str("text/plain")?,
            );
        let a = self
            .api
            .send(
                self.api
                    .request(reqwest::Method::POST, "/v1/attachments")
                    .multipart(form),
            )
            .await?;
        println!(
            "  uploaded attachment {} (attachment.created, message.updated)",
            id(&a)
        );
        Ok(a)
    }

    /// Makes `t` happen; returns the id of the resource it is about.
    async fn run(&self, t: EventType) -> anyhow::Result<String> {
        let (path, resource) = match t.resource() {
            ResourceKind::Contact => ("contacts", self.contact().await?),
            ResourceKind::Conversation => (
                "conversations",
                self.conversation(&self.contact().await?).await?,
            ),
            ResourceKind::Message => ("messages", self.message().await?),
            ResourceKind::Group => ("groups", self.group().await?),
            ResourceKind::Attachment => ("attachments", self.attachment().await?),
        };
        let rid = id(&resource);
        let target = format!("/v1/{path}/{rid}");
        match t.action() {
            Action::Created => {}
            Action::Updated => {
                let change = match t.resource() {
                    ResourceKind::Contact => json!({"display_name": "Kevin (home alone)"}),
                    ResourceKind::Conversation => json!({"is_pinned": true}),
                    ResourceKind::Message => {
                        json!({"message": "I’m traveling with my dad. (edited)"})
                    }
                    ResourceKind::Group => json!({"description": "Paris trip, take two"}),
                    ResourceKind::Attachment => json!({"filename": "itinerary-final.txt"}),
                };
                self.api.put(&target, &change).await?;
                println!("  updated {} {rid} ({t})", t.resource());
            }
            Action::Deleted => {
                self.api.delete(&target).await?;
                println!("  deleted {} {rid} ({t})", t.resource());
            }
        }
        Ok(rid)
    }
}

pub async fn run(args: TriggerArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.server)?;
    // A tag that keeps this run's usernames unique: the random end of an id
    // (its start is the time, shared by runs close together).
    let id = notifly_server::ids::new_id();
    let tag = id[id.len() - 6..].to_owned();
    println!("Triggering {} on {}", args.event_type, api.base);
    let scenario = Scenario { api, tag };
    let rid = scenario.run(args.event_type).await?;
    println!("Done: {} happened for {rid}.", args.event_type);
    Ok(())
}
