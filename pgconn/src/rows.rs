//! A resource's stored rows as the API shows them, shared by the worker's data
//! layer and the admin tool's final clinic export (`medicalpro-admin offboard`), so
//! both produce the same JSON: the select list of a resource (over the alias `t`,
//! built once per resource) and the stored row → JSON object conversion (sealed
//! fields opened with the data-key version they name; restricted fields left out
//! for roles that may not see them).

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};
use common::crypto::{ClinicKeys, FieldContext};
use common::resource::{Child, Field, FieldType, Resource};
use serde_json::{Map, Value};
use std::borrow::Cow;
use tokio_postgres::Row;
use uuid::Uuid;

/// The first byte of a value read from a sealed field's plaintext column of before.
const LEGACY_PLAINTEXT: u8 = 0;

/// Why a stored row could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("reading column {idx}: {source}")]
    Column {
        idx: usize,
        source: tokio_postgres::Error,
    },
    #[error("{table}.{column} of {row}: {source}")]
    Sealed {
        table: &'static str,
        column: &'static str,
        row: Uuid,
        source: common::crypto::CryptoError,
    },
}

/// A timestamp as the API writes it (RFC 3339, microseconds, `Z`).
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Column `idx` of `row`.
pub fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
) -> Result<T, RowError> {
    row.try_get(idx)
        .map_err(|source| RowError::Column { idx, source })
}

fn child_json(child: &Child) -> String {
    let pairs: Vec<String> = child
        .fields
        .iter()
        .map(|f| format!("'{n}', c.{n}", n = f.name))
        .collect();
    format!(
        "(SELECT coalesce(json_agg(json_build_object({}) ORDER BY c.position), '[]'::json) FROM {} c WHERE c.{} = t.id)",
        pairs.join(", "),
        child.table,
        child.parent_column
    )
}

/// The select list of a resource, over the alias `t`: `id`, `created_at`,
/// `updated_at`, each field, each child list. Built once per resource.
pub fn select_list(r: &Resource) -> Cow<'static, str> {
    static LISTS: std::sync::LazyLock<std::collections::HashMap<&'static str, String>> =
        std::sync::LazyLock::new(|| {
            common::resource::RESOURCES
                .iter()
                .map(|r| (r.name, build_select_list(r)))
                .collect()
        });
    match LISTS.get(r.name) {
        Some(list) => Cow::Borrowed(list),
        // Every resource is in `RESOURCES`; one that is not is still served.
        None => Cow::Owned(build_select_list(r)),
    }
}

fn build_select_list(r: &Resource) -> String {
    let mut cols = vec![
        "t.id".to_owned(),
        "t.created_at".into(),
        "t.updated_at".into(),
    ];
    for f in r.fields {
        cols.push(match f.ty {
            FieldType::ReferenceList {
                link_table,
                owner_column,
                target_column,
                ..
            } => format!(
                "(SELECT coalesce(array_agg(l.{target_column} ORDER BY l.{target_column}), '{{}}') FROM {link_table} l WHERE l.{owner_column} = t.id)"
            ),
            // A value from before the field was sealed is marked with a 0 byte
            // (sealed values start with their format version, 1).
            _ if f.legacy_plaintext => format!(
                "CASE WHEN t.{n}_enc IS NULL AND t.{n} IS NOT NULL THEN '\\x00'::bytea || convert_to(t.{n}, 'UTF8') ELSE t.{n}_enc END",
                n = f.name
            ),
            _ => format!("t.{}", f.stored_column()),
        });
    }
    for c in r.children {
        cols.push(child_json(c));
    }
    cols.join(", ")
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    v.map(f).unwrap_or(Value::Null)
}

/// The JSON value of a field stored in the clear, from column `idx` of `row`.
pub fn plain_value(f: &Field, row: &Row, idx: usize) -> Result<Value, RowError> {
    Ok(match f.ty {
        FieldType::Text { .. } | FieldType::Email | FieldType::Enum(_) => {
            opt(col::<Option<String>>(row, idx)?, Value::String)
        }
        FieldType::Date => opt(col::<Option<NaiveDate>>(row, idx)?, |d| {
            Value::String(d.format("%Y-%m-%d").to_string())
        }),
        FieldType::Timestamp => opt(col::<Option<DateTime<Utc>>>(row, idx)?, |t| {
            timestamp(t).into()
        }),
        FieldType::Time => opt(col::<Option<NaiveTime>>(row, idx)?, |t| {
            Value::String(t.format("%H:%M").to_string())
        }),
        FieldType::Integer { .. } => opt(col::<Option<i64>>(row, idx)?, Value::from),
        FieldType::Boolean => opt(col::<Option<bool>>(row, idx)?, Value::Bool),
        FieldType::Reference(_) => opt(col::<Option<Uuid>>(row, idx)?, |u| u.to_string().into()),
        FieldType::ReferenceList { .. } => Value::Array(
            col::<Vec<Uuid>>(row, idx)?
                .into_iter()
                .map(|u| Value::String(u.to_string()))
                .collect(),
        ),
    })
}

/// The plaintext of `sealed`, the stored value of field `f` of row `row`.
pub fn open(
    keys: &ClinicKeys,
    r: &Resource,
    f: &Field,
    row: &Uuid,
    sealed: &[u8],
) -> Result<Vec<u8>, RowError> {
    let ctx = FieldContext {
        clinic: keys.clinic(),
        table: r.table,
        row,
        column: f.name,
    };
    keys.open_field(&ctx, sealed)
        .map_err(|source| RowError::Sealed {
            table: r.table,
            column: f.name,
            row: *row,
            source,
        })
}

/// A row selected with [`select_list`] as the client's JSON object, sealed values
/// opened; restricted fields only when `sees_restricted`.
pub fn row_to_json(
    r: &Resource,
    keys: &ClinicKeys,
    sees_restricted: bool,
    row: &Row,
) -> Result<Value, RowError> {
    let id: Uuid = col(row, 0)?;
    let mut obj = Map::new();
    obj.insert("id".into(), id.to_string().into());
    obj.insert("created_at".into(), timestamp(col(row, 1)?).into());
    obj.insert("updated_at".into(), timestamp(col(row, 2)?).into());
    for (i, f) in r.fields.iter().enumerate() {
        let idx = i + 3;
        if f.restricted && !sees_restricted {
            continue;
        }
        let value = if f.encrypted {
            match col::<Option<Vec<u8>>>(row, idx)? {
                None => Value::Null,
                Some(legacy) if legacy.first() == Some(&LEGACY_PLAINTEXT) => {
                    Value::String(String::from_utf8_lossy(&legacy[1..]).into_owned())
                }
                Some(sealed) => {
                    let plain = open(keys, r, f, &id, &sealed)?;
                    Value::String(String::from_utf8_lossy(&plain).into_owned())
                }
            }
        } else {
            plain_value(f, row, idx)?
        };
        obj.insert(f.name.into(), value);
    }
    for (i, c) in r.children.iter().enumerate() {
        obj.insert(c.name.into(), col::<Value>(row, 3 + r.fields.len() + i)?);
    }
    Ok(Value::Object(obj))
}
