//! The row codec and sealing: a stored row becomes the client's JSON object
//! (restricted fields left out for roles that may not see them, sealed fields
//! opened with the data-key version they name, loading it first if a rotation added
//! it since); a sensitive field's value is sealed for its clinic, table, row and
//! column, and blind-indexed when it can be filtered on.

use super::sql::{col, Actor, Param};
use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use chrono::{DateTime, Utc};
use common::crypto::{sealed_key_id, ClinicKeys, FieldContext};
use common::resource::{Field, Resource};
use common::ClinicId;
use pgconn::rows::RowError;
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

pub(super) fn timestamp(t: DateTime<Utc>) -> String {
    pgconn::rows::timestamp(t)
}

fn row_error(e: RowError) -> WorkerError {
    match e {
        RowError::Sealed { .. } => WorkerError::Integrity(e.to_string()),
        RowError::Column { .. } => WorkerError::Internal(e.to_string()),
    }
}

/// Turns a stored row into the client's JSON object, decrypting what is sealed
/// (the conversion the admin tool's export shares: [`pgconn::rows::row_to_json`]).
fn row_to_json(
    r: &Resource,
    keys: &ClinicKeys,
    actor: &Actor,
    row: &Row,
) -> Result<Value, WorkerError> {
    pgconn::rows::row_to_json(r, keys, actor.role.sees_restricted(), row).map_err(row_error)
}

/// The JSON value of a field stored in the clear, from column `idx` of `row`.
pub(super) fn plain_value(f: &Field, row: &Row, idx: usize) -> Result<Value, WorkerError> {
    pgconn::rows::plain_value(f, row, idx).map_err(row_error)
}

/// Turns stored rows into JSON, first making sure every data-key version their
/// sealed values name is loaded (a rotation may have started since the pool opened).
pub(super) async fn rows_to_json(
    r: &Resource,
    keys: &ClinicKeyCache,
    actor: &Actor,
    rows: &[Row],
) -> Result<Vec<Value>, WorkerError> {
    let rows: Vec<&Row> = rows.iter().collect();
    some_rows_to_json(r, keys, actor, &rows).await
}

/// [`rows_to_json`] of some of a statement's rows.
pub(super) async fn some_rows_to_json(
    r: &Resource,
    keys: &ClinicKeyCache,
    actor: &Actor,
    rows: &[&Row],
) -> Result<Vec<Value>, WorkerError> {
    let mut versions = std::collections::BTreeSet::new();
    for row in rows {
        for (i, f) in r.fields.iter().enumerate() {
            if f.encrypted {
                if let Some(sealed) = col::<Option<Vec<u8>>>(row, i + 3)? {
                    versions.extend(sealed_key_id(&sealed).ok());
                }
            }
        }
    }
    let keys = keys.covering(versions).await?;
    rows.iter()
        .map(|row| row_to_json(r, &keys, actor, row))
        .collect()
}

/// [`rows_to_json`] of the first row; `NotFound` when there is none.
pub(super) async fn first_to_json(
    r: &Resource,
    keys: &ClinicKeyCache,
    actor: &Actor,
    rows: &[Row],
) -> Result<Value, WorkerError> {
    let first = rows.get(..1).ok_or(WorkerError::NotFound)?;
    rows_to_json(r, keys, actor, first)
        .await?
        .pop()
        .ok_or(WorkerError::NotFound)
}

/// `plain` sealed as the value of field `f` of row `row` (it opens nowhere else).
pub fn seal(
    keys: &ClinicKeys,
    clinic: ClinicId,
    r: &Resource,
    f: &Field,
    row: &Uuid,
    plain: &[u8],
) -> Vec<u8> {
    let ctx = FieldContext {
        clinic,
        table: r.table,
        row,
        column: f.name,
    };
    keys.seal_field(&ctx, plain)
}

/// The plaintext of `sealed`, the stored value of field `f` of row `row`; an
/// integrity error when it does not open there.
pub fn open(
    keys: &ClinicKeys,
    clinic: ClinicId,
    r: &Resource,
    f: &Field,
    row: &Uuid,
    sealed: &[u8],
) -> Result<Vec<u8>, WorkerError> {
    let ctx = FieldContext {
        clinic,
        table: r.table,
        row,
        column: f.name,
    };
    keys.open_field(&ctx, sealed)
        .map_err(|e| WorkerError::Integrity(format!("{}.{} of {row}: {e}", r.table, f.name)))
}

/// The stored columns of a sealed text field's value: the sealed value, no
/// plaintext of before left behind, and the blind index if it can be filtered on.
pub fn sealed_columns(
    keys: &ClinicKeys,
    clinic: ClinicId,
    r: &Resource,
    f: &Field,
    row: &Uuid,
    value: Option<&str>,
) -> Vec<(String, Param)> {
    let sealed = value.map(|s| seal(keys, clinic, r, f, row, s.as_bytes()));
    let mut columns: Vec<(String, Param)> = vec![(f.stored_column(), Box::new(sealed))];
    if f.legacy_plaintext {
        // Written sealed now: no plaintext of before stays behind.
        columns.push((f.name.to_owned(), Box::new(None::<String>)));
    }
    if f.filterable {
        let index = value.map(|s| keys.blind_index(r.table, f.name, s));
        columns.push((format!("{}_bidx", f.name), Box::new(index)));
    }
    columns
}
