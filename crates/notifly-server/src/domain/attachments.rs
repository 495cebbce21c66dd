//! Attachments: files uploaded for a message. The bytes live under the
//! attachment directory, one file per attachment, named by account and id;
//! the row holds the metadata.

use std::path::PathBuf;

use notifly_webhooks::{Action, ResourceKind};
use serde::Deserialize;
use utoipa::ToSchema;

use super::contacts::not_null;
use super::validate::{self, double_option};
use super::{Begun, DomainResult, Idempotency, Notifly, emit, found, list_error, messages, replay};
use crate::ids;
use crate::store::{Attachment, Listed, Page, WriteTx};

const KIND: &str = "attachment";

/// An upload, as parsed from `POST /v1/attachments`.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    pub message_id: String,
    pub filename: String,
    /// The media type the client gave for the file part, if any.
    pub file_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// Body of `PUT /v1/attachments/{id}`: the file name can change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAttachment {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = validate::schema::filename)]
    pub filename: Option<Option<String>>,
}

/// Sets the URL the bytes are served at.
pub(crate) fn fill_url(a: &mut Attachment, public_url: &str) {
    a.file_url = format!("{public_url}/v1/attachments/{}/content", a.id);
}

/// An uploaded file's name: the last path segment of what the client sent
/// (some send a whole path), then [`validate::FILENAME`].
fn upload_filename(value: &str) -> DomainResult<String> {
    let base = value.rsplit(['/', '\\']).next().unwrap_or(value);
    validate::FILENAME.check("filename", base)
}

/// A media type `type/subtype` made of token characters (parameters dropped);
/// anything else is stored as `application/octet-stream`.
fn media_type(value: Option<&str>) -> String {
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    value
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| matches!(v.split_once('/'), Some((t, s)) if token(t) && token(s)))
        .unwrap_or_else(|| "application/octet-stream".to_owned())
}

impl Notifly {
    fn file_path(&self, account: &str, id: &str) -> PathBuf {
        self.attachment_dir.join(account).join(id)
    }

    /// Stores an upload and emits `attachment.created` and `message.updated`
    /// (the message's `attachments` changed). The file is on disk before the
    /// row commits; if the write fails or replays an earlier one, the file is
    /// removed.
    pub async fn create_attachment(
        &self,
        account: &str,
        input: NewAttachment,
        idempotency: Option<&Idempotency>,
    ) -> DomainResult<Attachment> {
        let mut attachment = Attachment {
            id: ids::new_id(),
            message_id: validate::reference("message_id", "message", &input.message_id)?,
            filename: upload_filename(&input.filename)?,
            file_url: String::new(),
            file_type: media_type(input.file_type.as_deref()),
            file_size: input.bytes.len() as i64,
            created_at: ids::now(),
        };
        fill_url(&mut attachment, &self.public_url);
        // The bytes go to disk before the write starts, so that no file I/O
        // happens while holding the database's single writer.
        let path = self.file_path(account, &attachment.id);
        write_file(&path, &input.bytes).await?;
        let result = async {
            let mut tx = match self.begin(account, idempotency).await? {
                Begun::Replay(body) => return Ok(Some(body)),
                Begun::Fresh(tx) => tx,
            };
            if tx.message(account, &attachment.message_id).await?.is_none() {
                return Err(validate::missing(
                    "message_id",
                    "message",
                    &attachment.message_id,
                ));
            }
            tx.insert_attachment(account, &attachment).await?;
            emit(
                tx.as_mut(),
                account,
                ResourceKind::Attachment,
                Action::Created,
                &attachment,
            )
            .await?;
            self.touch_message(tx.as_mut(), account, &attachment.message_id)
                .await?;
            self.finish(tx, account, idempotency, &attachment).await?;
            Ok(None)
        }
        .await;
        match result {
            Ok(None) => Ok(attachment),
            Ok(Some(replayed)) => {
                let _ = tokio::fs::remove_file(&path).await;
                replay(&replayed)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                Err(e)
            }
        }
    }

    /// One attachment's metadata.
    pub async fn attachment(&self, account: &str, id: &str) -> DomainResult<Attachment> {
        let mut conn = self.store.read().await?;
        let mut a = found(conn.attachment(account, id).await, KIND, id)?;
        fill_url(&mut a, &self.public_url);
        Ok(a)
    }

    /// One attachment's metadata and the path of its bytes.
    pub async fn attachment_file(
        &self,
        account: &str,
        id: &str,
    ) -> DomainResult<(Attachment, PathBuf)> {
        let a = self.attachment(account, id).await?;
        let path = self.file_path(account, id);
        Ok((a, path))
    }

    /// A page of attachments, newest first, optionally of one message.
    pub async fn attachments(
        &self,
        account: &str,
        message_id: Option<&str>,
        page: &Page,
    ) -> DomainResult<Listed<Attachment>> {
        let mut conn = self.store.read().await?;
        let listed = conn
            .list_attachments(account, message_id, page)
            .await
            .map_err(list_error(KIND, page))?;
        Ok(listed.map(|mut a| {
            fill_url(&mut a, &self.public_url);
            a
        }))
    }

    /// Renames an attachment; emits `attachment.updated` and `message.updated`.
    pub async fn update_attachment(
        &self,
        account: &str,
        id: &str,
        input: UpdateAttachment,
    ) -> DomainResult<Attachment> {
        let mut tx = self.write_tx().await?;
        let mut before = found(tx.attachment(account, id).await, KIND, id)?;
        fill_url(&mut before, &self.public_url);
        let mut after = before.clone();
        if let Some(name) = not_null("filename", input.filename)? {
            after.filename = validate::FILENAME.check("filename", &name)?;
        }
        if after == before {
            // Nothing changed; still answer only from durable state.
            self.commit(tx).await?;
            return Ok(before);
        }
        tx.update_attachment(account, &after).await?;
        emit(
            tx.as_mut(),
            account,
            ResourceKind::Attachment,
            Action::Updated,
            &after,
        )
        .await?;
        self.touch_message(tx.as_mut(), account, &after.message_id)
            .await?;
        self.commit(tx).await?;
        Ok(after)
    }

    /// Deletes an attachment; emits `attachment.deleted` and `message.updated`.
    pub async fn delete_attachment(&self, account: &str, id: &str) -> DomainResult<Attachment> {
        let mut tx = self.write_tx().await?;
        let mut attachment = found(tx.attachment(account, id).await, KIND, id)?;
        fill_url(&mut attachment, &self.public_url);
        tx.delete_attachment(account, id).await?;
        emit(
            tx.as_mut(),
            account,
            ResourceKind::Attachment,
            Action::Deleted,
            &attachment,
        )
        .await?;
        self.touch_message(tx.as_mut(), account, &attachment.message_id)
            .await?;
        self.commit(tx).await?;
        self.remove_files(account, &[attachment.id.clone()]).await;
        Ok(attachment)
    }

    /// Bumps a message's `updated_at` after its attachments changed and emits
    /// `message.updated` with its new representation.
    async fn touch_message(
        &self,
        tx: &mut dyn WriteTx,
        account: &str,
        message_id: &str,
    ) -> DomainResult<()> {
        let mut record = found(tx.message(account, message_id).await, "message", message_id)?;
        record.updated_at = ids::now();
        tx.update_message(account, &record).await?;
        let message = messages::represent(tx, account, record, &self.public_url).await?;
        emit(
            tx,
            account,
            ResourceKind::Message,
            Action::Updated,
            &message,
        )
        .await
    }

    /// Removes attachment files after their rows are gone. Failures are logged:
    /// the rows are deleted, so the bytes are unreachable either way.
    pub(crate) async fn remove_files(&self, account: &str, ids: &[String]) {
        for id in ids {
            let path = self.file_path(account, id);
            if let Err(e) = tokio::fs::remove_file(&path).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(attachment = %id, error = %e, "could not remove attachment file");
            }
        }
    }
}

/// Writes `bytes` to `path` durably: a temporary file, fsync, rename.
async fn write_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("part");
    let written = async {
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(bytes).await?;
        file.sync_all().await
    }
    .await;
    if let Err(e) = written {
        // A full disk must not keep what was written of it.
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    tokio::fs::rename(&tmp, path).await?;
    // The rename (and a new directory) are durable only once the directory is.
    if let Some(dir) = path.parent() {
        tokio::fs::File::open(dir).await?.sync_all().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_are_normalised_or_replaced() {
        assert_eq!(media_type(Some("image/PNG")), "image/png");
        assert_eq!(media_type(Some("text/plain; charset=utf-8")), "text/plain");
        assert_eq!(
            media_type(Some("text/html\r\nx: y")),
            "application/octet-stream"
        );
        assert_eq!(media_type(Some("nonsense")), "application/octet-stream");
        assert_eq!(media_type(None), "application/octet-stream");
    }

    #[test]
    fn filenames_keep_only_their_last_segment() {
        assert_eq!(upload_filename("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(upload_filename("C:\\x\\report.pdf").unwrap(), "report.pdf");
        assert!(upload_filename("dir/").is_err());
        assert!(upload_filename("..").is_err());
        // A rename takes a name, not a path.
        assert!(!validate::FILENAME.accepts("dir/report.pdf"));
        assert!(validate::FILENAME.accepts("report.pdf"));
    }
}
