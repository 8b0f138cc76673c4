//! Singleton resources: one row per clinic database (the clinic's settings), read
//! and replaced whole through the same field descriptions, body validation and
//! audited statement as the collections, without ids, lists or deletion.

use super::codec;
use super::input::{parse_body, Write};
use super::sql::{audited, audited_showing, run, Action, Actor, Op, Sql};
use super::version::IfMatch;
use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use common::resource::Resource;
use serde_json::{Map, Value};
use uuid::Uuid;

fn select_list(r: &Resource) -> String {
    let mut cols: Vec<&str> = r.fields.iter().map(|f| f.name).collect();
    cols.push("updated_at");
    cols.join(", ")
}

fn to_json(r: &Resource, row: &tokio_postgres::Row) -> Result<Value, WorkerError> {
    let mut obj = Map::new();
    for (i, f) in r.fields.iter().enumerate() {
        obj.insert(f.name.into(), codec::plain_value(f, row, i)?);
    }
    let updated: chrono::DateTime<chrono::Utc> = super::sql::col(row, r.fields.len())?;
    obj.insert("updated_at".into(), codec::timestamp(updated).into());
    Ok(Value::Object(obj))
}

/// The object, its read recorded by the statement itself.
pub async fn get(
    client: &impl deadpool_postgres::GenericClient,
    r: &Resource,
    actor: &Actor,
) -> Result<Value, WorkerError> {
    let sql = Sql::for_actor(actor);
    let text = audited_showing(
        // `$1` (the clinic) is in every statement: the database is the clinic's own.
        &format!(
            "SELECT {} FROM {} WHERE $1::uuid IS NOT NULL",
            select_list(r),
            r.table
        ),
        r,
        Action::Read,
        "NULL::uuid",
        "NULL::uuid[]",
        "'success'",
        "",
    );
    let rows = run(client, Op::new(actor, r, "read"), &text, &sql).await?;
    let row = rows.first().ok_or_else(|| {
        WorkerError::Internal(format!("the clinic database has no {} row", r.table))
    })?;
    to_json(r, row)
}

/// Replaces every writable field (those left out take their default) and answers
/// with the object as stored; the change and its audit record commit together.
/// Under an `If-Match` naming versions, only if the row's `updated_at` is one of
/// them: otherwise nothing changes, the attempt is recorded as
/// `precondition_failed`, and the answer is `PreconditionFailed`.
pub async fn replace(
    client: &impl deadpool_postgres::GenericClient,
    keys: &ClinicKeyCache,
    r: &Resource,
    actor: &Actor,
    body: &[u8],
    if_match: Option<&IfMatch>,
) -> Result<Value, WorkerError> {
    let input = parse_body(
        r,
        &keys.current(),
        actor.clinic,
        actor.role,
        &Uuid::nil(),
        body,
        Write::Replace,
    )?;
    let mut sql = Sql::for_actor(actor);
    let mut sets: Vec<String> = input
        .columns
        .into_iter()
        .map(|(c, v)| format!("{c} = {}", sql.push(v)))
        .collect();
    sets.push("updated_at = greatest(now(), updated_at + interval '1 microsecond')".into());
    let (condition, outcome) = match if_match {
        Some(IfMatch::Versions(versions)) => (
            format!(
                " AND updated_at = ANY({}::timestamptz[])",
                sql.bind(versions.clone())
            ),
            "CASE WHEN EXISTS (SELECT 1 FROM w) THEN 'success' ELSE 'precondition_failed' END",
        ),
        _ => (String::new(), "'success'"),
    };
    let text = audited(
        &format!(
            "UPDATE {} SET {} WHERE $1::uuid IS NOT NULL{condition} RETURNING {}",
            r.table,
            sets.join(", "),
            select_list(r)
        ),
        r,
        Action::Update,
        "NULL::uuid",
        outcome,
        "",
    );
    let rows = run(client, Op::new(actor, r, "update"), &text, &sql).await?;
    match rows.first() {
        Some(row) => to_json(r, row),
        // The row is always there: only a stale version leaves it alone.
        None if condition.is_empty() => Err(WorkerError::Internal(format!(
            "the clinic database has no {} row",
            r.table
        ))),
        None => Err(WorkerError::PreconditionFailed),
    }
}
