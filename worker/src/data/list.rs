//! Lists: one page of live rows in id (creation) order, or a search's page in its
//! relevance order ([`super::search`]), or — for a client that syncs — the rows
//! changed since a time in the order of their changes, soft-deleted ones as
//! tombstones when asked; filtered by exact values (blind-indexed for sealed
//! fields) and ranges, with the [`Cursor`] of the next page.

use super::codec::timestamp;
use super::codec::{rows_to_json, some_rows_to_json};
use super::cursor::Cursor;
use super::input::{parse_date, parse_timestamp, parse_value, Typed};
use super::search::{like_pattern, search_keys};
use super::sql::{audited_showing, col, run, select_list, Action, Actor, Audit, Op, Sql};
use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use chrono::{DateTime, Utc};
use common::resource::{Field, FieldType, Resource};
use serde_json::{json, Value};
use tokio_postgres::Row;

/// The largest page a list returns.
pub const MAX_LIMIT: i64 = 100;

/// A parsed list request.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub q: Option<String>,
    pub limit: i64,
    pub after: Option<Cursor>,
    /// Exact-match filters (blind-indexed when the field is encrypted).
    pub filters: Vec<(&'static Field, String)>,
    /// Range filters: field, inclusive lower bound, exclusive upper bound.
    pub ranges: Vec<(&'static Field, Option<String>, Option<String>)>,
    /// Only the rows changed at or after this time (`updated_at >= updated_since`),
    /// in the order of their changes: (`updated_at`, `id`).
    pub updated_since: Option<DateTime<Utc>>,
    /// With `updated_since`: soft-deleted rows too, as tombstones.
    pub include_deleted: bool,
}

fn foreign_cursor() -> WorkerError {
    WorkerError::BadRequest(
        "`cursor` belongs to another query: send it with the same `q` and `updated_since` it came with.".into(),
    )
}

/// What a list shows of a soft-deleted row: that it is gone, and since when.
fn tombstone(row: &Row, deleted_at: DateTime<Utc>) -> Result<Value, WorkerError> {
    let id: uuid::Uuid = col(row, 0)?;
    Ok(json!({
        "id": id.to_string(),
        "deleted": true,
        "deleted_at": timestamp(deleted_at),
        "updated_at": timestamp(col(row, 2)?),
    }))
}

/// Binds a query-string filter value typed like its field.
fn bind_filter(sql: &mut Sql, f: &Field, value: &str) -> Result<String, WorkerError> {
    let v = Value::String(value.to_owned());
    let typed =
        match f.ty {
            FieldType::Integer { .. } => Typed::Integer(Some(value.parse().map_err(|_| {
                WorkerError::BadRequest(format!("`{}` must be an integer.", f.name))
            })?)),
            FieldType::Boolean => Typed::Boolean(Some(match value {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(WorkerError::BadRequest(format!(
                        "`{}` must be true or false.",
                        f.name
                    )))
                }
            })),
            _ => parse_value(f, &v)?,
        };
    Ok(sql.push(typed.into_param()))
}

/// One page of live rows in id (creation) order, or in a search's order, with the
/// cursor of the next page if there is one.
pub async fn list(
    client: &deadpool_postgres::Object,
    keys: &ClinicKeyCache,
    r: &Resource,
    actor: &Actor,
    query: &ListQuery,
    audit: Audit,
) -> Result<(Vec<Value>, Option<Cursor>), WorkerError> {
    let mut sql = match audit {
        Audit::Inline => Sql::for_actor(actor),
        Audit::Deferred => Sql::for_clinic(actor),
    };
    let changes = query.updated_since.is_some();
    if changes && query.q.is_some() {
        return Err(WorkerError::BadRequest(
            "`q` cannot be combined with `updated_since`: changes come in their own order.".into(),
        ));
    }
    if query.include_deleted && !changes {
        return Err(WorkerError::BadRequest(
            "`include_deleted` needs `updated_since`: deleted rows are listed as changes.".into(),
        ));
    }
    let mut conditions = vec!["t.company_id = $1".to_owned()];
    if !query.include_deleted {
        conditions.push("t.deleted_at IS NULL".to_owned());
    }
    if let Some(since) = query.updated_since {
        conditions.push(format!("t.updated_at >= {}", sql.bind(since)));
    }
    // A search of a resource with a search index comes in its name order.
    let search = query
        .q
        .as_ref()
        .and_then(|q| r.search.as_ref().map(|index| (q, index)));
    // A search's cursor is its rank, its search key and the id (see `search_keys`).
    let mut search_after = None;
    match (&query.after, search, changes) {
        (None, _, _) => {}
        (Some(Cursor::Id(after)), None, false) => {
            conditions.push(format!("t.id > {}", sql.bind(*after)));
        }
        (Some(Cursor::Changed { updated_at, id }), None, true) => {
            let at = DateTime::from_timestamp_micros(*updated_at).ok_or_else(foreign_cursor)?;
            conditions.push(format!(
                "(t.updated_at, t.id) > ({}, {})",
                sql.bind(at),
                sql.bind(*id)
            ));
        }
        (Some(Cursor::Search { rest, key, id }), Some(_), false) => {
            search_after = Some((*rest, key.clone(), *id));
        }
        (Some(_), _, _) => return Err(foreign_cursor()),
    }
    if search.is_none() {
        if let Some(q) = &query.q {
            let searchable: Vec<&Field> = r.fields.iter().filter(|f| f.searchable).collect();
            if !searchable.is_empty() {
                let p = sql.bind(like_pattern(q));
                let ors: Vec<String> = searchable
                    .iter()
                    .map(|f| format!("t.{} ILIKE {p}", f.name))
                    .collect();
                conditions.push(format!("({})", ors.join(" OR ")));
            }
        }
    }
    for (f, value) in &query.filters {
        if f.restricted && !actor.role.sees_restricted() {
            return Err(WorkerError::Forbidden(format!(
                "Your role may not filter on `{}`.",
                f.name
            )));
        }
        if f.encrypted {
            let p = sql.bind(keys.current().blind_index(r.table, f.name, value));
            conditions.push(format!("t.{}_bidx = {p}", f.name));
        } else {
            let p = bind_filter(&mut sql, f, value)?;
            conditions.push(format!("t.{} = {p}", f.name));
        }
    }
    for (f, from, to) in &query.ranges {
        for (bound, op) in [(from, ">="), (to, "<")] {
            if let Some(v) = bound {
                let p = match f.ty {
                    FieldType::Date => sql.bind(parse_date(f.name, v)?),
                    _ => sql.bind(parse_timestamp(f.name, v)?),
                };
                conditions.push(format!("t.{} {op} {p}", f.name));
            }
        }
    }
    let limit = sql.bind(query.limit + 1);
    let order: Vec<&str> = match (search, changes) {
        (Some(_), _) => vec!["search_rank", "search_key", "id"],
        (None, true) => vec!["updated_at", "id"],
        (None, false) => vec!["id"],
    };
    // A tombstone is told by its `deleted_at`, read after the select list.
    let deleted_at = if query.include_deleted {
        ", t.deleted_at"
    } else {
        ""
    };
    let body = match search {
        Some((q, index)) => {
            let keys = search_keys(
                &mut sql,
                r.table,
                index.column,
                &conditions,
                q,
                search_after,
                &limit,
            );
            format!(
                "SELECT {select}, k.search_rank, k.search_key FROM {table} t JOIN ({keys}) k ON k.id = t.id \
                 ORDER BY k.search_rank, k.search_key, k.id",
                select = select_list(r),
                table = r.table,
            )
        }
        None => format!(
            "SELECT {}{deleted_at} FROM {} t WHERE {} ORDER BY {} LIMIT {limit}",
            select_list(r),
            r.table,
            conditions.join(" AND "),
            order
                .iter()
                .map(|c| format!("t.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    // The page shows the first `limit` rows (one more is read to tell if more follow).
    let shown = format!(
        "(SELECT coalesce(array_agg(s.id ORDER BY s.n), '{{}}') FROM (SELECT id, row_number() OVER (ORDER BY {o}) AS n FROM w ORDER BY {o} LIMIT {limit}::bigint - 1) s)",
        o = order.join(", ")
    );
    let text = match audit {
        Audit::Inline => audited_showing(
            &body,
            r,
            Action::List,
            "NULL::uuid",
            &shown,
            "'success'",
            &format!(" ORDER BY {}", order.join(", ")),
        ),
        Audit::Deferred => body,
    };
    let mut rows = run(
        client,
        Op::new(actor, r, Action::List.as_str()),
        &text,
        &sql,
    )
    .await?;
    let more = rows.len() as i64 > query.limit;
    rows.truncate(query.limit as usize);
    let page = if query.include_deleted {
        page_with_tombstones(r, keys, actor, &rows).await?
    } else {
        rows_to_json(r, keys, actor, &rows).await?
    };
    let next = match (more, rows.last(), search) {
        (false, _, _) | (_, None, _) => None,
        (true, Some(last), None) if changes => Some(Cursor::Changed {
            updated_at: col::<DateTime<Utc>>(last, 2)?.timestamp_micros(),
            id: col(last, 0)?,
        }),
        (true, Some(last), None) => Some(Cursor::Id(col(last, 0)?)),
        (true, Some(last), Some(_)) => {
            // The search's rank and key follow the select list.
            let rank: i32 = col(last, last.len() - 2)?;
            Some(Cursor::Search {
                rest: rank != 0,
                key: col(last, last.len() - 1)?,
                id: col(last, 0)?,
            })
        }
    };
    Ok((page, next))
}

/// A page whose rows end with their `deleted_at`: live rows as objects, deleted
/// ones as tombstones (nothing of theirs is opened), in the rows' order.
async fn page_with_tombstones(
    r: &Resource,
    keys: &ClinicKeyCache,
    actor: &Actor,
    rows: &[Row],
) -> Result<Vec<Value>, WorkerError> {
    let mut deleted = Vec::with_capacity(rows.len());
    let mut live = Vec::new();
    for row in rows {
        let at: Option<DateTime<Utc>> = col(row, row.len() - 1)?;
        if at.is_none() {
            live.push(row);
        }
        deleted.push(at);
    }
    let mut live = some_rows_to_json(r, keys, actor, &live).await?.into_iter();
    rows.iter()
        .zip(deleted)
        .map(|(row, at)| match at {
            Some(at) => tombstone(row, at),
            None => live
                .next()
                .ok_or_else(|| WorkerError::Internal("a live row went missing".into())),
        })
        .collect()
}
