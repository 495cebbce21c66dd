//! The resources' other reads (see `store/resources.rs`: the plain ones
//! are written once there) and group members.

use std::sync::OnceLock;

use sqlx::Row as _;

use super::*;

#[async_trait]
impl<C> ResourceQueries for Handle<C>
where
    C: Scope,
{
    async fn contacts_by_ids(
        &mut self,
        account: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Contact>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Locked (in a transaction) in one order, so that two writers
        // locking overlapping sets cannot deadlock.
        let lock = self.0.row_lock();
        sqlx::query_as(&format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts WHERE account_id = $1 AND id = ANY($2) ORDER BY id{lock}"
        ))
        .bind(account)
        .bind(ids)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn contact_has_messages(&mut self, account: &str, contact_id: &str) -> StoreResult<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE account_id = $1 AND contact_id = $2)",
        )
        .bind(account)
        .bind(contact_id)
        .fetch_one(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn messages_in_conversation(
        &mut self,
        account: &str,
        conversation_id: &str,
    ) -> StoreResult<Vec<MessageRecord>> {
        sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE account_id = $1 AND conversation_id = $2 ORDER BY seq"
        ))
        .bind(account)
        .bind(conversation_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn group_members(&mut self, group_id: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT contact_id FROM group_members WHERE group_id = $1 ORDER BY position",
        )
        .bind(group_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn groups_with_member(
        &mut self,
        account: &str,
        contact_id: &str,
    ) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT g.id FROM group_members m JOIN groups g ON g.id = m.group_id WHERE g.account_id = $1 AND m.contact_id = $2 ORDER BY g.seq",
        )
        .bind(account)
        .bind(contact_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }

    async fn attachments_of_message(
        &mut self,
        account: &str,
        message_id: &str,
    ) -> StoreResult<Vec<Attachment>> {
        sqlx::query_as(&format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE account_id = $1 AND message_id = $2 ORDER BY seq"
        ))
        .bind(account)
        .bind(message_id)
        .fetch_all(&mut *self.0)
        .await
        .map_err(backend)
    }
}

/// [`MessageWrites::insert_message_referring`] in one statement: the
/// conversation and the sender read and locked `FOR KEY SHARE` (kept from
/// being deleted, open to other writes), the sender's part in the
/// conversation checked, and the message inserted if it passes, under the
/// account's shared endpoint lock that its event's fan-out needs (see
/// `TableWrites::insert`). The lock is taken from the rows that passed, so
/// after the rows' locks, in the order every other writer takes them. The
/// parameters are the message insert's: `$1` the account, `$3` the
/// conversation, `$4` the sender.
fn insert_message_referring_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let insert = &MessageRecord::statements(Dialect::Postgres).insert_select;
        format!(
            "WITH conversation AS MATERIALIZED (
                SELECT contact_id, group_id FROM conversations
                WHERE account_id = $1 AND id = $3 FOR KEY SHARE),
             sender AS MATERIALIZED (
                SELECT {CONTACT_COLUMNS} FROM contacts
                WHERE account_id = $1 AND id = $4 FOR KEY SHARE),
             allowed AS MATERIALIZED (
                SELECT pg_advisory_xact_lock_shared({NS_ENDPOINTS}, hashtext($1)) FROM conversation c
                WHERE $4::text IS NULL
                   OR (EXISTS (SELECT 1 FROM sender)
                       AND (c.contact_id = $4
                            OR EXISTS (SELECT 1 FROM group_members m
                                       WHERE m.group_id = c.group_id AND m.contact_id = $4)))),
             inserted AS ({insert} FROM allowed RETURNING 1)
             SELECT EXISTS (SELECT 1 FROM conversation) AS conversation_found,
                    EXISTS (SELECT 1 FROM inserted) AS inserted, s.*
             FROM (SELECT 1) AS one LEFT JOIN sender s ON true"
        )
    })
}

#[async_trait]
impl MessageWrites for Handle<PgTx> {
    async fn insert_message_referring(
        &mut self,
        account: &str,
        message: &MessageRecord,
    ) -> StoreResult<NewMessage> {
        let mut q = sqlx::query(insert_message_referring_sql()).bind(account);
        for value in message.insert_values()? {
            q = bind(q, value);
        }
        let row = q.fetch_one(&mut *self.0).await.map_err(backend)?;
        let found = |column| row.try_get::<bool, _>(column).map_err(backend);
        if !found("conversation_found")? {
            return Ok(NewMessage::NoConversation);
        }
        let sender_id: Option<String> = row.try_get("id").map_err(backend)?;
        let sender = match sender_id {
            Some(_) => Some(Contact::from_row(&row).map_err(backend)?),
            None if message.contact_id.is_some() => return Ok(NewMessage::NoSender),
            None => None,
        };
        if !found("inserted")? {
            return Ok(NewMessage::NotParticipant);
        }
        if self.0.endpoints_locked.is_none() {
            self.0.endpoints_locked = Some(false);
        }
        Ok(NewMessage::Inserted { sender })
    }
}

#[async_trait]
impl GroupWrites for Handle<PgTx> {
    async fn set_group_members(
        &mut self,
        group_id: &str,
        contact_ids: &[String],
    ) -> StoreResult<()> {
        sqlx::query("DELETE FROM group_members WHERE group_id = $1")
            .bind(group_id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        for (position, contact_id) in contact_ids.iter().enumerate() {
            sqlx::query(
                "INSERT INTO group_members (group_id, contact_id, position) VALUES ($1, $2, $3)",
            )
            .bind(group_id)
            .bind(contact_id)
            .bind(position as i64)
            .execute(&mut *self.0)
            .await
            .map_err(unique("group member"))?;
        }
        Ok(())
    }

    async fn delete_group(&mut self, account: &str, id: &str) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM group_members WHERE group_id IN (SELECT id FROM groups WHERE account_id = $1 AND id = $2)",
        )
        .bind(account)
        .bind(id)
        .execute(&mut *self.0)
        .await
        .map_err(backend)?;
        sqlx::query("DELETE FROM groups WHERE account_id = $1 AND id = $2")
            .bind(account)
            .bind(id)
            .execute(&mut *self.0)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
