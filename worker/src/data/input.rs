//! Input parsing and validation: a request body checked against its resource
//! (types, bounds, required fields, unknown fields refused, the clinic never taken
//! from a body, restricted fields only for roles that may set them), sensitive
//! values sealed on the way, references gathered for checking, child rows and link
//! lists parsed.

use super::codec;
use super::sql::{Columns, Param};
use crate::error::WorkerError;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use common::crypto::ClinicKeys;
use common::resource::{self, Child, Field, FieldType, Resource, SERVER_FIELDS};
use common::token::Role;
use common::ClinicId;
use serde_json::{Map, Value};
use uuid::Uuid;

const MAX_REFERENCE_LIST: usize = 100;

/// How a body is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Create,
    /// PUT: every writable field; absent ones take their default or null.
    Replace,
    /// PATCH: only the fields present.
    Patch,
}

/// A value checked against its field, ready to bind.
pub(super) enum Typed {
    Text(Option<String>),
    Date(Option<NaiveDate>),
    Timestamp(Option<DateTime<Utc>>),
    Time(Option<NaiveTime>),
    Integer(Option<i64>),
    Boolean(Option<bool>),
    Uuid(Option<Uuid>),
    Uuids(Vec<Uuid>),
}

impl Typed {
    pub(super) fn into_param(self) -> Param {
        match self {
            Typed::Text(v) => Box::new(v),
            Typed::Date(v) => Box::new(v),
            Typed::Timestamp(v) => Box::new(v),
            Typed::Time(v) => Box::new(v),
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
            FieldType::Time => Typed::Time(None),
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

pub(super) fn parse_timestamp(name: &str, s: &str) -> Result<DateTime<Utc>, WorkerError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| WorkerError::BadRequest(format!("`{name}` must be an RFC 3339 date-time.")))
}

pub(super) fn parse_date(name: &str, s: &str) -> Result<NaiveDate, WorkerError> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10)
        .ok_or_else(|| WorkerError::BadRequest(format!("`{name}` must be a date (YYYY-MM-DD).")))
}

/// A civil time of day, `HH:MM` (24-hour clock).
pub(super) fn parse_time(name: &str, s: &str) -> Result<NaiveTime, WorkerError> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .ok()
        .filter(|_| s.len() == 5)
        .ok_or_else(|| WorkerError::BadRequest(format!("`{name}` must be a time of day (HH:MM).")))
}

/// The value a field takes when a create or replace leaves it out.
fn default_value(field: &Field) -> Option<Value> {
    let d = field.default?;
    Some(match field.ty {
        FieldType::Boolean => Value::Bool(d == "true"),
        FieldType::Integer { .. } => d.parse::<i64>().map(Value::from).unwrap_or(Value::Null),
        FieldType::Timestamp if d == "now" => Value::String(codec::timestamp(Utc::now())),
        _ => Value::String(d.to_owned()),
    })
}

pub(super) fn parse_value(field: &Field, value: &Value) -> Result<Typed, WorkerError> {
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
        FieldType::Time => Ok(Typed::Time(Some(parse_time(name, text()?)?))),
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
pub(super) struct RefCheck {
    pub(super) name: String,
    pub(super) table: &'static str,
    pub(super) ids: Vec<Uuid>,
}

/// A checked body.
pub(super) struct Input {
    /// (column, value) pairs of the row itself.
    pub(super) columns: Columns,
    /// Link lists to replace: field, ids.
    pub(super) links: Vec<(&'static Field, Vec<Uuid>)>,
    /// Child lists to replace: child, rows of (column, value).
    pub(super) children: Vec<(&'static Child, Vec<Columns>)>,
    pub(super) refs: Vec<RefCheck>,
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
pub(super) fn parse_body(
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
                let sealed = codec::sealed_columns(keys, clinic, r, f, id, v.as_deref());
                input.columns.extend(sealed);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use common::crypto::DataKeyMaterial;
    use common::resource::{APPOINTMENTS, DOCUMENTS, PATIENTS, PRODUCTS};

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
        // Names, e-mail, phone, birth date, the sealed ssn and its blind index, and
        // the external id (absent values are written as null on a create).
        assert_eq!(input.columns.len(), 8);
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
