//! The OpenAPI 3.1 document of the whole public API, built from the resource
//! descriptions so it cannot drift from what the worker serves, plus the gateway's
//! own endpoints (auth, users, audit trail, export, JWKS, this document) written
//! out as JSON.
//!
//! Every operation carries a `summary` (a title, no final period), a `description`
//! (what it does, who may call it, its notable errors), one tag declared at the top
//! with a description, and an `operationId` in camelCase, verb then noun
//! ([`operation_id`]): `listPatients`, `createConsentTemplate`, `getPatient`,
//! `replacePatient` (PUT), `updatePatient` (PATCH), `deletePatient`,
//! `restorePatient`, a row action's own name (`issueDocument`, `erasePatient`),
//! `signOutUser`. A resource's operations are generated from its [`Resource`]
//! description: its field flags say what `q` searches, which filters exist and
//! what staff may not see; its [`RowAction`]s bring their summary and description.
//!
//! `common/tests/openapi.rs` snapshots the whole document and checks these rules;
//! `scripts/api-lint` holds it to Redocly's recommended rules (`cargo run -p common
//! --example openapi` prints it).

use crate::limits;
use crate::resource::{
    Child, Field, FieldType, Resource, RowAction, APPOINTMENTS, APPOINTMENT_SERIES, ATTACHMENTS,
    CLINIC_SETTINGS, PATIENTS, PAYMENTS, RESOURCES,
};
use crate::token::Role;
use serde_json::{json, Map, Value};

mod webhooks;

fn field_schema(field: &Field) -> Value {
    let mut schema = match field.ty {
        FieldType::Text { max_len } => json!({"type": "string", "maxLength": max_len}),
        FieldType::Email => {
            json!({"type": "string", "format": "email", "maxLength": limits::EMAIL_MAX})
        }
        FieldType::Date => json!({"type": "string", "format": "date"}),
        FieldType::Timestamp => json!({"type": "string", "format": "date-time"}),
        FieldType::Time => {
            json!({"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$", "example": "09:30"})
        }
        FieldType::Integer { min, max } => {
            json!({"type": "integer", "minimum": min, "maximum": max})
        }
        FieldType::Boolean => json!({"type": "boolean"}),
        FieldType::Enum(values) => json!({"type": "string", "enum": values}),
        FieldType::Reference(_) => json!({"type": "string", "format": "uuid"}),
        FieldType::ReferenceList { .. } => {
            json!({"type": "array", "items": {"type": "string", "format": "uuid"}, "maxItems": 100})
        }
    };
    if let Value::Object(map) = &mut schema {
        map.insert("description".into(), field.description.into());
        if let Some(d) = field.default.filter(|d| *d != "now") {
            let default = match field.ty {
                FieldType::Boolean => Value::Bool(d == "true"),
                FieldType::Integer { .. } => {
                    d.parse::<i64>().map(Value::from).unwrap_or(Value::Null)
                }
                _ => Value::from(d),
            };
            map.insert("default".into(), default);
        }
        let nullable = !field.required && !matches!(field.ty, FieldType::ReferenceList { .. });
        if nullable {
            if let Some(enum_values) = map.get_mut("enum").and_then(Value::as_array_mut) {
                enum_values.push(Value::Null);
            }
            map.insert("type".into(), json!([map["type"].clone(), "null"]));
        }
    }
    schema
}

/// Input and output properties of a list of fields (children included).
fn object_schemas(fields: &[Field], children: &[Child]) -> (Value, Value) {
    let mut input_props = Map::new();
    let mut output_props = Map::new();
    let mut required: Vec<&str> = Vec::new();
    let mut output_required: Vec<&str> = Vec::new();
    for f in fields {
        output_props.insert(f.name.into(), field_schema(f));
        if !f.restricted {
            output_required.push(f.name);
        }
        if !f.read_only {
            input_props.insert(f.name.into(), field_schema(f));
            if f.required {
                required.push(f.name);
            }
        }
    }
    for c in children {
        output_props.insert(
            c.name.into(),
            json!({"type": "array", "items": {"$ref": format!("#/components/schemas/{}", c.title)}}),
        );
        output_required.push(c.name);
        input_props.insert(
            c.name.into(),
            json!({"type": "array", "maxItems": c.max_items, "items": {"$ref": format!("#/components/schemas/{}Input", c.title)}}),
        );
    }
    (
        json!({"type": "object", "properties": input_props, "required": required, "additionalProperties": false}),
        json!({"type": "object", "properties": output_props, "required": output_required}),
    )
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

fn json_body(schema_ref: &str) -> Value {
    json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema_ref}")}}}})
}

fn with_description(mut v: Value, description: &str) -> Value {
    if let Value::Object(m) = &mut v {
        m.insert("description".into(), description.into());
    }
    v
}

fn resource_schemas(r: &Resource, schemas: &mut Map<String, Value>) {
    let (input, mut output) = object_schemas(r.fields, r.children);
    if let Some(props) = output["properties"].as_object_mut() {
        props.insert("id".into(), json!({"type": "string", "format": "uuid"}));
        props.insert(
            "created_at".into(),
            json!({"type": "string", "format": "date-time"}),
        );
        props.insert(
            "updated_at".into(),
            json!({"type": "string", "format": "date-time"}),
        );
    }
    if let Some(req) = output["required"].as_array_mut() {
        req.extend(["id", "created_at", "updated_at"].map(Value::from));
    }
    let mut patch = input.clone();
    patch["required"] = json!([]);
    schemas.insert(r.title.into(), output);
    schemas.insert(format!("{}Input", r.title), input);
    schemas.insert(format!("{}Patch", r.title), patch);
    for c in r.children {
        let (child_input, child_output) = object_schemas(c.fields, &[]);
        schemas.insert(c.title.into(), child_output);
        schemas.insert(format!("{}Input", c.title), child_input);
    }
    schemas.insert("Tombstone".into(), tombstone_schema());
    schemas.insert(
        format!("{}Page", r.title),
        json!({
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": {"anyOf": [
                    {"$ref": format!("#/components/schemas/{}", r.title)},
                    {"$ref": "#/components/schemas/Tombstone"}
                ]}, "description": "The objects; with `include_deleted=true`, a soft-deleted one as a `Tombstone`."},
                "next_cursor": {"type": ["string", "null"]}
            },
            "required": ["data", "next_cursor"]
        }),
    );
}

/// What a list with `include_deleted=true` shows of a soft-deleted object.
fn tombstone_schema() -> Value {
    json!({
        "type": "object",
        "description": "A soft-deleted object, listed as a change (`updated_since` with `include_deleted=true`), without its data.",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "deleted": {"type": "boolean", "const": true},
            "deleted_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"}
        },
        "required": ["id", "deleted", "deleted_at", "updated_at"]
    })
}

/// A single-object answer's `ETag` header.
fn with_etag(mut v: Value) -> Value {
    v["headers"] = json!({"ETag": {
        "description": "The object's version, a strong entity tag that changes with every write of it: send it back as `If-Match` to change or delete the object only if nobody changed it meanwhile.",
        "schema": {"type": "string"}
    }});
    v
}

/// The `If-Match` request header of a change or delete.
fn if_match_param() -> Value {
    json!({
        "name": "If-Match",
        "in": "header",
        "required": false,
        "description": "Change or delete the object only if its current `ETag` is one of these entity tags (`*`: any existing object). Otherwise nothing is changed and the answer is `412`. Without it the write happens whatever the object's version.",
        "schema": {"type": "string", "maxLength": limits::QUERY_VALUE_MAX}
    })
}

/// The sentence on `If-Match` of a change or delete.
const IF_MATCH_NOTE: &str = "With `If-Match`, the write happens only if the object's `ETag` is still one it names (checked with the write itself: of two writers sending the same tag, one wins and the other gets `412`); a stale or unknown tag is `412` and nothing is changed.";

fn common_errors(ops: &mut Map<String, Value>) {
    ops.insert(
        "401".into(),
        problem_response("Missing, invalid or expired token."),
    );
    ops.insert(
        "403".into(),
        problem_response("The clinic is unknown, suspended or not provisioned."),
    );
    ops.insert(
        "503".into(),
        problem_response("The clinic's database is unavailable; retry later."),
    );
}

fn query_param(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema})
}

/// A list's `cursor`: an opaque token, the `next_cursor` of the page before (URL-safe
/// base64 without padding, at least the 22 characters of one id).
fn cursor_param() -> Value {
    let mut p = query_param(
        "cursor",
        json!({"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "minLength": 22, "maxLength": limits::QUERY_VALUE_MAX}),
    );
    p["description"] = "An opaque token: the `next_cursor` of the page before, sent with the same `q` and filters. Any other value is `400`.".into();
    p
}

fn filter_schema(f: &Field) -> Value {
    match f.ty {
        FieldType::Enum(values) => json!({"type": "string", "enum": values}),
        FieldType::Reference(_) => json!({"type": "string", "format": "uuid"}),
        FieldType::Boolean => json!({"type": "boolean"}),
        FieldType::Integer { .. } => json!({"type": "integer"}),
        _ => json!({"type": "string", "maxLength": limits::QUERY_VALUE_MAX}),
    }
}

/// The operation id of `verb` on `noun`, in camelCase: `("list", "consent-templates")`
/// → `listConsentTemplates`, `("create", "ConsentTemplate")` → `createConsentTemplate`,
/// `("sign-out", "user")` → `signOutUser`. Words are split at `-`, `_` and spaces.
pub fn operation_id(verb: &str, noun: &str) -> String {
    let mut id = String::new();
    for word in verb
        .split(['-', '_', ' '])
        .chain(noun.split(['-', '_', ' ']))
    {
        let mut chars = word.chars();
        let Some(first) = chars.next() else { continue };
        if id.is_empty() {
            id.extend(first.to_lowercase());
        } else {
            id.extend(first.to_uppercase());
        }
        id.push_str(chars.as_str());
    }
    id
}

/// How people write a resource's one row: `ConsentTemplate` → `consent template`;
/// a title that is a plural already (`WorkingHours`) → `working hours entry`.
fn singular(r: &Resource) -> String {
    let mut out = String::new();
    for c in r.title.chars() {
        if c.is_uppercase() && !out.is_empty() {
            out.push(' ');
        }
        out.extend(c.to_lowercase());
    }
    if out == plural(r) {
        out.push_str(" entry");
    }
    out
}

/// How people write a resource's rows: `consent-templates` → `consent templates`.
fn plural(r: &Resource) -> String {
    r.name.replace('-', " ")
}

/// `a patient`, `an appointment`.
fn with_article(noun: &str) -> String {
    let article = if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {noun}")
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `` `a` `` , `` `a` and `b` ``, `` `a`, `b` and `c` ``.
fn code_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

const ANY_USER: &str =
    "Any signed-in user of the clinic may call it (admin, practitioner or staff)";
const ADMINS_ONLY: &str = "Clinic admins only; other roles get `403`.";
const NOT_FOUND: &str =
    "An id of another clinic, or of a deleted row, is `404`, exactly as an id that never existed.";
const NOT_FOUND_ANY: &str =
    "An id of another clinic is `404`, exactly as an id that never existed.";

/// What a resource operation does with rows, for [`callers`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Read,
    Create,
    Change,
    Delete,
}

/// Who of the clinic may call an operation open to `roles`, and what the others get.
fn who(roles: &[Role]) -> String {
    const ALL: [Role; 3] = [Role::Admin, Role::Practitioner, Role::Staff];
    let plural = |role: &Role| match role {
        Role::Admin => "clinic admins",
        Role::Practitioner => "practitioners",
        Role::Staff => "staff",
    };
    let allowed: Vec<&str> = ALL
        .iter()
        .filter(|r| roles.contains(r))
        .map(plural)
        .collect();
    let refused: Vec<&str> = ALL
        .iter()
        .filter(|r| !roles.contains(r))
        .map(plural)
        .collect();
    match (allowed.as_slice(), refused.as_slice()) {
        (_, []) => ANY_USER.to_owned(),
        ([], _) => "No role may call it: every caller gets `403`".to_owned(),
        (allowed, refused) => format!(
            "Only {} may call it; {} get `403`",
            allowed.join(" and "),
            refused.join(" and ")
        ),
    }
}

/// Who may call a resource operation, and what staff may not see or set.
fn callers(r: &Resource, use_: Use) -> String {
    let roles = match use_ {
        Use::Read => &[Role::Admin, Role::Practitioner, Role::Staff][..],
        Use::Create | Use::Change => r.access.write,
        Use::Delete => r.access.delete,
    };
    let who = who(roles);
    let restricted: Vec<&str> = r
        .fields
        .iter()
        .filter(|f| f.restricted)
        .map(|f| f.name)
        .collect();
    if restricted.is_empty() || use_ == Use::Delete {
        return format!("{who}.");
    }
    let fields = code_list(&restricted);
    match use_ {
        Use::Create => format!(
            "{who}; staff do not see {fields} in the answer and may not set it (`403`)."
        ),
        Use::Change => format!(
            "{who}; staff do not see {fields} in the answer and may not set it (`403`); their changes leave it as it was."
        ),
        Use::Read | Use::Delete => format!("{who}; staff do not see {fields}."),
    }
}

/// What a list operation's query does: search, order, filters.
fn list_description(r: &Resource) -> String {
    let mut text = format!(
        "Lists the clinic's live {} (deleted ones are left out), one page at a time: send `next_cursor` back as `cursor` for the next page; it is `null` on the last. `limit` is 1–100 (default 20).",
        plural(r)
    );
    let searchable: Vec<&str> = r
        .fields
        .iter()
        .filter(|f| f.searchable)
        .map(|f| f.name)
        .collect();
    if !searchable.is_empty() {
        text.push_str(&format!(
            " `q` searches {} case-insensitively",
            code_list(&searchable)
        ));
        if r.search.is_some() {
            text.push_str(
                ": names starting with `q` first, then names containing it, each in name order.",
            );
        } else {
            text.push_str("; results come in id order.");
        }
    }
    let mut filters: Vec<String> = Vec::new();
    for f in r.fields.iter().filter(|f| f.filterable) {
        if f.encrypted {
            filters.push(format!("`{}` (exact match; stored encrypted)", f.name));
        } else {
            filters.push(format!("`{}` (exact match)", f.name));
        }
    }
    for f in r.fields.iter().filter(|f| f.range) {
        filters.push(format!(
            "`{0}_from` (inclusive) and `{0}_to` (exclusive)",
            f.name
        ));
    }
    if !filters.is_empty() {
        text.push_str(&format!(" Filters: {}.", filters.join(", ")));
    }
    text.push(' ');
    text.push_str(&callers(r, Use::Read));
    let restricted_filters: Vec<&str> = r
        .fields
        .iter()
        .filter(|f| f.restricted && f.filterable)
        .map(|f| f.name)
        .collect();
    if !restricted_filters.is_empty() {
        text.push_str(&format!(
            " Staff filtering on {} get `403`.",
            code_list(&restricted_filters)
        ));
    }
    text.push_str(" To sync, send `updated_since` (RFC 3339): the objects whose `updated_at` is at or after it (`>=`, so a repeated time is never a gap), in the order of their changes (`updated_at`, then `id`), so the cursor walks changes in order and a change made while paging comes on a later page; with `include_deleted=true` soft-deleted ones come too, as tombstones (`id`, `deleted`, `deleted_at`, `updated_at`, no data). Every write, delete and restore moves `updated_at`. A change committed late may carry a slightly earlier `updated_at`: start the next sync a few seconds before the last `updated_at` seen and drop repeats by `id` and `updated_at`. `q` cannot be combined with `updated_since`, and `include_deleted` needs it (`400`). List items carry no `ETag`: their `updated_at` is what it is derived from, and reading one object answers it.");
    text.push_str(" A malformed query parameter or cursor is `400`.");
    text
}

/// What a write's body holds beyond the resource's own fields.
fn body_notes(r: &Resource) -> String {
    let mut text = String::new();
    let read_only: Vec<&str> = r
        .fields
        .iter()
        .filter(|f| f.read_only)
        .map(|f| f.name)
        .collect();
    if !read_only.is_empty() {
        text.push_str(&format!(
            " The server computes {}; they are not part of the body.",
            code_list(&read_only)
        ));
    }
    for c in r.children {
        text.push_str(&format!(
            " `{}` (at most {} `{}` rows) is written together with it.",
            c.name, c.max_items, c.title
        ));
    }
    text
}

const WRITE_ERRORS: &str = "Invalid fields, a reference to a row that is not a live row of the clinic, or a clinic id in the body are `400`; a change that conflicts with other data or with the object's state (the clinic's rules: no duplicates, no double booking, issued invoices and consent template versions in use are frozen) is `409`; a body over the size limit is `413`.";

fn resource_paths(r: &Resource, paths: &mut Map<String, Value>) {
    let t = r.title;
    let one = singular(r);
    let a_one = with_article(&one);
    let id_param = json!({"name": "id", "in": "path", "required": true, "description": format!("The {one}'s id."), "schema": {"type": "string", "format": "uuid"}});
    let mut list_params = vec![
        query_param(
            "q",
            json!({"type": "string", "maxLength": limits::QUERY_VALUE_MAX}),
        ),
        query_param(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
        ),
        cursor_param(),
    ];
    list_params.push(query_param(
        "updated_since",
        json!({"type": "string", "format": "date-time"}),
    ));
    list_params.push(query_param(
        "include_deleted",
        json!({"type": "boolean", "default": false}),
    ));
    for f in r.fields.iter().filter(|f| f.filterable) {
        list_params.push(query_param(f.name, filter_schema(f)));
    }
    for f in r.fields.iter().filter(|f| f.range) {
        let format = if f.ty == FieldType::Date {
            "date"
        } else {
            "date-time"
        };
        for bound in ["from", "to"] {
            list_params.push(query_param(
                &format!("{}_{bound}", f.name),
                json!({"type": "string", "format": format}),
            ));
        }
    }
    let op = |id: String,
              summary: String,
              description: String,
              body: Option<(String, &str)>,
              responses: Value|
     -> Value {
        let mut v = json!({
            "operationId": id,
            "summary": summary,
            "description": description,
            "tags": [r.name],
            "responses": responses
        });
        if let Some((schema, description)) = body {
            v["requestBody"] = with_description(json_body(&schema), description);
            v["requestBody"]["required"] = true.into();
        }
        if let Some(responses) = v.get_mut("responses").and_then(Value::as_object_mut) {
            common_errors(responses);
        }
        v
    };
    let write_errors = |ok: &str, ok_body: Value| {
        json!({
            ok: with_etag(ok_body),
            "400": problem_response("Malformed JSON, invalid fields or references."),
            "404": problem_response("No such object in your clinic."),
            "408": problem_response("The body did not arrive in time."),
            "409": problem_response("The change conflicts with the object's state or other data."),
            "413": problem_response("Body too large.")
        })
    };
    let mut list_get = op(
        operation_id("list", r.name),
        format!("List {}", plural(r)),
        list_description(r),
        None,
        json!({
            "200": with_description(json_body(&format!("{t}Page")), "One page of results."),
            "400": problem_response("Invalid query parameter.")
        }),
    );
    list_get["parameters"] = Value::Array(list_params);
    paths.insert(
        format!("/api/v1/{}", r.name),
        json!({
            "get": list_get,
            "post": op(
                operation_id("create", t),
                format!("Create {a_one}"),
                format!(
                    "Creates {a_one}; the server sets `id`, `created_at` and `updated_at`, and fields left out take their defaults.{} {} {WRITE_ERRORS}",
                    body_notes(r),
                    callers(r, Use::Create)
                ),
                Some((format!("{t}Input"), "The new object.")),
                write_errors("201", with_description(json_body(t), "Created.")),
            )
        }),
    );
    paths.insert(
        format!("/api/v1/{}/{{id}}", r.name),
        json!({
            "parameters": [id_param.clone()],
            "get": op(
                operation_id("get", t),
                format!("Get {a_one}"),
                format!("Reads one {one} by id. {} {NOT_FOUND}", callers(r, Use::Read)),
                None,
                json!({
                    "200": with_etag(with_description(json_body(t), "The object.")),
                    "400": problem_response("Malformed id."),
                    "404": problem_response("No such object in your clinic.")
                }),
            ),
            "put": op(
                operation_id("replace", t),
                format!("Replace {a_one}"),
                format!(
                    "Replaces {a_one} with the body, which is the whole object as for a create: fields left out take their defaults.{} {} {NOT_FOUND} {WRITE_ERRORS}",
                    body_notes(r),
                    callers(r, Use::Change)
                ),
                Some((format!("{t}Input"), "The whole object.")),
                write_errors("200", with_description(json_body(t), "Updated.")),
            ),
            "patch": op(
                operation_id("update", t),
                format!("Update {a_one}"),
                format!(
                    "Changes the fields the body names and leaves the others as they were.{} {} {NOT_FOUND} {WRITE_ERRORS}",
                    body_notes(r),
                    callers(r, Use::Change)
                ),
                Some((format!("{t}Patch"), "The fields to change.")),
                write_errors("200", with_description(json_body(t), "Updated.")),
            ),
            "delete": op(
                operation_id("delete", t),
                format!("Delete {a_one}"),
                format!(
                    "Soft-deletes {a_one}: it is hidden from reads and lists (`404` from then on) but kept for the record, and `POST /api/v1/{}/{{id}}/restore` shows it again. {} {NOT_FOUND} {} that can no longer be deleted (its state or the clinic's rules forbid it, as for an issued invoice) is `409`.",
                    r.name,
                    callers(r, Use::Delete),
                    capitalized(&a_one)
                ),
                None,
                json!({
                    "204": {"description": "Deleted (hidden, kept for the record)."},
                    "400": problem_response("Malformed id."),
                    "404": problem_response("No such object in your clinic."),
                    "409": problem_response("The object can no longer be deleted.")
                }),
            )
        }),
    );
    if let Some(item) = paths.get_mut(&format!("/api/v1/{}/{{id}}", r.name)) {
        for method in ["put", "patch", "delete"] {
            let op = &mut item[method];
            let text = format!(
                "{} {IF_MATCH_NOTE}",
                op["description"].as_str().unwrap_or("")
            );
            op["description"] = text.into();
            op["parameters"] = json!([if_match_param()]);
            op["responses"]["412"] = problem_response(
                "`If-Match` names none of the object's current version: nothing was changed.",
            );
        }
    }
    let restore = RowAction {
        name: "restore",
        function: "",
        creates: false,
        admin_only: false,
        on_deleted: true,
        carries: &[],
        summary: "",
        description: "Shows a deleted object again.",
    };
    for action in std::iter::once(&restore).chain(r.actions) {
        let RowAction {
            name,
            description,
            creates,
            admin_only,
            ..
        } = *action;
        let ok = if creates { "201" } else { "200" };
        let (summary, text) = if name == "restore" {
            (
                format!("Restore a deleted {one}"),
                format!(
                    "Shows a soft-deleted {one} again, as it was when it was deleted. {} Restoring one that is not deleted changes nothing and answers it as it is (`200`, idempotent). An id that is no {one} of the clinic is `404`; restoring one that now conflicts with other data (such as a duplicate) is `409`.",
                    callers(r, Use::Delete)
                ),
            )
        } else {
            let who = if admin_only {
                ADMINS_ONLY.to_owned()
            } else {
                format!("{ANY_USER}.")
            };
            let answer = if creates {
                format!("It answers with the new {one} (`201`).")
            } else {
                format!("It answers with the {one} as it is now.")
            };
            let not_found = if action.on_deleted {
                NOT_FOUND_ANY
            } else {
                NOT_FOUND
            };
            (
                action.summary.to_owned(),
                format!(
                    "{description} {answer} {who} {not_found} {} whose state does not allow it is `400` or `409`.",
                    capitalized(&a_one)
                ),
            )
        };
        let responses = json!({
            ok: with_etag(with_description(json_body(t), description)),
            "400": problem_response("Malformed id, or the object is not ready for this."),
            "404": problem_response("No such object in your clinic."),
            "409": problem_response("The object's state does not allow this.")
        });
        let mut post = op(operation_id(name, t), summary, text, None, responses);
        if admin_only {
            post["responses"]["403"] = problem_response(
                "Only a clinic admin may do this, or the clinic is unknown, suspended or not provisioned.",
            );
        }
        paths.insert(
            format!("/api/v1/{}/{{id}}/{name}", r.name),
            json!({"parameters": [id_param.clone()], "post": post}),
        );
    }
}

/// The one 4xx of the public documents (`GET` of a fixed body): hyper's own answer
/// to a request it cannot parse.
fn malformed_request() -> Value {
    json!({"description": "A request the server cannot parse (a malformed request line, or headers over the size limit): `400` or `431`, without a body."})
}

fn auth_paths(paths: &mut Map<String, Value>) {
    // `(operation id, summary, description)` of each call.
    let post =
        |doc: [&str; 3], body: &str, ok: &str, ok_body: Option<&str>, errors: &[(&str, &str)]| {
            let [id, summary, description] = doc;
            let mut responses = Map::new();
            responses.insert(
                ok.into(),
                match ok_body {
                    Some(s) => with_description(json_body(s), "Success."),
                    None => json!({"description": "Success."}),
                },
            );
            for (code, d) in errors {
                responses.insert((*code).into(), problem_response(d));
            }
            json!({"post": {
                "operationId": id,
                "summary": summary,
                "description": description,
                "tags": ["auth"],
                "security": [],
                "requestBody": with_description(json_body(body), "Request."),
                "responses": responses
            }})
        };
    paths.insert(
        "/api/v1/auth/register".into(),
        post(
            [
                "registerClinic",
                "Register a clinic",
                "Signs a new clinic up with its first user, a clinic admin, in the region asked for (or the default one). It answers `201` once the clinic's own database exists and is migrated, with the admin signed in: the same tokens a login answers. No token needed. Where sign-up is by invitation the body carries `invite_code`; without a valid one, or where sign-up is closed, it is `403`. An e-mail address already registered is `409` (and counts as a sign-in attempt); too many sign-ups from one address, or in all, are `429` with `retry-after`. A registration interrupted while the clinic was being set up (`503`) is finished by sending the same request again.",
            ],
            "RegisterRequest",
            "201",
            Some("RegisterResponse"),
            &[
                ("400", "Invalid input."),
                (
                    "403",
                    "Sign-up is by invitation here (send `invite_code`), or closed.",
                ),
                ("408", "The body did not arrive in time."),
                ("409", "The e-mail address is already registered."),
                ("413", "Body too large."),
                (
                    "429",
                    "Too many sign-ups from your address or in all, or too many attempts on this e-mail; see retry-after.",
                ),
                (
                    "503",
                    "Provisioning could not finish, or many clinics are being set up; retry the same request after retry-after.",
                ),
            ],
        ),
    );
    paths.insert(
        "/api/v1/auth/login".into(),
        post(
            [
                "login",
                "Sign in",
                "Exchanges an e-mail address and password for an access token (a JWT to send as `Authorization: Bearer …`, valid for `expires_in` seconds) and a refresh token. No token needed. A wrong password and an unknown e-mail get the same `401`; repeated failures are `429` with `retry-after`; a user of a suspended clinic gets `403`. When the user has multi-factor sign-in on, or the clinic requires it, a right password answers an `MfaChallenge` instead of tokens: `{mfa_required: true, mfa_token}`, to send with a code to `POST /api/v1/auth/mfa/verify` (or, with `mfa_enrollment_required: true`, to enrol with first).",
            ],
            "LoginRequest",
            "200",
            Some("LoginResponse"),
            &[
                ("400", "Invalid input."),
                ("401", "Bad credentials."),
                ("403", "Your clinic is suspended or not provisioned."),
                ("408", "The body did not arrive in time."),
                ("413", "Body too large."),
                ("429", "Too many attempts; see retry-after."),
                (
                    "503",
                    "Too many sign-ins are being checked, or sign-in is unavailable; see retry-after.",
                ),
            ],
        ),
    );
    paths.insert(
        "/api/v1/auth/refresh".into(),
        post(
            [
                "refreshToken",
                "Refresh the tokens",
                "Exchanges a refresh token for a new access token and a new refresh token (the same shape as a login's answer); the one sent stops working. No access token needed. A refresh token that is invalid, expired or already used is `401`, and reusing an old one revokes every token of its sign-in (its family).",
            ],
            "RefreshRequest",
            "200",
            Some("TokenResponse"),
            &[
                ("400", "Invalid input."),
                (
                    "401",
                    "The refresh token is invalid, expired or already used.",
                ),
                ("408", "The body did not arrive in time."),
                ("413", "Body too large."),
                ("503", "Sign-in is unavailable; see retry-after."),
            ],
        ),
    );
    paths.insert(
        "/api/v1/auth/logout".into(),
        post(
            [
                "logout",
                "Sign out",
                "Revokes the refresh token and every refresh token of its sign-in (its family); access tokens already issued run out by themselves. No access token needed. Answers `204` whatever the token was, so it reveals nothing about it.",
            ],
            "RefreshRequest",
            "204",
            None,
            &[
                ("400", "Invalid input."),
                ("408", "The body did not arrive in time."),
                ("413", "Body too large."),
                ("503", "Sign-in is unavailable; see retry-after."),
            ],
        ),
    );
    paths.insert(
        "/.well-known/jwks.json".into(),
        json!({"get": {
            "operationId": "getJwks",
            "summary": "Get the token signing keys",
            "tags": ["auth"],
            "security": [],
            "description": "The public keys access tokens are signed with (EdDSA, Ed25519; a JSON Web Key Set, keys named by the tokens' `kid`), for services that verify tokens themselves. Public: no token needed.",
            "responses": {
                "200": {"description": "The key set.", "content": {"application/jwk-set+json": {"schema": {"$ref": "#/components/schemas/JwkSet"}}}},
                "4XX": malformed_request()
            }
        }}),
    );
    paths.insert(
        "/api/v1/openapi.json".into(),
        json!({"get": {
            "operationId": "getOpenApiDocument",
            "summary": "Get this document",
            "description": "The OpenAPI 3.1 document of the whole API: every path, method, status and schema the gateway and the workers serve, built from the same resource descriptions the workers serve them from. Public: no token needed.",
            "tags": ["meta"],
            "security": [],
            "responses": {
                "200": {"description": "This document.", "content": {"application/json": {"schema": {"type": "object"}}}},
                "4XX": malformed_request()
            }
        }}),
    );
}

fn auth_schemas(schemas: &mut Map<String, Value>) {
    let s = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    schemas.insert(
        "RegisterRequest".into(),
        s(
            json!({
                "clinic_name": {"type": "string", "minLength": 1, "maxLength": limits::CLINIC_NAME_MAX},
                "email": {"type": "string", "format": "email", "maxLength": limits::EMAIL_MAX},
                "password": {"type": "string", "minLength": limits::PASSWORD_MIN, "maxLength": limits::PASSWORD_MAX},
                "region": {"type": ["string", "null"], "maxLength": limits::REGION_MAX},
                "invite_code": {"type": ["string", "null"], "maxLength": limits::INVITE_CODE_MAX, "description": "The single-use sign-up code of an invitation (where sign-up is by invitation)."}
            }),
            &["clinic_name", "email", "password"],
        ),
    );
    schemas.insert(
        "RegisterResponse".into(),
        s(
            json!({
                "clinic_id": {"type": "string", "format": "uuid"},
                "user_id": {"type": "string", "format": "uuid"},
                "region": {"type": "string"},
                "access_token": {"type": "string", "description": "The new admin, signed in: the same tokens as a login's."},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer"},
                "refresh_token": {"type": "string"}
            }),
            &["clinic_id", "user_id", "region", "access_token", "token_type", "expires_in", "refresh_token"],
        ),
    );
    schemas.insert(
        "LoginRequest".into(),
        s(
            json!({
                "email": {"type": "string", "maxLength": limits::EMAIL_MAX},
                "password": {"type": "string", "maxLength": limits::PASSWORD_MAX}
            }),
            &["email", "password"],
        ),
    );
    schemas.insert(
        "RefreshRequest".into(),
        s(
            json!({"refresh_token": {"type": "string", "maxLength": limits::REFRESH_TOKEN_MAX}}),
            &["refresh_token"],
        ),
    );
    schemas.insert(
        "TokenResponse".into(),
        s(
            json!({
                "access_token": {"type": "string"},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer"},
                "refresh_token": {"type": "string"}
            }),
            &["access_token", "token_type", "expires_in", "refresh_token"],
        ),
    );
    schemas.insert(
        "JwkSet".into(),
        json!({
            "type": "object",
            "properties": {"keys": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "kty": {"type": "string", "enum": ["OKP"]},
                    "crv": {"type": "string", "enum": ["Ed25519"]},
                    "x": {"type": "string"},
                    "kid": {"type": "string"},
                    "alg": {"type": "string", "enum": ["EdDSA"]},
                    "use": {"type": "string", "enum": ["sig"]}
                },
                "required": ["kty", "crv", "x", "kid", "alg", "use"]
            }}},
            "required": ["keys"]
        }),
    );
    schemas.insert(
        "Problem".into(),
        s(
            json!({
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"}
            }),
            &["type", "title", "status"],
        ),
    );
}

fn audit_paths(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    let uuid = json!({"type": ["string", "null"], "format": "uuid"});
    schemas.insert(
        "AuditEntry".into(),
        json!({
            "type": "object",
            "properties": {
                "chain_seq": {"type": ["integer", "null"]},
                "user_id": uuid,
                "action": {"type": "string"},
                "resource": {"type": "string"},
                "resource_id": uuid,
                "client_ip": {"type": ["string", "null"]},
                "outcome": {"type": "string"},
                "occurred_at": {"type": "string", "format": "date-time"},
                "request_id": {"type": ["string", "null"]},
                "resource_ids": {"type": ["array", "null"], "items": {"type": "string", "format": "uuid"}, "description": "The rows a list or search showed."}
            },
            "required": ["chain_seq", "user_id", "action", "resource", "resource_id", "client_ip", "outcome", "occurred_at", "request_id", "resource_ids"]
        }),
    );
    schemas.insert(
        "AuditPage".into(),
        json!({
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
                "next_cursor": {"type": ["string", "null"]}
            },
            "required": ["data", "next_cursor"]
        }),
    );
    let text = json!({"type": "string", "maxLength": limits::QUERY_VALUE_MAX});
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        with_description(json_body("AuditPage"), "Newest first."),
    );
    responses.insert("400".into(), problem_response("Invalid filter."));
    common_errors(&mut responses);
    responses.insert(
        "403".into(),
        problem_response("Only a clinic admin can read the audit trail."),
    );
    paths.insert(
        "/api/v1/audit-logs".into(),
        json!({"get": {
            "operationId": "listAuditLogs",
            "summary": "List audit records",
            "tags": ["audit"],
            "description": "Your clinic's audit trail, newest first: who read or changed what, when, from where and with what outcome (sign-ins, user management and exports included), one page at a time: send `next_cursor` back as `cursor` for the next page. `from` (inclusive) and `to` (exclusive) bound the time; `action`, `resource`, `outcome`, `user_id` and `resource_id` match exactly; `limit` is 1–200 (default 50). Records reach the trail shortly after the access. Clinic admins only; other roles get `403`. An invalid filter is `400`.",
            "parameters": [
                query_param("from", json!({"type": "string", "format": "date-time"})),
                query_param("to", json!({"type": "string", "format": "date-time"})),
                query_param("action", text.clone()),
                query_param("resource", text.clone()),
                query_param("outcome", text),
                query_param("user_id", json!({"type": "string", "format": "uuid"})),
                query_param("resource_id", json!({"type": "string", "format": "uuid"})),
                query_param("limit", json!({"type": "integer", "minimum": 1, "maximum": 200, "default": 50})),
                query_param("cursor", json!({"type": "string", "pattern": "^[0-9]{1,18}$"}))
            ],
            "responses": responses
        }}),
    );
}

fn users_paths(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    schemas.insert(
        "User".into(),
        json!({
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "email": {"type": "string"},
                "role": {"type": "string", "enum": ["admin", "practitioner", "staff"]},
                "disabled": {"type": "boolean"},
                "created_at": {"type": "string", "format": "date-time"}
            },
            "required": ["id", "email", "role", "disabled", "created_at"]
        }),
    );
    schemas.insert(
        "NewUser".into(),
        json!({
            "type": "object",
            "properties": {
                "email": {"type": "string", "format": "email", "maxLength": limits::EMAIL_MAX},
                "password": {"type": "string", "minLength": limits::PASSWORD_MIN, "maxLength": limits::PASSWORD_MAX},
                "role": {"type": "string", "enum": ["admin", "practitioner", "staff"]}
            },
            "required": ["email", "password", "role"],
            "additionalProperties": false
        }),
    );
    schemas.insert(
        "UserPage".into(),
        json!({
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": {"$ref": "#/components/schemas/User"}},
                "next_cursor": {"type": ["string", "null"]}
            },
            "required": ["data", "next_cursor"]
        }),
    );
    let responses = |ok: &str, body: Value, extra: &[(&str, &str)]| {
        let mut r = Map::new();
        r.insert(ok.into(), body);
        common_errors(&mut r);
        r.insert(
            "403".into(),
            problem_response("Only a clinic admin can manage users."),
        );
        for (code, d) in extra {
            r.insert((*code).into(), problem_response(d));
        }
        Value::Object(r)
    };
    paths.insert(
        "/api/v1/users".into(),
        json!({
            "get": {
                "operationId": "listUsers",
                "summary": "List users",
                "description": "Every user of your clinic, disabled ones included, with their role. Clinic admins only; other roles get `403`.",
                "tags": ["users"],
                "responses": responses("200", with_description(json_body("UserPage"), "Your clinic's users."), &[])
            },
            "post": {
                "operationId": "createUser",
                "summary": "Create a user",
                "description": "Adds a user to your clinic with an e-mail address, a password (12–128 characters) and a role: `admin`, `practitioner` or `staff` (staff do not see identifying and clinical fields such as `ssn` and appointment notes). The user signs in with them at once. Clinic admins only; other roles get `403`. Invalid input is `400`; an e-mail address already registered, in any clinic, is `409`.",
                "tags": ["users"],
                "requestBody": with_description(json_body("NewUser"), "The new user."),
                "responses": responses("201", with_description(json_body("User"), "Created."), &[
                    ("400", "Invalid input."),
                    ("409", "The e-mail address is already registered."),
                    ("413", "Body too large.")
                ])
            }
        }),
    );
    schemas.insert(
        "UserChange".into(),
        json!({
            "type": "object",
            "properties": {"role": {"type": "string", "enum": ["admin", "practitioner", "staff"]}},
            "required": ["role"],
            "additionalProperties": false
        }),
    );
    let id_param = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}});
    paths.insert(
        "/api/v1/users/{id}".into(),
        json!({
            "parameters": [id_param.clone()],
            "patch": {
                "operationId": "changeUserRole",
                "summary": "Change a user's role",
                "tags": ["users"],
                "description": "Changes a user's role. Clinic admins only, and never their own role: both are `403`. The user's access tokens stop working at once, on every gateway and worker; it signs in again for the new role. The clinic's last active admin cannot be demoted (`409`).",
                "requestBody": with_description(json_body("UserChange"), "The change."),
                "responses": responses("200", with_description(json_body("User"), "The user."), &[
                    ("400", "Invalid input or malformed id."),
                    ("404", "No such user in your clinic."),
                    ("408", "The body did not arrive in time."),
                    ("409", "The clinic's last active admin."),
                    ("413", "Body too large.")
                ])
            }
        }),
    );
    for (action, summary, description, conflict) in [
        (
            "disable",
            "Disable a user",
            "Disables a user: no more logins or refreshes, its refresh tokens revoked and its access tokens refused at once on every gateway and worker. Clinic admins only, and never their own account: both are `403`. The clinic's last active admin cannot be disabled (`409`).",
            true,
        ),
        (
            "enable",
            "Enable a user",
            "Enables a disabled user again: it can sign in once more. Clinic admins only, and never their own account: both are `403`.",
            false,
        ),
        (
            "sign-out",
            "Sign a user out everywhere",
            "Ends every session of a user: its access tokens are refused at once and its refresh tokens revoked. Any user may sign itself out everywhere; clinic admins may sign out anyone of the clinic, and other roles signing out someone else get `403`.",
            false,
        ),
    ] {
        let mut extra = vec![
            ("400", "Malformed id."),
            ("404", "No such user in your clinic."),
        ];
        if conflict {
            extra.push(("409", "The clinic's last active admin."));
        }
        paths.insert(
            format!("/api/v1/users/{{id}}/{action}"),
            json!({
                "parameters": [id_param.clone()],
                "post": {
                    "operationId": operation_id(action, "user"),
                    "summary": summary,
                    "tags": ["users"],
                    "description": description,
                    "responses": responses("200", with_description(json_body("User"), "The user."), &extra)
                }
            }),
        );
    }
}

/// Multi-factor sign-in (TOTP): enrolment, confirmation, a sign-in's second step,
/// switching it off, an admin's reset, and the clinic's policy.
fn mfa_paths(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    let s = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required, "additionalProperties": false});
    let code = json!({"type": "string", "maxLength": 64, "description": "The 6-digit code the authenticator app shows now."});
    let mfa_token = json!({"type": "string", "maxLength": 128, "description": "The `mfa_token` a sign-in answered."});
    schemas.insert(
        "MfaChallenge".into(),
        json!({
            "type": "object",
            "description": "A right password when a second factor is due: no tokens yet.",
            "properties": {
                "mfa_required": {"type": "boolean", "enum": [true]},
                "mfa_enrollment_required": {"type": "boolean", "description": "The clinic requires multi-factor sign-in and the user has none yet: enrol with `mfa_token` (`/auth/mfa/enroll`, then `/auth/mfa/confirm`, which signs in)."},
                "mfa_token": {"type": "string", "description": "Short-lived (5 minutes to verify, 15 to enrol) and single-use."},
                "expires_in": {"type": "integer", "description": "Seconds `mfa_token` stays valid."}
            },
            "required": ["mfa_required", "mfa_enrollment_required", "mfa_token", "expires_in"]
        }),
    );
    schemas.insert(
        "LoginResponse".into(),
        json!({"oneOf": [
            {"$ref": "#/components/schemas/TokenResponse"},
            {"$ref": "#/components/schemas/MfaChallenge"}
        ]}),
    );
    schemas.insert(
        "MfaEnrollRequest".into(),
        s(json!({"mfa_token": mfa_token.clone()}), &["mfa_token"]),
    );
    schemas.insert(
        "MfaEnrollment".into(),
        json!({
            "type": "object",
            "properties": {
                "secret": {"type": "string", "description": "The TOTP secret, base32 (RFC 4648, no padding); shown this once."},
                "otpauth_uri": {"type": "string", "description": "The `otpauth://totp/…` URI authenticator apps scan (as a QR code)."},
                "algorithm": {"type": "string", "enum": ["SHA1"]},
                "digits": {"type": "integer", "enum": [6]},
                "period": {"type": "integer", "enum": [30]}
            },
            "required": ["secret", "otpauth_uri", "algorithm", "digits", "period"]
        }),
    );
    schemas.insert(
        "MfaConfirmRequest".into(),
        s(
            json!({"code": code.clone(), "mfa_token": {"type": ["string", "null"], "maxLength": 128, "description": "Without a bearer token: the `mfa_token` of a sign-in that must enrol."}}),
            &["code"],
        ),
    );
    schemas.insert(
        "MfaConfirmation".into(),
        json!({
            "type": "object",
            "properties": {
                "mfa_enabled": {"type": "boolean", "enum": [true]},
                "recovery_codes": {"type": "array", "items": {"type": "string"}, "minItems": 10, "maxItems": 10, "description": "Single-use codes for when the device is lost; shown this once."},
                "access_token": {"type": "string", "description": "Only when confirmed with an `mfa_token`: the user is signed in (the same tokens as a login's)."},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer"},
                "refresh_token": {"type": "string"}
            },
            "required": ["mfa_enabled", "recovery_codes"]
        }),
    );
    schemas.insert(
        "MfaVerifyRequest".into(),
        s(
            json!({
                "mfa_token": mfa_token,
                "code": {"type": ["string", "null"], "maxLength": 64, "description": "The 6-digit code the authenticator app shows now."},
                "recovery_code": {"type": ["string", "null"], "maxLength": 64, "description": "One of the recovery codes, instead of `code`; each works once."}
            }),
            &["mfa_token"],
        ),
    );
    schemas.insert("MfaCode".into(), s(json!({"code": code}), &["code"]));
    schemas.insert(
        "ClinicSecurity".into(),
        json!({
            "type": "object",
            "properties": {"mfa_required": {"type": "boolean", "description": "Every user of the clinic signs in with a second factor; users without one enrol at their next sign-in."}},
            "required": ["mfa_required"],
            "additionalProperties": false
        }),
    );
    let responses = |ok: &str, body: Option<(&str, &str)>, errors: &[(&str, &str)]| {
        let mut r = Map::new();
        r.insert(
            ok.into(),
            match body {
                Some((schema, d)) => with_description(json_body(schema), d),
                None => json!({"description": "Done."}),
            },
        );
        for (code, d) in errors {
            r.insert((*code).into(), problem_response(d));
        }
        Value::Object(r)
    };
    let bearer_or_token = json!([{"bearer": []}, {}]);
    paths.insert(
        "/api/v1/auth/mfa/enroll".into(),
        json!({"post": {
            "operationId": "enrollMfa",
            "summary": "Start multi-factor enrolment",
            "description": "A new TOTP secret (RFC 6238: SHA-1, 6 digits, 30-second steps) for your account, as base32 and as an `otpauth://` URI to scan; it is shown this once and stays pending until `POST /api/v1/auth/mfa/confirm` proves it with a code (enrolling again replaces a pending secret). Signed in: send your bearer token and no body. A sign-in that answered `mfa_enrollment_required` (the clinic requires a second factor) sends `{mfa_token}` instead. Already on: `409`.",
            "tags": ["auth"],
            "security": bearer_or_token.clone(),
            "requestBody": {"required": false, "description": "Only without a bearer token: the sign-in's `mfa_token`.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MfaEnrollRequest"}}}},
            "responses": responses("200", Some(("MfaEnrollment", "The pending secret.")), &[
                ("400", "Invalid input."),
                ("401", "No valid bearer token, or the `mfa_token` is invalid, expired or used."),
                ("403", "Your clinic is suspended or not provisioned."),
                ("409", "Multi-factor sign-in is already on."),
                ("503", "Sign-in is unavailable; see retry-after.")
            ])
        }}),
    );
    paths.insert(
        "/api/v1/auth/mfa/confirm".into(),
        json!({"post": {
            "operationId": "confirmMfa",
            "summary": "Confirm multi-factor enrolment",
            "description": "Proves the pending secret with a current code: multi-factor sign-in is on from now, and the answer carries 10 single-use recovery codes, shown this once. With a bearer token, or with the `mfa_token` of a sign-in that must enrol: then the answer signs you in too (`access_token`, `refresh_token`). A wrong code is `401` and counts as a failed sign-in: too many are `429` with `retry-after`.",
            "tags": ["auth"],
            "security": bearer_or_token,
            "requestBody": with_description(json_body("MfaConfirmRequest"), "The code."),
            "responses": responses("200", Some(("MfaConfirmation", "On, with the recovery codes."))  , &[
                ("400", "Invalid input."),
                ("401", "Wrong code, or no valid bearer token or `mfa_token`."),
                ("403", "Your clinic is suspended or not provisioned."),
                ("409", "No enrolment is pending, or multi-factor sign-in is already on."),
                ("429", "Too many attempts; see retry-after."),
                ("503", "Sign-in is unavailable; see retry-after.")
            ])
        }}),
    );
    paths.insert(
        "/api/v1/auth/mfa/verify".into(),
        json!({"post": {
            "operationId": "verifyMfa",
            "summary": "Finish a sign-in with a second factor",
            "description": "The second step of a sign-in that answered `mfa_required`: the `mfa_token` with a current code from the authenticator app (one step of clock skew either way; each code works once) or one of the recovery codes (each works once). Answers the token pair, as a login does. No access token needed. A wrong code is `401` and counts as a failed sign-in on the account, with the password's attempts: too many are `429` with `retry-after`. The `mfa_token` lasts 5 minutes and is used up by its success.",
            "tags": ["auth"],
            "security": [],
            "requestBody": with_description(json_body("MfaVerifyRequest"), "The sign-in's token and a code."),
            "responses": responses("200", Some(("TokenResponse", "Signed in.")), &[
                ("400", "Invalid input: send either `code` or `recovery_code`."),
                ("401", "Wrong or used code, or the `mfa_token` is invalid, expired or used."),
                ("403", "Your clinic is suspended or not provisioned."),
                ("408", "The body did not arrive in time."),
                ("413", "Body too large."),
                ("429", "Too many attempts; see retry-after."),
                ("503", "Sign-in is unavailable; see retry-after.")
            ])
        }}),
    );
    paths.insert(
        "/api/v1/auth/mfa/disable".into(),
        json!({"post": {
            "operationId": "disableMfa",
            "summary": "Switch multi-factor sign-in off",
            "description": "Switches your own multi-factor sign-in off, with a current code; the recovery codes stop working. Refused (`409`) while your clinic requires it. A wrong code is `401` and counts as a failed sign-in.",
            "tags": ["auth"],
            "requestBody": with_description(json_body("MfaCode"), "A current code."),
            "responses": responses("204", None, &[
                ("400", "Invalid input."),
                ("401", "Wrong or used code, or no valid bearer token."),
                ("403", "Your clinic is suspended or not provisioned."),
                ("409", "Not on, or required by your clinic."),
                ("429", "Too many attempts; see retry-after."),
                ("503", "Sign-in is unavailable; see retry-after.")
            ])
        }}),
    );
    paths.insert(
        "/api/v1/users/{id}/mfa/reset".into(),
        json!({
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
            "post": {
                "operationId": "resetUserMfa",
                "summary": "Reset a user's multi-factor sign-in",
                "description": "Clears another user's second factor (after a lost device): its secret, recovery codes and pending sign-ins. The user signs in with the password alone again, or enrols at its next sign-in where the clinic requires it. Clinic admins only, and never their own: both are `403`. Recorded in the audit trail.",
                "tags": ["users"],
                "responses": responses("204", None, &[
                    ("400", "Malformed id."),
                    ("401", "Missing, invalid or expired token."),
                    ("403", "Not a clinic admin, or your own account."),
                    ("404", "No such user in your clinic."),
                    ("503", "Unavailable; retry later.")
                ])
            }
        }),
    );
    paths.insert(
        "/api/v1/clinic-security".into(),
        json!({
            "get": {
                "operationId": "getClinicSecurity",
                "summary": "Get the clinic's sign-in policy",
                "description": "Whether the clinic requires multi-factor sign-in (`mfa_required`). Any user of the clinic.",
                "tags": ["clinic"],
                "responses": responses("200", Some(("ClinicSecurity", "The policy.")), &[
                    ("401", "Missing, invalid or expired token."),
                    ("403", "The clinic is unknown, suspended or not provisioned."),
                    ("503", "Unavailable; retry later.")
                ])
            },
            "patch": {
                "operationId": "changeClinicSecurity",
                "summary": "Change the clinic's sign-in policy",
                "description": "Requires (or stops requiring) multi-factor sign-in for every user of the clinic. Sessions already open go on; every later sign-in asks for the second factor, and users without one enrol first. Clinic admins only (`403` otherwise). Recorded in the audit trail.",
                "tags": ["clinic"],
                "requestBody": with_description(json_body("ClinicSecurity"), "The policy."),
                "responses": responses("200", Some(("ClinicSecurity", "The policy.")), &[
                    ("400", "Invalid input."),
                    ("401", "Missing, invalid or expired token."),
                    ("403", "Not a clinic admin, or the clinic is unavailable."),
                    ("408", "The body did not arrive in time."),
                    ("413", "Body too large."),
                    ("503", "Unavailable; retry later.")
                ])
            }
        }),
    );
}

/// Passwords: changing one's own, and a reset by e-mail.
fn password_paths(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    let s = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required, "additionalProperties": false});
    let new_password = json!({"type": "string", "minLength": limits::PASSWORD_MIN, "maxLength": limits::PASSWORD_MAX, "description": "Checked as at registration."});
    schemas.insert(
        "PasswordChange".into(),
        s(
            json!({
                "current_password": {"type": "string", "maxLength": limits::PASSWORD_MAX},
                "new_password": new_password.clone()
            }),
            &["current_password", "new_password"],
        ),
    );
    schemas.insert(
        "PasswordResetRequest".into(),
        s(
            json!({"email": {"type": "string", "maxLength": limits::EMAIL_MAX}}),
            &["email"],
        ),
    );
    schemas.insert(
        "PasswordResetAccepted".into(),
        json!({
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["accepted"]},
                "detail": {"type": "string"}
            },
            "required": ["status", "detail"]
        }),
    );
    schemas.insert(
        "PasswordResetConfirm".into(),
        s(
            json!({
                "token": {"type": "string", "maxLength": 128, "description": "The token of the reset link."},
                "new_password": new_password
            }),
            &["token", "new_password"],
        ),
    );
    let responses = |ok: &str, body: Option<(&str, &str)>, errors: &[(&str, &str)]| {
        let mut r = Map::new();
        r.insert(
            ok.into(),
            match body {
                Some((schema, d)) => with_description(json_body(schema), d),
                None => json!({"description": "Done."}),
            },
        );
        for (code, d) in errors {
            r.insert((*code).into(), problem_response(d));
        }
        Value::Object(r)
    };
    paths.insert(
        "/api/v1/auth/password".into(),
        json!({"post": {
            "operationId": "changePassword",
            "summary": "Change your password",
            "description": "Changes your own password: the current one is required (a wrong one is `401` and counts as a failed sign-in: too many are `429` with `retry-after`), the new one is checked as at registration. Every session of yours ends (refresh tokens revoked, access tokens refused within a second); the answer is a fresh token pair for this one. Recorded in the audit trail.",
            "tags": ["auth"],
            "requestBody": with_description(json_body("PasswordChange"), "The current and the new password."),
            "responses": responses("200", Some(("TokenResponse", "Changed; a fresh token pair.")), &[
                ("400", "Invalid input, or the new password is not acceptable."),
                ("401", "Wrong current password, or no valid bearer token."),
                ("403", "Your clinic is suspended or not provisioned."),
                ("408", "The body did not arrive in time."),
                ("413", "Body too large."),
                ("429", "Too many attempts; see retry-after."),
                ("503", "Sign-in is unavailable; see retry-after.")
            ])
        }}),
    );
    paths.insert(
        "/api/v1/auth/password-reset".into(),
        json!({"post": {
            "operationId": "requestPasswordReset",
            "summary": "Ask for a password reset link",
            "description": "Sends a link to reset the password to the address, when an active account uses it: single-use, valid for 30 minutes. The answer is the same `202` whether or not the address is known. Counted like a sign-in on the address: too many are `429` with `retry-after`. No access token needed.",
            "tags": ["auth"],
            "security": [],
            "requestBody": with_description(json_body("PasswordResetRequest"), "The account's e-mail address."),
            "responses": responses("202", Some(("PasswordResetAccepted", "Accepted; a link is on its way if the address is known.")), &[
                ("400", "Invalid input."),
                ("408", "The body did not arrive in time."),
                ("413", "Body too large."),
                ("429", "Too many attempts; see retry-after."),
                ("503", "Unavailable; see retry-after.")
            ])
        }}),
    );
    paths.insert(
        "/api/v1/auth/password-reset/confirm".into(),
        json!({"post": {
            "operationId": "confirmPasswordReset",
            "summary": "Set a new password with a reset link",
            "description": "Sets the account's new password with the token of a reset link, once: an unknown, used or expired token is `400` and changes nothing. Every session of the account ends. Recorded in the audit trail. No access token needed.",
            "tags": ["auth"],
            "security": [],
            "requestBody": with_description(json_body("PasswordResetConfirm"), "The link's token and the new password."),
            "responses": responses("204", None, &[
                ("400", "Invalid input, a password that is not acceptable, or an unknown, used or expired token."),
                ("408", "The body did not arrive in time."),
                ("413", "Body too large."),
                ("503", "Unavailable; see retry-after.")
            ])
        }}),
    );
}

fn export_paths(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    schemas.insert(
        "FhirBundle".into(),
        json!({
            "type": "object",
            "description": "A FHIR R4 Bundle of type `collection`: the Patient first, then its Appointment, Consent and Invoice resources (issued invoices only; quotes and drafts are in the JSON form). Each entry's `fullUrl` is `urn:uuid:<resource id>`; references between entries use those URNs.",
            "properties": {
                "resourceType": {"type": "string", "enum": ["Bundle"]},
                "id": {"type": "string"},
                "type": {"type": "string", "enum": ["collection"]},
                "timestamp": {"type": "string", "format": "date-time"},
                "entry": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "fullUrl": {"type": "string", "pattern": "^urn:uuid:"},
                            "resource": {
                                "type": "object",
                                "properties": {
                                    "resourceType": {"type": "string", "enum": ["Patient", "Appointment", "Consent", "Invoice"]},
                                    "id": {"type": "string"}
                                },
                                "required": ["resourceType", "id"]
                            }
                        },
                        "required": ["fullUrl", "resource"]
                    }
                }
            },
            "required": ["resourceType", "type", "timestamp", "entry"]
        }),
    );
    let mut names: Vec<&str> = RESOURCES.iter().map(|r| r.name).collect();
    names.push(ATTACHMENTS.name);
    schemas.insert(
        "ExportRecord".into(),
        json!({
            "type": "object",
            "description": "One line of a clinic export: a row of one resource, as `GET /api/v1/{resource}/{id}` shows it; for `attachments`, a file's metadata as `GET /api/v1/patients/{id}/attachments` lists it (the content is downloaded on its own).",
            "properties": {
                "resource": {"type": "string", "enum": names},
                "data": {"type": "object"}
            },
            "required": ["resource", "data"]
        }),
    );

    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "The patient and every appointment, document and consent referring to them: the API's JSON (`format=json`, the default), or a FHIR R4 Bundle (`format=fhir`).",
               "content": {
                   "application/json": {"schema": {"type": "object", "required": ["patient"],
                       "properties": {"patient": {"$ref": "#/components/schemas/Patient"}}}},
                   "application/fhir+json": {"schema": {"$ref": "#/components/schemas/FhirBundle"}}
               }}),
    );
    responses.insert(
        "400".into(),
        problem_response("Malformed id, or a `format` other than `json` or `fhir`."),
    );
    responses.insert(
        "404".into(),
        problem_response("No such patient in your clinic."),
    );
    common_errors(&mut responses);
    responses.insert(
        "403".into(),
        problem_response("Only a clinic admin can export a patient's data."),
    );
    paths.insert(
        "/api/v1/patients/{id}/export".into(),
        json!({
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
            "get": {
                "operationId": "exportPatient",
                "summary": "Export a patient's data",
                "tags": ["patients"],
                "description": "Everything the clinic holds about one patient, for GDPR access and portability requests: the patient and every appointment, document, consent and attachment (its metadata) referring to them, as the API's JSON (`format=json`, the default) or as a FHIR R4 `collection` Bundle (`format=fhir`, `application/fhir+json`: Patient, Appointment, Consent, and an Invoice per issued invoice). Recorded in the audit trail. Clinic admins only; other roles get `403`. An id of another clinic, or of a deleted patient, is `404`; a `format` other than `json` or `fhir` is `400`.",
                "parameters": [query_param("format", json!({"type": "string", "enum": ["json", "fhir"], "default": "json"}))],
                "responses": responses
            }
        }),
    );

    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "Newline-delimited JSON, streamed: one `ExportRecord` per line for every live row of every resource and the metadata of every live attachment (not its content), all read from one consistent snapshot. A body that ends without its final chunk was cut short by a failure and is incomplete.",
               "content": {"application/x-ndjson": {"schema": {"$ref": "#/components/schemas/ExportRecord"}}}}),
    );
    common_errors(&mut responses);
    responses.insert(
        "403".into(),
        problem_response("Only a clinic admin can export the clinic's data."),
    );
    responses.insert(
        "429".into(),
        problem_response(
            "An export of your clinic is running, or too many on this server; see retry-after.",
        ),
    );
    paths.insert(
        "/api/v1/export".into(),
        json!({"get": {
            "operationId": "exportClinic",
            "summary": "Export the whole clinic",
            "tags": ["export"],
            "description": "Everything the clinic holds (portability, backup), streamed as newline-delimited JSON: one `ExportRecord` per live row of every resource, then the metadata of every live attachment (the content is downloaded on its own), all read from one consistent snapshot. A body that ends without its final chunk was cut short and is incomplete. Clinic admins only; other roles get `403`. One export per clinic at a time, and a bounded number per server: more are `429` with `retry-after`. A client that stops reading for a while is cut off. Recorded in the audit trail as `export` on `clinic`.",
            "responses": responses
        }}),
    );
}

/// A clinic's patients imported from another system (CSV or NDJSON).
fn import_paths(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    schemas.insert(
        "ImportRow".into(),
        json!({
            "type": "object",
            "description": "What became of one row: `imported` (with the new patient's `id`), `existing` (its `external_id` is a patient of the clinic already, whose `id` is given; nothing changed) or `refused` (with the `errors` that refused it).",
            "properties": {
                "line": {"type": "integer", "minimum": 1, "description": "The row's line in the file (a CSV's header is line 1)."},
                "status": {"type": "string", "enum": ["imported", "existing", "refused"]},
                "id": {"type": "string", "format": "uuid"},
                "external_id": {"type": ["string", "null"]},
                "errors": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["line", "status"]
        }),
    );
    schemas.insert(
        "ImportReport".into(),
        json!({
            "type": "object",
            "description": "An import's report: how many rows were imported, were there already (by `external_id`) and were refused, and each row.",
            "properties": {
                "imported": {"type": "integer", "minimum": 0},
                "existing": {"type": "integer", "minimum": 0},
                "refused": {"type": "integer", "minimum": 0},
                "rows": {"type": "array", "items": {"$ref": "#/components/schemas/ImportRow"}}
            },
            "required": ["imported", "existing", "refused", "rows"]
        }),
    );
    let report =
        json!({"application/json": {"schema": {"$ref": "#/components/schemas/ImportReport"}}});
    let mut responses = Map::new();
    responses.insert(
        "201".into(),
        json!({"description": "At least one patient was imported; the report.", "content": report.clone()}),
    );
    responses.insert(
        "200".into(),
        json!({"description": "Nothing new to import (every row existing, or every row refused under `mode=valid`); the report.", "content": report}),
    );
    responses.insert(
        "400".into(),
        problem_response("An unreadable CSV header row (or one naming a column twice), or a `mode` other than `all` or `valid`."),
    );
    common_errors(&mut responses);
    responses.insert(
        "403".into(),
        problem_response("Only a clinic admin can import patients."),
    );
    responses.insert(
        "413".into(),
        problem_response("The body is over the import limit (`MAX_IMPORT_BYTES`), or has more rows than `MAX_IMPORT_ROWS` (10 000 unless configured)."),
    );
    responses.insert(
        "415".into(),
        problem_response("A body that is neither `text/csv` nor `application/x-ndjson`."),
    );
    responses.insert(
        "422".into(),
        json!({
            "description": "Under `mode=all`, some rows were refused and nothing was imported; `rows` lists the refused ones with their line and errors.",
            "content": {"application/problem+json": {"schema": {"allOf": [
                {"$ref": "#/components/schemas/Problem"},
                {"type": "object", "properties": {"rows": {"type": "array", "items": {"$ref": "#/components/schemas/ImportRow"}}}, "required": ["rows"]}
            ]}}}
        }),
    );
    paths.insert(
        "/api/v1/patients/import".into(),
        json!({"post": {
            "operationId": "importPatients",
            "summary": "Import patients",
            "tags": ["patients"],
            "description": "Patients from another system, in one transaction: CSV (`text/csv`, a header row naming patient fields, an empty cell for an absent value) or NDJSON (`application/x-ndjson`, one patient object a line). Every row is validated and stored exactly as `POST /api/v1/patients` stores a body (`ssn` sealed as usual). A row whose `external_id` a patient of the clinic already has (a deleted one too) is skipped and reported `existing`, so importing a file again changes nothing; a second row of one file with the same `external_id` is refused. With `mode=all` (the default) any refused row refuses the whole import (`422`, the refused rows in `rows`, nothing imported); with `mode=valid` the valid rows are imported and the refused ones reported. At most `MAX_IMPORT_ROWS` rows (10 000 unless configured) and `MAX_IMPORT_BYTES` (16 MiB unless configured). Recorded in the audit trail as one `import` on `patients` plus a `create` per imported patient. Clinic admins only; other roles get `403`.",
            "parameters": [query_param("mode", json!({"type": "string", "enum": ["all", "valid"], "default": "all"}))],
            "requestBody": {
                "required": true,
                "content": {
                    "text/csv": {"schema": {"type": "string"}, "example": "external_id,first_name,last_name,email,birth_date,ssn\nA-17,Zoë,\"Dupont, Jr\",zoe@example.org,1980-02-29,1800275123456\n"},
                    "application/x-ndjson": {"schema": {"$ref": "#/components/schemas/PatientInput"}}
                }
            },
            "responses": responses
        }}),
    );
}

/// Files on a patient: upload, list, download, delete.
fn attachment_paths(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    let (_, mut output) = object_schemas(ATTACHMENTS.fields, &[]);
    if let Some(props) = output["properties"].as_object_mut() {
        props.insert("id".into(), json!({"type": "string", "format": "uuid"}));
        for at in ["created_at", "updated_at"] {
            props.insert(at.into(), json!({"type": "string", "format": "date-time"}));
        }
    }
    if let Some(req) = output["required"].as_array_mut() {
        req.extend(["id", "created_at", "updated_at"].map(Value::from));
    }
    output["description"] =
        "A file on a patient: its metadata. The content is `GET /api/v1/attachments/{id}`.".into();
    schemas.insert("Attachment".into(), output);
    schemas.insert(
        "AttachmentPage".into(),
        json!({
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": {"anyOf": [
                    {"$ref": "#/components/schemas/Attachment"},
                    {"$ref": "#/components/schemas/Tombstone"}
                ]}, "description": "The patient's files; with `include_deleted=true`, a deleted one as a `Tombstone`."},
                "next_cursor": {"type": ["string", "null"]}
            },
            "required": ["data", "next_cursor"]
        }),
    );
    let patient_param = json!({"name": "id", "in": "path", "required": true, "description": "The patient's id.", "schema": {"type": "string", "format": "uuid"}});
    let id_param = json!({"name": "id", "in": "path", "required": true, "description": "The attachment's id.", "schema": {"type": "string", "format": "uuid"}});
    let types = "PDF, PNG, JPEG, TIFF, HEIF/HEIC or plain UTF-8 text";

    let mut upload = Map::new();
    upload.insert(
        "201".into(),
        json!({
            "description": "Stored; its metadata (`content_type` is the type found in the bytes).",
            "headers": {"Location": {"description": "Where the content is downloaded.", "schema": {"type": "string"}}},
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Attachment"}}}
        }),
    );
    upload.insert("400".into(), problem_response("Malformed id, an empty body, a repeated or oversized query parameter, or a `description` over 1000 characters."));
    upload.insert(
        "404".into(),
        problem_response("No such patient in your clinic (or a deleted one)."),
    );
    upload.insert(
        "408".into(),
        problem_response("The body did not arrive in time."),
    );
    upload.insert("413".into(), problem_response("The file is over `MAX_ATTACHMENT_BYTES` (25 MiB unless configured); nothing was stored."));
    upload.insert("415".into(), problem_response(&format!("The bytes are not {types}, or not the type the `Content-Type` claims; nothing was stored.")));
    common_errors(&mut upload);
    let mut list = Map::new();
    list.insert(
        "200".into(),
        with_description(
            json_body("AttachmentPage"),
            "One page of the patient's files' metadata, oldest first.",
        ),
    );
    list.insert(
        "400".into(),
        problem_response("Malformed id or invalid query parameter."),
    );
    list.insert(
        "404".into(),
        problem_response("No such patient in your clinic (or a deleted one)."),
    );
    common_errors(&mut list);
    paths.insert(
        "/api/v1/patients/{id}/attachments".into(),
        json!({
            "parameters": [patient_param],
            "post": {
                "operationId": "uploadAttachment",
                "summary": "Upload a file onto a patient",
                "tags": ["attachments"],
                "description": format!("The raw file is the body (not a multipart form), with the `Content-Type` it has (or `application/octet-stream`). Its name is `filename` in the query, else the `filename` of a `Content-Disposition` header, else `attachment.<extension>`; path components and control characters are removed. The type is found from the bytes and must be {types}; bytes that are something else, or not what the `Content-Type` claims, are `415` and nothing is stored. At most `MAX_ATTACHMENT_BYTES` (25 MiB unless configured): more is `413`, nothing stored. The content is stored encrypted with the clinic's key, in the clinic's own database; the name and description too. Recorded in the audit trail as `create` on `attachments`. Every role may upload."),
                "parameters": [
                    query_param("filename", json!({"type": "string", "maxLength": limits::QUERY_VALUE_MAX})),
                    query_param("description", json!({"type": "string", "maxLength": 1000}))
                ],
                "requestBody": {
                    "required": true,
                    "description": "The file's bytes.",
                    "content": {
                        "application/pdf": {"schema": {"type": "string", "contentMediaType": "application/pdf"}},
                        "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
                        "image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}},
                        "image/tiff": {"schema": {"type": "string", "contentMediaType": "image/tiff"}},
                        "image/heic": {"schema": {"type": "string", "contentMediaType": "image/heic"}},
                        "text/plain": {"schema": {"type": "string"}},
                        "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}
                    }
                },
                "responses": upload
            },
            "get": {
                "operationId": "listAttachments",
                "summary": "List a patient's files",
                "tags": ["attachments"],
                "description": "The metadata of the patient's files, a page at a time (`limit`, `cursor`; `updated_since` and `include_deleted` as for any list). Every role may list; the content is downloaded by admins and practitioners only. Recorded in the audit trail as `list` on `attachments`.",
                "parameters": [
                    query_param("limit", json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20})),
                    cursor_param(),
                    query_param("updated_since", json!({"type": "string", "format": "date-time"})),
                    query_param("include_deleted", json!({"type": "boolean", "default": false}))
                ],
                "responses": list
            }
        }),
    );

    let mut download = Map::new();
    download.insert(
        "200".into(),
        json!({
            "description": "The content as uploaded, streamed, with its stored type, `Content-Disposition: attachment` (the file's name), `X-Content-Type-Options: nosniff` and a sandboxing `Content-Security-Policy`. A body shorter than `Content-Length` was cut by a failure and is incomplete.",
            "headers": {
                "Content-Disposition": {"description": "`attachment` with the file's name (`filename` in ASCII, `filename*` exact).", "schema": {"type": "string"}},
                "X-Content-Type-Options": {"description": "Always `nosniff`.", "schema": {"type": "string", "enum": ["nosniff"]}},
                "ETag": {"description": "The content's SHA-256, quoted.", "schema": {"type": "string"}}
            },
            "content": {
                "application/pdf": {"schema": {"type": "string", "contentMediaType": "application/pdf"}},
                "image/png": {"schema": {"type": "string", "contentMediaType": "image/png"}},
                "image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}},
                "image/tiff": {"schema": {"type": "string", "contentMediaType": "image/tiff"}},
                "image/heif": {"schema": {"type": "string", "contentMediaType": "image/heif"}},
                "text/plain": {"schema": {"type": "string"}}
            }
        }),
    );
    download.insert("400".into(), problem_response("Malformed id."));
    download.insert(
        "404".into(),
        problem_response("No such attachment in your clinic (or a deleted one)."),
    );
    common_errors(&mut download);
    download.insert("403".into(), problem_response("Only admins and practitioners download attachments; or the clinic is unknown, suspended or not provisioned."));
    let mut delete = Map::new();
    delete.insert(
        "204".into(),
        json!({"description": "Deleted: the content is gone, the metadata kept as a tombstone."}),
    );
    delete.insert("400".into(), problem_response("Malformed id."));
    delete.insert(
        "404".into(),
        problem_response("No such attachment in your clinic (or one deleted already)."),
    );
    common_errors(&mut delete);
    delete.insert("403".into(), problem_response("Only admins and practitioners delete attachments; or the clinic is unknown, suspended or not provisioned."));
    paths.insert(
        "/api/v1/attachments/{id}".into(),
        json!({
            "parameters": [id_param],
            "get": {
                "operationId": "downloadAttachment",
                "summary": "Download a file",
                "tags": ["attachments"],
                "description": "The content of one attachment, streamed; checked against its stored size and SHA-256 as it is sent. Every download is recorded in the audit trail (`read` on `attachments` with the attachment's id) before the first byte. Admins and practitioners only; staff get `403`. An id of another clinic, or of a deleted attachment, is `404`.",
                "responses": download
            },
            "delete": {
                "operationId": "deleteAttachment",
                "summary": "Delete a file",
                "tags": ["attachments"],
                "description": "Removes the content at once (there is no restore); the metadata stays as a tombstone, so consents and audit records naming it stay meaningful. Recorded in the audit trail as `delete` on `attachments`. Admins and practitioners only; staff get `403`.",
                "responses": delete
            }
        }),
    );
}

/// The clinic's settings, free slots, recurring series, an invoice's payments and
/// documents as PDF.
fn clinic_day_paths(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    // Settings: one object, its fields from the resource description.
    let (input, mut output) = object_schemas(CLINIC_SETTINGS.fields, &[]);
    if let Some(props) = output["properties"].as_object_mut() {
        props.insert(
            "updated_at".into(),
            json!({"type": "string", "format": "date-time"}),
        );
    }
    schemas.insert("ClinicSettings".into(), output);
    schemas.insert("ClinicSettingsInput".into(), input);
    let mut get = Map::new();
    get.insert(
        "200".into(),
        with_etag(with_description(
            json_body("ClinicSettings"),
            "The clinic's settings.",
        )),
    );
    common_errors(&mut get);
    let mut put = Map::new();
    put.insert(
        "200".into(),
        with_etag(with_description(
            json_body("ClinicSettings"),
            "The settings as stored.",
        )),
    );
    put.insert(
        "412".into(),
        problem_response("`If-Match` names no current version of the settings: someone changed them meanwhile; nothing was changed."),
    );
    put.insert(
        "400".into(),
        problem_response("Invalid fields: an unknown time zone, currency code or prefix, an empty name, an unknown field."),
    );
    put.insert(
        "408".into(),
        problem_response("The body did not arrive in time."),
    );
    put.insert("413".into(), problem_response("Body too large."));
    common_errors(&mut put);
    put.insert(
        "403".into(),
        problem_response(
            "Only a clinic admin can change the settings (or the clinic is unavailable).",
        ),
    );
    paths.insert(
        "/api/v1/clinic".into(),
        json!({
            "get": {
                "operationId": "getClinicSettings",
                "summary": "Get the clinic's settings",
                "tags": ["clinic"],
                "description": format!("The clinic's name and legal identity as printed on its documents, its IANA time zone (working hours, \"today\" and the invoice year follow it), locale, currency and numbering prefixes. {ANY_USER}."),
                "responses": get
            },
            "put": {
                "operationId": "replaceClinicSettings",
                "summary": "Replace the clinic's settings",
                "tags": ["clinic"],
                "description": format!("Replaces every setting; those left out take their defaults. The time zone must be an IANA name (`Europe/Paris`), the currency an ISO 4217 code; documents keep the currency they were created in. Recorded in the audit trail. Clinic admins only; other roles get `403`. Invalid values are `400` and change nothing. {IF_MATCH_NOTE}"),
                "parameters": [if_match_param()],
                "requestBody": {"required": true, "description": "Every setting.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ClinicSettingsInput"}}}},
                "responses": put
            }
        }),
    );

    // Free slots.
    schemas.insert(
        "Slot".into(),
        json!({"type": "object", "properties": {
            "practitioner_id": {"type": "string", "format": "uuid"},
            "starts_at": {"type": "string", "format": "date-time", "description": "In the clinic's offset at that instant."},
            "ends_at": {"type": "string", "format": "date-time"}
        }, "required": ["practitioner_id", "starts_at", "ends_at"]}),
    );
    schemas.insert(
        "Availability".into(),
        json!({"type": "object", "properties": {
            "time_zone": {"type": "string", "description": "The clinic's IANA time zone."},
            "from": {"type": "string", "format": "date-time"},
            "to": {"type": "string", "format": "date-time"},
            "duration_minutes": {"type": "integer"},
            "buffer_after_minutes": {"type": "integer"},
            "step_minutes": {"type": "integer"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Slot"}},
            "truncated": {"type": "boolean", "description": "More slots exist than `limit`: search again from the last one's start."}
        }, "required": ["time_zone", "from", "to", "duration_minutes", "buffer_after_minutes", "step_minutes", "data", "truncated"]}),
    );
    let bound = json!({"type": "string", "description": "An RFC 3339 date-time, or a date (`YYYY-MM-DD`, a day of the clinic's calendar: its start for `from`, its end for `to`).", "maxLength": 40});
    let minutes = json!({"type": "integer", "minimum": 5, "maximum": 1440});
    let mut slots = Map::new();
    slots.insert(
        "200".into(),
        with_description(json_body("Availability"), "The free slots, by start."),
    );
    slots.insert(
        "400".into(),
        problem_response("A missing or malformed bound, a window over 62 days, no type and no duration, an unknown type or practitioner."),
    );
    common_errors(&mut slots);
    paths.insert(
        "/api/v1/availability".into(),
        json!({"get": {
            "operationId": "listAvailability",
            "summary": "Find free slots",
            "tags": ["availability"],
            "description": format!("Free slots for an appointment type (its duration and buffer) or a `duration_minutes`, of one practitioner or all, between `from` and `to` (at most 62 days), never in the past. A slot lies inside the practitioner's working hours (weekly hours and dated exceptions, in the clinic's time zone, DST-correct), and neither it nor its buffer overlaps a booking or that booking's own buffer. Slots start every `step_minutes` (default 15) from the start of each working interval. {ANY_USER}. Recorded in the audit trail."),
            "parameters": [
                {"name": "from", "in": "query", "required": true, "schema": bound},
                {"name": "to", "in": "query", "required": true, "schema": bound},
                query_param("practitioner_id", json!({"type": "string", "format": "uuid"})),
                query_param("appointment_type_id", json!({"type": "string", "format": "uuid"})),
                query_param("duration_minutes", minutes.clone()),
                query_param("step_minutes", minutes),
                query_param("limit", json!({"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}))
            ],
            "responses": slots
        }}),
    );

    // Recurring series.
    let (mut series_input, _) = object_schemas(APPOINTMENTS.fields, APPOINTMENTS.children);
    let (recurrence, _) = object_schemas(APPOINTMENT_SERIES.fields, &[]);
    schemas.insert("Recurrence".into(), recurrence);
    if let Some(props) = series_input["properties"].as_object_mut() {
        props.insert(
            "recurrence".into(),
            json!({"$ref": "#/components/schemas/Recurrence"}),
        );
    }
    if let Some(req) = series_input["required"].as_array_mut() {
        req.push("recurrence".into());
    }
    schemas.insert("AppointmentSeriesInput".into(), series_input);
    schemas.insert(
        "SeriesOccurrence".into(),
        json!({"type": "object", "properties": {
            "id": {"type": "string", "format": "uuid"},
            "series_index": {"type": "integer"},
            "starts_at": {"type": "string", "format": "date-time"},
            "ends_at": {"type": "string", "format": "date-time"},
            "status": {"type": "string"},
            "practitioner_id": {"type": "string", "format": "uuid"}
        }, "required": ["id", "series_index", "starts_at", "ends_at", "status", "practitioner_id"]}),
    );
    schemas.insert(
        "AppointmentSeries".into(),
        json!({"type": "object", "properties": {
            "id": {"type": "string", "format": "uuid"},
            "frequency": {"type": "string", "enum": ["weekly", "monthly"]},
            "every": {"type": "integer"},
            "count": {"type": ["integer", "null"]},
            "until": {"type": ["string", "null"], "format": "date"},
            "time_zone": {"type": "string"},
            "appointments": {"type": "array", "items": {"anyOf": [{"$ref": "#/components/schemas/Appointment"}, {"$ref": "#/components/schemas/SeriesOccurrence"}]}, "description": "The occurrences by index: whole appointments when booked, `SeriesOccurrence`s otherwise."}
        }, "required": ["id", "frequency", "every", "appointments"]}),
    );
    schemas.insert(
        "SeriesChange".into(),
        json!({"type": "object", "properties": {
            "from_index": {"type": "integer", "minimum": 0, "maximum": 1000, "description": "This occurrence and the following ones (default 0: all)."},
            "shift_minutes": {"type": "integer", "minimum": -527040, "maximum": 527040, "description": "Moves each occurrence by this many minutes."},
            "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 1440},
            "practitioner_id": {"type": "string", "format": "uuid"},
            "appointment_type_id": {"type": ["string", "null"], "format": "uuid"},
            "status": {"type": "string", "enum": ["booked", "confirmed", "cancelled", "no_show", "done"]},
            "outside_hours": {"type": "boolean"}
        }, "additionalProperties": false}),
    );
    schemas.insert(
        "SeriesCancel".into(),
        json!({"type": "object", "properties": {
            "from_index": {"type": "integer", "minimum": 0, "maximum": 1000, "description": "This occurrence and the following ones (default 0: the whole series)."}
        }, "additionalProperties": false}),
    );
    schemas.insert(
        "SeriesConflict".into(),
        json!({"type": "object", "description": "A problem whose `conflicts` lists each occurrence that cannot be booked or moved.", "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"}, "detail": {"type": "string"},
            "conflicts": {"type": "array", "items": {"type": "object", "properties": {
                "series_index": {"type": "integer"},
                "starts_at": {"type": "string", "format": "date-time"},
                "ends_at": {"type": "string", "format": "date-time"},
                "reason": {"type": "string", "enum": ["double_booking", "outside_hours"]},
                "appointment_id": {"type": "string", "format": "uuid", "description": "The booking in the way (`double_booking`)."}
            }, "required": ["series_index", "starts_at", "ends_at", "reason"]}}
        }, "required": ["type", "title", "status"]}),
    );
    let conflict = json!({"description": "Some occurrences conflict (listed in `conflicts`); nothing was changed.",
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/SeriesConflict"}}}});
    let series_errors = |ok: &str, ok_body: Value| {
        let mut r = Map::new();
        r.insert(ok.into(), ok_body);
        r.insert(
            "400".into(),
            problem_response("Malformed JSON, invalid fields, a missing or invalid `recurrence`."),
        );
        r.insert(
            "404".into(),
            problem_response("No such series in your clinic."),
        );
        r.insert(
            "408".into(),
            problem_response("The body did not arrive in time."),
        );
        r.insert("409".into(), conflict.clone());
        r.insert("413".into(), problem_response("Body too large."));
        common_errors(&mut r);
        Value::Object(r)
    };
    let all_or_nothing = "All or nothing: when any occurrence would double-book the practitioner or fall outside their working hours (unless `outside_hours`), nothing is changed and the `409` lists every such occurrence in `conflicts`.";
    paths.insert(
        "/api/v1/appointments/series".into(),
        json!({"post": {
            "operationId": "createAppointmentSeries",
            "summary": "Book a recurring series",
            "tags": ["appointments"],
            "description": format!("Books an appointment (its body as for `POST /api/v1/appointments`, `starts_at` the first occurrence) every `every` weeks or months, `count` times or until a date, each at the same time of day in the clinic's time zone. {all_or_nothing} Each occurrence is an appointment of its own (`series_id`, `series_index`), recorded in the audit trail. {}", who(APPOINTMENTS.access.write)),
            "requestBody": {"required": true, "description": "An appointment and its `recurrence`.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AppointmentSeriesInput"}}}},
            "responses": series_errors("201", with_description(json_body("AppointmentSeries"), "The series and every occurrence booked."))
        }}),
    );
    let id_param = json!({"name": "id", "in": "path", "required": true, "description": "The series' id.", "schema": {"type": "string", "format": "uuid"}});
    let mut read = Map::new();
    read.insert(
        "200".into(),
        with_description(
            json_body("AppointmentSeries"),
            "The series and its live occurrences.",
        ),
    );
    read.insert("400".into(), problem_response("Malformed id."));
    read.insert(
        "404".into(),
        problem_response("No such series in your clinic."),
    );
    common_errors(&mut read);
    paths.insert(
        "/api/v1/appointment-series/{id}".into(),
        json!({
            "parameters": [id_param.clone()],
            "get": {
                "operationId": "getAppointmentSeries",
                "summary": "Get a recurring series",
                "tags": ["appointments"],
                "description": format!("How the series repeats and its live occurrences by index, with their times (in the clinic's offset) and status. {ANY_USER}."),
                "responses": read
            },
            "patch": {
                "operationId": "updateAppointmentSeries",
                "summary": "Change a series from one occurrence on",
                "tags": ["appointments"],
                "description": format!("Changes the occurrences still to come (booked or confirmed) from `from_index` on — this and following, or the whole series without it: moves them (`shift_minutes`), resizes them, or sets their practitioner, type, status or `outside_hours`. One occurrence alone is changed with `PATCH /api/v1/appointments/{{id}}`. {all_or_nothing} {}", who(APPOINTMENTS.access.write)),
                "requestBody": {"required": true, "description": "What changes, and from which occurrence.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SeriesChange"}}}},
                "responses": series_errors("200", with_description(json_body("AppointmentSeries"), "The series as it is now."))
            }
        }),
    );
    paths.insert(
        "/api/v1/appointment-series/{id}/cancel".into(),
        json!({
            "parameters": [id_param],
            "post": {
                "operationId": "cancelAppointmentSeries",
                "summary": "Cancel a series from one occurrence on",
                "tags": ["appointments"],
                "description": format!("Cancels the occurrences still to come from `from_index` on (this and following), or the whole series without it; past and already cancelled ones stay as they are. One occurrence alone is cancelled with `PATCH /api/v1/appointments/{{id}}` and `\"status\": \"cancelled\"`. {}", who(APPOINTMENTS.access.write)),
                "requestBody": {"required": false, "description": "From which occurrence (empty: all).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SeriesCancel"}}}},
                "responses": series_errors("200", with_description(json_body("AppointmentSeries"), "The series as it is now."))
            }
        }),
    );

    // An invoice's payments.
    let doc_id = json!({"name": "id", "in": "path", "required": true, "description": "The invoice's id.", "schema": {"type": "string", "format": "uuid"}});
    let mut list = Map::new();
    list.insert(
        "200".into(),
        with_description(
            json_body("PaymentPage"),
            "One page of the invoice's payments.",
        ),
    );
    list.insert("400".into(), problem_response("Invalid query parameter."));
    common_errors(&mut list);
    let mut record = Map::new();
    record.insert(
        "201".into(),
        with_description(json_body("Payment"), "Recorded."),
    );
    record.insert("400".into(), problem_response("Malformed JSON or invalid fields, or a `document_id` other than the invoice in the path."));
    record.insert(
        "408".into(),
        problem_response("The body did not arrive in time."),
    );
    record.insert(
        "409".into(),
        problem_response(
            "Not an issued invoice, or more than its balance (overpayment is refused).",
        ),
    );
    record.insert("413".into(), problem_response("Body too large."));
    common_errors(&mut record);
    paths.insert(
        "/api/v1/documents/{id}/payments".into(),
        json!({
            "parameters": [doc_id],
            "get": {
                "operationId": "listInvoicePayments",
                "summary": "List an invoice's payments",
                "tags": ["payments"],
                "description": format!("The payments recorded against one invoice, as `GET /api/v1/payments?document_id=` lists them. {ANY_USER}."),
                "parameters": [
                    query_param("limit", json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20})),
                    cursor_param()
                ],
                "responses": list
            },
            "post": {
                "operationId": "recordInvoicePayment",
                "summary": "Record a payment",
                "tags": ["payments"],
                "description": format!("Records a payment (amount, method, date, reference) against an issued invoice; partial payments add up, and one over the balance is refused (`409`), also when payments arrive at the same moment. The invoice becomes `paid` at zero balance. {}", who(PAYMENTS.access.write)),
                "requestBody": {"required": true, "description": "The payment (`document_id` is the invoice in the path).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PaymentInput"}}}},
                "responses": record
            }
        }),
    );

    // A document as PDF, beside its JSON.
    if let Some(ok) = paths
        .get_mut("/api/v1/documents/{id}")
        .and_then(|p| p["get"]["responses"]["200"]["content"].as_object_mut())
    {
        ok.insert(
            "application/pdf".into(),
            json!({"schema": {"type": "string", "format": "binary", "description": "The quote, invoice or credit note printed (`Accept: application/pdf`): the clinic's legal identity, the lines, the VAT breakdown, the totals and, for an invoice, its payments and balance."}}),
        );
    }
}

/// The document's tags, in reading order, each with what it groups.
/// API clients for integrations and the OAuth 2.0 client credentials grant.
fn api_client_paths(paths: &mut Map<String, Value>, schemas: &mut Map<String, Value>) {
    let role = json!({"type": "string", "enum": ["admin", "practitioner", "staff"]});
    schemas.insert(
        "ApiClient".into(),
        json!({
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid", "description": "The client's id: the subject of its access tokens, and the `user_id` of its accesses in the audit trail."},
                "client_id": {"type": "string", "description": "What the client authenticates with, together with its secret."},
                "name": {"type": "string"},
                "role": role.clone(),
                "created_at": {"type": "string", "format": "date-time"},
                "revoked_at": {"type": ["string", "null"], "format": "date-time"}
            },
            "required": ["id", "client_id", "name", "role", "created_at", "revoked_at"]
        }),
    );
    schemas.insert(
        "NewApiClient".into(),
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "role": role.clone()
            },
            "required": ["name", "role"],
            "additionalProperties": false
        }),
    );
    schemas.insert(
        "ApiClientCredentials".into(),
        json!({
            "type": "object",
            "properties": {
                "id": {"type": "string", "format": "uuid"},
                "client_id": {"type": "string"},
                "client_secret": {"type": "string", "description": "Shown this once; only its hash is kept."},
                "name": {"type": "string"},
                "role": role
            },
            "required": ["id", "client_id", "client_secret", "name", "role"]
        }),
    );
    schemas.insert(
        "ApiClientPage".into(),
        json!({
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": {"$ref": "#/components/schemas/ApiClient"}},
                "next_cursor": {"type": ["string", "null"]}
            },
            "required": ["data", "next_cursor"]
        }),
    );
    schemas.insert(
        "ClientCredentialsRequest".into(),
        json!({
            "type": "object",
            "properties": {
                "grant_type": {"type": "string", "enum": ["client_credentials"]},
                "client_id": {"type": "string", "description": "Unless sent by HTTP Basic."},
                "client_secret": {"type": "string", "description": "Unless sent by HTTP Basic."}
            },
            "required": ["grant_type"]
        }),
    );
    schemas.insert(
        "ClientCredentialsToken".into(),
        json!({
            "type": "object",
            "properties": {
                "access_token": {"type": "string"},
                "token_type": {"type": "string", "enum": ["Bearer"]},
                "expires_in": {"type": "integer", "description": "Seconds the access token is valid for."}
            },
            "required": ["access_token", "token_type", "expires_in"]
        }),
    );
    schemas.insert(
        "OAuthError".into(),
        json!({
            "type": "object",
            "description": "An RFC 6749 §5.2 error (not problem+json).",
            "properties": {
                "error": {"type": "string", "enum": ["invalid_request", "invalid_client", "unsupported_grant_type"]}
            },
            "required": ["error"]
        }),
    );
    let responses = |ok: &str, body: Value, extra: &[(&str, &str)]| {
        let mut r = Map::new();
        r.insert(ok.into(), body);
        common_errors(&mut r);
        r.insert(
            "403".into(),
            problem_response("Only a clinic admin can manage API clients."),
        );
        for (code, d) in extra {
            r.insert((*code).into(), problem_response(d));
        }
        Value::Object(r)
    };
    paths.insert(
        "/api/v1/api-clients".into(),
        json!({
            "get": {
                "operationId": "listApiClients",
                "summary": "List API clients",
                "description": "Every API client of your clinic, revoked ones included, without secrets. Clinic admins only; other roles get `403`.",
                "tags": ["api-clients"],
                "responses": responses("200", with_description(json_body("ApiClientPage"), "Your clinic's API clients."), &[])
            },
            "post": {
                "operationId": "createApiClient",
                "summary": "Create an API client",
                "description": "Creates client credentials for an integration, with a role (`admin`, `practitioner` or `staff`: what its tokens may see and do, as for a user of that role). The answer carries `client_secret` this once; only its hash is kept. The client gets access tokens from `POST /api/v1/oauth/token`. Clinic admins only; other roles get `403`. Recorded in the audit trail.",
                "tags": ["api-clients"],
                "requestBody": with_description(json_body("NewApiClient"), "The new client."),
                "responses": responses("201", with_description(json_body("ApiClientCredentials"), "Created."), &[
                    ("400", "Invalid input."),
                    ("408", "The body did not arrive in time."),
                    ("413", "Body too large.")
                ])
            }
        }),
    );
    paths.insert(
        "/api/v1/api-clients/{id}/revoke".into(),
        json!({
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
            "post": {
                "operationId": "revokeApiClient",
                "summary": "Revoke an API client",
                "description": "Revokes an API client: it gets no more tokens, and its access tokens are refused within a second on every gateway and worker. Revoking a revoked client changes nothing more. Clinic admins only; other roles get `403`. Recorded in the audit trail.",
                "tags": ["api-clients"],
                "responses": responses("200", with_description(json_body("ApiClient"), "The client."), &[
                    ("400", "Malformed id."),
                    ("404", "No such API client in your clinic.")
                ])
            }
        }),
    );
    let oauth_error = |d: &str| json!({"description": d, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}}});
    paths.insert(
        "/api/v1/oauth/token".into(),
        json!({
            "post": {
                "operationId": "issueClientToken",
                "summary": "Get an access token for an API client",
                "description": "The OAuth 2.0 client credentials grant (RFC 6749 §4.4): an `application/x-www-form-urlencoded` body with `grant_type=client_credentials`, the client authenticated by HTTP Basic (`client_id:client_secret`) or by the `client_id` and `client_secret` form fields (not both). The answer is a short-lived access token with the client's role for its clinic and no refresh token; ask again when it expires. Errors are RFC 6749 §5.2 JSON (`{\"error\": …}`), not problem+json: `400` `invalid_request` (not a form, a field missing or repeated, credentials sent twice) or `unsupported_grant_type`, `401` `invalid_client` (unknown client, wrong secret, revoked client, suspended clinic). Repeated failures for one `client_id` or from one address are `429` with `retry-after` (problem+json). Every attempt is recorded in the clinic's audit trail under the client's `id`, as is everything its tokens do.",
                "tags": ["api-clients"],
                "security": [{"clientBasic": []}, {}],
                "requestBody": {
                    "description": "The grant.",
                    "required": true,
                    "content": {"application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/ClientCredentialsRequest"}}}
                },
                "responses": {
                    "200": with_description(json_body("ClientCredentialsToken"), "The access token."),
                    "400": oauth_error("`invalid_request` or `unsupported_grant_type`."),
                    "401": oauth_error("`invalid_client`."),
                    "408": problem_response("The body did not arrive in time."),
                    "413": problem_response("Body too large."),
                    "429": problem_response("Too many attempts; see retry-after."),
                    "503": problem_response("The central database is unavailable; retry later.")
                }
            }
        }),
    );
}

fn tags() -> Value {
    let mut tags = vec![json!({
        "name": "auth",
        "description": "Registration, sign-in, token refresh and sign-out, and the keys tokens are signed with. No access token needed. Every other operation takes `Authorization: Bearer <access token>`; the clinic always comes from the token."
    })];
    for r in RESOURCES {
        let mut calls =
            String::from("list and search, create, read, replace, update, soft delete and restore");
        for a in r.actions {
            calls.push_str(&format!(", `{}`", a.name));
        }
        if r.name == PATIENTS.name {
            calls.push_str(", `export`, `import`");
        }
        tags.push(json!({
            "name": r.name,
            "description": format!(
                "The clinic's {} (`/api/v1/{}`, schema `{}`): {calls}. Each operation says who may call it.",
                plural(r), r.name, r.title
            )
        }));
    }
    tags.extend([
        json!({"name": "clinic", "description": "The clinic's own settings: its name and legal identity, time zone, locale, currency and numbering."}),
        json!({"name": "availability", "description": "Free slots, from practitioners' working hours, exceptions and bookings, in the clinic's time zone."}),
        json!({"name": "users", "description": "The clinic's user accounts and their roles (`admin`, `practitioner`, `staff`). Clinic admins only, except signing oneself out everywhere."}),
        json!({"name": "api-clients", "description": "Client credentials for integrations (OAuth 2.0 client credentials grant): created and revoked by clinic admins, each with a role; their tokens act as that role and the audit trail names the client."}),
        json!({"name": "audit", "description": "The clinic's audit trail: every read and write of clinic data, sign-ins and user changes. Clinic admins only."}),
        json!({"name": "export", "description": "The whole clinic's data, streamed. Clinic admins only."}),
        json!({"name": "attachments", "description": "Files on a patient (referral letters, scans, signed consents): PDF, PNG, JPEG, TIFF, HEIF/HEIC or plain text, the type found from the bytes, stored encrypted in the clinic's database. Everyone uploads and lists; admins and practitioners download and delete."}),
        json!({"name": "webhooks", "description": "Events pushed to a clinic's integrations, signed as the Standard Webhooks specification says: subscriptions, their deliveries, replay. Clinic admins only."}),
        json!({"name": "meta", "description": "This document."}),
    ]);
    Value::Array(tags)
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    auth_paths(&mut paths);
    auth_schemas(&mut schemas);
    audit_paths(&mut paths, &mut schemas);
    users_paths(&mut paths, &mut schemas);
    api_client_paths(&mut paths, &mut schemas);
    mfa_paths(&mut paths, &mut schemas);
    password_paths(&mut paths, &mut schemas);
    export_paths(&mut paths, &mut schemas);
    import_paths(&mut paths, &mut schemas);
    attachment_paths(&mut paths, &mut schemas);
    webhooks::paths(&mut paths, &mut schemas);
    for r in RESOURCES {
        resource_paths(r, &mut paths);
        resource_schemas(r, &mut schemas);
    }
    clinic_day_paths(&mut paths, &mut schemas);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "MedicalPro API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Practice management for medical clinics. Every clinic's data lives in its own database; the clinic is always taken from the bearer token.\n\nBodies are JSON with snake_case field names; ids are UUIDs, times RFC 3339, dates `YYYY-MM-DD`, money integer cents. Every error is `application/problem+json` (RFC 9457) with at least `type`, `title` and `status`. Every response carries `x-request-id` (the client's own, when it sent a sane one). `429` and `503` answers carry `retry-after`.\n\nRoles: a clinic admin may do everything; a practitioner works with every clinic resource; staff do too, but neither see nor set identifying and clinical fields (`ssn`, appointment notes). Only admins manage users, read the audit trail, export and erase.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "servers": [{"url": "/", "description": "The gateway serving this document."}],
        "security": [{"bearer": []}],
        "tags": tags(),
        "paths": paths,
        "webhooks": webhooks::outgoing(),
        "components": {
            "securitySchemes": {"clientBasic": {
                "type": "http",
                "scheme": "basic",
                "description": "An API client's `client_id` and `client_secret` (RFC 6749 §2.3.1), at `POST /api/v1/oauth/token` only."
            }, "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token from `POST /api/v1/auth/login`, `/refresh` or `/register`, sent as `Authorization: Bearer <access token>`. It names the user, the clinic and the role; it expires after `expires_in` seconds and stops working at once when the user is disabled, changes role or is signed out."
            }},
            "schemas": schemas
        }
    })
}

/// Every `(METHOD, path template)` the document describes.
pub fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            if let Some(item) = item.as_object() {
                for method in ["get", "post", "put", "patch", "delete"] {
                    if item.contains_key(method) {
                        out.push((method.to_ascii_uppercase(), path.clone()));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_ids_are_camel_case() {
        assert_eq!(
            operation_id("list", "consent-templates"),
            "listConsentTemplates"
        );
        assert_eq!(
            operation_id("create", "ConsentTemplate"),
            "createConsentTemplate"
        );
        assert_eq!(operation_id("sign-out", "user"), "signOutUser");
        assert_eq!(operation_id("list", "audit_logs"), "listAuditLogs");
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        assert!(operations(&doc).contains(&("DELETE".into(), "/api/v1/patients/{id}".into())));
        assert!(operations(&doc).contains(&("GET".into(), "/api/v1/export".into())));
    }
}
