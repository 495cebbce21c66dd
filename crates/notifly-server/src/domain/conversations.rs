//! Conversations: with one contact, or with a group.

use notifly_webhooks::{Action, ResourceKind};
use serde::Deserialize;
use utoipa::ToSchema;

use super::contacts::not_null;
use super::validate::{self, double_option};
use super::{
    Begun, DomainError, DomainResult, Idempotency, Notifly, contacts, emit, found, groups,
    list_error, messages, replay,
};
use crate::ids;
use crate::store::{Conversation, ConversationFilter, Listed, Page, StoreError, WriteTx};

const KIND: &str = "conversation";

/// Body of `POST /v1/conversations`: exactly one of `contact_id` and `group_id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    pub contact_id: Option<String>,
    pub group_id: Option<String>,
    #[serde(default)]
    pub is_pinned: bool,
    #[serde(default)]
    pub is_muted: bool,
}

impl utoipa::PartialSchema for CreateConversation {
    /// Two shapes, one per participant kind: the other id absent (or `null`).
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        let shape = |with: &str, without: &str, kind: &str| {
            ObjectBuilder::new()
                .title(Some(format!("With a {kind}")))
                .property(with, validate::schema::id())
                .required(with)
                .property(without, ObjectBuilder::new().schema_type(Type::Null))
                .property("is_pinned", ObjectBuilder::new().schema_type(Type::Boolean))
                .property("is_muted", ObjectBuilder::new().schema_type(Type::Boolean))
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        OneOfBuilder::new()
            .description(Some(
                "A conversation with one contact (`contact_id`) or with a group (`group_id`): exactly one of them.",
            ))
            .item(shape("contact_id", "group_id", "contact"))
            .item(shape("group_id", "contact_id", "group"))
            .into()
    }
}

impl ToSchema for CreateConversation {}

/// Body of `PUT /v1/conversations/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConversation {
    /// A message of this conversation, or `null` to unpin.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::id_nullable)]
    pub pinned_message_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::boolean)]
    pub is_pinned: Option<Option<bool>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::boolean)]
    pub is_muted: Option<Option<bool>>,
    #[serde(default, deserialize_with = "validate::whole_double_option")]
    #[schema(schema_with = validate::schema::timestamp)]
    pub last_active_at: Option<Option<i64>>,
    #[serde(default, deserialize_with = "validate::whole_double_option")]
    #[schema(schema_with = validate::schema::timestamp)]
    pub last_opened_at: Option<Option<i64>>,
    /// `true` archives the conversation (sets `archived_at`), `false` unarchives it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::boolean)]
    pub archived: Option<Option<bool>>,
}

fn timestamp(field: &str, value: Option<i64>) -> DomainResult<Option<i64>> {
    value.map(|v| validate::timestamp(field, v)).transpose()
}

impl Notifly {
    /// Creates a conversation, points its contact or group at it (emitting
    /// `contact.updated` or `group.updated`) and emits `conversation.created`.
    pub async fn create_conversation(
        &self,
        account: &str,
        input: CreateConversation,
        idempotency: Option<&Idempotency>,
    ) -> DomainResult<Conversation> {
        let (contact_id, group_id) = match (&input.contact_id, &input.group_id) {
            (Some(c), None) => (Some(validate::reference("contact_id", "contact", c)?), None),
            (None, Some(g)) => (None, Some(validate::reference("group_id", "group", g)?)),
            (Some(_), Some(_)) => {
                return Err(DomainError::Invalid(
                    "give either contact_id or group_id, not both".into(),
                ));
            }
            (None, None) => {
                return Err(DomainError::Invalid(
                    "contact_id or group_id is required".into(),
                ));
            }
        };
        let mut tx = match self.begin(account, idempotency).await? {
            Begun::Replay(body) => return replay(&body),
            Begun::Fresh(tx) => tx,
        };
        let existing = if let Some(c) = &contact_id {
            let contact = tx.contact(account, c).await?;
            contact
                .ok_or_else(|| validate::missing("contact_id", "contact", c))?
                .conversation_id
        } else if let Some(g) = &group_id {
            let group = tx.group(account, g).await?;
            group
                .ok_or_else(|| validate::missing("group_id", "group", g))?
                .conversation_id
        } else {
            None
        };
        if let Some(existing) = existing {
            return Err(DomainError::Conflict(format!(
                "a conversation with that participant already exists: `{existing}`"
            )));
        }
        let conversation = Conversation {
            id: ids::new_id(),
            contact_id,
            group_id,
            pinned_message_id: None,
            is_pinned: input.is_pinned,
            is_muted: input.is_muted,
            last_active_at: None,
            last_opened_at: None,
            created_at: ids::now(),
            archived_at: None,
        };
        tx.insert_conversation(account, &conversation)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => DomainError::Conflict(
                    "a conversation with that participant already exists".into(),
                ),
                e => e.into(),
            })?;
        emit(
            tx.as_mut(),
            account,
            ResourceKind::Conversation,
            Action::Created,
            &conversation,
        )
        .await?;
        if let Some(c) = &conversation.contact_id {
            contacts::set_conversation(tx.as_mut(), account, c, Some(&conversation.id)).await?;
        }
        if let Some(g) = &conversation.group_id {
            groups::set_conversation(tx.as_mut(), account, g, Some(&conversation.id)).await?;
        }
        self.finish(tx, account, idempotency, &conversation).await?;
        Ok(conversation)
    }

    /// One conversation.
    pub async fn conversation(&self, account: &str, id: &str) -> DomainResult<Conversation> {
        let mut conn = self.store.read().await?;
        found(conn.conversation(account, id).await, KIND, id)
    }

    /// A page of conversations, newest first.
    pub async fn conversations(
        &self,
        account: &str,
        filter: &ConversationFilter,
        page: &Page,
    ) -> DomainResult<Listed<Conversation>> {
        let mut conn = self.store.read().await?;
        conn.list_conversations(account, filter, page)
            .await
            .map_err(list_error(KIND, page))
    }

    /// Applies a partial update; emits `conversation.updated` if anything changed.
    pub async fn update_conversation(
        &self,
        account: &str,
        id: &str,
        input: UpdateConversation,
    ) -> DomainResult<Conversation> {
        let mut tx = self.write_tx().await?;
        let before = found(tx.conversation(account, id).await, KIND, id)?;
        // The message to pin is only referred to. Locked against changes,
        // it would be taken after the conversation, while deleting a
        // message takes the two the other way round.
        tx.reads_only_to_refer();
        let mut after = before.clone();
        if let Some(pinned) = input.pinned_message_id {
            after.pinned_message_id = match pinned {
                None => None,
                Some(m) => {
                    validate::reference("pinned_message_id", "message", &m)?;
                    match tx.message(account, &m).await? {
                        Some(msg) if msg.conversation_id == id => Some(m),
                        _ => {
                            return Err(DomainError::Invalid(format!(
                                "pinned_message_id: no message with id `{m}` in this conversation"
                            )));
                        }
                    }
                }
            };
        }
        if let Some(v) = not_null("is_pinned", input.is_pinned)? {
            after.is_pinned = v;
        }
        if let Some(v) = not_null("is_muted", input.is_muted)? {
            after.is_muted = v;
        }
        if let Some(v) = input.last_active_at {
            after.last_active_at = timestamp("last_active_at", v)?;
        }
        if let Some(v) = input.last_opened_at {
            after.last_opened_at = timestamp("last_opened_at", v)?;
        }
        if let Some(archived) = not_null("archived", input.archived)? {
            after.archived_at = match (archived, after.archived_at) {
                (true, None) => Some(ids::now()),
                (true, at @ Some(_)) => at,
                (false, _) => None,
            };
        }
        if after == before {
            // Nothing changed; still answer only from durable state.
            self.commit(tx).await?;
            return Ok(before);
        }
        tx.update_conversation(account, &after).await?;
        emit(
            tx.as_mut(),
            account,
            ResourceKind::Conversation,
            Action::Updated,
            &after,
        )
        .await?;
        self.commit(tx).await?;
        Ok(after)
    }

    /// Deletes a conversation with its messages and their attachments (each
    /// with its `*.deleted` event), clears its contact's or group's
    /// `conversation_id` (`contact.updated` / `group.updated`) and emits
    /// `conversation.deleted` with the conversation as it was.
    pub async fn delete_conversation(&self, account: &str, id: &str) -> DomainResult<Conversation> {
        let mut tx = self.write_tx().await?;
        tx.reads_to_delete();
        let (conversation, files) =
            delete_cascade(tx.as_mut(), account, id, true, &self.public_url).await?;
        self.commit(tx).await?;
        self.remove_files(account, &files).await;
        Ok(conversation)
    }
}

/// Deletes a conversation and everything in it inside `tx`. With
/// `detach_parent`, the contact or group that pointed at it is updated too.
/// Returns the conversation as it was and the attachment ids whose files can
/// go once the transaction commits.
pub(crate) async fn delete_cascade(
    tx: &mut dyn WriteTx,
    account: &str,
    id: &str,
    detach_parent: bool,
    public_url: &str,
) -> DomainResult<(Conversation, Vec<String>)> {
    let conversation = found(tx.conversation(account, id).await, KIND, id)?;
    let mut files = Vec::new();
    for message in tx.messages_in_conversation(account, id).await? {
        files.extend(
            messages::delete_cascade(tx, account, message, false, public_url)
                .await?
                .1,
        );
    }
    if detach_parent {
        if let Some(c) = &conversation.contact_id {
            contacts::set_conversation(tx, account, c, None).await?;
        }
        if let Some(g) = &conversation.group_id {
            groups::set_conversation(tx, account, g, None).await?;
        }
    }
    tx.delete_conversation(account, id).await?;
    emit(
        tx,
        account,
        ResourceKind::Conversation,
        Action::Deleted,
        &conversation,
    )
    .await?;
    Ok((conversation, files))
}
