//! Messages, with their sender, reactions and attachments embedded.

use std::collections::HashSet;

use notifly_webhooks::{Action, ResourceKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::contacts::not_null;
use super::validate::{self, double_option};
use super::{
    Begun, DomainError, DomainResult, Idempotency, Notifly, attachments, emit, found, list_error,
    replay,
};
use crate::ids;
use crate::store::{
    Attachment, Conn, Contact, Listed, MessageRecord, NewMessage, Page, Reaction, WriteTx,
};

const KIND: &str = "message";

/// Longest message text, in characters.
pub const MAX_TEXT: usize = 10_000;
/// Most reactions on one message.
pub const MAX_REACTIONS: usize = 100;

/// A message as the REST API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Message {
    #[schema(example = "SIuAFUNKdSYHZF2w")]
    pub id: String,
    pub conversation_id: String,
    /// The sender; `null` for a message sent by the account itself.
    pub contact: Option<Contact>,
    #[schema(example = "I’m traveling with my dad. He’s at a meeting. I hate meetings.")]
    pub message: String,
    pub reactions: Vec<Reaction>,
    pub attachments: Vec<Attachment>,
    pub read_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Body of `POST /v1/messages`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMessage {
    #[schema(schema_with = validate::schema::id)]
    pub conversation_id: String,
    #[schema(schema_with = validate::schema::message)]
    pub message: String,
    /// The sender, a participant of the conversation. Absent: the account itself.
    #[schema(schema_with = validate::schema::id_nullable)]
    pub contact_id: Option<String>,
    #[schema(schema_with = validate::schema::timestamp)]
    #[serde(default, deserialize_with = "validate::whole_option")]
    pub read_at: Option<i64>,
}

/// A reaction in an update: who and what.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReactionInput {
    #[schema(schema_with = validate::schema::id)]
    pub contact_id: String,
    #[schema(schema_with = validate::schema::emoji)]
    pub emoji: String,
}

/// Body of `PUT /v1/messages/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMessage {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::message)]
    pub message: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::whole_double_option")]
    #[schema(schema_with = validate::schema::timestamp)]
    pub read_at: Option<Option<i64>>,
    /// Replaces the reactions (`null` removes them all); a reaction that was
    /// already there keeps its `created_at`.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = reactions_schema)]
    pub reactions: Option<Option<Vec<ReactionInput>>>,
}

/// At most [`MAX_REACTIONS`] distinct reactions, or `null`.
fn reactions_schema() -> utoipa::openapi::schema::Array {
    use utoipa::PartialSchema;
    use utoipa::openapi::schema::{ArrayBuilder, SchemaType, Type};
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(ReactionInput::schema())
        .max_items(Some(MAX_REACTIONS))
        .unique_items(true)
        .build()
}

fn text(value: &str) -> DomainResult<String> {
    validate::MESSAGE.check("message", value)
}

fn read_at(value: Option<i64>) -> DomainResult<Option<i64>> {
    value.map(|v| validate::timestamp("read_at", v)).transpose()
}

/// The REST representation of a stored message.
pub(crate) async fn represent(
    conn: &mut dyn Conn,
    account: &str,
    m: MessageRecord,
    public_url: &str,
) -> DomainResult<Message> {
    let contact = match &m.contact_id {
        Some(c) => conn.contact(account, c).await?,
        None => None,
    };
    let mut files = conn.attachments_of_message(account, &m.id).await?;
    for file in &mut files {
        attachments::fill_url(file, public_url);
    }
    Ok(Message {
        id: m.id,
        conversation_id: m.conversation_id,
        contact,
        message: m.message,
        reactions: m.reactions.0,
        attachments: files,
        read_at: m.read_at,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

impl Notifly {
    /// Creates a message and emits `message.created`.
    pub async fn create_message(
        &self,
        account: &str,
        input: CreateMessage,
        idempotency: Option<&Idempotency>,
    ) -> DomainResult<Message> {
        let conversation_id =
            validate::reference("conversation_id", "conversation", &input.conversation_id)?;
        let sender = input
            .contact_id
            .as_deref()
            .map(|c| validate::reference("contact_id", "contact", c))
            .transpose()?;
        let now = ids::now();
        let record = MessageRecord {
            id: ids::new_id(),
            conversation_id,
            contact_id: sender,
            message: text(&input.message)?,
            reactions: sqlx::types::Json(Vec::new()),
            read_at: read_at(input.read_at)?,
            created_at: now,
            updated_at: now,
        };
        let mut tx = match self.begin(account, idempotency).await? {
            Begun::Replay(body) => return replay(&body),
            Begun::Fresh(tx) => tx,
        };
        // The conversation and the sender are only referred to: writes of
        // other messages to them go on meanwhile.
        let sender = record.contact_id.as_deref().unwrap_or_default();
        let contact = match tx.insert_message_referring(account, &record).await? {
            NewMessage::Inserted { sender } => sender,
            NewMessage::NoConversation => {
                return Err(validate::missing(
                    "conversation_id",
                    "conversation",
                    &record.conversation_id,
                ));
            }
            NewMessage::NoSender => {
                return Err(validate::missing("contact_id", "contact", sender));
            }
            NewMessage::NotParticipant => {
                return Err(DomainError::Invalid(format!(
                    "contact_id: contact `{sender}` is not a participant of conversation `{}`",
                    record.conversation_id
                )));
            }
        };
        // A new message has no attachments yet, and its sender was just read:
        // no need to read either again.
        let message = Message {
            id: record.id,
            conversation_id: record.conversation_id,
            contact,
            message: record.message,
            reactions: record.reactions.0,
            attachments: Vec::new(),
            read_at: record.read_at,
            created_at: record.created_at,
            updated_at: record.updated_at,
        };
        emit(
            tx.as_mut(),
            account,
            ResourceKind::Message,
            Action::Created,
            &message,
        )
        .await?;
        self.finish(tx, account, idempotency, &message).await?;
        Ok(message)
    }

    /// One message.
    pub async fn message(&self, account: &str, id: &str) -> DomainResult<Message> {
        let mut conn = self.store.read().await?;
        let record = found(conn.message(account, id).await, KIND, id)?;
        represent(conn.as_mut(), account, record, &self.public_url).await
    }

    /// A page of messages, newest first, optionally of one conversation.
    pub async fn messages(
        &self,
        account: &str,
        conversation_id: Option<&str>,
        page: &Page,
    ) -> DomainResult<Listed<Message>> {
        let mut conn = self.store.read().await?;
        let listed = conn
            .list_messages(account, conversation_id, page)
            .await
            .map_err(list_error(KIND, page))?;
        let mut items = Vec::with_capacity(listed.items.len());
        for record in listed.items {
            items.push(represent(conn.as_mut(), account, record, &self.public_url).await?);
        }
        Ok(Listed {
            items,
            has_more: listed.has_more,
        })
    }

    /// Applies a partial update; emits `message.updated` if anything changed.
    pub async fn update_message(
        &self,
        account: &str,
        id: &str,
        input: UpdateMessage,
    ) -> DomainResult<Message> {
        let mut tx = self.write_tx().await?;
        let before = found(tx.message(account, id).await, KIND, id)?;
        // The contacts of its reactions are only referred to (locked for
        // update, two updates listing them in opposite orders could
        // deadlock).
        tx.reads_only_to_refer();
        let mut after = before.clone();
        if let Some(m) = not_null("message", input.message)? {
            after.message = text(&m)?;
        }
        if let Some(r) = input.read_at {
            after.read_at = read_at(r)?;
        }
        if let Some(reactions) = input.reactions {
            let reactions = reactions.unwrap_or_default();
            if reactions.len() > MAX_REACTIONS {
                return Err(DomainError::Invalid(format!(
                    "reactions has {} entries; a message has at most {MAX_REACTIONS}",
                    reactions.len()
                )));
            }
            let mut seen = HashSet::new();
            let mut next = Vec::with_capacity(reactions.len());
            for r in reactions {
                validate::reference("reactions[].contact_id", "contact", &r.contact_id)?;
                validate::EMOJI.check("reactions[].emoji", &r.emoji)?;
                if !seen.insert((r.contact_id.clone(), r.emoji.clone())) {
                    return Err(DomainError::Invalid(format!(
                        "reactions lists `{}` by `{}` more than once",
                        r.emoji, r.contact_id
                    )));
                }
                if tx.contact(account, &r.contact_id).await?.is_none() {
                    return Err(validate::missing(
                        "reactions[].contact_id",
                        "contact",
                        &r.contact_id,
                    ));
                }
                let created_at = before
                    .reactions
                    .iter()
                    .find(|old| old.contact_id == r.contact_id && old.emoji == r.emoji)
                    .map_or_else(ids::now, |old| old.created_at);
                next.push(Reaction {
                    contact_id: r.contact_id,
                    emoji: r.emoji,
                    created_at,
                });
            }
            after.reactions = sqlx::types::Json(next);
        }
        if after == before {
            // Nothing changed; still answer only from durable state.
            let message = represent(tx.as_mut(), account, before, &self.public_url).await?;
            self.commit(tx).await?;
            return Ok(message);
        }
        after.updated_at = ids::now();
        tx.update_message(account, &after).await?;
        let message = represent(tx.as_mut(), account, after, &self.public_url).await?;
        emit(
            tx.as_mut(),
            account,
            ResourceKind::Message,
            Action::Updated,
            &message,
        )
        .await?;
        self.commit(tx).await?;
        Ok(message)
    }

    /// Deletes a message and its attachments (`attachment.deleted` each),
    /// unpins it (`conversation.updated`) and emits `message.deleted` with the
    /// message as it was.
    pub async fn delete_message(&self, account: &str, id: &str) -> DomainResult<Message> {
        let mut tx = self.write_tx().await?;
        let record = found(tx.message(account, id).await, KIND, id)?;
        let (message, files) =
            delete_cascade(tx.as_mut(), account, record, true, &self.public_url).await?;
        self.commit(tx).await?;
        self.remove_files(account, &files).await;
        Ok(message)
    }
}

/// Deletes a message and its attachments inside `tx`, emitting their events.
/// With `unpin`, a conversation that pinned it is updated. Returns the
/// message as it was and the attachment ids whose files can go once the
/// transaction commits.
pub(crate) async fn delete_cascade(
    tx: &mut dyn WriteTx,
    account: &str,
    record: MessageRecord,
    unpin: bool,
    public_url: &str,
) -> DomainResult<(Message, Vec<String>)> {
    let message = represent(tx, account, record.clone(), public_url).await?;
    let mut files = Vec::new();
    for attachment in &message.attachments {
        tx.delete_attachment(account, &attachment.id).await?;
        files.push(attachment.id.clone());
        emit(
            tx,
            account,
            ResourceKind::Attachment,
            Action::Deleted,
            attachment,
        )
        .await?;
    }
    if unpin
        && let Some(mut conversation) = tx.conversation(account, &record.conversation_id).await?
        && conversation.pinned_message_id.as_deref() == Some(record.id.as_str())
    {
        conversation.pinned_message_id = None;
        tx.update_conversation(account, &conversation).await?;
        emit(
            tx,
            account,
            ResourceKind::Conversation,
            Action::Updated,
            &conversation,
        )
        .await?;
    }
    tx.delete_message(account, &record.id).await?;
    emit(
        tx,
        account,
        ResourceKind::Message,
        Action::Deleted,
        &message,
    )
    .await?;
    Ok((message, files))
}
