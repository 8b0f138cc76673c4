//! The generic data layer: every resource described in `common::resource` is read
//! and written through these functions, never through per-resource copies.
//!
//! Each access is one SQL statement whose data-modifying CTE writes the audit outbox
//! row in the same implicit transaction as the data: the access and its audit record
//! commit together or not at all, in a single round trip.

use crate::error::WorkerError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use common::crypto::{FieldContext, KeyRing};
use common::resource::{Field, FieldType, Resource, SERVER_FIELDS};
use common::ClinicId;
use serde_json::{Map, Value};
use std::net::IpAddr;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

/// Default and maximum page sizes of a list.
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;
const MAX_QUERY_LEN: usize = 200;

type Param = Box<dyn ToSql + Sync + Send>;

/// The audited actor of a statement: always parameters `$1`–`$4`.
pub struct Actor {
    pub clinic: ClinicId,
    pub user: Uuid,
    pub client_ip: IpAddr,
    pub request_id: String,
}

impl Actor {
    fn params(&self) -> Vec<Param> {
        vec![
            Box::new(*self.clinic.as_uuid()),
            Box::new(self.user),
            Box::new(self.client_ip),
            Box::new(self.request_id.clone()),
        ]
    }
}

/// What the audit row says was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    List,
    Read,
    Create,
    Update,
    Delete,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

fn stored_columns(field: &Field) -> Vec<String> {
    match (field.encrypted, field.lookup) {
        (false, _) => vec![field.name.to_owned()],
        (true, false) => vec![format!("{}_enc", field.name)],
        (true, true) => vec![
            format!("{}_enc", field.name),
            format!("{}_bidx", field.name),
        ],
    }
}

fn select_list(r: &Resource) -> String {
    let mut cols = vec!["id".to_owned(), "created_at".into(), "updated_at".into()];
    for f in r.fields {
        cols.push(if f.encrypted {
            format!("{}_enc", f.name)
        } else {
            f.name.to_owned()
        });
    }
    cols.join(", ")
}

/// Wraps a statement into `WITH w AS (…)` plus the audit insert. `$1`..`$4` are the
/// actor; `resource_id` and `outcome` are SQL expressions that may refer to `w`.
fn audited(
    body: &str,
    r: &Resource,
    action: Action,
    resource_id: &str,
    outcome: &str,
    tail: &str,
) -> String {
    format!(
        "WITH w AS ({body}), a AS (INSERT INTO audit_outbox \
         (user_id, action, resource, resource_id, client_ip, request_id, outcome) \
         SELECT $2::uuid, '{action}', '{resource}', {resource_id}, $3::inet, $4::text, {outcome}) \
         SELECT * FROM w{tail}",
        action = action.as_str(),
        resource = r.name,
    )
}

const FOUND_OUTCOME: &str =
    "CASE WHEN EXISTS (SELECT 1 FROM w) THEN 'success' ELSE 'not_found' END";

/// Records an access that failed before or inside its statement.
pub async fn audit_failure(
    client: &tokio_postgres::Client,
    actor: &Actor,
    r: &Resource,
    action: Action,
    resource_id: Option<Uuid>,
    outcome: &str,
) -> Result<(), WorkerError> {
    client
        .execute(
            "INSERT INTO audit_outbox (user_id, action, resource, resource_id, client_ip, request_id, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &actor.user,
                &action.as_str(),
                &r.name,
                &resource_id,
                &actor.client_ip,
                &actor.request_id,
                &outcome,
            ],
        )
        .await
        .map_err(WorkerError::from_db)?;
    Ok(())
}

async fn run(
    client: &deadpool_postgres::Object,
    sql: &str,
    params: &[Param],
) -> Result<Vec<Row>, WorkerError> {
    let stmt = client
        .prepare_cached(sql)
        .await
        .map_err(WorkerError::from_db)?;
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    client
        .query(&stmt, &refs)
        .await
        .map_err(WorkerError::from_db)
}

/// Turns a stored row into the client's JSON object, decrypting what is sealed.
fn row_to_json(
    r: &Resource,
    keys: &KeyRing,
    clinic: ClinicId,
    row: &Row,
) -> Result<Value, WorkerError> {
    let id: Uuid = row.get(0);
    let created: DateTime<Utc> = row.get(1);
    let updated: DateTime<Utc> = row.get(2);
    let mut obj = Map::new();
    obj.insert("id".into(), id.to_string().into());
    obj.insert(
        "created_at".into(),
        created.to_rfc3339_opts(SecondsFormat::Micros, true).into(),
    );
    obj.insert(
        "updated_at".into(),
        updated.to_rfc3339_opts(SecondsFormat::Micros, true).into(),
    );
    for (i, f) in r.fields.iter().enumerate() {
        let idx = i + 3;
        let value = if f.encrypted {
            match row.get::<_, Option<Vec<u8>>>(idx) {
                None => Value::Null,
                Some(sealed) => {
                    let ctx = FieldContext {
                        clinic,
                        table: r.table,
                        row: &id,
                        column: f.name,
                    };
                    let plain = keys.open_field(&ctx, &sealed).map_err(|e| {
                        WorkerError::Integrity(format!("{}.{} of {id}: {e}", r.table, f.name))
                    })?;
                    Value::String(String::from_utf8_lossy(&plain).into_owned())
                }
            }
        } else {
            match f.ty {
                FieldType::Text { .. } | FieldType::Email => row
                    .get::<_, Option<String>>(idx)
                    .map(Value::String)
                    .unwrap_or(Value::Null),
                FieldType::Date => row
                    .get::<_, Option<NaiveDate>>(idx)
                    .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
                    .unwrap_or(Value::Null),
            }
        };
        obj.insert(f.name.into(), value);
    }
    Ok(Value::Object(obj))
}

fn rows_to_json(
    r: &Resource,
    keys: &KeyRing,
    clinic: ClinicId,
    rows: &[Row],
) -> Result<Vec<Value>, WorkerError> {
    rows.iter()
        .map(|row| row_to_json(r, keys, clinic, row))
        .collect()
}

/// A validated, typed field value.
enum Typed {
    Text(Option<String>),
    Date(Option<NaiveDate>),
}

fn check_text(field: &Field, s: &str, max_len: usize) -> Result<(), WorkerError> {
    if s.chars().count() > max_len {
        return Err(WorkerError::BadRequest(format!(
            "`{}` must be at most {max_len} characters.",
            field.name
        )));
    }
    if s.contains('\0') {
        return Err(WorkerError::BadRequest(format!(
            "`{}` must not contain NUL characters.",
            field.name
        )));
    }
    Ok(())
}

fn parse_value(field: &Field, value: &Value) -> Result<Typed, WorkerError> {
    let wrong =
        |expected: &str| WorkerError::BadRequest(format!("`{}` must be {expected}.", field.name));
    if value.is_null() {
        if field.required {
            return Err(WorkerError::BadRequest(format!(
                "`{}` is required.",
                field.name
            )));
        }
        return Ok(match field.ty {
            FieldType::Date => Typed::Date(None),
            FieldType::Text { .. } | FieldType::Email => Typed::Text(None),
        });
    }
    let s = value.as_str().ok_or_else(|| wrong("a string"))?;
    match field.ty {
        FieldType::Text { max_len } => {
            check_text(field, s, max_len)?;
            if field.required && s.trim().is_empty() {
                return Err(WorkerError::BadRequest(format!(
                    "`{}` must not be empty.",
                    field.name
                )));
            }
            Ok(Typed::Text(Some(s.to_owned())))
        }
        FieldType::Email => {
            check_text(field, s, common::Email::MAX_LEN)?;
            common::Email::parse(s)
                .map(|e| Typed::Text(Some(e.as_str().to_owned())))
                .ok_or_else(|| wrong("an e-mail address"))
        }
        FieldType::Date => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .filter(|_| s.len() == 10)
            .map(|d| Typed::Date(Some(d)))
            .ok_or_else(|| wrong("a date (YYYY-MM-DD)")),
    }
}

/// Checks a request body against the resource and returns the stored parameters in
/// column order (`stored_columns` of each field). Unknown fields are refused; the
/// server-set fields are ignored; the clinic can never be set from a body.
fn body_params(
    r: &Resource,
    keys: &KeyRing,
    clinic: ClinicId,
    id: &Uuid,
    body: &[u8],
) -> Result<Vec<Param>, WorkerError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| WorkerError::BadRequest(format!("The body is not valid JSON: {e}.")))?;
    let Value::Object(obj) = value else {
        return Err(WorkerError::BadRequest(
            "The body must be a JSON object.".into(),
        ));
    };
    for key in obj.keys() {
        if key == "company_id" || key == "clinic_id" {
            return Err(WorkerError::BadRequest(format!(
                "`{key}` cannot be set: the clinic is taken from your access token."
            )));
        }
        if r.field(key).is_none() && !SERVER_FIELDS.contains(&key.as_str()) {
            return Err(WorkerError::BadRequest(format!("Unknown field `{key}`.")));
        }
    }
    let mut params: Vec<Param> = Vec::new();
    for f in r.fields {
        let typed = parse_value(f, obj.get(f.name).unwrap_or(&Value::Null))?;
        match (typed, f.encrypted) {
            (Typed::Text(v), false) => params.push(Box::new(v)),
            (Typed::Date(v), false) => params.push(Box::new(v)),
            (Typed::Text(v), true) => {
                let ctx = FieldContext {
                    clinic,
                    table: r.table,
                    row: id,
                    column: f.name,
                };
                params.push(Box::new(
                    v.as_deref().map(|s| keys.seal_field(&ctx, s.as_bytes())),
                ));
                if f.lookup {
                    params.push(Box::new(
                        v.as_deref()
                            .map(|s| keys.blind_index(clinic, r.table, f.name, s)),
                    ));
                }
            }
            (Typed::Date(_), true) => {
                return Err(WorkerError::Internal(format!(
                    "{}.{}: dates are not sealed",
                    r.table, f.name
                )))
            }
        }
    }
    Ok(params)
}

fn writable_columns(r: &Resource) -> Vec<String> {
    r.fields.iter().flat_map(stored_columns).collect()
}

/// Reads one live row.
pub async fn get(
    client: &deadpool_postgres::Object,
    keys: &KeyRing,
    r: &Resource,
    actor: &Actor,
    id: Uuid,
) -> Result<Value, WorkerError> {
    let body = format!(
        "SELECT {} FROM {} WHERE company_id = $1 AND id = $5 AND deleted_at IS NULL",
        select_list(r),
        r.table
    );
    let sql = audited(&body, r, Action::Read, "$5::uuid", FOUND_OUTCOME, "");
    let mut params = actor.params();
    params.push(Box::new(id));
    let rows = run(client, &sql, &params).await?;
    let row = rows.first().ok_or(WorkerError::NotFound)?;
    row_to_json(r, keys, actor.clinic, row)
}

/// Creates a row with a server-chosen id.
pub async fn create(
    client: &deadpool_postgres::Object,
    keys: &KeyRing,
    r: &Resource,
    actor: &Actor,
    body: &[u8],
) -> Result<Value, WorkerError> {
    let id = Uuid::now_v7();
    let values = body_params(r, keys, actor.clinic, &id, body)?;
    let cols = writable_columns(r);
    let placeholders: Vec<String> = (0..cols.len()).map(|i| format!("${}", i + 6)).collect();
    let insert = format!(
        "INSERT INTO {} (id, company_id, {}) VALUES ($5, $1, {}) RETURNING {}",
        r.table,
        cols.join(", "),
        placeholders.join(", "),
        select_list(r)
    );
    let sql = audited(
        &insert,
        r,
        Action::Create,
        "(SELECT id FROM w)",
        "'success'",
        "",
    );
    let mut params = actor.params();
    params.push(Box::new(id));
    params.extend(values);
    let rows = run(client, &sql, &params).await?;
    let row = rows
        .first()
        .ok_or_else(|| WorkerError::Internal("insert returned no row".into()))?;
    row_to_json(r, keys, actor.clinic, row)
}

/// Replaces every writable field of a live row.
pub async fn replace(
    client: &deadpool_postgres::Object,
    keys: &KeyRing,
    r: &Resource,
    actor: &Actor,
    id: Uuid,
    body: &[u8],
) -> Result<Value, WorkerError> {
    let values = body_params(r, keys, actor.clinic, &id, body)?;
    let sets: Vec<String> = writable_columns(r)
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 6))
        .collect();
    let update = format!(
        "UPDATE {} SET {}, updated_at = now() WHERE company_id = $1 AND id = $5 AND deleted_at IS NULL RETURNING {}",
        r.table,
        sets.join(", "),
        select_list(r)
    );
    let sql = audited(&update, r, Action::Update, "$5::uuid", FOUND_OUTCOME, "");
    let mut params = actor.params();
    params.push(Box::new(id));
    params.extend(values);
    let rows = run(client, &sql, &params).await?;
    let row = rows.first().ok_or(WorkerError::NotFound)?;
    row_to_json(r, keys, actor.clinic, row)
}

/// Hides a live row (soft delete): it stays for the record.
pub async fn soft_delete(
    client: &deadpool_postgres::Object,
    r: &Resource,
    actor: &Actor,
    id: Uuid,
) -> Result<(), WorkerError> {
    let update = format!(
        "UPDATE {} SET deleted_at = now(), updated_at = now() WHERE company_id = $1 AND id = $5 AND deleted_at IS NULL RETURNING id",
        r.table
    );
    let sql = audited(&update, r, Action::Delete, "$5::uuid", FOUND_OUTCOME, "");
    let mut params = actor.params();
    params.push(Box::new(id));
    let rows = run(client, &sql, &params).await?;
    if rows.is_empty() {
        return Err(WorkerError::NotFound);
    }
    Ok(())
}

/// A parsed list request.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub q: Option<String>,
    pub limit: i64,
    pub after: Option<Uuid>,
    /// Exact-match lookups on blind-indexed fields.
    pub lookups: Vec<(&'static Field, String)>,
}

impl ListQuery {
    /// Parses `q`, `limit`, `cursor` and lookup fields; other parameters are ignored
    /// (a clinic id in the query string is never used).
    pub fn parse(r: &Resource, raw: Option<&str>) -> Result<Self, WorkerError> {
        let mut out = ListQuery {
            limit: DEFAULT_LIMIT,
            ..ListQuery::default()
        };
        for (key, value) in form_pairs(raw.unwrap_or("")) {
            if value.len() > MAX_QUERY_LEN || value.contains('\0') {
                return Err(WorkerError::BadRequest(format!(
                    "`{key}` must be at most {MAX_QUERY_LEN} characters without NUL."
                )));
            }
            match key.as_str() {
                "q" => out.q = Some(value).filter(|v| !v.trim().is_empty()),
                "limit" => {
                    out.limit = value
                        .parse()
                        .ok()
                        .filter(|l| (1..=MAX_LIMIT).contains(l))
                        .ok_or_else(|| {
                            WorkerError::BadRequest(format!(
                                "`limit` must be an integer from 1 to {MAX_LIMIT}."
                            ))
                        })?
                }
                "cursor" => {
                    out.after = Some(
                        URL_SAFE_NO_PAD
                            .decode(value.as_bytes())
                            .ok()
                            .and_then(|b| Uuid::from_slice(&b).ok())
                            .ok_or_else(|| {
                                WorkerError::BadRequest(
                                    "`cursor` is not a cursor this API returned.".into(),
                                )
                            })?,
                    )
                }
                other => {
                    if let Some(f) = r.field(other).filter(|f| f.lookup) {
                        out.lookups.push((f, value));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Decodes `application/x-www-form-urlencoded` pairs.
fn form_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1]).zip(hex(bytes[i + 2])),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some((hi, lo)), _) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn like_pattern(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// One page of live rows in id (creation) order.
pub async fn list(
    client: &deadpool_postgres::Object,
    keys: &KeyRing,
    r: &Resource,
    actor: &Actor,
    query: &ListQuery,
) -> Result<(Vec<Value>, Option<String>), WorkerError> {
    let mut params = actor.params();
    let mut conditions = vec![
        "company_id = $1".to_owned(),
        "deleted_at IS NULL".to_owned(),
    ];
    if let Some(after) = query.after {
        params.push(Box::new(after));
        conditions.push(format!("id > ${}", params.len()));
    }
    if let Some(q) = &query.q {
        let searchable: Vec<&Field> = r.fields.iter().filter(|f| f.searchable).collect();
        if !searchable.is_empty() {
            params.push(Box::new(like_pattern(q)));
            let n = params.len();
            let ors: Vec<String> = searchable
                .iter()
                .map(|f| format!("{} ILIKE ${n}", f.name))
                .collect();
            conditions.push(format!("({})", ors.join(" OR ")));
        }
    }
    for (f, value) in &query.lookups {
        params.push(Box::new(keys.blind_index(
            actor.clinic,
            r.table,
            f.name,
            value,
        )));
        conditions.push(format!("{}_bidx = ${}", f.name, params.len()));
    }
    params.push(Box::new(query.limit + 1));
    let body = format!(
        "SELECT {} FROM {} WHERE {} ORDER BY id LIMIT ${}",
        select_list(r),
        r.table,
        conditions.join(" AND "),
        params.len()
    );
    let sql = audited(
        &body,
        r,
        Action::List,
        "NULL::uuid",
        "'success'",
        " ORDER BY id",
    );
    let mut rows = run(client, &sql, &params).await?;
    let more = rows.len() as i64 > query.limit;
    rows.truncate(query.limit as usize);
    let next = if more {
        rows.last()
            .map(|row| URL_SAFE_NO_PAD.encode(row.get::<_, Uuid>(0).as_bytes()))
    } else {
        None
    };
    Ok((rows_to_json(r, keys, actor.clinic, &rows)?, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::resource::PATIENTS;

    #[test]
    fn list_query_parsing() {
        let q =
            ListQuery::parse(&PATIENTS, Some("q=Du%20pont&limit=5&company_id=x&ssn=123")).unwrap();
        assert_eq!(q.q.as_deref(), Some("Du pont"));
        assert_eq!(q.limit, 5);
        assert_eq!(q.lookups.len(), 1);
        assert!(ListQuery::parse(&PATIENTS, Some("limit=0")).is_err());
        assert!(ListQuery::parse(&PATIENTS, Some("limit=101")).is_err());
        assert!(ListQuery::parse(&PATIENTS, Some("cursor=%%%")).is_err());
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%4a"), "AJ");
    }

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(like_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
    }

    #[test]
    fn bodies_are_checked() {
        let keys = KeyRing::new(1, &[1u8; 32]);
        let clinic = ClinicId::generate();
        let id = Uuid::now_v7();
        let ok = br#"{"first_name":"Ada","last_name":"L","ssn":"123","id":"ignored"}"#;
        assert_eq!(
            body_params(&PATIENTS, &keys, clinic, &id, ok)
                .unwrap()
                .len(),
            7
        );
        for bad in [
            &br#"{"first_name":"Ada"}"#[..],
            br#"{"first_name":1,"last_name":"L"}"#,
            br#"{"first_name":"A","last_name":"L","company_id":"x"}"#,
            br#"{"first_name":"A","last_name":"L","nope":1}"#,
            br#"{"first_name":"A","last_name":"L","birth_date":"2020-13-01"}"#,
            br#"{"first_name":"A","last_name":"L","email":"no-at"}"#,
            br#"{"first_name":"A\u0000","last_name":"L"}"#,
            br#"[1]"#,
            br#"{"first_name":"#,
        ] {
            assert!(matches!(
                body_params(&PATIENTS, &keys, clinic, &id, bad),
                Err(WorkerError::BadRequest(_))
            ));
        }
    }
}
