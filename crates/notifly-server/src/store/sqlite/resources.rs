//! The resources' other reads (see `store/resources.rs`: the plain ones
//! are written once there) and group members.

use super::*;

#[async_trait]
impl<C> ResourceQueries for Handle<C>
where
    C: DerefMut<Target = Connection> + Send,
{
    async fn contacts_by_ids(
        &mut self,
        account: &str,
        ids: &[String],
    ) -> StoreResult<Vec<Contact>> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut values: Vec<&dyn ToSql> = vec![&account];
            values.extend(chunk.iter().map(|id| id as &dyn ToSql));
            found.extend(all(
                &self.0,
                &format!(
                    "SELECT {CONTACT_COLUMNS} FROM contacts WHERE account_id = ? AND id IN ({})",
                    placeholders(chunk.len())
                ),
                params_from_iter(values),
                Contact::decode,
            )?);
        }
        Ok(found)
    }

    async fn contact_has_messages(&mut self, account: &str, contact_id: &str) -> StoreResult<bool> {
        scalar(
            &self.0,
            "SELECT EXISTS (SELECT 1 FROM messages WHERE account_id = ? AND contact_id = ?)",
            [account, contact_id],
        )
    }

    async fn messages_in_conversation(
        &mut self,
        account: &str,
        conversation_id: &str,
    ) -> StoreResult<Vec<MessageRecord>> {
        all(
            &self.0,
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE account_id = ? AND conversation_id = ? ORDER BY seq"
            ),
            [account, conversation_id],
            MessageRecord::decode,
        )
    }

    async fn group_members(&mut self, group_id: &str) -> StoreResult<Vec<String>> {
        all(
            &self.0,
            "SELECT contact_id FROM group_members WHERE group_id = ? ORDER BY position",
            [group_id],
            |row| row.get(0),
        )
    }

    async fn groups_with_member(
        &mut self,
        account: &str,
        contact_id: &str,
    ) -> StoreResult<Vec<String>> {
        all(
            &self.0,
            "SELECT g.id FROM group_members m JOIN groups g ON g.id = m.group_id WHERE g.account_id = ? AND m.contact_id = ? ORDER BY g.seq",
            [account, contact_id],
            |row| row.get(0),
        )
    }

    async fn attachments_of_message(
        &mut self,
        account: &str,
        message_id: &str,
    ) -> StoreResult<Vec<Attachment>> {
        all(
            &self.0,
            &format!(
                "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE account_id = ? AND message_id = ? ORDER BY seq"
            ),
            [account, message_id],
            Attachment::decode,
        )
    }
}

/// One read after another: SQLite's statements cost no round trip.
impl MessageWrites for Handle<WriterGuard> {}

#[async_trait]
impl GroupWrites for Handle<WriterGuard> {
    async fn set_group_members(
        &mut self,
        group_id: &str,
        contact_ids: &[String],
    ) -> StoreResult<()> {
        exec(
            &self.0,
            "DELETE FROM group_members WHERE group_id = ?",
            [group_id],
        )
        .map_err(sqlite)?;
        for (position, contact_id) in contact_ids.iter().enumerate() {
            exec(
                &self.0,
                "INSERT INTO group_members (group_id, contact_id, position) VALUES (?, ?, ?)",
                params![group_id, contact_id, position as i64],
            )
            .map_err(unique_sqlite("group member"))?;
        }
        Ok(())
    }

    async fn delete_group(&mut self, account: &str, id: &str) -> StoreResult<()> {
        exec(
            &self.0,
            "DELETE FROM group_members WHERE group_id IN (SELECT id FROM groups WHERE account_id = ? AND id = ?)",
            [account, id],
        )
        .map_err(sqlite)?;
        self.delete::<GroupRecord>(account, id).await
    }
}
