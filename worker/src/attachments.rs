//! Files on a patient (referral letters, scans, signed consents):
//!
//! - `POST /api/v1/patients/{id}/attachments`: the raw file as the body, its name
//!   from `?filename=` or a `Content-Disposition` filename, an optional
//!   `?description=`; `201` with the metadata. Every role of the clinic uploads
//!   (the front desk scans referral letters and signed forms).
//! - `GET /api/v1/patients/{id}/attachments`: the patient's files' metadata, a
//!   list page like any other (`limit`, `cursor`, `updated_since`,
//!   `include_deleted`); every role (staff see what is on file, not its content).
//! - `GET /api/v1/attachments/{id}`: the content, streamed, as `attachment` with
//!   `nosniff` and a sandboxing CSP; admins and practitioners only (the content is
//!   clinical, outside staff's minimum necessary).
//! - `DELETE /api/v1/attachments/{id}`: the content removed at once, the metadata
//!   left as a tombstone (consents and audit records may name it); admins and
//!   practitioners only. There is no restore.
//!
//! **Content types.** The type is found from the bytes ([`infer`]), never taken
//! from the client: PDF, PNG, JPEG, TIFF, HEIF/HEIC, or plain UTF-8 text (no
//! markup at its start, no control characters, checked to its last byte as it is
//! stored). Anything else, or bytes that are not what the `Content-Type` claims
//! (other than `application/octet-stream`), is `415` and nothing is stored. The
//! stored type is the one found.
//!
//! **Storage.** The body is read as it arrives, bounded by `MAX_ATTACHMENT_BYTES`
//! (a declared length over it is refused before reading; a body that grows past
//! it is `413`, nothing stored). It is cut into [`CHUNK`]-byte chunks, each sealed
//! on its own with the clinic's data key (AES-256-GCM), bound to the clinic and
//! to the chunk's id, which is derived from the attachment and the chunk's place
//! (so a chunk moved or swapped does not open, and key rotation re-seals chunks
//! by id like any sealed field: `ATTACHMENT_CHUNKS` in `common::resource`), and
//! written in batches to `attachment_chunks` in the clinic's own database, in the
//! transaction that
//! writes the metadata and its `create` audit record: never 25 MiB in one
//! allocation, never a half-stored file. The gateway reads the body whole before
//! forwarding it (`gateway/src/proxy.rs` says why), so the transaction lasts as
//! long as a local copy, not a client's upload. File name and description are
//! sealed like any sensitive field; size and SHA-256 are stored in the clear.
//!
//! **Download.** The metadata read is audited (`read` on `attachments`, the
//! attachment's id) and its record committed before the first byte; the chunks are
//! then read in batches, opened, and checked against the stored size and SHA-256
//! as they stream: a chunk missing, moved or altered ends the body early (the
//! client sees fewer bytes than `Content-Length`), never a wrong file.
//!
//! Erasure of the patient deletes the content and clears names and descriptions
//! (`erase_patient`, clinic migration 019); the clinic export lists the metadata
//! (not the content, which stays one download per file).

use crate::access::{self, audited, parse_id, read_audited, Lane};
use crate::budget::Conn;
use crate::context::Caller;
use crate::data::{self, Action, Actor};
use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use crate::query;
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::crypto::{sealed_key_id, ClinicKeys};
use common::resource::{self, Resource};
use common::ClinicId;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;
use uuid::Uuid;

const ATTACHMENTS: &Resource = &resource::ATTACHMENTS;

/// Bytes of content per sealed chunk.
pub const CHUNK: usize = 64 * 1024;
/// Chunks written or read per statement (1 MiB).
const BATCH: usize = 16;
/// The content's table (`attachment_chunks`), described like a resource so that
/// key rotation re-seals it.
const CHUNKS: &Resource = &resource::ATTACHMENT_CHUNKS;
/// A download whose client reads nothing for this long is cut off.
const DOWNLOAD_IDLE: Duration = Duration::from_secs(60);
/// The longest file name kept (longer ones are cut, extension kept).
const MAX_FILENAME_CHARS: usize = 255;
/// The longest description taken.
const MAX_DESCRIPTION_CHARS: usize = 1000;

/// The media types an attachment may have, found from its bytes, with the
/// extension a file of that type gets when uploaded without a name.
const ACCEPTED: &[(&str, &str)] = &[
    ("application/pdf", "pdf"),
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("image/tiff", "tif"),
    ("image/heif", "heic"),
    ("text/plain", "txt"),
];

const ACCEPTED_TEXT: &str =
    "Attachments are PDF, PNG, JPEG, TIFF, HEIF/HEIC or plain UTF-8 text; nothing was stored.";

/// Names clients use for the accepted types, as the type found in the bytes.
fn canonical(media: &str) -> &str {
    match media {
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        "image/heic" | "image/heic-sequence" | "image/heif-sequence" => "image/heif",
        "image/x-png" => "image/png",
        "application/x-pdf" => "application/pdf",
        other => other,
    }
}

/// Whether `head` (the first bytes of a file) reads as plain text: UTF-8 (a
/// character cut at the end aside), no control characters but tab, line breaks
/// and form feed, and no markup at the start.
fn plain_text(head: &[u8]) -> bool {
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(e) if e.error_len().is_none() => {
            // Cut inside a character at the end of the sniffed bytes.
            match std::str::from_utf8(&head[..e.valid_up_to()]) {
                Ok(text) => text,
                Err(_) => return false,
            }
        }
        Err(_) => return false,
    };
    let body = text.trim_start_matches('\u{feff}').trim_start();
    !body.starts_with('<') && clean_text(text)
}

/// Text without control characters but tab, line breaks and form feed.
fn clean_text(text: &str) -> bool {
    text.chars()
        .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r' | '\u{c}'))
}

/// A plain-text file checked as a whole, chunk by chunk (a character may be cut
/// between two): UTF-8 and [`clean_text`] to its last byte.
#[derive(Default)]
struct TextCheck {
    /// The start of a character cut at the end of the chunk before.
    tail: Vec<u8>,
}

impl TextCheck {
    fn refused() -> WorkerError {
        WorkerError::UnsupportedMediaType(format!(
            "The file starts as text but is not plain UTF-8 text throughout. {ACCEPTED_TEXT}"
        ))
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<(), WorkerError> {
        let mut bytes = std::mem::take(&mut self.tail);
        bytes.extend_from_slice(chunk);
        let valid = match std::str::from_utf8(&bytes) {
            Ok(text) => text.len(),
            Err(e) if e.error_len().is_none() && bytes.len() - e.valid_up_to() < 4 => {
                e.valid_up_to()
            }
            Err(_) => return Err(Self::refused()),
        };
        let text = std::str::from_utf8(&bytes[..valid]).map_err(|_| Self::refused())?;
        if !clean_text(text) {
            return Err(Self::refused());
        }
        self.tail = bytes[valid..].to_vec();
        Ok(())
    }

    fn finish(&self) -> Result<(), WorkerError> {
        if self.tail.is_empty() {
            Ok(())
        } else {
            Err(Self::refused())
        }
    }
}

/// The media type of a file from its first bytes, checked against what the client
/// claimed (`claimed`, lowercase, parameters removed): `415` when the type is not
/// accepted or is not the one claimed.
fn sniff(head: &[u8], claimed: Option<&str>) -> Result<&'static str, WorkerError> {
    let found = match infer::get(head) {
        Some(kind) => {
            let mime = canonical(kind.mime_type());
            ACCEPTED
                .iter()
                .map(|(m, _)| *m)
                .find(|m| *m == mime)
                .ok_or_else(|| {
                    WorkerError::UnsupportedMediaType(format!(
                        "The file is {mime}. {ACCEPTED_TEXT}"
                    ))
                })?
        }
        None if plain_text(head) => "text/plain",
        None => {
            return Err(WorkerError::UnsupportedMediaType(format!(
                "The file's type could not be recognised. {ACCEPTED_TEXT}"
            )))
        }
    };
    match claimed.map(canonical) {
        None | Some("application/octet-stream") => Ok(found),
        Some(claimed) if claimed == found => Ok(found),
        Some(claimed) => Err(WorkerError::UnsupportedMediaType(format!(
            "The file is {found}, not the {claimed} its Content-Type claims; nothing was stored."
        ))),
    }
}

/// The media type a request's `Content-Type` claims (lowercase, no parameters).
fn claimed_type(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = raw.split(';').next()?.trim().to_ascii_lowercase();
    (!media.is_empty()).then_some(media)
}

/// A file name as kept: its last path component, without control characters,
/// trimmed, at most [`MAX_FILENAME_CHARS`] characters (the extension kept).
fn clean_filename(raw: &str) -> Option<String> {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let name: String = last.chars().filter(|c| !c.is_control()).collect();
    let name = name.trim().trim_matches('.').trim();
    if name.is_empty() {
        return None;
    }
    if name.chars().count() <= MAX_FILENAME_CHARS {
        return Some(name.to_owned());
    }
    let ext: String = match name.rsplit_once('.') {
        Some((_, ext)) if ext.chars().count() <= 10 => format!(".{ext}"),
        _ => String::new(),
    };
    let stem: String = name
        .chars()
        .take(MAX_FILENAME_CHARS - ext.chars().count())
        .collect();
    Some(format!("{stem}{ext}"))
}

/// The `filename` of a `Content-Disposition` header: `filename*` (RFC 5987,
/// UTF-8) first, else `filename`.
fn disposition_filename(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::CONTENT_DISPOSITION)?.to_str().ok()?;
    let mut plain = None;
    for part in raw.split(';').skip(1) {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let value = value.trim();
                let (charset, rest) = value.split_once('\'')?;
                let (_, encoded) = rest.split_once('\'')?;
                if charset.eq_ignore_ascii_case("utf-8") {
                    return Some(common::query::percent_decode(encoded));
                }
            }
            "filename" => {
                plain = Some(value.trim().trim_matches('"').replace("\\\"", "\""));
            }
            _ => {}
        }
    }
    plain
}

/// What an upload says about its file besides the bytes.
struct Described {
    filename: Option<String>,
    description: Option<String>,
    claimed: Option<String>,
}

fn described(raw: Option<&str>, headers: &HeaderMap) -> Result<Described, WorkerError> {
    let pairs = common::query::strict_pairs(raw.unwrap_or(""))
        .map_err(|e| WorkerError::BadRequest(e.to_string()))?;
    let mut filename = None;
    let mut description = None;
    for (key, value) in pairs {
        if value.contains('\0') {
            return Err(WorkerError::BadRequest(format!(
                "`{key}` must not contain NUL."
            )));
        }
        match key.as_str() {
            "filename" => filename = Some(value),
            "description" => {
                if value.chars().count() > MAX_DESCRIPTION_CHARS {
                    return Err(WorkerError::BadRequest(format!(
                        "`description` must be at most {MAX_DESCRIPTION_CHARS} characters."
                    )));
                }
                description = Some(value).filter(|d| !d.trim().is_empty());
            }
            _ => {}
        }
    }
    let filename = filename
        .or_else(|| disposition_filename(headers))
        .as_deref()
        .and_then(clean_filename);
    Ok(Described {
        filename,
        description,
        claimed: claimed_type(headers),
    })
}

/// The id of chunk `seq` of attachment `attachment`: derived from both, so that a
/// chunk's sealed value, bound to its id, opens only in its place.
fn chunk_id(attachment: &Uuid, seq: i32) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"medicalpro:attachment-chunk:v1:")
        .chain_update(attachment.as_bytes())
        .chain_update(seq.to_be_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

fn content_field() -> Result<&'static common::resource::Field, WorkerError> {
    CHUNKS
        .field("content")
        .ok_or_else(|| WorkerError::Internal("attachment_chunks has no field content".into()))
}

/// Chunk `seq` of attachment `attachment` sealed (it opens nowhere else): the
/// chunk's id and sealed content.
fn seal_chunk(
    keys: &ClinicKeys,
    clinic: ClinicId,
    attachment: &Uuid,
    seq: i32,
    plain: &[u8],
) -> Result<(Uuid, Vec<u8>), WorkerError> {
    let id = chunk_id(attachment, seq);
    let sealed = data::codec::seal(keys, clinic, CHUNKS, content_field()?, &id, plain);
    Ok((id, sealed))
}

fn open_chunk(
    keys: &ClinicKeys,
    clinic: ClinicId,
    attachment: &Uuid,
    seq: i32,
    sealed: &[u8],
) -> Result<Vec<u8>, WorkerError> {
    let id = chunk_id(attachment, seq);
    data::codec::open(keys, clinic, CHUNKS, content_field()?, &id, sealed)
        .map_err(|e| WorkerError::Integrity(format!("chunk {seq} of attachment {attachment}: {e}")))
}

fn field(name: &str) -> Result<&'static common::resource::Field, WorkerError> {
    ATTACHMENTS
        .field(name)
        .ok_or_else(|| WorkerError::Internal(format!("attachments has no field {name}")))
}

/// Sealed chunks waiting to be written.
#[derive(Default)]
struct Batch {
    ids: Vec<Uuid>,
    seqs: Vec<i32>,
    sealed: Vec<Vec<u8>>,
}

impl Batch {
    async fn flush(
        &mut self,
        tx: &deadpool_postgres::Transaction<'_>,
        id: &Uuid,
    ) -> Result<(), WorkerError> {
        if self.seqs.is_empty() {
            return Ok(());
        }
        tx.execute(
            "INSERT INTO attachment_chunks (id, attachment_id, seq, content_enc) \
             SELECT u.id, $1, u.seq, u.sealed \
             FROM unnest($2::uuid[], $3::int4[], $4::bytea[]) AS u(id, seq, sealed)",
            &[id, &self.ids, &self.seqs, &self.sealed],
        )
        .await
        .map_err(WorkerError::from_db)?;
        self.ids.clear();
        self.seqs.clear();
        self.sealed.clear();
        Ok(())
    }
}

/// Reads the next piece of the body; `None` at its end. Past `limit` bytes in all,
/// `413`.
async fn next_piece(
    stream: &mut axum::body::BodyDataStream,
    total: &mut usize,
    limit: usize,
) -> Result<Option<Bytes>, WorkerError> {
    match stream.next().await {
        None => Ok(None),
        Some(Err(_)) => Err(WorkerError::BadRequest(
            "The request body could not be read.".into(),
        )),
        Some(Ok(piece)) => {
            *total = total.saturating_add(piece.len());
            if *total > limit {
                return Err(WorkerError::PayloadTooLarge(limit));
            }
            Ok(Some(piece))
        }
    }
}

/// Everything an upload needs besides the connection.
struct Upload {
    id: Uuid,
    patient: Uuid,
    described: Described,
    body: Body,
    limit: usize,
}

/// Stores an upload in one transaction: the content sealed in chunks as it is read,
/// the metadata, the `create` record; the stored metadata as the API shows it.
async fn store(
    client: &mut Conn,
    keys: &ClinicKeyCache,
    actor: &Actor,
    upload: Upload,
) -> Result<Value, WorkerError> {
    let Upload {
        id,
        patient,
        described,
        body,
        limit,
    } = upload;
    let clinic = actor.clinic;
    let mut stream = body.into_data_stream();
    let mut total = 0usize;
    let mut pending: Vec<u8> = Vec::with_capacity(CHUNK);
    let mut ended = false;
    // The first chunk (or the whole file, if smaller) tells the type.
    while pending.len() < CHUNK && !ended {
        match next_piece(&mut stream, &mut total, limit).await? {
            Some(piece) => pending.extend_from_slice(&piece),
            None => ended = true,
        }
    }
    if pending.is_empty() {
        return Err(WorkerError::BadRequest(
            "The body is empty: send the file's bytes.".into(),
        ));
    }
    let content_type = sniff(
        &pending[..pending.len().min(CHUNK)],
        described.claimed.as_deref(),
    )?;
    let sealing = keys.current();
    let tx = client.transaction().await.map_err(WorkerError::from_db)?;
    let live = tx
        .query_opt(
            // Shared-locked until the file commits: an erasure of the patient waits
            // for it, then removes it with the rest.
            "SELECT 1 FROM patients WHERE company_id = $1 AND id = $2 AND deleted_at IS NULL FOR SHARE",
            &[clinic.as_uuid(), &patient],
        )
        .await
        .map_err(WorkerError::from_db)?;
    if live.is_none() {
        return Err(WorkerError::NotFound);
    }
    let mut hasher = Sha256::new();
    let mut batch = Batch::default();
    let mut seq: i32 = 0;
    let mut text = (content_type == "text/plain").then(TextCheck::default);
    loop {
        while pending.len() >= CHUNK || (ended && !pending.is_empty()) {
            let rest = pending.split_off(pending.len().min(CHUNK));
            let chunk = std::mem::replace(&mut pending, rest);
            hasher.update(&chunk);
            if let Some(text) = &mut text {
                text.feed(&chunk)?;
            }
            let (chunk_id, sealed) = seal_chunk(&sealing, clinic, &id, seq, &chunk)?;
            batch.ids.push(chunk_id);
            batch.seqs.push(seq);
            batch.sealed.push(sealed);
            seq += 1;
            if batch.seqs.len() == BATCH {
                batch.flush(&tx, &id).await?;
            }
        }
        if ended {
            break;
        }
        match next_piece(&mut stream, &mut total, limit).await? {
            Some(piece) => pending.extend_from_slice(&piece),
            None => ended = true,
        }
    }
    if let Some(text) = &text {
        text.finish()?;
    }
    batch.flush(&tx, &id).await?;
    let sha256 = hex::encode(hasher.finalize());
    let filename = described.filename.unwrap_or_else(|| {
        let ext = ACCEPTED
            .iter()
            .find(|(m, _)| *m == content_type)
            .map_or("bin", |(_, e)| *e);
        format!("attachment.{ext}")
    });
    let sealed_name = data::codec::seal(
        &sealing,
        clinic,
        ATTACHMENTS,
        field("filename")?,
        &id,
        filename.as_bytes(),
    );
    let description_field = field("description")?;
    let sealed_description = described.description.map(|d| {
        data::codec::seal(
            &sealing,
            clinic,
            ATTACHMENTS,
            description_field,
            &id,
            d.as_bytes(),
        )
    });
    let size = i64::try_from(total).map_err(|e| WorkerError::Internal(e.to_string()))?;
    tx.execute(
        "INSERT INTO attachments \
         (id, company_id, patient_id, filename_enc, description_enc, content_type, size, sha256, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &id,
            clinic.as_uuid(),
            &patient,
            &sealed_name,
            &sealed_description,
            &content_type,
            &size,
            &sha256,
            &actor.user,
        ],
    )
    .await
    .map_err(WorkerError::from_db)?;
    data::record_access(&tx, actor, ATTACHMENTS, Action::Create, Some(id), "success").await?;
    tx.commit().await.map_err(WorkerError::from_db)?;
    data::get(client, keys, ATTACHMENTS, actor, id, data::Audit::Deferred).await
}

/// `POST /api/v1/patients/{id}/attachments`.
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    Path(patient): Path<String>,
    RawQuery(raw): RawQuery,
    req: Request,
) -> Result<Response, WorkerError> {
    let patient = parse_id(&patient)?;
    let described = described(raw.as_deref(), req.headers())?;
    let limit = state.max_attachment_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let refused = access::refusal(&caller, ATTACHMENTS, false);
    let id = Uuid::now_v7();
    let upload = Upload {
        id,
        patient,
        described,
        body: req.into_body(),
        limit,
    };
    let created = audited(
        &state,
        &caller,
        ATTACHMENTS,
        Action::Create,
        Some(id),
        |mut client, actor, keys| async move {
            if let Some(refusal) = refused {
                return (client, Err(WorkerError::Forbidden(refusal)));
            }
            if declared.is_some_and(|n| n > limit) {
                return (client, Err(WorkerError::PayloadTooLarge(limit)));
            }
            let result = store(&mut client, &keys, &actor, upload).await;
            if matches!(result, Err(WorkerError::NotFound)) {
                // No statement recorded it: the transaction was rolled back.
                let recorded = data::record_access(
                    &*client,
                    &actor,
                    ATTACHMENTS,
                    Action::Create,
                    Some(id),
                    "not_found",
                )
                .await;
                if let Err(e) = recorded {
                    return (client, Err(e));
                }
            }
            (client, result)
        },
    )
    .await?;
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    if let Ok(location) = HeaderValue::try_from(format!("/api/v1/attachments/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /api/v1/patients/{id}/attachments`: one page of the patient's files'
/// metadata; `404` for a patient the clinic does not have (or deleted).
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(patient): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, WorkerError> {
    let patient = parse_id(&patient)?;
    // A `patient_id` in the query too is refused as a repeated parameter.
    let mut query = format!("patient_id={patient}");
    if let Some(raw) = raw.as_deref().filter(|q| !q.is_empty()) {
        query.push('&');
        query.push_str(raw);
    }
    let q = query::list_query(ATTACHMENTS, Some(&query))?;
    let q = &q;
    let (rows, next) = read_audited(
        &state,
        &caller,
        ATTACHMENTS,
        Action::List,
        None,
        Lane::Own,
        |(rows, _): &(Vec<Value>, Option<data::Cursor>)| Some(access::row_ids(rows)),
        |client, actor, keys| async move {
            let result = async {
                let live = client
                    .query_opt(
                        "SELECT 1 FROM patients WHERE company_id = $1 AND id = $2 AND deleted_at IS NULL",
                        &[actor.clinic.as_uuid(), &patient],
                    )
                    .await
                    .map_err(WorkerError::from_db)?;
                if live.is_none() {
                    return Err(WorkerError::NotFound);
                }
                data::list(&client, &keys, ATTACHMENTS, &actor, q, data::Audit::Deferred).await
            }
            .await;
            (client, result)
        },
    )
    .await?;
    let next = next.map(|cursor| cursor.encode());
    Ok(Json(json!({"data": rows, "next_cursor": next})).into_response())
}

/// Why `caller` may not download or delete attachments, if it may not.
fn clinicians_only(caller: &Caller, verb: &str) -> Option<String> {
    let roles = ATTACHMENTS.access.delete;
    (!roles.contains(&caller.role)).then(|| {
        format!(
            "Only admin or practitioner may {verb} attachments; you are signed in as {}.",
            caller.role.as_str()
        )
    })
}

/// What a download needs to know before the first byte.
struct Stored {
    content_type: String,
    size: i64,
    sha256: String,
    filename: String,
}

/// The metadata of a live attachment of the clinic.
async fn stored(
    client: &Conn,
    keys: &ClinicKeyCache,
    clinic: ClinicId,
    id: Uuid,
) -> Result<Stored, WorkerError> {
    let row = client
        .query_opt(
            "SELECT content_type, size, sha256, filename_enc FROM attachments \
             WHERE company_id = $1 AND id = $2 AND deleted_at IS NULL",
            &[clinic.as_uuid(), &id],
        )
        .await
        .map_err(WorkerError::from_db)?
        .ok_or(WorkerError::NotFound)?;
    let get = |e: tokio_postgres::Error| WorkerError::Internal(format!("an attachment row: {e}"));
    let sealed: Option<Vec<u8>> = row.try_get(3).map_err(get)?;
    let filename = match sealed {
        Some(sealed) => {
            let version = sealed_key_id(&sealed).ok();
            let keys = keys.covering(version).await?;
            let plain =
                data::codec::open(&keys, clinic, ATTACHMENTS, field("filename")?, &id, &sealed)?;
            String::from_utf8_lossy(&plain).into_owned()
        }
        None => "attachment".to_owned(),
    };
    Ok(Stored {
        content_type: row.try_get(0).map_err(get)?,
        size: row.try_get(1).map_err(get)?,
        sha256: row.try_get(2).map_err(get)?,
        filename,
    })
}

/// `Content-Disposition: attachment` naming `filename`: an ASCII `filename` and
/// the exact name as `filename*` (RFC 6266, RFC 5987).
fn content_disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in filename.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// One batch of chunks from `from` on, opened, in order.
async fn read_batch(
    state: &AppState,
    clinic: ClinicId,
    id: &Uuid,
    from: i32,
) -> Result<Vec<(i32, Vec<u8>)>, WorkerError> {
    let (client, keys) = state.registry.session(clinic).await?;
    let rows = client
        .query(
            "SELECT seq, content_enc FROM attachment_chunks WHERE attachment_id = $1 AND seq >= $2 \
             ORDER BY seq LIMIT $3",
            &[id, &from, &(BATCH as i64)],
        )
        .await
        .map_err(WorkerError::from_db)?;
    drop(client);
    let mut sealed = Vec::with_capacity(rows.len());
    for row in &rows {
        let seq: i32 = row.try_get(0).map_err(WorkerError::from_db)?;
        let bytes: Vec<u8> = row.try_get(1).map_err(WorkerError::from_db)?;
        sealed.push((seq, bytes));
    }
    let versions: Vec<u32> = sealed
        .iter()
        .filter_map(|(_, s)| sealed_key_id(s).ok())
        .collect();
    let keys = keys.covering(versions).await?;
    sealed
        .into_iter()
        .map(|(seq, s)| Ok((seq, open_chunk(&keys, clinic, id, seq, &s)?)))
        .collect()
}

/// Streams the content of `id` into `tx`, checking order, size and hash; an error
/// sent (or the channel closed) ends the body early.
async fn pump(
    state: AppState,
    clinic: ClinicId,
    id: Uuid,
    stored: Stored,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, WorkerError>>,
) {
    let mut hasher = Sha256::new();
    let mut sent: i64 = 0;
    let mut next: i32 = 0;
    let outcome: Result<(), WorkerError> = async {
        loop {
            let batch = read_batch(&state, clinic, &id, next).await?;
            if batch.is_empty() {
                break;
            }
            for (seq, plain) in batch {
                if seq != next {
                    return Err(WorkerError::Integrity(format!(
                        "attachment {id}: chunk {next} is missing"
                    )));
                }
                next += 1;
                hasher.update(&plain);
                sent += plain.len() as i64;
                if sent > stored.size {
                    return Err(WorkerError::Integrity(format!(
                        "attachment {id}: more content than its size"
                    )));
                }
                let sending = tx.send_timeout(Ok(Bytes::from(plain)), DOWNLOAD_IDLE);
                if sending.await.is_err() {
                    // Gone or stalled: nothing more to do.
                    return Ok(());
                }
            }
        }
        if sent != stored.size || hex::encode(hasher.finalize_reset()) != stored.sha256 {
            return Err(WorkerError::Integrity(format!(
                "attachment {id}: the content does not match its size and hash"
            )));
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        tracing::error!(error = %e, kind = e.kind(), "an attachment download failed midway");
        let _ = tx.send(Err(e)).await;
    }
}

/// `GET /api/v1/attachments/{id}`: the content, streamed.
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, WorkerError> {
    let id = parse_id(&id)?;
    let refused = clinicians_only(&caller, "download");
    let refused = &refused;
    let clinic = caller.clinic;
    let meta = read_audited(
        &state,
        &caller,
        ATTACHMENTS,
        Action::Read,
        Some(id),
        Lane::Own,
        |_| None,
        |client, _actor, keys| async move {
            let result = match refused {
                Some(refusal) => Err(WorkerError::Forbidden(refusal.clone())),
                None => stored(&client, &keys, clinic, id).await,
            };
            (client, result)
        },
    )
    .await?;
    let headers = [
        (header::CONTENT_TYPE, meta.content_type.clone()),
        (header::CONTENT_LENGTH, meta.size.to_string()),
        (
            header::CONTENT_DISPOSITION,
            content_disposition(&meta.filename),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox".to_owned(),
        ),
        (header::CACHE_CONTROL, "private, no-store".to_owned()),
        (header::ETAG, format!("\"{}\"", meta.sha256)),
    ];
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, WorkerError>>(2);
    tokio::spawn(pump(state.clone(), clinic, id, meta, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((headers, Body::from_stream(stream)).into_response())
}

/// `DELETE /api/v1/attachments/{id}`: the content removed, the metadata marked
/// deleted, in one transaction with its record.
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, WorkerError> {
    let id = parse_id(&id)?;
    let refused = clinicians_only(&caller, "delete");
    audited(
        &state,
        &caller,
        ATTACHMENTS,
        Action::Delete,
        Some(id),
        |mut client, actor, _keys| async move {
            if let Some(refusal) = refused {
                return (client, Err(WorkerError::Forbidden(refusal)));
            }
            let result = remove(&mut client, &actor, id).await;
            (client, result)
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove(client: &mut Conn, actor: &Actor, id: Uuid) -> Result<(), WorkerError> {
    let tx = client.transaction().await.map_err(WorkerError::from_db)?;
    let marked = tx
        .execute(
            "UPDATE attachments SET deleted_at = now(), updated_at = now() \
             WHERE company_id = $1 AND id = $2 AND deleted_at IS NULL",
            &[actor.clinic.as_uuid(), &id],
        )
        .await
        .map_err(WorkerError::from_db)?;
    let outcome = if marked == 1 { "success" } else { "not_found" };
    if marked == 1 {
        tx.execute(
            "DELETE FROM attachment_chunks WHERE attachment_id = $1",
            &[&id],
        )
        .await
        .map_err(WorkerError::from_db)?;
    }
    data::record_access(&tx, actor, ATTACHMENTS, Action::Delete, Some(id), outcome).await?;
    tx.commit().await.map_err(WorkerError::from_db)?;
    if marked == 1 {
        Ok(())
    } else {
        Err(WorkerError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PDF: &[u8] =
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n";
    const PNG: &[u8] = &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13];

    fn refused(r: Result<&str, WorkerError>) -> bool {
        matches!(r, Err(WorkerError::UnsupportedMediaType(_)))
    }

    #[test]
    fn the_type_is_the_one_in_the_bytes() {
        assert_eq!(
            sniff(PDF, Some("application/pdf")).unwrap(),
            "application/pdf"
        );
        assert_eq!(sniff(PDF, None).unwrap(), "application/pdf");
        assert_eq!(
            sniff(PDF, Some("application/octet-stream")).unwrap(),
            "application/pdf"
        );
        assert_eq!(sniff(PNG, Some("image/png")).unwrap(), "image/png");
        assert_eq!(
            sniff(&[0xff, 0xd8, 0xff, 0xe0], Some("image/jpg")).unwrap(),
            "image/jpeg"
        );
        assert_eq!(
            sniff("Référé le 3 mai.\n".as_bytes(), Some("text/plain")).unwrap(),
            "text/plain"
        );
    }

    #[test]
    fn a_lying_or_unaccepted_type_is_refused() {
        let mut exe = b"MZ".to_vec();
        exe.resize(128, 0);
        assert!(refused(sniff(&exe, Some("application/pdf"))));
        assert!(refused(sniff(
            b"<!DOCTYPE html><script>x</script>",
            Some("application/pdf")
        )));
        assert!(refused(sniff(
            b"<html><body>hi</body></html>",
            Some("text/plain")
        )));
        assert!(refused(sniff(b"  <svg onload=alert(1)>", None)));
        assert!(refused(sniff(PNG, Some("application/pdf"))));
        assert!(refused(sniff(b"just text", Some("application/pdf"))));
        assert!(refused(sniff(&[0, 1, 2, 3, 0xfe], None)));
        assert!(refused(sniff(b"PK\x03\x04zip", None)));
    }

    #[test]
    fn text_cut_inside_a_character_is_still_text() {
        let text = "é".repeat(10);
        assert!(plain_text(&text.as_bytes()[..7]));
        assert!(!plain_text(b"a\x00b"));
    }

    #[test]
    fn text_is_checked_to_its_last_byte_across_chunks() {
        let text = "é".repeat(5);
        let bytes = text.as_bytes();
        let mut check = TextCheck::default();
        check.feed(&bytes[..3]).unwrap();
        check.feed(&bytes[3..]).unwrap();
        check.finish().unwrap();
        let mut check = TextCheck::default();
        check.feed(b"fine\n").unwrap();
        assert!(check.feed(b"then \x00 binary").is_err());
        let mut check = TextCheck::default();
        check.feed(&bytes[..3]).unwrap();
        assert!(check.finish().is_err(), "a character cut at the very end");
        assert!(TextCheck::default().feed(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn file_names_are_kept_clean() {
        assert_eq!(
            clean_filename("C:\\scans\\lettre.pdf").unwrap(),
            "lettre.pdf"
        );
        assert_eq!(clean_filename("../../etc/passwd").unwrap(), "passwd");
        assert_eq!(clean_filename("a\u{7}b\n.pdf").unwrap(), "ab.pdf");
        assert!(clean_filename(" .. ").is_none());
        let long = format!("{}.pdf", "x".repeat(400));
        let kept = clean_filename(&long).unwrap();
        assert_eq!(kept.chars().count(), MAX_FILENAME_CHARS);
        assert!(kept.ends_with(".pdf"));
    }

    #[test]
    fn the_disposition_filename_is_read_and_written_both_ways() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static(
                "attachment; filename=\"plain.pdf\"; filename*=UTF-8''r%C3%A9f%C3%A9r%C3%A9.pdf",
            ),
        );
        assert_eq!(disposition_filename(&h).unwrap(), "référé.pdf");
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("form-data; name=\"f\"; filename=\"scan 1.png\""),
        );
        assert_eq!(disposition_filename(&h).unwrap(), "scan 1.png");
        assert_eq!(
            content_disposition("référé \"1\".pdf"),
            "attachment; filename=\"r_f_r_ _1_.pdf\"; filename*=UTF-8''r%C3%A9f%C3%A9r%C3%A9%20%221%22.pdf"
        );
    }

    #[tokio::test]
    async fn the_body_is_cut_off_past_the_limit_as_it_is_read() {
        let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from(vec![1u8; 600])),
            Ok(Bytes::from(vec![2u8; 600])),
        ];
        let body = Body::from_stream(futures_util::stream::iter(pieces));
        let mut stream = body.into_data_stream();
        let mut total = 0;
        let first = next_piece(&mut stream, &mut total, 1000).await.unwrap();
        assert_eq!(first.unwrap().len(), 600);
        let over = next_piece(&mut stream, &mut total, 1000).await;
        assert!(matches!(over, Err(WorkerError::PayloadTooLarge(1000))));
    }

    #[test]
    fn an_upload_is_described_by_its_query_or_its_disposition() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/PDF; charset=x"),
        );
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"header.pdf\""),
        );
        let d = described(Some("filename=query%2Epdf&description=%20"), &h).unwrap();
        assert_eq!(d.filename.as_deref(), Some("query.pdf"));
        assert_eq!(d.description, None);
        assert_eq!(d.claimed.as_deref(), Some("application/pdf"));
        let d = described(None, &h).unwrap();
        assert_eq!(d.filename.as_deref(), Some("header.pdf"));
        assert!(described(Some("filename=a&filename=b"), &h).is_err());
        let long = format!("description={}", "x".repeat(MAX_DESCRIPTION_CHARS + 1));
        assert!(described(Some(&long), &h).is_err());
    }

    #[test]
    fn chunks_open_only_in_their_place() {
        let clinic = ClinicId::generate();
        let material = common::crypto::DataKeyMaterial::generate();
        let keys = ClinicKeys::new(clinic, vec![(1, material)]).unwrap();
        let id = Uuid::now_v7();
        let (chunk, sealed) = seal_chunk(&keys, clinic, &id, 3, b"content").unwrap();
        assert_eq!(chunk, chunk_id(&id, 3));
        assert_ne!(chunk, chunk_id(&id, 4));
        assert_eq!(
            open_chunk(&keys, clinic, &id, 3, &sealed).unwrap(),
            b"content"
        );
        assert!(open_chunk(&keys, clinic, &id, 4, &sealed).is_err());
        assert!(open_chunk(&keys, clinic, &Uuid::now_v7(), 3, &sealed).is_err());
    }
}
