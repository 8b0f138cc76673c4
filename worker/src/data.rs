//! The generic data layer: every resource described in `common::resource` is read
//! and written through these functions, never through per-resource copies.
//!
//! Reads are one SQL statement whose data-modifying CTE writes the audit outbox row
//! in the same implicit transaction. Writes run in one transaction: reference
//! checks, the row with its audit record, then child rows and links; nothing is
//! answered before it commits.

use crate::error::WorkerError;
use crate::keys::ClinicKeyCache;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use common::crypto::{sealed_key_id, ClinicKeys, FieldContext};
use common::resource::{self, Child, Field, FieldType, Resource, RowAction, SERVER_FIELDS};
use common::token::Role;
use common::ClinicId;
use serde_json::{Map, Value};
use std::net::IpAddr;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

/// The first byte of a value read from a sealed field's plaintext column of before.
const LEGACY_PLAINTEXT: u8 = 0;

/// Default and maximum page sizes of a list.
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;
const MAX_QUERY_LEN: usize = 200;
const MAX_REFERENCE_LIST: usize = 100;

type Param = Box<dyn ToSql + Sync + Send>;
/// A row to write: (column, value) pairs.
type Columns = Vec<(String, Param)>;

/// Parameters of one statement, numbered as they are bound.
#[derive(Default)]
struct Sql {
    params: Vec<Param>,
}

impl Sql {
    /// Starts with the audited actor as `$1`–`$4`.
    fn for_actor(actor: &Actor) -> Self {
        let mut sql = Self::default();
        sql.bind(*actor.clinic.as_uuid());
        sql.bind(actor.user);
        sql.bind(actor.client_ip);
        sql.bind(actor.request_id.clone());
        sql
    }

    /// Starts with the clinic only, as `$1` (a statement recorded by its caller).
    fn for_clinic(actor: &Actor) -> Self {
        let mut sql = Self::default();
        sql.bind(*actor.clinic.as_uuid());
        sql
    }

    /// The clinic's parameter: `$1` in every statement.
    fn clinic_param(&self) -> &'static str {
        "$1"
    }

    fn bind<T: ToSql + Sync + Send + 'static>(&mut self, value: T) -> String {
        self.push(Box::new(value))
    }

    fn push(&mut self, value: Param) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The audited actor of a statement: always parameters `$1`–`$4`.
pub struct Actor {
    pub clinic: ClinicId,
    pub user: Uuid,
    pub role: Role,
    pub client_ip: IpAddr,
    pub request_id: String,
}

/// What the audit row says was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    List,
    Read,
    Create,
    Update,
    Delete,
    Restore,
    /// A row action such as `issue` or `convert`.
    Named(&'static str),
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Restore => "restore",
            Action::Named(name) => name,
        }
    }
}

/// How a body is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Create,
    /// PUT: every writable field; absent ones take their default or null.
    Replace,
    /// PATCH: only the fields present.
    Patch,
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

/// Index entries a search walks in order before it asks the trigram index instead
/// (see [`search_keys`]): a term matching one row in 50 fills a page of 20 within
/// it; a rarer one is found faster through the trigram index.
const SEARCH_WALK: u32 = 1000;

/// The select list of a resource, over the alias `t`: built once per resource (it
/// depends on nothing else), not per request.
fn select_list(r: &Resource) -> std::borrow::Cow<'static, str> {
    static LISTS: std::sync::LazyLock<std::collections::HashMap<&'static str, String>> =
        std::sync::LazyLock::new(|| {
            common::resource::RESOURCES
                .iter()
                .map(|r| (r.name, build_select_list(r)))
                .collect()
        });
    match LISTS.get(r.name) {
        Some(list) => std::borrow::Cow::Borrowed(list),
        // Every resource is in `RESOURCES`; one that is not is still served.
        None => std::borrow::Cow::Owned(build_select_list(r)),
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
    audited_showing(body, r, action, resource_id, "NULL::uuid[]", outcome, tail)
}

/// [`audited`], also recording `resource_ids`: the ids of the rows shown (an SQL
/// expression that may refer to `w`).
fn audited_showing(
    body: &str,
    r: &Resource,
    action: Action,
    resource_id: &str,
    resource_ids: &str,
    outcome: &str,
    tail: &str,
) -> String {
    format!(
        "WITH w AS ({body}), a AS (INSERT INTO audit_outbox \
         (user_id, action, resource, resource_id, resource_ids, client_ip, request_id, outcome) \
         SELECT $2::uuid, '{action}', '{resource}', {resource_id}, {resource_ids}, $3::inet, $4::text, {outcome}) \
         SELECT * FROM w{tail}",
        action = action.as_str(),
        resource = r.name,
    )
}

const FOUND_OUTCOME: &str =
    "CASE WHEN EXISTS (SELECT 1 FROM w) THEN 'success' ELSE 'not_found' END";

/// Records an access outside a data statement: one that failed before or inside
/// its statement, or one made of several statements (an export).
pub async fn record_access(
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

/// What a statement is run for: its resource and action, named in the slow-query
/// report with the actor's clinic and request id (never its parameters).
#[derive(Clone, Copy)]
struct Op<'a> {
    actor: &'a Actor,
    resource: &'static str,
    action: &'static str,
}

impl<'a> Op<'a> {
    fn new(actor: &'a Actor, r: &Resource, action: &'static str) -> Self {
        Self {
            actor,
            resource: r.name,
            action,
        }
    }
}

/// Runs one statement, timing it: a statement slower than `SLOW_QUERY_MS` is
/// reported (see [`crate::telemetry::statement_finished`]), failed or not.
async fn run(
    client: &impl deadpool_postgres::GenericClient,
    op: Op<'_>,
    sql: &str,
    params: &Sql,
) -> Result<Vec<Row>, WorkerError> {
    let started = std::time::Instant::now();
    let result = async {
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(WorkerError::from_db)?;
        client
            .query(&stmt, &params.refs())
            .await
            .map_err(WorkerError::from_db)
    }
    .await;
    crate::telemetry::statement_finished(
        &crate::telemetry::Statement {
            resource: op.resource,
            action: op.action,
            clinic: op.actor.clinic,
            request_id: &op.actor.request_id,
        },
        started.elapsed(),
    );
    result
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    v.map(f).unwrap_or(Value::Null)
}

/// One column of a row, typed; a type mismatch is an error, never a panic.
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
) -> Result<T, WorkerError> {
    row.try_get(idx)
        .map_err(|e| WorkerError::Internal(format!("reading column {idx}: {e}")))
}

/// Turns a stored row into the client's JSON object, decrypting what is sealed.
fn row_to_json(
    r: &Resource,
    keys: &ClinicKeys,
    actor: &Actor,
    row: &Row,
) -> Result<Value, WorkerError> {
    let clinic = actor.clinic;
    let id: Uuid = col(row, 0)?;
    let mut obj = Map::new();
    obj.insert("id".into(), id.to_string().into());
    obj.insert("created_at".into(), timestamp(col(row, 1)?).into());
    obj.insert("updated_at".into(), timestamp(col(row, 2)?).into());
    for (i, f) in r.fields.iter().enumerate() {
        let idx = i + 3;
        if f.restricted && !actor.role.sees_restricted() {
            continue;
        }
        let value = if f.encrypted {
            match col::<Option<Vec<u8>>>(row, idx)? {
                None => Value::Null,
                Some(legacy) if legacy.first() == Some(&LEGACY_PLAINTEXT) => {
                    Value::String(String::from_utf8_lossy(&legacy[1..]).into_owned())
                }
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
                FieldType::Text { .. } | FieldType::Email | FieldType::Enum(_) => {
                    opt(col::<Option<String>>(row, idx)?, Value::String)
                }
                FieldType::Date => opt(col::<Option<NaiveDate>>(row, idx)?, |d| {
                    Value::String(d.format("%Y-%m-%d").to_string())
                }),
                FieldType::Timestamp => opt(col::<Option<DateTime<Utc>>>(row, idx)?, |t| {
                    timestamp(t).into()
                }),
                FieldType::Integer { .. } => opt(col::<Option<i64>>(row, idx)?, Value::from),
                FieldType::Boolean => opt(col::<Option<bool>>(row, idx)?, Value::Bool),
                FieldType::Reference(_) => {
                    opt(col::<Option<Uuid>>(row, idx)?, |u| u.to_string().into())
                }
                FieldType::ReferenceList { .. } => Value::Array(
                    col::<Vec<Uuid>>(row, idx)?
                        .into_iter()
                        .map(|u| Value::String(u.to_string()))
                        .collect(),
                ),
            }
        };
        obj.insert(f.name.into(), value);
    }
    for (i, c) in r.children.iter().enumerate() {
        obj.insert(c.name.into(), col::<Value>(row, 3 + r.fields.len() + i)?);
    }
    Ok(Value::Object(obj))
}

/// Turns stored rows into JSON, first making sure every data-key version their
/// sealed values name is loaded (a rotation may have started since the pool opened).
async fn rows_to_json(
    r: &Resource,
    keys: &ClinicKeyCache,
    actor: &Actor,
    rows: &[Row],
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
async fn first_to_json(
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

/// A value checked against its field, ready to bind.
enum Typed {
    Text(Option<String>),
    Date(Option<NaiveDate>),
    Timestamp(Option<DateTime<Utc>>),
    Integer(Option<i64>),
    Boolean(Option<bool>),
    Uuid(Option<Uuid>),
    Uuids(Vec<Uuid>),
}

impl Typed {
    fn into_param(self) -> Param {
        match self {
            Typed::Text(v) => Box::new(v),
            Typed::Date(v) => Box::new(v),
            Typed::Timestamp(v) => Box::new(v),
            Typed::Integer(v) => Box::new(v),
            Typed::Boolean(v) => Box::new(v),
            Typed::Uuid(v) => Box::new(v),
            Typed::Uuids(v) => Box::new(v),
        }
    }

    fn null(ty: FieldType) -> Self {
        match ty {
            FieldType::Text { .. } | FieldType::Email | FieldType::Enum(_) => Typed::Text(None),
            FieldType::Date => Typed::Date(None),
            FieldType::Timestamp => Typed::Timestamp(None),
            FieldType::Integer { .. } => Typed::Integer(None),
            FieldType::Boolean => Typed::Boolean(None),
            FieldType::Reference(_) => Typed::Uuid(None),
            FieldType::ReferenceList { .. } => Typed::Uuids(Vec::new()),
        }
    }
}

fn check_text(name: &str, s: &str, max_len: usize) -> Result<(), WorkerError> {
    if s.chars().count() > max_len {
        return Err(WorkerError::BadRequest(format!(
            "`{name}` must be at most {max_len} characters."
        )));
    }
    if s.contains('\0') {
        return Err(WorkerError::BadRequest(format!(
            "`{name}` must not contain NUL characters."
        )));
    }
    Ok(())
}

fn parse_uuid(name: &str, v: &Value) -> Result<Uuid, WorkerError> {
    v.as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| WorkerError::BadRequest(format!("`{name}` must be a UUID.")))
}

fn parse_timestamp(name: &str, s: &str) -> Result<DateTime<Utc>, WorkerError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| WorkerError::BadRequest(format!("`{name}` must be an RFC 3339 date-time.")))
}

fn parse_date(name: &str, s: &str) -> Result<NaiveDate, WorkerError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10)
        .ok_or_else(|| WorkerError::BadRequest(format!("`{name}` must be a date (YYYY-MM-DD).")))
}

/// The value a field takes when a create or replace leaves it out.
fn default_value(field: &Field) -> Option<Value> {
    let d = field.default?;
    Some(match field.ty {
        FieldType::Boolean => Value::Bool(d == "true"),
        FieldType::Integer { .. } => d.parse::<i64>().map(Value::from).unwrap_or(Value::Null),
        FieldType::Timestamp if d == "now" => Value::String(timestamp(Utc::now())),
        _ => Value::String(d.to_owned()),
    })
}

fn parse_value(field: &Field, value: &Value) -> Result<Typed, WorkerError> {
    let name = field.name;
    let wrong = |expected: &str| WorkerError::BadRequest(format!("`{name}` must be {expected}."));
    if value.is_null() {
        if field.required {
            return Err(WorkerError::BadRequest(format!("`{name}` is required.")));
        }
        return Ok(Typed::null(field.ty));
    }
    let text = || value.as_str().ok_or_else(|| wrong("a string"));
    match field.ty {
        FieldType::Text { max_len } => {
            let s = text()?;
            check_text(name, s, max_len)?;
            if field.required && s.trim().is_empty() {
                return Err(WorkerError::BadRequest(format!(
                    "`{name}` must not be empty."
                )));
            }
            Ok(Typed::Text(Some(s.to_owned())))
        }
        FieldType::Email => {
            let s = text()?;
            check_text(name, s, common::Email::MAX_LEN)?;
            common::Email::parse(s)
                .map(|e| Typed::Text(Some(e.as_str().to_owned())))
                .ok_or_else(|| wrong("an e-mail address"))
        }
        FieldType::Enum(allowed) => {
            let s = text()?;
            if allowed.contains(&s) {
                Ok(Typed::Text(Some(s.to_owned())))
            } else {
                Err(wrong(&format!("one of {}", allowed.join(", "))))
            }
        }
        FieldType::Date => Ok(Typed::Date(Some(parse_date(name, text()?)?))),
        FieldType::Timestamp => Ok(Typed::Timestamp(Some(parse_timestamp(name, text()?)?))),
        FieldType::Integer { min, max } => value
            .as_i64()
            .filter(|n| (min..=max).contains(n))
            .map(|n| Typed::Integer(Some(n)))
            .ok_or_else(|| wrong(&format!("an integer from {min} to {max}"))),
        FieldType::Boolean => value
            .as_bool()
            .map(|b| Typed::Boolean(Some(b)))
            .ok_or_else(|| wrong("true or false")),
        FieldType::Reference(_) => Ok(Typed::Uuid(Some(parse_uuid(name, value)?))),
        FieldType::ReferenceList { .. } => {
            let items = value.as_array().ok_or_else(|| wrong("an array of UUIDs"))?;
            if items.len() > MAX_REFERENCE_LIST {
                return Err(wrong(&format!("at most {MAX_REFERENCE_LIST} ids")));
            }
            let mut ids = items
                .iter()
                .map(|v| parse_uuid(name, v))
                .collect::<Result<Vec<_>, _>>()?;
            ids.sort();
            ids.dedup();
            Ok(Typed::Uuids(ids))
        }
    }
}

/// A reference to check: field name, target table, ids.
struct RefCheck {
    name: String,
    table: &'static str,
    ids: Vec<Uuid>,
}

/// A checked body.
struct Input {
    /// (column, value) pairs of the row itself.
    columns: Columns,
    /// Link lists to replace: field, ids.
    links: Vec<(&'static Field, Vec<Uuid>)>,
    /// Child lists to replace: child, rows of (column, value).
    children: Vec<(&'static Child, Vec<Columns>)>,
    refs: Vec<RefCheck>,
}

fn refuse_unknown(
    obj: &Map<String, Value>,
    known: impl Fn(&str) -> bool,
    what: &str,
) -> Result<(), WorkerError> {
    for key in obj.keys() {
        if key == "company_id" || key == "clinic_id" {
            return Err(WorkerError::BadRequest(format!(
                "`{key}` cannot be set: the clinic is taken from your access token."
            )));
        }
        if !known(key) && !SERVER_FIELDS.contains(&key.as_str()) {
            return Err(WorkerError::BadRequest(format!(
                "Unknown field `{key}`{what}."
            )));
        }
    }
    Ok(())
}

/// The value of `field` in `obj` for this kind of write, or `None` to leave it.
fn pick<'a>(
    obj: &'a Map<String, Value>,
    field: &Field,
    mode: Write,
    default: &'a Option<Value>,
) -> Option<&'a Value> {
    match (obj.get(field.name), mode) {
        (Some(v), _) if !(v.is_null() && default.is_some() && mode != Write::Patch) => Some(v),
        (_, Write::Patch) => None,
        (_, _) => Some(default.as_ref().unwrap_or(&Value::Null)),
    }
}

fn parse_child_rows(
    child: &'static Child,
    value: &Value,
    refs: &mut Vec<RefCheck>,
) -> Result<Vec<Columns>, WorkerError> {
    let items = value
        .as_array()
        .ok_or_else(|| WorkerError::BadRequest(format!("`{}` must be an array.", child.name)))?;
    if items.len() > child.max_items {
        return Err(WorkerError::BadRequest(format!(
            "`{}` holds at most {} entries.",
            child.name, child.max_items
        )));
    }
    let mut rows = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let obj = item.as_object().ok_or_else(|| {
            WorkerError::BadRequest(format!("`{}[{i}]` must be an object.", child.name))
        })?;
        refuse_unknown(
            obj,
            |k| child.fields.iter().any(|f| f.name == k),
            &format!(" in `{}[{i}]`", child.name),
        )?;
        let mut row: Columns = vec![("position".into(), Box::new(i as i32))];
        for f in child.fields.iter().filter(|f| !f.read_only) {
            let default = default_value(f);
            let v = pick(obj, f, Write::Create, &default).unwrap_or(&Value::Null);
            let typed = parse_value(f, v).map_err(|e| match e {
                WorkerError::BadRequest(m) => {
                    WorkerError::BadRequest(format!("{}[{i}]: {m}", child.name))
                }
                other => other,
            })?;
            if let (Typed::Uuid(Some(id)), FieldType::Reference(table)) = (&typed, f.ty) {
                refs.push(RefCheck {
                    name: format!("{}[{i}].{}", child.name, f.name),
                    table,
                    ids: vec![*id],
                });
            }
            row.push((f.name.to_owned(), typed.into_param()));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Checks a request body against the resource. Unknown fields are refused; server
/// and read-only fields are ignored; the clinic can never be set from a body.
fn parse_body(
    r: &Resource,
    keys: &ClinicKeys,
    clinic: ClinicId,
    role: Role,
    id: &Uuid,
    body: &[u8],
    mode: Write,
) -> Result<Input, WorkerError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| WorkerError::BadRequest(format!("The body is not valid JSON: {e}.")))?;
    let Value::Object(obj) = value else {
        return Err(WorkerError::BadRequest(
            "The body must be a JSON object.".into(),
        ));
    };
    refuse_unknown(&obj, |k| r.field(k).is_some() || r.child(k).is_some(), "")?;
    let mut input = Input {
        columns: Vec::new(),
        links: Vec::new(),
        children: Vec::new(),
        refs: Vec::new(),
    };
    for f in r.fields.iter().filter(|f| !f.read_only) {
        if f.restricted && !role.sees_restricted() {
            // Staff may not set it, and replacing a row leaves it as it was.
            if obj.get(f.name).is_some_and(|v| !v.is_null()) {
                return Err(WorkerError::Forbidden(format!(
                    "Your role may not set `{}`.",
                    f.name
                )));
            }
            if mode != Write::Create {
                continue;
            }
        }
        let default = default_value(f);
        let Some(v) = pick(&obj, f, mode, &default) else {
            continue;
        };
        let typed = parse_value(f, v)?;
        match (typed, f.encrypted) {
            (Typed::Uuids(ids), _) => {
                if let FieldType::ReferenceList { target, .. } = f.ty {
                    let table = resource::find(target).map(|t| t.table).unwrap_or(target);
                    input.refs.push(RefCheck {
                        name: f.name.into(),
                        table,
                        ids: ids.clone(),
                    });
                }
                input.links.push((f, ids));
            }
            (Typed::Text(v), true) => {
                let ctx = FieldContext {
                    clinic,
                    table: r.table,
                    row: id,
                    column: f.name,
                };
                input.columns.push((
                    f.stored_column(),
                    Box::new(v.as_deref().map(|s| keys.seal_field(&ctx, s.as_bytes()))),
                ));
                if f.legacy_plaintext {
                    // Written sealed now: no plaintext of before stays behind.
                    input
                        .columns
                        .push((f.name.to_owned(), Box::new(None::<String>)));
                }
                if f.filterable {
                    let index = v.as_deref().map(|s| keys.blind_index(r.table, f.name, s));
                    input
                        .columns
                        .push((format!("{}_bidx", f.name), Box::new(index)));
                }
            }
            (typed, false) => {
                if let (Typed::Uuid(Some(target)), FieldType::Reference(table)) = (&typed, f.ty) {
                    input.refs.push(RefCheck {
                        name: f.name.into(),
                        table,
                        ids: vec![*target],
                    });
                }
                input.columns.push((f.name.to_owned(), typed.into_param()));
            }
            (_, true) => {
                return Err(WorkerError::Internal(format!(
                    "{}.{}: only text is sealed",
                    r.table, f.name
                )))
            }
        }
    }
    for c in r.children {
        let present = obj.get(c.name).filter(|v| !v.is_null());
        let value = match (present, mode) {
            (Some(v), _) => v.clone(),
            (None, Write::Patch) => continue,
            (None, _) => Value::Array(Vec::new()),
        };
        let rows = parse_child_rows(c, &value, &mut input.refs)?;
        input.children.push((c, rows));
    }
    Ok(input)
}

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

/// Reads one row by id, without auditing (inside a write that was audited).
async fn reread(
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

/// How a read's access is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audit {
    /// By the statement itself: the outbox row commits with it.
    Inline,
    /// By the caller, once it knows what the read showed, through the clinic's
    /// group commit ([`crate::commit`]) and before it answers.
    Deferred,
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

/// Creates, replaces (PUT) or patches a row with its children, in one transaction.
pub async fn write(
    client: &mut deadpool_postgres::Object,
    keys: &ClinicKeyCache,
    r: &Resource,
    actor: &Actor,
    target: Option<Uuid>,
    mode: Write,
    body: &[u8],
) -> Result<Value, WorkerError> {
    let id = target.unwrap_or_else(Uuid::now_v7);
    let mut input = parse_body(
        r,
        &keys.current(),
        actor.clinic,
        actor.role,
        &id,
        body,
        mode,
    )?;
    let tx = client.transaction().await.map_err(WorkerError::from_db)?;
    let action = match mode {
        Write::Create => Action::Create,
        Write::Replace | Write::Patch => Action::Update,
    };
    let op = Op::new(actor, r, action.as_str());
    check_refs(&tx, op, &input.refs).await?;
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
            sets.push("updated_at = now()".into());
            let update = format!(
                "UPDATE {} SET {} WHERE company_id = $1 AND id = {i} AND deleted_at IS NULL RETURNING id",
                r.table,
                sets.join(", ")
            );
            audited(
                &update,
                r,
                Action::Update,
                &format!("{i}::uuid"),
                FOUND_OUTCOME,
                "",
            )
        }
    };
    let rows = run(&tx, op, &text, &sql).await?;
    if rows.is_empty() {
        // Keep the audit record of the miss.
        tx.commit().await.map_err(WorkerError::from_db)?;
        return Err(WorkerError::NotFound);
    }
    write_children(&tx, op, id, input).await?;
    let value = reread(&tx, keys, r, actor, id).await?;
    tx.commit().await.map_err(WorkerError::from_db)?;
    Ok(value)
}

/// Hides a live row (soft delete) or shows a hidden one again (restore).
pub async fn set_deleted(
    client: &mut deadpool_postgres::Object,
    keys: &ClinicKeyCache,
    r: &Resource,
    actor: &Actor,
    id: Uuid,
    deleted: bool,
) -> Result<Option<Value>, WorkerError> {
    let mut sql = Sql::for_actor(actor);
    let i = sql.bind(id);
    let (set, when, action) = if deleted {
        ("now()", "IS NULL", Action::Delete)
    } else {
        ("NULL", "IS NOT NULL", Action::Restore)
    };
    let update = format!(
        "UPDATE {} SET deleted_at = {set}, updated_at = now() WHERE company_id = $1 AND id = {i} AND deleted_at {when} RETURNING id",
        r.table
    );
    let text = audited(&update, r, action, &format!("{i}::uuid"), FOUND_OUTCOME, "");
    let tx = client.transaction().await.map_err(WorkerError::from_db)?;
    let rows = run(&tx, Op::new(actor, r, action.as_str()), &text, &sql).await?;
    let value = match (rows.is_empty(), deleted) {
        (true, _) => None,
        (false, true) => Some(Value::Null),
        (false, false) => Some(reread(&tx, keys, r, actor, id).await?),
    };
    tx.commit().await.map_err(WorkerError::from_db)?;
    value.ok_or(WorkerError::NotFound).map(Some)
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
        let plain = keys
            .open_field(
                &FieldContext {
                    clinic: actor.clinic,
                    table: r.table,
                    row: &from,
                    column: f.name,
                },
                &sealed,
            )
            .map_err(|e| {
                WorkerError::Integrity(format!("{}.{} of {from}: {e}", r.table, f.name))
            })?;
        let resealed = keys.seal_field(
            &FieldContext {
                clinic: actor.clinic,
                table: r.table,
                row: &to,
                column: f.name,
            },
            &plain,
        );
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
    for r in resource::RESOURCES {
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
            match next {
                Some(cursor) => {
                    query.after = Cursor::decode(&cursor);
                    if query.after.is_none() {
                        break;
                    }
                }
                None => break,
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

/// Where a page starts: after a row, by its id (lists, in creation order) or by
/// its place in a search's order (the order columns' values, then the id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Id(Uuid),
    Ordered { keys: Vec<String>, id: Uuid },
}

impl Cursor {
    /// URL-safe base64: the id's 16 bytes, or a JSON array of the keys then the id.
    pub fn encode(&self) -> String {
        match self {
            Cursor::Id(id) => URL_SAFE_NO_PAD.encode(id.as_bytes()),
            Cursor::Ordered { keys, id } => {
                let mut items: Vec<&str> = keys.iter().map(String::as_str).collect();
                let id = id.to_string();
                items.push(&id);
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&items).unwrap_or_default())
            }
        }
    }

    pub fn decode(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw.as_bytes()).ok()?;
        if bytes.len() == 16 {
            return Uuid::from_slice(&bytes).ok().map(Cursor::Id);
        }
        let mut items: Vec<String> = serde_json::from_slice(&bytes).ok()?;
        let id = items.pop()?.parse().ok()?;
        (!items.is_empty() && items.len() <= 4).then_some(Cursor::Ordered { keys: items, id })
    }
}

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
}

impl ListQuery {
    /// Parses `q`, `limit`, `cursor` and the resource's filters; other parameters are
    /// ignored (a clinic id in the query string is never used).
    pub fn parse(r: &Resource, raw: Option<&str>) -> Result<Self, WorkerError> {
        let mut out = ListQuery {
            limit: DEFAULT_LIMIT,
            ..ListQuery::default()
        };
        let pairs = common::query::strict_pairs(raw.unwrap_or(""))
            .map_err(|e| WorkerError::BadRequest(e.to_string()))?;
        for (key, value) in pairs {
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
                    out.after = Some(Cursor::decode(&value).ok_or_else(|| {
                        WorkerError::BadRequest(
                            "`cursor` is not a cursor this API returned.".into(),
                        )
                    })?)
                }
                other => {
                    if let Some(f) = r.field(other).filter(|f| f.filterable) {
                        out.filters.push((f, value));
                    } else if let Some((name, bound)) = other.rsplit_once('_') {
                        if let Some(f) = r.field(name).filter(|f| f.range) {
                            let (from, to) = match bound {
                                "from" => (Some(value), None),
                                "to" => (None, Some(value)),
                                _ => continue,
                            };
                            out.ranges.push((f, from, to));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

fn foreign_cursor() -> WorkerError {
    WorkerError::BadRequest(
        "`cursor` belongs to another query: send it with the same `q` it came with.".into(),
    )
}

/// The keys (`search_rank`, `search_key`, `id`) of a search's next page, at most
/// `limit` of them, in relevance order: first the rows whose search column starts
/// with `q` (rank 0: a last name typed from its start), then the other rows that
/// contain it (rank 1), each in the search column's order (lowercased names,
/// code point order). The key is the search column under the "C" collation, which
/// the order index (`patients_search_order`) is built on, so both ranks are read
/// in order from it:
/// - rank 0 is one range of the index, whatever the clinic's size;
/// - rank 1 walks the index from the start (or the cursor) over at most
///   [`SEARCH_WALK`] entries, which finds a page of a common term at once; when
///   that walk found too few, the trigram index's matches are read and sorted
///   instead — bounded work for a rare term, or one whose matches all sort late.
///
/// Each part runs only when the parts before it left the page short.
fn search_keys(
    sql: &mut Sql,
    table: &str,
    column: &str,
    conditions: &[String],
    q: &str,
    after: Option<(bool, String, Uuid)>,
    limit: &str,
) -> String {
    let key = format!("t.{column} COLLATE \"C\"");
    let term = sql.bind(q.to_owned());
    let contains = sql.bind(like_pattern(q));
    // Starts with the term: the range [term, term + the last code point).
    let prefix =
        |k: &str| format!("({k} >= lower({term}) AND {k} < lower({term}) || chr(1114111))");
    let base = conditions.join(" AND ");
    let (skip_prefix, prefix_after, rest_after) = match after {
        None => (false, String::new(), String::new()),
        Some((rest, k, id)) => {
            let seek = format!(
                " AND ({key}, t.id) > ({} COLLATE \"C\", {})",
                sql.bind(k),
                sql.bind(id)
            );
            if rest {
                (true, String::new(), seek)
            } else {
                (false, seek, String::new())
            }
        }
    };
    let prefix_part = if skip_prefix {
        "SELECT 0 AS search_rank, NULL::text COLLATE \"C\" AS search_key, NULL::uuid AS id WHERE false".to_owned()
    } else {
        format!(
            "SELECT 0 AS search_rank, {key} AS search_key, t.id FROM {table} t \
             WHERE {base} AND {range}{prefix_after} ORDER BY 2, 3 LIMIT {limit}",
            range = prefix(&key),
        )
    };
    format!(
        "WITH prefix AS ({prefix_part}), \
         walk AS (SELECT 1 AS search_rank, w.search_key, w.id FROM \
             (SELECT {key} AS search_key, t.id FROM {table} t WHERE {base}{rest_after} ORDER BY 1, 2 LIMIT {SEARCH_WALK}) w \
             WHERE w.search_key LIKE lower({contains}) AND NOT {w_prefix} ORDER BY 2, 3 LIMIT {limit}) \
         (SELECT * FROM prefix \
          UNION ALL \
          SELECT * FROM walk WHERE (SELECT count(*) FROM prefix) < {limit} \
              AND (SELECT count(*) FROM walk) >= {limit} - (SELECT count(*) FROM prefix) \
          UNION ALL \
          (SELECT 1, f.search_key, f.id FROM \
              (SELECT {key} AS search_key, t.id FROM {table} t WHERE {base}{rest_after} \
                  AND t.{column} LIKE lower({contains}) AND NOT {t_prefix} OFFSET 0) f \
           WHERE (SELECT count(*) FROM prefix) < {limit} \
              AND (SELECT count(*) FROM walk) < {limit} - (SELECT count(*) FROM prefix) \
           ORDER BY 2, 3 LIMIT {limit})) \
         ORDER BY 1, 2, 3 LIMIT {limit}",
        w_prefix = prefix("w.search_key"),
        t_prefix = prefix(&key),
    )
}

fn like_pattern(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
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

/// One page of live rows in id (creation) order.
pub async fn list(
    client: &deadpool_postgres::Object,
    keys: &ClinicKeyCache,
    r: &Resource,
    actor: &Actor,
    query: &ListQuery,
    audit: Audit,
) -> Result<(Vec<Value>, Option<String>), WorkerError> {
    let mut sql = match audit {
        Audit::Inline => Sql::for_actor(actor),
        Audit::Deferred => Sql::for_clinic(actor),
    };
    let mut conditions = vec![
        "t.company_id = $1".to_owned(),
        "t.deleted_at IS NULL".to_owned(),
    ];
    // A search of a resource with a search index comes in its name order.
    let search = query
        .q
        .as_ref()
        .and_then(|q| r.search.as_ref().map(|index| (q, index)));
    // A search's cursor is its rank, its search key and the id (see `search_keys`).
    let mut search_after = None;
    match (&query.after, search) {
        (None, _) => {}
        (Some(Cursor::Id(after)), None) => {
            conditions.push(format!("t.id > {}", sql.bind(*after)));
        }
        (Some(Cursor::Ordered { keys, id }), Some(_)) => match keys.as_slice() {
            [rank, key] if rank == "0" || rank == "1" => {
                search_after = Some((rank == "1", key.clone(), *id));
            }
            _ => return Err(foreign_cursor()),
        },
        (Some(_), _) => return Err(foreign_cursor()),
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
    let order: Vec<&str> = match search {
        Some(_) => vec!["search_rank", "search_key", "id"],
        None => vec!["id"],
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
            "SELECT {} FROM {} t WHERE {} ORDER BY t.id LIMIT {limit}",
            select_list(r),
            r.table,
            conditions.join(" AND ")
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
    let page = rows_to_json(r, keys, actor, &rows).await?;
    let next = match (more, rows.last(), search) {
        (false, _, _) | (_, None, _) => None,
        (true, Some(last), None) => Some(Cursor::Id(col(last, 0)?).encode()),
        (true, Some(last), Some(_)) => {
            // The search's rank and key follow the select list.
            let rank: i32 = col(last, last.len() - 2)?;
            let key: String = col(last, last.len() - 1)?;
            Some(
                Cursor::Ordered {
                    keys: vec![rank.to_string(), key],
                    id: col(last, 0)?,
                }
                .encode(),
            )
        }
    };
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::crypto::DataKeyMaterial;
    use common::resource::{APPOINTMENTS, DOCUMENTS, PATIENTS, PRODUCTS};

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let id = Uuid::now_v7();
        for c in [
            Cursor::Id(id),
            Cursor::Ordered {
                keys: vec!["Lovelace".into(), "Ada \"the first\"".into()],
                id,
            },
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
        for bad in [
            "",
            "!!",
            "AAAA",
            &URL_SAFE_NO_PAD.encode(b"[\"x\"]"),
            &URL_SAFE_NO_PAD.encode(b"[1,2]"),
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn list_query_parsing() {
        let q =
            ListQuery::parse(&PATIENTS, Some("q=Du%20pont&limit=5&company_id=x&ssn=123")).unwrap();
        assert_eq!(q.q.as_deref(), Some("Du pont"));
        assert_eq!(q.limit, 5);
        assert_eq!(q.filters.len(), 1);
        assert!(ListQuery::parse(&PATIENTS, Some("limit=0")).is_err());
        assert!(ListQuery::parse(&PATIENTS, Some("limit=101")).is_err());
        assert!(ListQuery::parse(&PATIENTS, Some("cursor=%%%")).is_err());
        let a = ListQuery::parse(
            &APPOINTMENTS,
            Some("starts_at_from=2026-01-01T00:00:00Z&status=booked"),
        )
        .unwrap();
        assert_eq!(a.ranges.len(), 1);
        assert_eq!(a.filters.len(), 1);
    }

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(like_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
    }

    #[test]
    fn bodies_are_checked() {
        let clinic = ClinicId::generate();
        let keys = ClinicKeys::new(clinic, vec![(1, DataKeyMaterial::generate())]).unwrap();
        let id = Uuid::now_v7();
        let ok = br#"{"first_name":"Ada","last_name":"L","ssn":"123","id":"ignored"}"#;
        let input = parse_body(
            &PATIENTS,
            &keys,
            clinic,
            Role::Admin,
            &id,
            ok,
            Write::Create,
        )
        .unwrap();
        assert_eq!(input.columns.len(), 7);
        let patch = parse_body(
            &PATIENTS,
            &keys,
            clinic,
            Role::Admin,
            &id,
            br#"{"phone":null}"#,
            Write::Patch,
        )
        .unwrap();
        assert_eq!(patch.columns.len(), 1);
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
                parse_body(
                    &PATIENTS,
                    &keys,
                    clinic,
                    Role::Admin,
                    &id,
                    bad,
                    Write::Create
                ),
                Err(WorkerError::BadRequest(_))
            ));
        }
        assert!(parse_body(
            &PATIENTS,
            &keys,
            clinic,
            Role::Admin,
            &id,
            br#"{"first_name":null}"#,
            Write::Patch
        )
        .is_err());
    }

    #[test]
    fn staff_neither_set_nor_clear_restricted_fields() {
        let clinic = ClinicId::generate();
        let keys = ClinicKeys::new(clinic, vec![(1, DataKeyMaterial::generate())]).unwrap();
        let id = Uuid::now_v7();
        let with_ssn = br#"{"first_name":"A","last_name":"B","ssn":"1"}"#;
        assert!(matches!(
            parse_body(
                &PATIENTS,
                &keys,
                clinic,
                Role::Staff,
                &id,
                with_ssn,
                Write::Create
            ),
            Err(WorkerError::Forbidden(_))
        ));
        let without = br#"{"first_name":"A","last_name":"B"}"#;
        let replace = parse_body(
            &PATIENTS,
            &keys,
            clinic,
            Role::Staff,
            &id,
            without,
            Write::Replace,
        )
        .unwrap();
        assert!(replace.columns.iter().all(|(c, _)| !c.starts_with("ssn")));
        let create = parse_body(
            &PATIENTS,
            &keys,
            clinic,
            Role::Practitioner,
            &id,
            with_ssn,
            Write::Create,
        )
        .unwrap();
        assert!(create.columns.iter().any(|(c, _)| c == "ssn_enc"));
    }

    #[test]
    fn typed_fields_children_and_links() {
        let clinic = ClinicId::generate();
        let keys = ClinicKeys::new(clinic, vec![(1, DataKeyMaterial::generate())]).unwrap();
        let id = Uuid::now_v7();
        let p = Uuid::now_v7();
        let product = format!(
            r#"{{"name":"Consultation","kind":"service","unit_price_cents":2500,"vat_rate_bp":0,"category_ids":["{p}","{p}"]}}"#
        );
        let input = parse_body(
            &PRODUCTS,
            &keys,
            clinic,
            Role::Admin,
            &id,
            product.as_bytes(),
            Write::Create,
        )
        .unwrap();
        assert_eq!(input.links.len(), 1);
        assert_eq!(input.links[0].1.len(), 1, "duplicates collapse");
        assert_eq!(input.refs.len(), 1);
        for bad in [
            r#"{"name":"x","kind":"gadget","unit_price_cents":1,"vat_rate_bp":0}"#,
            r#"{"name":"x","kind":"product","unit_price_cents":-1,"vat_rate_bp":0}"#,
            r#"{"name":"x","kind":"product","unit_price_cents":1.5,"vat_rate_bp":0}"#,
            r#"{"name":"x","kind":"product","unit_price_cents":"1","vat_rate_bp":0}"#,
            r#"{"name":"x","kind":"product","unit_price_cents":1,"vat_rate_bp":10001}"#,
            r#"{"name":"x","kind":"product","unit_price_cents":1,"vat_rate_bp":0,"active":"yes"}"#,
            r#"{"name":"x","kind":"product","unit_price_cents":1,"vat_rate_bp":0,"category_ids":["nope"]}"#,
        ] {
            assert!(
                parse_body(
                    &PRODUCTS,
                    &keys,
                    clinic,
                    Role::Admin,
                    &id,
                    bad.as_bytes(),
                    Write::Create
                )
                .is_err(),
                "{bad}"
            );
        }
        let doc = format!(
            r#"{{"kind":"invoice","patient_id":"{p}","status":"paid","number":"F-1","lines":[{{"description":"x","quantity":2,"unit_price_cents":100,"vat_rate_bp":2000,"net_cents":1}}]}}"#
        );
        let input = parse_body(
            &DOCUMENTS,
            &keys,
            clinic,
            Role::Admin,
            &id,
            doc.as_bytes(),
            Write::Create,
        )
        .unwrap();
        assert_eq!(input.children.len(), 1);
        assert_eq!(input.children[0].1.len(), 1);
        assert!(
            input
                .columns
                .iter()
                .all(|(c, _)| c != "status" && c != "number"),
            "read-only fields ignored"
        );
        let bad_line =
            format!(r#"{{"kind":"quote","patient_id":"{p}","lines":[{{"description":"x"}}]}}"#);
        assert!(parse_body(
            &DOCUMENTS,
            &keys,
            clinic,
            Role::Admin,
            &id,
            bad_line.as_bytes(),
            Write::Create
        )
        .is_err());
        let appt = format!(
            r#"{{"patient_id":"{p}","practitioner_id":"{p}","starts_at":"2026-05-01T09:00:00+02:00","ends_at":"2026-05-01T09:30:00Z"}}"#
        );
        let input = parse_body(
            &APPOINTMENTS,
            &keys,
            clinic,
            Role::Admin,
            &id,
            appt.as_bytes(),
            Write::Create,
        )
        .unwrap();
        assert!(
            input.columns.iter().any(|(c, _)| c == "status"),
            "default applied"
        );
        assert!(parse_body(
            &APPOINTMENTS,
            &keys,
            clinic,
            Role::Admin,
            &id,
            br#"{"starts_at":"yesterday"}"#,
            Write::Patch
        )
        .is_err());
    }
}
