//! The OpenAPI 3.1 document of the whole public API, built from the resource
//! descriptions so it cannot drift from what the worker serves.

use crate::resource::{Child, Field, FieldType, Resource, RowAction, RESOURCES};
use serde_json::{json, Map, Value};

fn field_schema(field: &Field) -> Value {
    let mut schema = match field.ty {
        FieldType::Text { max_len } => json!({"type": "string", "maxLength": max_len}),
        FieldType::Email => json!({"type": "string", "format": "email", "maxLength": 254}),
        FieldType::Date => json!({"type": "string", "format": "date"}),
        FieldType::Timestamp => json!({"type": "string", "format": "date-time"}),
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
    schemas.insert(
        format!("{}Page", r.title),
        json!({
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": {"$ref": format!("#/components/schemas/{}", r.title)}},
                "next_cursor": {"type": ["string", "null"]}
            },
            "required": ["data", "next_cursor"]
        }),
    );
}

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

fn filter_schema(f: &Field) -> Value {
    match f.ty {
        FieldType::Enum(values) => json!({"type": "string", "enum": values}),
        FieldType::Reference(_) => json!({"type": "string", "format": "uuid"}),
        FieldType::Boolean => json!({"type": "boolean"}),
        FieldType::Integer { .. } => json!({"type": "integer"}),
        _ => json!({"type": "string", "maxLength": 200}),
    }
}

fn resource_paths(r: &Resource, paths: &mut Map<String, Value>) {
    let t = r.title;
    let id_param = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}});
    let mut list_params = vec![
        query_param("q", json!({"type": "string", "maxLength": 200})),
        query_param(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
        ),
        query_param("cursor", json!({"type": "string", "maxLength": 200})),
    ];
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
    let op = |id: String, body: Option<(String, &str)>, responses: Value| -> Value {
        let mut v = json!({"operationId": id, "tags": [r.name], "responses": responses});
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
            ok: ok_body,
            "400": problem_response("Malformed JSON, invalid fields or references."),
            "404": problem_response("No such object in your clinic."),
            "408": problem_response("The body did not arrive in time."),
            "409": problem_response("The change conflicts with the object's state or other data."),
            "413": problem_response("Body too large.")
        })
    };
    paths.insert(
        format!("/api/v1/{}", r.name),
        json!({
            "get": op(format!("list_{}", r.name), None, json!({
                "200": with_description(json_body(&format!("{t}Page")), "One page of results."),
                "400": problem_response("Invalid query parameter.")
            })),
            "post": op(
                format!("create_{}", r.name),
                Some((format!("{t}Input"), "The new object.")),
                write_errors("201", with_description(json_body(t), "Created.")),
            )
        }),
    );
    let mut list_get = paths[&format!("/api/v1/{}", r.name)]["get"].clone();
    list_get["parameters"] = Value::Array(list_params);
    paths[&format!("/api/v1/{}", r.name)]["get"] = list_get;
    paths.insert(
        format!("/api/v1/{}/{{id}}", r.name),
        json!({
            "parameters": [id_param.clone()],
            "get": op(format!("get_{}", r.name), None, json!({
                "200": with_description(json_body(t), "The object."),
                "400": problem_response("Malformed id."),
                "404": problem_response("No such object in your clinic.")
            })),
            "put": op(
                format!("replace_{}", r.name),
                Some((format!("{t}Input"), "The whole object.")),
                write_errors("200", with_description(json_body(t), "Updated.")),
            ),
            "patch": op(
                format!("update_{}", r.name),
                Some((format!("{t}Patch"), "The fields to change.")),
                write_errors("200", with_description(json_body(t), "Updated.")),
            ),
            "delete": op(format!("delete_{}", r.name), None, json!({
                "204": {"description": "Deleted (hidden, kept for the record)."},
                "400": problem_response("Malformed id."),
                "404": problem_response("No such object in your clinic."),
                "409": problem_response("The object can no longer be deleted.")
            }))
        }),
    );
    let mut actions: Vec<(&str, &str, bool)> =
        vec![("restore", "Shows a deleted object again.", false)];
    actions.extend(
        r.actions
            .iter()
            .map(|a: &RowAction| (a.name, a.description, a.creates)),
    );
    for (name, description, creates) in actions {
        let ok = if creates { "201" } else { "200" };
        let mut post = op(
            format!("{name}_{}", r.name),
            None,
            json!({
                ok: with_description(json_body(t), description),
                "400": problem_response("Malformed id, or the object is not ready for this."),
                "404": problem_response("No such object in your clinic."),
                "409": problem_response("The object's state does not allow this.")
            }),
        );
        post["description"] = description.into();
        paths.insert(
            format!("/api/v1/{}/{{id}}/{name}", r.name),
            json!({"parameters": [id_param.clone()], "post": post}),
        );
    }
}

fn auth_paths(paths: &mut Map<String, Value>) {
    let post = |id: &str, body: &str, ok: &str, ok_body: Option<&str>, errors: &[(&str, &str)]| {
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
            "tags": ["auth"],
            "security": [],
            "requestBody": with_description(json_body(body), "Request."),
            "responses": responses
        }})
    };
    paths.insert(
        "/api/v1/auth/register".into(),
        post(
            "register",
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
            "login",
            "LoginRequest",
            "200",
            Some("TokenResponse"),
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
            "refresh",
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
            "logout",
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
            "operationId": "jwks",
            "tags": ["auth"],
            "security": [],
            "description": "The public keys access tokens are signed with (EdDSA, Ed25519; JSON Web Key Set, keys named by `kid`).",
            "responses": {"200": {"description": "The key set.", "content": {"application/jwk-set+json": {"schema": {"$ref": "#/components/schemas/JwkSet"}}}}}
        }}),
    );
    paths.insert(
        "/api/v1/openapi.json".into(),
        json!({"get": {
            "operationId": "openapi",
            "tags": ["meta"],
            "security": [],
            "responses": {"200": {"description": "This document.", "content": {"application/json": {"schema": {"type": "object"}}}}}
        }}),
    );
}

fn auth_schemas(schemas: &mut Map<String, Value>) {
    let s = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    schemas.insert(
        "RegisterRequest".into(),
        s(
            json!({
                "clinic_name": {"type": "string", "minLength": 1, "maxLength": 200},
                "email": {"type": "string", "format": "email", "maxLength": 254},
                "password": {"type": "string", "minLength": 12, "maxLength": 128},
                "region": {"type": ["string", "null"], "maxLength": 64},
                "invite_code": {"type": ["string", "null"], "maxLength": 200, "description": "The single-use sign-up code of an invitation (where sign-up is by invitation)."}
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
                "email": {"type": "string", "maxLength": 254},
                "password": {"type": "string", "maxLength": 128}
            }),
            &["email", "password"],
        ),
    );
    schemas.insert(
        "RefreshRequest".into(),
        s(
            json!({"refresh_token": {"type": "string", "maxLength": 200}}),
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
    let text = json!({"type": "string", "maxLength": 200});
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
            "operationId": "list_audit_logs",
            "tags": ["audit"],
            "description": "Your clinic's audit trail (clinic admins only), newest first.",
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
                "email": {"type": "string", "format": "email", "maxLength": 254},
                "password": {"type": "string", "minLength": 12, "maxLength": 128},
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
                "operationId": "list_users",
                "tags": ["users"],
                "responses": responses("200", with_description(json_body("UserPage"), "Your clinic's users."), &[])
            },
            "post": {
                "operationId": "create_user",
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
                "operationId": "change_user",
                "tags": ["users"],
                "description": "Changes a user's role (clinic admins; never your own). The user's access tokens stop working at once; it signs in again for the new role. The last active admin cannot be demoted.",
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
    for (action, description, conflict) in [
        (
            "disable",
            "Disables a user (never your own account): no more logins or refreshes, its refresh tokens revoked and its access tokens refused at once. The last active admin cannot be disabled.",
            true,
        ),
        ("enable", "Enables a disabled user again (never your own account).", false),
        (
            "sign-out",
            "Ends every session of a user: its access tokens are refused at once and its refresh tokens revoked. Any user may sign itself out everywhere; admins may sign out anyone of the clinic.",
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
                    "operationId": format!("{}_user", action.replace('-', "_")),
                    "tags": ["users"],
                    "description": description,
                    "responses": responses("200", with_description(json_body("User"), "The user."), &extra)
                }
            }),
        );
    }
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
    let names: Vec<&str> = RESOURCES.iter().map(|r| r.name).collect();
    schemas.insert(
        "ExportRecord".into(),
        json!({
            "type": "object",
            "description": "One line of a clinic export: a row of one resource, as `GET /api/v1/{resource}/{id}` shows it.",
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
                "operationId": "export_patient",
                "tags": ["patients"],
                "description": "Everything the clinic holds about one patient (GDPR access and portability). Clinic admins only.",
                "parameters": [query_param("format", json!({"type": "string", "enum": ["json", "fhir"], "default": "json"}))],
                "responses": responses
            }
        }),
    );

    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "Newline-delimited JSON, streamed: one `ExportRecord` per line for every live row of every resource, all read from one consistent snapshot. A body that ends without its final chunk was cut short by a failure and is incomplete.",
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
            "operationId": "export_clinic",
            "tags": ["export"],
            "description": "Everything the clinic holds (portability, backup), streamed. Clinic admins only; one export per clinic at a time; a client that stops reading for a while is cut off. Recorded in the audit trail as `export` on `clinic`.",
            "responses": responses
        }}),
    );
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    auth_paths(&mut paths);
    auth_schemas(&mut schemas);
    audit_paths(&mut paths, &mut schemas);
    users_paths(&mut paths, &mut schemas);
    export_paths(&mut paths, &mut schemas);
    for r in RESOURCES {
        resource_paths(r, &mut paths);
        resource_schemas(r, &mut schemas);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "MedicalPro API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Practice management for medical clinics. Every clinic's data lives in its own database; the clinic is always taken from the bearer token."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
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
