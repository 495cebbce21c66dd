//! The API's resources: contacts, conversations, messages, groups and
//! attachments.
//!
//! Their plain reads and writes ([`ResourceReads`], [`ResourceWrites`]) are
//! written once, here, over the backends' [`Tables`]; each backend writes
//! the other queries ([`ResourceQueries`], [`GroupWrites`], and
//! [`MessageWrites`] where a backend does it its own way).

use async_trait::async_trait;

use super::*;

/// Each resource by id, and a page of them, scoped to an account.
#[async_trait]
pub trait ResourceReads: Send {
    async fn contact(&mut self, account: &str, id: &str) -> StoreResult<Option<Contact>>;
    async fn list_contacts(&mut self, account: &str, page: &Page) -> StoreResult<Listed<Contact>>;

    async fn conversation(&mut self, account: &str, id: &str) -> StoreResult<Option<Conversation>>;
    async fn list_conversations(
        &mut self,
        account: &str,
        filter: &ConversationFilter,
        page: &Page,
    ) -> StoreResult<Listed<Conversation>>;

    async fn message(&mut self, account: &str, id: &str) -> StoreResult<Option<MessageRecord>>;
    async fn list_messages(
        &mut self,
        account: &str,
        conversation_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<MessageRecord>>;

    async fn group(&mut self, account: &str, id: &str) -> StoreResult<Option<GroupRecord>>;
    async fn list_groups(&mut self, account: &str, page: &Page)
    -> StoreResult<Listed<GroupRecord>>;

    async fn attachment(&mut self, account: &str, id: &str) -> StoreResult<Option<Attachment>>;
    async fn list_attachments(
        &mut self,
        account: &str,
        message_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<Attachment>>;
}

/// The resources' other reads: what cascades and references need.
#[async_trait]
pub trait ResourceQueries: Send {
    async fn contacts_by_ids(&mut self, account: &str, ids: &[String])
    -> StoreResult<Vec<Contact>>;
    async fn contact_has_messages(&mut self, account: &str, contact_id: &str) -> StoreResult<bool>;
    /// Every message of a conversation, oldest first (for cascades).
    async fn messages_in_conversation(
        &mut self,
        account: &str,
        conversation_id: &str,
    ) -> StoreResult<Vec<MessageRecord>>;
    /// Member contact ids of a group, in the order they were given.
    async fn group_members(&mut self, group_id: &str) -> StoreResult<Vec<String>>;
    /// Ids of the groups a contact belongs to.
    async fn groups_with_member(
        &mut self,
        account: &str,
        contact_id: &str,
    ) -> StoreResult<Vec<String>>;
    /// Every attachment of a message, oldest first.
    async fn attachments_of_message(
        &mut self,
        account: &str,
        message_id: &str,
    ) -> StoreResult<Vec<Attachment>>;
}

/// Writes of the API's resources, each scoped to an account. A change's
/// events are written through the same transaction ([`EventWrites`]).
#[async_trait]
pub trait ResourceWrites: Send {
    async fn insert_contact(&mut self, account: &str, contact: &Contact) -> StoreResult<()>;
    async fn update_contact(&mut self, account: &str, contact: &Contact) -> StoreResult<()>;
    async fn delete_contact(&mut self, account: &str, id: &str) -> StoreResult<()>;

    async fn insert_conversation(&mut self, account: &str, c: &Conversation) -> StoreResult<()>;
    async fn update_conversation(&mut self, account: &str, c: &Conversation) -> StoreResult<()>;
    async fn delete_conversation(&mut self, account: &str, id: &str) -> StoreResult<()>;

    /// Writes a message whose conversation and sender the caller has
    /// checked and locked ([`MessageWrites::insert_message_referring`] does
    /// both): PostgreSQL does not check them again.
    async fn insert_message(&mut self, account: &str, message: &MessageRecord) -> StoreResult<()>;
    async fn update_message(&mut self, account: &str, message: &MessageRecord) -> StoreResult<()>;
    async fn delete_message(&mut self, account: &str, id: &str) -> StoreResult<()>;

    /// A new group (its members: [`GroupWrites::set_group_members`]).
    async fn insert_group(&mut self, account: &str, group: &GroupRecord) -> StoreResult<()>;
    async fn update_group(&mut self, account: &str, group: &GroupRecord) -> StoreResult<()>;

    async fn insert_attachment(&mut self, account: &str, a: &Attachment) -> StoreResult<()>;
    async fn update_attachment(&mut self, account: &str, a: &Attachment) -> StoreResult<()>;
    async fn delete_attachment(&mut self, account: &str, id: &str) -> StoreResult<()>;
}

/// What [`MessageWrites::insert_message_referring`] found: the message
/// written with its sender, or why it was not written.
#[derive(Debug, Clone, PartialEq)]
pub enum NewMessage {
    /// Written; its sender as read, if it has one.
    Inserted { sender: Option<Contact> },
    /// The account has no conversation of that id.
    NoConversation,
    /// The account has no contact of the sender's id.
    NoSender,
    /// The sender is neither the conversation's contact nor a member of
    /// its group.
    NotParticipant,
}

/// A new message, which refers to rows it does not change.
#[async_trait]
pub trait MessageWrites: ResourceReads + ResourceQueries + ResourceWrites {
    /// Writes `message` if its conversation is the account's and its
    /// sender (if any) is the account's and takes part in it; until the
    /// transaction ends, neither can be deleted, while other writes to
    /// them go on. Nothing is written otherwise.
    ///
    /// Written here as one read after another; a backend whose round trips
    /// cost more (PostgreSQL) does it all in one statement.
    async fn insert_message_referring(
        &mut self,
        account: &str,
        message: &MessageRecord,
    ) -> StoreResult<NewMessage> {
        let Some(conversation) = self.conversation(account, &message.conversation_id).await? else {
            return Ok(NewMessage::NoConversation);
        };
        let mut sender = None;
        if let Some(id) = &message.contact_id {
            sender = self.contact(account, id).await?;
            if sender.is_none() {
                return Ok(NewMessage::NoSender);
            }
            let takes_part = match (&conversation.contact_id, &conversation.group_id) {
                (Some(contact), _) => contact == id,
                (None, Some(group)) => self.group_members(group).await?.contains(id),
                (None, None) => false,
            };
            if !takes_part {
                return Ok(NewMessage::NotParticipant);
            }
        }
        self.insert_message(account, message).await?;
        Ok(NewMessage::Inserted { sender })
    }
}

/// A group's members, which live in a table of their own.
#[async_trait]
pub trait GroupWrites: Send {
    /// Replaces a group's members, in the order given.
    async fn set_group_members(
        &mut self,
        group_id: &str,
        contact_ids: &[String],
    ) -> StoreResult<()>;
    /// Deletes a group and its members.
    async fn delete_group(&mut self, account: &str, id: &str) -> StoreResult<()>;
}

#[async_trait]
impl<H: Tables> ResourceReads for H {
    async fn contact(&mut self, account: &str, id: &str) -> StoreResult<Option<Contact>> {
        self.get(account, id).await
    }

    async fn list_contacts(&mut self, account: &str, page: &Page) -> StoreResult<Listed<Contact>> {
        self.list(account, &[], page).await
    }

    async fn conversation(&mut self, account: &str, id: &str) -> StoreResult<Option<Conversation>> {
        self.get(account, id).await
    }

    async fn list_conversations(
        &mut self,
        account: &str,
        filter: &ConversationFilter,
        page: &Page,
    ) -> StoreResult<Listed<Conversation>> {
        self.list(account, &filter.filters(), page).await
    }

    async fn message(&mut self, account: &str, id: &str) -> StoreResult<Option<MessageRecord>> {
        self.get(account, id).await
    }

    async fn list_messages(
        &mut self,
        account: &str,
        conversation_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<MessageRecord>> {
        let filters = Filter::optional("conversation_id", conversation_id);
        self.list(account, filters.as_slice(), page).await
    }

    async fn group(&mut self, account: &str, id: &str) -> StoreResult<Option<GroupRecord>> {
        self.get(account, id).await
    }

    async fn list_groups(
        &mut self,
        account: &str,
        page: &Page,
    ) -> StoreResult<Listed<GroupRecord>> {
        self.list(account, &[], page).await
    }

    async fn attachment(&mut self, account: &str, id: &str) -> StoreResult<Option<Attachment>> {
        self.get(account, id).await
    }

    async fn list_attachments(
        &mut self,
        account: &str,
        message_id: Option<&str>,
        page: &Page,
    ) -> StoreResult<Listed<Attachment>> {
        let filters = Filter::optional("message_id", message_id);
        self.list(account, filters.as_slice(), page).await
    }
}

#[async_trait]
impl<H: TableWrites> ResourceWrites for H {
    async fn insert_contact(&mut self, account: &str, contact: &Contact) -> StoreResult<()> {
        self.insert(account, contact).await
    }

    async fn update_contact(&mut self, account: &str, contact: &Contact) -> StoreResult<()> {
        self.update(account, contact).await
    }

    async fn delete_contact(&mut self, account: &str, id: &str) -> StoreResult<()> {
        self.delete::<Contact>(account, id).await
    }

    async fn insert_conversation(&mut self, account: &str, c: &Conversation) -> StoreResult<()> {
        self.insert(account, c).await
    }

    async fn update_conversation(&mut self, account: &str, c: &Conversation) -> StoreResult<()> {
        self.update(account, c).await
    }

    async fn delete_conversation(&mut self, account: &str, id: &str) -> StoreResult<()> {
        self.delete::<Conversation>(account, id).await
    }

    async fn insert_message(&mut self, account: &str, message: &MessageRecord) -> StoreResult<()> {
        self.insert(account, message).await
    }

    async fn update_message(&mut self, account: &str, message: &MessageRecord) -> StoreResult<()> {
        self.update(account, message).await
    }

    async fn delete_message(&mut self, account: &str, id: &str) -> StoreResult<()> {
        self.delete::<MessageRecord>(account, id).await
    }

    async fn insert_group(&mut self, account: &str, group: &GroupRecord) -> StoreResult<()> {
        self.insert(account, group).await
    }

    async fn update_group(&mut self, account: &str, group: &GroupRecord) -> StoreResult<()> {
        self.update(account, group).await
    }

    async fn insert_attachment(&mut self, account: &str, a: &Attachment) -> StoreResult<()> {
        self.insert(account, a).await
    }

    async fn update_attachment(&mut self, account: &str, a: &Attachment) -> StoreResult<()> {
        self.update(account, a).await
    }

    async fn delete_attachment(&mut self, account: &str, id: &str) -> StoreResult<()> {
        self.delete::<Attachment>(account, id).await
    }
}

impl ConversationFilter {
    /// The list filters it asks for.
    pub(crate) fn filters(&self) -> Vec<Filter<'_>> {
        let mut filters = Vec::new();
        if let Some(muted) = self.muted {
            filters.push(Filter::Bool("is_muted", muted));
        }
        if let Some(pinned) = self.pinned {
            filters.push(Filter::Bool("is_pinned", pinned));
        }
        if let Some(archived) = self.archived {
            filters.push(Filter::Set("archived_at", archived));
        }
        if let Some(group_id) = &self.group_id {
            filters.push(Filter::Text("group_id", group_id));
        }
        filters
    }
}
