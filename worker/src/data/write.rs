//! Writes, each in one transaction: reference checks, the row with its audit
//! record, child rows and links, then the row as stored; soft delete and restore;
//! row actions (clinic database functions), carrying sealed fields to the row an
//! action made.
//!
//! Every change of a row moves its `updated_at` forward, by at least a microsecond
//! ([`BUMP`]), so its `ETag` ([`super::version`]) changes with it. An `If-Match`
//! is checked by the change's own `UPDATE` (`updated_at` among the versions it
//! names), so two writers holding the same version cannot both win: the second
//! finds the row changed when the first commits. A row left alone because of it is
//! told from a missing one afterwards, in the same transaction (`412` vs `404`),
//! and the refusal is recorded as the write's outcome (`precondition_failed`).

use super::codec;
use super::input::{parse_body, Input, RefCheck, Write};
use super::read::reread;
use super::sql::{audited, col, run, Action, Actor, Op, Sql, FOUND_OUTCOME};
use super::version::IfMatch;
use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use common::crypto::sealed_key_id;
use common::resource::{self, FieldType, Resource, RowAction};
use serde_json::Value;
use uuid::Uuid;

/// Refuses references to rows that do not exist in this clinic or were deleted.
async fn check_refs(
    client: &impl deadpool_postgres::GenericClient,
    op: Op<'_>,
    refs: &[RefCheck],
) -> Result<(), WorkerError> {
    if refs.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::default();
    let checks: Vec<String> = refs
        .iter()
        .map(|c| {
            let p = sql.bind(c.ids.clone());
            format!(
                "(SELECT count(*) FROM {} WHERE id = ANY({p}::uuid[]) AND deleted_at IS NULL) = cardinality({p}::uuid[])",
                c.table
            )
        })
        .collect();
    let row = run(client, op, &format!("SELECT {}", checks.join(", ")), &sql).await?;
    let row = row
        .first()
        .ok_or_else(|| WorkerError::Internal("reference check returned nothing".into()))?;
    for (i, c) in refs.iter().enumerate() {
        if !col::<bool>(row, i)? {
            let what = resource::by_table(c.table)
                .map(|r| r.title.to_lowercase())
                .unwrap_or_else(|| c.table.into());
            return Err(WorkerError::BadRequest(format!(
                "`{}` does not refer to an existing {what} of your clinic.",
                c.name
            )));
        }
    }
    Ok(())
}

async fn write_children(
    tx: &deadpool_postgres::Transaction<'_>,
    op: Op<'_>,
    id: Uuid,
    input: Input,
) -> Result<(), WorkerError> {
    for (field, ids) in input.links {
        let FieldType::ReferenceList {
            link_table,
            owner_column,
            target_column,
            ..
        } = field.ty
        else {
            continue;
        };
        let mut sql = Sql::default();
        let owner = sql.bind(id);
        run(
            tx,
            op,
            &format!("DELETE FROM {link_table} WHERE {owner_column} = {owner}"),
            &sql,
        )
        .await?;
        let mut sql = Sql::default();
        let owner = sql.bind(id);
        let targets = sql.bind(ids);
        run(
            tx,
            op,
            &format!("INSERT INTO {link_table} ({owner_column}, {target_column}) SELECT {owner}, unnest({targets}::uuid[])"),
            &sql,
        )
        .await?;
    }
    for (child, rows) in input.children {
        let mut sql = Sql::default();
        let parent = sql.bind(id);
        run(
            tx,
            op,
            &format!(
                "DELETE FROM {} WHERE {} = {parent}",
                child.table, child.parent_column
            ),
            &sql,
        )
        .await?;
        for row in rows {
            let mut sql = Sql::default();
            let parent = sql.bind(id);
            let (cols, values): (Vec<String>, Vec<String>) =
                row.into_iter().map(|(c, v)| (c, sql.push(v))).unzip();
            run(
                tx,
                op,
                &format!(
                    "INSERT INTO {} ({}, {}) VALUES ({parent}, {})",
                    child.table,
                    child.parent_column,
                    cols.join(", "),
                    values.join(", ")
                ),
                &sql,
            )
            .await?;
        }
    }
    Ok(())
}

/// The new `updated_at` of a changed row: now, or a microsecond after the last
/// change if that is later (two changes in one transaction, or a clock behind).
const BUMP: &str = "updated_at = greatest(now(), updated_at + interval '1 microsecond')";

/// The extra condition of an `UPDATE` under `If-Match`, binding its versions.
fn version_condition(sql: &mut Sql, if_match: Option<&IfMatch>) -> String {
    match if_match {
        None | Some(IfMatch::Any) => String::new(),
        Some(IfMatch::Versions(versions)) => format!(
            " AND updated_at = ANY({}::timestamptz[])",
            sql.bind(versions.clone())
        ),
    }
}

/// The audit outcome of an `UPDATE` of row `i` under `If-Match`: a live row left
/// alone was refused because of its version.
fn versioned_outcome(r: &Resource, i: &str, if_match: Option<&IfMatch>) -> String {
    match if_match {
        Some(IfMatch::Versions(_)) => format!(
            "CASE WHEN EXISTS (SELECT 1 FROM w) THEN 'success' \
             WHEN EXISTS (SELECT 1 FROM {} WHERE company_id = $1 AND id = {i}::uuid AND deleted_at IS NULL) \
             THEN 'precondition_failed' ELSE 'not_found' END",
            r.table
        ),
        _ => FOUND_OUTCOME.to_owned(),
    }
}

/// After an `UPDATE` under `If-Match` changed nothing: `PreconditionFailed` if the
/// live row is there (its version did not match), else `None` (no such row).
async fn stale_or_missing(
    tx: &deadpool_postgres::Transaction<'_>,
    op: Op<'_>,
    r: &Resource,
    actor: &Actor,
    id: Uuid,
    if_match: Option<&IfMatch>,
) -> Result<(), WorkerError> {
    if !matches!(if_match, Some(IfMatch::Versions(_))) {
        return Ok(());
    }
    let mut sql = Sql::for_clinic(actor);
    let i = sql.bind(id);
    let text = format!(
        "SELECT 1 FROM {} WHERE company_id = $1 AND id = {i} AND deleted_at IS NULL",
        r.table
    );
    if run(tx, op, &text, &sql).await?.is_empty() {
        Ok(())
    } else {
        Err(WorkerError::PreconditionFailed)
    }
}

/// Creates, replaces (PUT) or patches a row with its children, in one transaction;
/// a replace or patch only if the row's version is one `if_match` names.
#[allow(clippy::too_many_arguments)]
pub async fn write(
    client: &mut deadpool_postgres::Object,
    keys: &ClinicKeyCache,
    r: &Resource,
    actor: &Actor,
    target: Option<Uuid>,
    mode: Write,
    body: &[u8],
    if_match: Option<&IfMatch>,
) -> Result<Value, WorkerError> {
    let id = target.unwrap_or_else(Uuid::now_v7);
    let tx = client.transaction().await.map_err(WorkerError::from_db)?;
    let written = match write_in_if(&tx, keys, r, actor, id, mode, body, if_match).await {
        // A refusal changed nothing; its audit record is kept.
        Err(WorkerError::PreconditionFailed) => Err(WorkerError::PreconditionFailed),
        Err(e) => return Err(e),
        Ok(written) => written.ok_or(WorkerError::NotFound),
    };
    // A miss commits too: its audit record is kept.
    tx.commit().await.map_err(WorkerError::from_db)?;
    written
}

/// [`write`] inside the caller's transaction, the row's id chosen by the caller:
/// the row as stored, or `None` when there is no such live row to update (its
/// audit record is written either way).
pub async fn write_in(
    tx: &deadpool_postgres::Transaction<'_>,
    keys: &ClinicKeyCache,
    r: &Resource,
    actor: &Actor,
    id: Uuid,
    mode: Write,
    body: &[u8],
) -> Result<Option<Value>, WorkerError> {
    write_in_if(tx, keys, r, actor, id, mode, body, None).await
}

/// [`write_in`] under an `If-Match`: `PreconditionFailed` when the live row's
/// version is none it names (nothing is changed; the refusal's audit record is
/// written).
#[allow(clippy::too_many_arguments)]
async fn write_in_if(
    tx: &deadpool_postgres::Transaction<'_>,
    keys: &ClinicKeyCache,
    r: &Resource,
    actor: &Actor,
    id: Uuid,
    mode: Write,
    body: &[u8],
    if_match: Option<&IfMatch>,
) -> Result<Option<Value>, WorkerError> {
    let mut input = parse_body(
        r,
        &keys.current(),
        actor.clinic,
        actor.role,
        &id,
        body,
        mode,
    )?;
    let action = match mode {
        Write::Create => Action::Create,
        Write::Replace | Write::Patch => Action::Update,
    };
    let op = Op::new(actor, r, action.as_str());
    check_refs(tx, op, &input.refs).await?;
    let mut sql = Sql::for_actor(actor);
    let i = sql.bind(id);
    let columns = std::mem::take(&mut input.columns);
    let (cols, values): (Vec<String>, Vec<String>) =
        columns.into_iter().map(|(c, v)| (c, sql.push(v))).unzip();
    let text = match mode {
        Write::Create => {
            let insert = format!(
                "INSERT INTO {} (id, company_id{}{}) VALUES ({i}, $1{}{}) RETURNING id",
                r.table,
                if cols.is_empty() { "" } else { ", " },
                cols.join(", "),
                if values.is_empty() { "" } else { ", " },
                values.join(", ")
            );
            audited(
                &insert,
                r,
                Action::Create,
                "(SELECT id FROM w)",
                "'success'",
                "",
            )
        }
        Write::Replace | Write::Patch => {
            let mut sets: Vec<String> = cols
                .iter()
                .zip(&values)
                .map(|(c, v)| format!("{c} = {v}"))
                .collect();
            sets.push(BUMP.into());
            let version = version_condition(&mut sql, if_match);
            let update = format!(
                "UPDATE {} SET {} WHERE company_id = $1 AND id = {i} AND deleted_at IS NULL{version} RETURNING id",
                r.table,
                sets.join(", ")
            );
            audited(
                &update,
                r,
                Action::Update,
                &format!("{i}::uuid"),
                &versioned_outcome(r, &i, if_match),
                "",
            )
        }
    };
    let rows = run(tx, op, &text, &sql).await?;
    if rows.is_empty() {
        stale_or_missing(tx, op, r, actor, id, if_match).await?;
        return Ok(None);
    }
    write_children(tx, op, id, input).await?;
    reread(tx, keys, r, actor, id).await.map(Some)
}

/// Hides a live row (soft delete; only if its version is one `if_match` names) or
/// shows a hidden one again (restore). Either moves its `updated_at`, so a client
/// syncing changes sees it.
pub async fn set_deleted(
    client: &mut deadpool_postgres::Object,
    keys: &ClinicKeyCache,
    r: &Resource,
    actor: &Actor,
    id: Uuid,
    deleted: bool,
    if_match: Option<&IfMatch>,
) -> Result<Option<Value>, WorkerError> {
    let mut sql = Sql::for_actor(actor);
    let i = sql.bind(id);
    let (set, when, action) = if deleted {
        ("now()", "IS NULL", Action::Delete)
    } else {
        ("NULL", "IS NOT NULL", Action::Restore)
    };
    let if_match = if_match.filter(|_| deleted);
    let version = version_condition(&mut sql, if_match);
    let update = format!(
        "UPDATE {} SET deleted_at = {set}, {BUMP} WHERE company_id = $1 AND id = {i} AND deleted_at {when}{version} RETURNING id",
        r.table
    );
    // Restoring a live row changes nothing and answers it as it is: the statement
    // also returns the row when it is live. Both parts read the snapshot from
    // before the update, so a row it restores is returned once.
    let (outcome, live) = if deleted {
        (versioned_outcome(r, &i, if_match), String::new())
    } else {
        let live = format!(
            "SELECT id FROM {} WHERE company_id = $1 AND id = {i} AND deleted_at IS NULL",
            r.table
        );
        (
            format!("CASE WHEN EXISTS (SELECT 1 FROM w) OR EXISTS ({live}) THEN 'success' ELSE 'not_found' END"),
            format!(" UNION ALL {live}"),
        )
    };
    let text = audited(&update, r, action, &format!("{i}::uuid"), &outcome, &live);
    let tx = client.transaction().await.map_err(WorkerError::from_db)?;
    let op = Op::new(actor, r, action.as_str());
    let rows = run(&tx, op, &text, &sql).await?;
    let value = match (rows.is_empty(), deleted) {
        (true, _) => match stale_or_missing(&tx, op, r, actor, id, if_match).await {
            Err(WorkerError::PreconditionFailed) => Err(WorkerError::PreconditionFailed),
            Err(e) => return Err(e),
            Ok(()) => Err(WorkerError::NotFound),
        },
        (false, true) => Ok(Value::Null),
        (false, false) => Ok(reread(&tx, keys, r, actor, id).await?),
    };
    // A miss or a refusal commits too: its audit record is kept.
    tx.commit().await.map_err(WorkerError::from_db)?;
    value.map(Some)
}

/// Runs a row action (a clinic database function) and returns the resulting row.
pub async fn act(
    client: &mut deadpool_postgres::Object,
    keys: &ClinicKeyCache,
    r: &Resource,
    action: &RowAction,
    actor: &Actor,
    id: Uuid,
) -> Result<Value, WorkerError> {
    let mut sql = Sql::for_actor(actor);
    let i = sql.bind(id);
    let fresh = sql.bind(Uuid::now_v7());
    let call = format!(
        "SELECT {f}({i}, {fresh}) AS id FROM {t} WHERE company_id = $1 AND id = {i}{live}",
        f = action.function,
        t = r.table,
        live = if action.on_deleted {
            ""
        } else {
            " AND deleted_at IS NULL"
        },
    );
    let text = audited(
        &call,
        r,
        Action::Named(action.name),
        &format!("{i}::uuid"),
        FOUND_OUTCOME,
        "",
    );
    let tx = client.transaction().await.map_err(WorkerError::from_db)?;
    let rows = run(&tx, Op::new(actor, r, action.name), &text, &sql).await?;
    let result: Option<Uuid> = match rows.first() {
        Some(row) => col(row, 0)?,
        None => None,
    };
    if let Some(new_id) = result.filter(|n| *n != id) {
        carry_sealed(&tx, keys, r, action, actor, id, new_id).await?;
    }
    let value = match result {
        Some(result) => Some(reread(&tx, keys, r, actor, result).await?),
        None => None,
    };
    tx.commit().await.map_err(WorkerError::from_db)?;
    value.ok_or(WorkerError::NotFound)
}

/// Seals the `carries` fields of `from` again for the row `to` an action made
/// (a sealed value only opens on the row it was sealed for).
async fn carry_sealed(
    tx: &deadpool_postgres::Transaction<'_>,
    keys: &ClinicKeyCache,
    r: &Resource,
    action: &RowAction,
    actor: &Actor,
    from: Uuid,
    to: Uuid,
) -> Result<(), WorkerError> {
    for f in action.carries.iter().filter_map(|name| r.field(name)) {
        if !f.encrypted {
            continue;
        }
        let column = f.stored_column();
        let mut sql = Sql::default();
        let (c, i) = (sql.bind(*actor.clinic.as_uuid()), sql.bind(from));
        let read = format!(
            "SELECT {column} FROM {} WHERE company_id = {c} AND id = {i}",
            r.table
        );
        let rows = run(tx, Op::new(actor, r, action.name), &read, &sql).await?;
        let Some(sealed) = rows
            .first()
            .map(|row| col::<Option<Vec<u8>>>(row, 0))
            .transpose()?
            .flatten()
        else {
            continue;
        };
        let version = sealed_key_id(&sealed).ok();
        let keys = keys.covering(version).await?;
        let plain = codec::open(&keys, actor.clinic, r, f, &from, &sealed)?;
        let resealed = codec::seal(&keys, actor.clinic, r, f, &to, &plain);
        let mut sql = Sql::default();
        let (c, i, v) = (
            sql.bind(*actor.clinic.as_uuid()),
            sql.bind(to),
            sql.bind(resealed),
        );
        let write = format!(
            "UPDATE {} SET {column} = {v} WHERE company_id = {c} AND id = {i}",
            r.table
        );
        run(tx, Op::new(actor, r, action.name), &write, &sql).await?;
    }
    Ok(())
}
