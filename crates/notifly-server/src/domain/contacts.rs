//! Contacts.

use notifly_webhooks::{Action, ResourceKind};
use serde::Deserialize;
use utoipa::ToSchema;

use super::validate::{self, double_option};
use super::{
    Begun, DomainError, DomainResult, Idempotency, Notifly, emit, found, groups, list_error, replay,
};
use crate::ids;
use crate::store::{Contact, Listed, Page, StoreError, WriteTx};

const KIND: &str = "contact";

/// Body of `POST /v1/contacts`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateContact {
    /// Unique within the account.
    #[schema(schema_with = validate::schema::username)]
    pub username: String,
    #[schema(schema_with = validate::schema::phone_number)]
    pub phone_number: String,
    #[schema(schema_with = validate::schema::url_nullable)]
    pub avatar_url: Option<String>,
    #[schema(schema_with = validate::schema::display_name)]
    pub display_name: Option<String>,
    /// Unix seconds.
    #[schema(schema_with = validate::schema::timestamp)]
    #[serde(default, deserialize_with = "validate::whole_option")]
    pub last_active_at: Option<i64>,
}

/// Body of `PUT /v1/contacts/{id}`: only the fields given change; `null`
/// clears an optional field.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateContact {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::username)]
    pub username: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::phone_number)]
    pub phone_number: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::url_nullable)]
    pub avatar_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::display_name)]
    pub display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "validate::whole_double_option")]
    #[schema(schema_with = validate::schema::timestamp)]
    pub last_active_at: Option<Option<i64>>,
}

fn avatar(value: Option<&str>) -> DomainResult<Option<String>> {
    value.map(|v| validate::url("avatar_url", v)).transpose()
}

fn display_name(value: Option<&str>) -> DomainResult<Option<String>> {
    value
        .map(|v| validate::DISPLAY_NAME.check("display_name", v))
        .transpose()
}

fn last_active(value: Option<i64>) -> DomainResult<Option<i64>> {
    value
        .map(|v| validate::timestamp("last_active_at", v))
        .transpose()
}

/// Maps a uniqueness conflict on the username to a 409 that names it.
fn conflict(username: &str) -> impl FnOnce(StoreError) -> DomainError + '_ {
    move |e| match e {
        StoreError::Conflict(_) => DomainError::Conflict(format!(
            "a contact with username `{}` already exists",
            ids::printable(username)
        )),
        e => e.into(),
    }
}

/// Rejects `null` for a field that cannot be cleared.
pub(crate) fn not_null<T>(field: &str, value: Option<Option<T>>) -> DomainResult<Option<T>> {
    match value {
        Some(None) => Err(DomainError::Invalid(format!("{field} cannot be null"))),
        Some(Some(v)) => Ok(Some(v)),
        None => Ok(None),
    }
}

impl Notifly {
    /// Creates a contact and emits `contact.created`.
    pub async fn create_contact(
        &self,
        account: &str,
        input: CreateContact,
        idempotency: Option<&Idempotency>,
    ) -> DomainResult<Contact> {
        let contact = Contact {
            id: ids::new_id(),
            username: validate::username(&input.username)?,
            phone_number: validate::phone_number(&input.phone_number)?,
            avatar_url: avatar(input.avatar_url.as_deref())?,
            display_name: display_name(input.display_name.as_deref())?,
            conversation_id: None,
            last_active_at: last_active(input.last_active_at)?,
            created_at: ids::now(),
        };
        let mut tx = match self.begin(account, idempotency).await? {
            Begun::Replay(body) => return replay(&body),
            Begun::Fresh(tx) => tx,
        };
        tx.insert_contact(account, &contact)
            .await
            .map_err(conflict(&contact.username))?;
        emit(
            tx.as_mut(),
            account,
            ResourceKind::Contact,
            Action::Created,
            &contact,
        )
        .await?;
        self.finish(tx, account, idempotency, &contact).await?;
        Ok(contact)
    }

    /// One contact.
    pub async fn contact(&self, account: &str, id: &str) -> DomainResult<Contact> {
        let mut conn = self.store.read().await?;
        found(conn.contact(account, id).await, KIND, id)
    }

    /// A page of contacts, newest first.
    pub async fn contacts(&self, account: &str, page: &Page) -> DomainResult<Listed<Contact>> {
        let mut conn = self.store.read().await?;
        conn.list_contacts(account, page)
            .await
            .map_err(list_error(KIND, page))
    }

    /// Applies a partial update; emits `contact.updated` if anything changed.
    pub async fn update_contact(
        &self,
        account: &str,
        id: &str,
        input: UpdateContact,
    ) -> DomainResult<Contact> {
        let mut tx = self.write_tx().await?;
        let before = found(tx.contact(account, id).await, KIND, id)?;
        let mut after = before.clone();
        if let Some(username) = not_null("username", input.username)? {
            after.username = validate::username(&username)?;
        }
        if let Some(phone) = not_null("phone_number", input.phone_number)? {
            after.phone_number = validate::phone_number(&phone)?;
        }
        if let Some(url) = input.avatar_url {
            after.avatar_url = avatar(url.as_deref())?;
        }
        if let Some(name) = input.display_name {
            after.display_name = display_name(name.as_deref())?;
        }
        if let Some(at) = input.last_active_at {
            after.last_active_at = last_active(at)?;
        }
        if after == before {
            // Nothing changed; still answer only from durable state.
            self.commit(tx).await?;
            return Ok(before);
        }
        tx.update_contact(account, &after)
            .await
            .map_err(conflict(&after.username))?;
        emit(
            tx.as_mut(),
            account,
            ResourceKind::Contact,
            Action::Updated,
            &after,
        )
        .await?;
        self.commit(tx).await?;
        Ok(after)
    }

    /// Deletes a contact, removing it from its groups (`group.updated`), and
    /// emits `contact.deleted` with the contact as it was. A contact that still
    /// has its conversation or has sent messages cannot be deleted: those
    /// reference it.
    pub async fn delete_contact(&self, account: &str, id: &str) -> DomainResult<Contact> {
        let mut tx = self.write_tx().await?;
        tx.reads_to_delete();
        let contact = found(tx.contact(account, id).await, KIND, id)?;
        if let Some(conversation) = &contact.conversation_id {
            return Err(DomainError::Conflict(format!(
                "contact `{id}` has conversation `{conversation}`; delete the conversation first"
            )));
        }
        if tx.contact_has_messages(account, id).await? {
            return Err(DomainError::Conflict(format!(
                "contact `{id}` is the sender of messages; delete those messages first"
            )));
        }
        for group_id in tx.groups_with_member(account, id).await? {
            groups::remove_member(tx.as_mut(), account, &group_id, id).await?;
        }
        tx.delete_contact(account, id).await?;
        emit(
            tx.as_mut(),
            account,
            ResourceKind::Contact,
            Action::Deleted,
            &contact,
        )
        .await?;
        self.commit(tx).await?;
        Ok(contact)
    }
}

/// Points a contact at its conversation (or clears it), emitting `contact.updated`.
pub(crate) async fn set_conversation(
    tx: &mut dyn WriteTx,
    account: &str,
    contact_id: &str,
    conversation_id: Option<&str>,
) -> DomainResult<()> {
    let mut contact = found(tx.contact(account, contact_id).await, KIND, contact_id)?;
    contact.conversation_id = conversation_id.map(str::to_owned);
    tx.update_contact(account, &contact).await?;
    emit(
        tx,
        account,
        ResourceKind::Contact,
        Action::Updated,
        &contact,
    )
    .await
}
