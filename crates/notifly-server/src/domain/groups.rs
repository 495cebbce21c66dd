//! Groups of contacts.

use std::collections::HashSet;

use notifly_webhooks::{Action, ResourceKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::contacts::not_null;
use super::validate::{self, double_option};
use super::{
    Begun, DomainError, DomainResult, Idempotency, Notifly, conversations, emit, found, list_error,
    replay,
};
use crate::ids;
use crate::store::{Conn, Contact, GroupRecord, Listed, Page, WriteTx};

const KIND: &str = "group";

/// The most contacts a group can have.
pub const MAX_MEMBERS: usize = 256;

/// A group, with its member contacts embedded in the order they were given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Group {
    pub id: String,
    #[schema(example = "Family")]
    pub name: String,
    pub description: Option<String>,
    pub avatar_url: Option<String>,
    /// The group's conversation, once one exists.
    pub conversation_id: Option<String>,
    pub contacts: Vec<Contact>,
    pub created_at: i64,
    pub archived_at: Option<i64>,
}

/// Body of `POST /v1/groups`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    #[schema(schema_with = validate::schema::name)]
    pub name: String,
    #[schema(schema_with = validate::schema::description)]
    pub description: Option<String>,
    #[schema(schema_with = validate::schema::url_nullable)]
    pub avatar_url: Option<String>,
    /// Ids of the member contacts.
    #[serde(default)]
    #[schema(schema_with = members_schema, required = false)]
    pub contacts: Vec<String>,
}

/// Body of `PUT /v1/groups/{id}`: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroup {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::name)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::description)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::url_nullable)]
    pub avatar_url: Option<Option<String>>,
    /// Replaces the member list.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = members_schema)]
    pub contacts: Option<Option<Vec<String>>>,
    /// `true` archives the group (sets `archived_at`), `false` unarchives it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::boolean)]
    pub archived: Option<Option<bool>>,
}

/// Distinct contact ids, at most [`MAX_MEMBERS`].
fn members_schema() -> utoipa::openapi::schema::Array {
    validate::schema::ids(MAX_MEMBERS)
}

fn name(value: &str) -> DomainResult<String> {
    validate::NAME.check("name", value)
}

fn avatar(value: Option<&str>) -> DomainResult<Option<String>> {
    value.map(|v| validate::url("avatar_url", v)).transpose()
}

/// Checks a member list: well-formed, distinct, at most [`MAX_MEMBERS`], and
/// every contact present in the account.
async fn members(conn: &mut dyn Conn, account: &str, ids: &[String]) -> DomainResult<Vec<String>> {
    if ids.len() > MAX_MEMBERS {
        return Err(DomainError::Invalid(format!(
            "contacts has {} entries; a group has at most {MAX_MEMBERS}",
            ids.len()
        )));
    }
    let mut seen = HashSet::new();
    for id in ids {
        validate::reference("contacts", "contact", id)?;
        if !seen.insert(id.as_str()) {
            return Err(DomainError::Invalid(format!(
                "contacts lists `{id}` more than once"
            )));
        }
    }
    let present: HashSet<String> = conn
        .contacts_by_ids(account, ids)
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    if let Some(missing) = ids.iter().find(|id| !present.contains(*id)) {
        return Err(validate::missing("contacts", "contact", missing));
    }
    Ok(ids.to_vec())
}

/// The REST representation of a stored group.
pub(crate) async fn represent(
    conn: &mut dyn Conn,
    account: &str,
    g: GroupRecord,
) -> DomainResult<Group> {
    let ids = conn.group_members(&g.id).await?;
    let mut contacts = conn.contacts_by_ids(account, &ids).await?;
    contacts.sort_by_key(|c| ids.iter().position(|id| *id == c.id));
    Ok(Group {
        id: g.id,
        name: g.name,
        description: g.description,
        avatar_url: g.avatar_url,
        conversation_id: g.conversation_id,
        contacts,
        created_at: g.created_at,
        archived_at: g.archived_at,
    })
}

impl Notifly {
    /// Creates a group and emits `group.created`.
    pub async fn create_group(
        &self,
        account: &str,
        input: CreateGroup,
        idempotency: Option<&Idempotency>,
    ) -> DomainResult<Group> {
        let record = GroupRecord {
            id: ids::new_id(),
            name: name(&input.name)?,
            description: validate::description(input.description.as_deref())?,
            avatar_url: avatar(input.avatar_url.as_deref())?,
            conversation_id: None,
            created_at: ids::now(),
            archived_at: None,
        };
        let mut tx = match self.begin(account, idempotency).await? {
            Begun::Replay(body) => return replay(&body),
            Begun::Fresh(tx) => tx,
        };
        let member_ids = members(tx.as_mut(), account, &input.contacts).await?;
        tx.insert_group(account, &record).await?;
        tx.set_group_members(&record.id, &member_ids).await?;
        let group = represent(tx.as_mut(), account, record).await?;
        emit(
            tx.as_mut(),
            account,
            ResourceKind::Group,
            Action::Created,
            &group,
        )
        .await?;
        self.finish(tx, account, idempotency, &group).await?;
        Ok(group)
    }

    /// One group.
    pub async fn group(&self, account: &str, id: &str) -> DomainResult<Group> {
        let mut conn = self.store.read().await?;
        let record = found(conn.group(account, id).await, KIND, id)?;
        represent(conn.as_mut(), account, record).await
    }

    /// A page of groups, newest first.
    pub async fn groups(&self, account: &str, page: &Page) -> DomainResult<Listed<Group>> {
        let mut conn = self.store.read().await?;
        let listed = conn
            .list_groups(account, page)
            .await
            .map_err(list_error(KIND, page))?;
        let mut out = Vec::with_capacity(listed.items.len());
        for record in listed.items {
            out.push(represent(conn.as_mut(), account, record).await?);
        }
        Ok(Listed {
            items: out,
            has_more: listed.has_more,
        })
    }

    /// Applies a partial update; emits `group.updated` if anything changed.
    pub async fn update_group(
        &self,
        account: &str,
        id: &str,
        input: UpdateGroup,
    ) -> DomainResult<Group> {
        let mut tx = self.write_tx().await?;
        let record = found(tx.group(account, id).await, KIND, id)?;
        let before = represent(tx.as_mut(), account, record.clone()).await?;
        let mut after = record;
        if let Some(n) = not_null("name", input.name)? {
            after.name = name(&n)?;
        }
        if let Some(d) = input.description {
            after.description = validate::description(d.as_deref())?;
        }
        if let Some(a) = input.avatar_url {
            after.avatar_url = avatar(a.as_deref())?;
        }
        if let Some(archived) = not_null("archived", input.archived)? {
            after.archived_at = match (archived, after.archived_at) {
                (true, None) => Some(ids::now()),
                (true, at @ Some(_)) => at,
                (false, _) => None,
            };
        }
        let new_members = match not_null("contacts", input.contacts)? {
            Some(list) => Some(members(tx.as_mut(), account, &list).await?),
            None => None,
        };
        tx.update_group(account, &after).await?;
        if let Some(list) = &new_members {
            tx.set_group_members(id, list).await?;
        }
        let group = represent(tx.as_mut(), account, after).await?;
        if group == before {
            // Nothing changed; still answer only from durable state.
            self.commit(tx).await?;
            return Ok(before);
        }
        emit(
            tx.as_mut(),
            account,
            ResourceKind::Group,
            Action::Updated,
            &group,
        )
        .await?;
        self.commit(tx).await?;
        Ok(group)
    }

    /// Deletes a group and, with it, its conversation (and that conversation's
    /// messages and attachments, each with its `*.deleted` event); emits
    /// `group.deleted` with the group as it was.
    pub async fn delete_group(&self, account: &str, id: &str) -> DomainResult<Group> {
        let mut tx = self.write_tx().await?;
        // Its conversation goes too: read it (and the rest) so that no new
        // message can refer to it meanwhile.
        tx.reads_to_delete();
        let record = found(tx.group(account, id).await, KIND, id)?;
        let group = represent(tx.as_mut(), account, record).await?;
        let mut files = Vec::new();
        if let Some(conversation_id) = &group.conversation_id {
            files = conversations::delete_cascade(
                tx.as_mut(),
                account,
                conversation_id,
                false,
                &self.public_url,
            )
            .await?
            .1;
        }
        tx.delete_group(account, id).await?;
        emit(
            tx.as_mut(),
            account,
            ResourceKind::Group,
            Action::Deleted,
            &group,
        )
        .await?;
        self.commit(tx).await?;
        self.remove_files(account, &files).await;
        Ok(group)
    }
}

/// Removes a contact from a group, emitting `group.updated`.
pub(crate) async fn remove_member(
    tx: &mut dyn WriteTx,
    account: &str,
    group_id: &str,
    contact_id: &str,
) -> DomainResult<()> {
    let mut ids = tx.group_members(group_id).await?;
    ids.retain(|id| id != contact_id);
    tx.set_group_members(group_id, &ids).await?;
    let record = found(tx.group(account, group_id).await, KIND, group_id)?;
    let group = represent(tx, account, record).await?;
    emit(tx, account, ResourceKind::Group, Action::Updated, &group).await
}

/// Points a group at its conversation (or clears it), emitting `group.updated`.
pub(crate) async fn set_conversation(
    tx: &mut dyn WriteTx,
    account: &str,
    group_id: &str,
    conversation_id: Option<&str>,
) -> DomainResult<()> {
    let mut record = found(tx.group(account, group_id).await, KIND, group_id)?;
    record.conversation_id = conversation_id.map(str::to_owned);
    tx.update_group(account, &record).await?;
    let group = represent(tx, account, record).await?;
    emit(tx, account, ResourceKind::Group, Action::Updated, &group).await
}
