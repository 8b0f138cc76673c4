//! Reads of single rows: one live row (its audit record in the statement or
//! group-committed by the caller), a row re-read inside an audited write, and a
//! patient's whole export.

use super::codec::first_to_json;
use super::list::{list, ListQuery, MAX_LIMIT};
use super::sql::{
    audited, record_access, run, select_list, Action, Actor, Audit, Op, Sql, FOUND_OUTCOME,
};
use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use common::resource::{self, FieldType, Resource};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Reads one row by id, without auditing (inside a write that was audited).
pub(super) async fn reread(
    client: &impl deadpool_postgres::GenericClient,
    keys: &ClinicKeyCache,
    r: &Resource,
    actor: &Actor,
    id: Uuid,
) -> Result<Value, WorkerError> {
    let clinic = actor.clinic;
    let mut sql = Sql::default();
    let c = sql.bind(*clinic.as_uuid());
    let i = sql.bind(id);
    let text = format!(
        "SELECT {} FROM {} t WHERE t.company_id = {c} AND t.id = {i}",
        select_list(r),
        r.table
    );
    let rows = run(client, Op::new(actor, r, "reread"), &text, &sql).await?;
    first_to_json(r, keys, actor, &rows).await
}

/// Reads one live row.
pub async fn get(
    client: &deadpool_postgres::Object,
    keys: &ClinicKeyCache,
    r: &Resource,
    actor: &Actor,
    id: Uuid,
    audit: Audit,
) -> Result<Value, WorkerError> {
    let mut sql = match audit {
        Audit::Inline => Sql::for_actor(actor),
        Audit::Deferred => Sql::for_clinic(actor),
    };
    let c = sql.clinic_param();
    let i = sql.bind(id);
    let body = format!(
        "SELECT {} FROM {} t WHERE t.company_id = {c} AND t.id = {i} AND t.deleted_at IS NULL",
        select_list(r),
        r.table
    );
    let text = match audit {
        Audit::Inline => audited(
            &body,
            r,
            Action::Read,
            &format!("{i}::uuid"),
            FOUND_OUTCOME,
            "",
        ),
        Audit::Deferred => body,
    };
    let rows = run(
        client,
        Op::new(actor, r, Action::Read.as_str()),
        &text,
        &sql,
    )
    .await?;
    first_to_json(r, keys, actor, &rows).await
}

/// Everything the clinic holds about one patient (GDPR access and portability):
/// the patient and every row of every resource that refers to them, each read
/// audited like any other read.
pub async fn export_patient(
    client: &deadpool_postgres::Object,
    keys: &ClinicKeyCache,
    actor: &Actor,
    id: Uuid,
) -> Result<Value, WorkerError> {
    let patient = get(client, keys, &resource::PATIENTS, actor, id, Audit::Inline).await?;
    let mut out = Map::new();
    out.insert("patient".into(), patient);
    for r in resource::RESOURCES
        .iter()
        .copied()
        .chain([&resource::ATTACHMENTS])
    {
        let Some(field) = r
            .fields
            .iter()
            .find(|f| f.ty == FieldType::Reference(resource::PATIENTS.table) && f.filterable)
        else {
            continue;
        };
        let mut rows = Vec::new();
        let mut query = ListQuery {
            limit: MAX_LIMIT,
            filters: vec![(field, id.to_string())],
            ..ListQuery::default()
        };
        loop {
            let (page, next) = list(client, keys, r, actor, &query, Audit::Inline).await?;
            rows.extend(page);
            query.after = next;
            if query.after.is_none() {
                break;
            }
        }
        out.insert(r.name.into(), Value::Array(rows));
    }
    record_access(
        client,
        actor,
        &resource::PATIENTS,
        Action::Named("export"),
        Some(id),
        "success",
    )
    .await?;
    Ok(Value::Object(out))
}
