//! The security matrix, end to end against a real stack (see `support`).
//!
//! 1. **Role × endpoint.** Every operation of the served OpenAPI document is called
//!    as a clinic admin, a practitioner, a staff member and anonymously, and each
//!    answer is checked against [`RULES`], an explicit table that a unit test holds
//!    against the code's own flags (`RowAction::admin_only`, `Field::restricted`,
//!    `Role::sees_restricted`). A refusal must be `403` (`401` without a token)
//!    problem+json with nothing changed in the clinic database; a success must hide
//!    the [`RESTRICTED`] fields from staff on every read path (get, list, search,
//!    filters, the answers of writes, row actions and export) and show them to the
//!    others; staff can neither set nor clear them. A disabled user is locked out as
//!    the gateway promises: at once for logins and refreshes, within the access
//!    token's lifetime for the token in hand.
//! 2. **Hostile input.** NUL bytes, SQL and LIKE metacharacters, lone UTF-16
//!    surrogate escapes, bidi and zero-width characters, control characters, values
//!    at, just over and far over their limits go into every string field of every
//!    resource (create, PUT and PATCH; child rows; reference lists), every list query
//!    parameter, every path id, undocumented methods, and the users and auth
//!    endpoints. Never a 5xx; a refusal is a 4xx problem+json with nothing changed
//!    in the database; an accepted value reads back exactly (e-mails normalised),
//!    through the API and in the database.
//!
//! Every reply is also checked for other clinics' data: clinics in both regions are
//! seeded with rows full of the same hostile strings plus a marker, and no reply
//! may contain their markers or ids.
//!
//! Layout: the expectation table; [`Api`], the client that judges every reply;
//! [`Site`], a clinic with a user per role; samples generated from
//! `common::resource`; database snapshots; then the tests. Failures are collected,
//! so one run reports every broken cell rather than the first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use common::resource::{self, Child, Field, FieldType, Resource, RESOURCES};
use common::token::Role;
use devstack::{Http, Reply};
use http::Method;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use support::{
    central_db, clinic_db, http, register, signed_worker_get, stack, unique, wait_audit_for, Clinic,
};
use tokio::task::JoinSet;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// The expectation table
// ---------------------------------------------------------------------------

/// Who calls: a user of the clinic in one of the three roles, or nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Caller {
    Admin,
    Practitioner,
    Staff,
    Anonymous,
}

/// The columns of [`RULES`], in order.
const CALLERS: [Caller; 4] = [
    Caller::Admin,
    Caller::Practitioner,
    Caller::Staff,
    Caller::Anonymous,
];

impl Caller {
    fn column(self) -> usize {
        self as usize
    }

    fn role(self) -> Option<Role> {
        match self {
            Caller::Admin => Some(Role::Admin),
            Caller::Practitioner => Some(Role::Practitioner),
            Caller::Staff => Some(Role::Staff),
            Caller::Anonymous => None,
        }
    }

    fn sees_restricted(self) -> bool {
        SEES_RESTRICTED[self.column()]
    }
}

/// A kind of operation; every operation of the OpenAPI document is one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    List,
    Create,
    Get,
    Put,
    Patch,
    Delete,
    Restore,
    /// A resource's own row action (`POST /api/v1/{resource}/{id}/{name}`).
    Action(&'static str),
    /// `GET /api/v1/{resource}/{id}/export` (JSON, or FHIR with `?format=fhir`).
    Export,
    /// `GET /api/v1/export`: the whole clinic, as NDJSON.
    ExportClinic,
    ListUsers,
    CreateUser,
    DisableUser,
    EnableUser,
    ChangeUserRole,
    SignOutUser,
    AuditLogs,
    Login,
    Refresh,
    Logout,
    Register,
    OpenApi,
    Jwks,
}

/// How a caller's request must be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// Served, with the operation's success status.
    Allow,
    /// `403` problem+json; nothing changes.
    Deny,
    /// `401` problem+json (no token); nothing changes.
    Unauth,
}
use Rule::{Allow as A, Deny as D, Unauth as U};

/// THE EXPECTATION TABLE: who may do what. Where each rule comes from:
/// - every role works with every resource (`common::resource` has no per-role
///   resource rule), restricted fields aside (see [`RESTRICTED`]);
/// - row actions with `admin_only` (erase) are for admins only (`worker/src/api.rs`
///   `act`); exporting a patient or the whole clinic is for admins only (`api.rs`
///   `export`, `worker/src/export.rs`);
/// - users and the audit trail are for admins only (`gateway/src/users.rs`,
///   `gateway/src/trail.rs`);
/// - without a token every clinic and admin operation is `401`; the auth endpoints
///   and the document are public.
#[rustfmt::skip]
const RULES: &[(Kind, [Rule; 4])] = &[
    // kind of operation           admin practitioner staff anonymous
    (Kind::List,                   [A,    A,           A,    U]),
    (Kind::Create,                 [A,    A,           A,    U]),
    (Kind::Get,                    [A,    A,           A,    U]),
    (Kind::Put,                    [A,    A,           A,    U]),
    (Kind::Patch,                  [A,    A,           A,    U]),
    (Kind::Delete,                 [A,    A,           A,    U]),
    (Kind::Restore,                [A,    A,           A,    U]),
    (Kind::Action("issue"),        [A,    A,           A,    U]),
    (Kind::Action("convert"),      [A,    A,           A,    U]),
    (Kind::Action("erase"),        [A,    D,           D,    U]),
    (Kind::Export,                 [A,    D,           D,    U]),
    (Kind::ExportClinic,           [A,    D,           D,    U]),
    (Kind::ListUsers,              [A,    D,           D,    U]),
    (Kind::CreateUser,             [A,    D,           D,    U]),
    (Kind::DisableUser,            [A,    D,           D,    U]),
    (Kind::EnableUser,             [A,    D,           D,    U]),
    (Kind::ChangeUserRole,         [A,    D,           D,    U]),
    (Kind::SignOutUser,            [A,    D,           D,    U]),
    (Kind::AuditLogs,              [A,    D,           D,    U]),
    (Kind::Login,                  [A,    A,           A,    A]),
    (Kind::Refresh,                [A,    A,           A,    A]),
    (Kind::Logout,                 [A,    A,           A,    A]),
    (Kind::Register,               [A,    A,           A,    A]),
    (Kind::OpenApi,                [A,    A,           A,    A]),
    (Kind::Jwks,                   [A,    A,           A,    A]),
];

/// Fields outside staff's minimum necessary (README, "Minimum necessary"): absent
/// from every staff read, refused (`403`) in staff writes, never cleared by staff.
#[rustfmt::skip]
const RESTRICTED: &[(&str, &str)] = &[
    ("patients",     "ssn"),
    ("appointments", "notes"),
];

/// Whether each caller (columns as in [`RULES`]) reads and writes restricted fields.
const SEES_RESTRICTED: [bool; 4] = [true, true, false, false];

fn rule(kind: Kind, caller: Caller) -> Option<Rule> {
    RULES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, row)| row[caller.column()])
}

fn restricted_fields(r: &Resource) -> Vec<&'static str> {
    RESTRICTED
        .iter()
        .filter(|(res, _)| *res == r.name)
        .map(|(_, f)| *f)
        .collect()
}

fn success_status(kind: Kind, r: Option<&Resource>) -> u16 {
    match kind {
        Kind::Create | Kind::CreateUser | Kind::Register => 201,
        Kind::Delete | Kind::Logout => 204,
        Kind::Action(name) if r.and_then(|r| r.action(name)).is_some_and(|a| a.creates) => 201,
        _ => 200,
    }
}

/// One operation of the OpenAPI document.
#[derive(Clone, Debug)]
struct Op {
    method: String,
    path: String,
    kind: Kind,
    resource: Option<&'static Resource>,
}

/// The kind of an operation from its method and path template.
fn classify(method: &str, path: &str) -> Option<(Kind, Option<&'static Resource>)> {
    if (method, path) == ("GET", "/.well-known/jwks.json") {
        return Some((Kind::Jwks, None));
    }
    let segments: Vec<&str> = path.strip_prefix("/api/v1/")?.split('/').collect();
    let fixed = match (method, segments.as_slice()) {
        ("POST", ["auth", "login"]) => Some(Kind::Login),
        ("POST", ["auth", "refresh"]) => Some(Kind::Refresh),
        ("POST", ["auth", "logout"]) => Some(Kind::Logout),
        ("POST", ["auth", "register"]) => Some(Kind::Register),
        ("GET", ["openapi.json"]) => Some(Kind::OpenApi),
        ("GET", ["audit-logs"]) => Some(Kind::AuditLogs),
        ("GET", ["export"]) => Some(Kind::ExportClinic),
        ("GET", ["users"]) => Some(Kind::ListUsers),
        ("POST", ["users"]) => Some(Kind::CreateUser),
        ("POST", ["users", "{id}", "disable"]) => Some(Kind::DisableUser),
        ("POST", ["users", "{id}", "enable"]) => Some(Kind::EnableUser),
        ("PATCH", ["users", "{id}"]) => Some(Kind::ChangeUserRole),
        ("POST", ["users", "{id}", "sign-out"]) => Some(Kind::SignOutUser),
        _ => None,
    };
    if let Some(kind) = fixed {
        return Some((kind, None));
    }
    let r = resource::find(segments[0])?;
    let kind = match (method, &segments[1..]) {
        ("GET", []) => Kind::List,
        ("POST", []) => Kind::Create,
        ("GET", ["{id}"]) => Kind::Get,
        ("PUT", ["{id}"]) => Kind::Put,
        ("PATCH", ["{id}"]) => Kind::Patch,
        ("DELETE", ["{id}"]) => Kind::Delete,
        ("POST", ["{id}", "restore"]) => Kind::Restore,
        ("GET", ["{id}", "export"]) => Kind::Export,
        ("POST", ["{id}", action]) => Kind::Action(r.action(action)?.name),
        _ => return None,
    };
    Some((kind, Some(r)))
}

/// Every operation of a document, classified; panics naming any operation the
/// table has no row for (a new endpoint needs its row), and any row of the table
/// no operation uses (a stale row).
fn operations(doc: &Value) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut unknown = Vec::new();
    for (method, path) in common::openapi::operations(doc) {
        match classify(&method, &path) {
            Some((kind, resource)) if rule(kind, Caller::Admin).is_some() => ops.push(Op {
                method,
                path,
                kind,
                resource,
            }),
            _ => unknown.push(format!("{method} {path}")),
        }
    }
    assert!(
        unknown.is_empty(),
        "operations without a row in the expectation table: {unknown:?}"
    );
    for (kind, _) in RULES {
        assert!(
            ops.iter().any(|o| o.kind == *kind),
            "the table has a row for {kind:?} but the document no such operation"
        );
    }
    for r in RESOURCES {
        let mut kinds = vec![
            Kind::List,
            Kind::Create,
            Kind::Get,
            Kind::Put,
            Kind::Patch,
            Kind::Delete,
            Kind::Restore,
        ];
        kinds.extend(r.actions.iter().map(|a| Kind::Action(a.name)));
        for kind in kinds {
            assert!(
                ops.iter()
                    .any(|o| o.kind == kind && o.resource.is_some_and(|x| x.name == r.name)),
                "the document lacks {kind:?} for {}",
                r.name
            );
        }
    }
    ops
}

/// The order a caller's pass runs a resource's operations in: rows are read and
/// changed before they are deleted, and restored after; actions in declared order.
fn rank(op: &Op) -> usize {
    match op.kind {
        Kind::List => 0,
        Kind::Create => 1,
        Kind::Get => 2,
        Kind::Put => 3,
        Kind::Patch => 4,
        Kind::Action(name) => {
            10 + op
                .resource
                .and_then(|r| r.actions.iter().position(|a| a.name == name))
                .unwrap_or(0)
        }
        Kind::Export => 50,
        Kind::Delete => 60,
        Kind::Restore => 61,
        Kind::ListUsers => 100,
        Kind::CreateUser => 101,
        Kind::DisableUser => 102,
        Kind::EnableUser => 103,
        Kind::ChangeUserRole => 111,
        Kind::SignOutUser => 112,
        Kind::Jwks => 113,
        Kind::AuditLogs => 104,
        Kind::Login => 105,
        Kind::Refresh => 106,
        Kind::Logout => 107,
        Kind::Register => 108,
        Kind::OpenApi => 109,
        Kind::ExportClinic => 110,
    }
}

#[test]
fn the_expectation_table_agrees_with_the_code() {
    let in_code: BTreeSet<(&str, &str)> = RESOURCES
        .iter()
        .flat_map(|r| {
            r.fields
                .iter()
                .filter(|f| f.restricted)
                .map(move |f| (r.name, f.name))
        })
        .collect();
    assert_eq!(
        in_code,
        RESTRICTED.iter().copied().collect::<BTreeSet<_>>(),
        "restricted fields in common::resource differ from RESTRICTED"
    );
    for caller in CALLERS {
        if let Some(role) = caller.role() {
            assert_eq!(
                role.sees_restricted(),
                caller.sees_restricted(),
                "{caller:?}"
            );
        }
    }
    for r in RESOURCES {
        for a in r.actions {
            let expected = if a.admin_only {
                [A, D, D, U]
            } else {
                [A, A, A, U]
            };
            let row = CALLERS.map(|c| rule(Kind::Action(a.name), c));
            assert_eq!(row, expected.map(Some), "{}/{}", r.name, a.name);
        }
    }
    operations(&common::openapi::document());
}

// ---------------------------------------------------------------------------
// The client that judges every reply
// ---------------------------------------------------------------------------

/// A request body.
enum Body {
    Empty,
    Json(Value),
    /// JSON text as is: what a `Value` cannot hold (a lone surrogate escape).
    Raw(String),
}

/// The API as the tests see it. Every reply is judged: never a 5xx, every error
/// problem+json, never another clinic's data. Failures are collected.
struct Api {
    http: Http,
    /// Strings only other clinics' data contains: markers, ids, e-mail addresses.
    foreign: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
}

impl Api {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            http: http(),
            foreign: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
        })
    }

    fn fail(&self, message: String) {
        self.failures.lock().unwrap().push(message);
    }

    fn check(&self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.fail(message());
        }
    }

    /// Panics with every failure collected so far.
    fn finish(&self, test: &str) {
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{test}: {} failure(s):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    fn forbid(&self, markers: impl IntoIterator<Item = String>) {
        self.foreign.lock().unwrap().extend(markers);
    }

    async fn send(&self, token: Option<&str>, method: Method, path: &str, body: Body) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let bytes = match body {
            Body::Empty => None,
            Body::Json(v) => Some(Bytes::from(serde_json::to_vec(&v).unwrap())),
            Body::Raw(s) => Some(Bytes::from(s)),
        };
        let what = format!("{method} {}", short(path));
        let reply = self
            .http
            .send(method, path, &headers, bytes)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        self.judge(&what, &reply);
        reply
    }

    async fn get(&self, token: Option<&str>, path: &str) -> Reply {
        self.send(token, Method::GET, path, Body::Empty).await
    }

    async fn post(&self, token: Option<&str>, path: &str, body: Value) -> Reply {
        self.send(token, Method::POST, path, Body::Json(body)).await
    }

    /// What every reply must be.
    fn judge(&self, what: &str, reply: &Reply) {
        let status = reply.status.as_u16();
        self.check(status < 500, || {
            format!("{what}: server error {status}: {}", snippet(reply))
        });
        if status >= 400 {
            let p = reply.json();
            self.check(
                reply.header("content-type") == Some(common::problem::CONTENT_TYPE)
                    && p["status"] == status
                    && p["type"].is_string()
                    && p["title"].is_string(),
                || {
                    format!(
                        "{what}: {status} is not problem+json ({:?}): {}",
                        reply.header("content-type"),
                        snippet(reply)
                    )
                },
            );
        }
        let text = reply.text();
        for marker in self.foreign.lock().unwrap().iter() {
            self.check(!text.contains(marker.as_str()), || {
                format!("{what}: LEAK, the reply holds another clinic's {marker}")
            });
        }
    }

    /// Checks the restricted fields of every row in a successful reply: absent when
    /// `caller` may not see them, present otherwise. Returns the ids of the rows.
    fn check_rows(&self, what: &str, caller: Caller, reply: &Value) -> Vec<String> {
        let mut ids = Vec::new();
        walk_rows(reply, &mut |r, row| {
            ids.push(row["id"].as_str().unwrap_or_default().to_owned());
            for field in restricted_fields(r) {
                let present = row.contains_key(field);
                self.check(present == caller.sees_restricted(), || {
                    let how = if present { "SEES" } else { "does not get" };
                    format!("{what}: {caller:?} {how} restricted `{}.{field}`", r.name)
                });
            }
        });
        ids
    }

    /// Checks that a write's answer holds the values sent (e-mails normalised).
    fn check_echo(&self, what: &str, r: &Resource, sent: &Value, got: &Value) {
        for (name, value) in sent.as_object().into_iter().flatten() {
            let Some(field) = r.field(name) else {
                continue; // child rows: their shapes are checked by the resource tests
            };
            let expected = match field.ty {
                FieldType::Timestamp => continue, // answered with microseconds
                FieldType::Email => json!(value.as_str().unwrap().trim().to_lowercase()),
                _ => value.clone(),
            };
            self.check(got.get(name) == Some(&expected), || {
                format!(
                    "{what}: `{name}` sent {expected}, answered {:?}",
                    got.get(name)
                )
            });
        }
    }
}

fn snippet(reply: &Reply) -> String {
    reply.text().chars().take(300).collect()
}

fn short(s: &str) -> String {
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// Percent-encodes every byte but the unreserved ones.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The resource a JSON object of a reply is a row of: one whose non-restricted
/// fields, children and `id` are all there, and no key it does not know.
fn recognise(obj: &Map<String, Value>) -> Option<&'static Resource> {
    RESOURCES.iter().copied().find(|r| {
        let restricted = restricted_fields(r);
        obj.contains_key("id")
            && obj.keys().all(|k| {
                r.field(k).is_some()
                    || r.child(k).is_some()
                    || resource::SERVER_FIELDS.contains(&k.as_str())
            })
            && r.fields
                .iter()
                .filter(|f| !restricted.contains(&f.name))
                .all(|f| obj.contains_key(f.name))
            && r.children.iter().all(|c| obj.contains_key(c.name))
    })
}

/// Calls `visit` on every resource row anywhere in `value`.
fn walk_rows<'a>(
    value: &'a Value,
    visit: &mut dyn FnMut(&'static Resource, &'a Map<String, Value>),
) {
    match value {
        Value::Object(obj) => {
            if let Some(r) = recognise(obj) {
                visit(r, obj);
            }
            for v in obj.values() {
                walk_rows(v, visit);
            }
        }
        Value::Array(items) => {
            for v in items {
                walk_rows(v, visit);
            }
        }
        _ => {}
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_owned()
}

// ---------------------------------------------------------------------------
// Clinics, users and samples
// ---------------------------------------------------------------------------

/// A user with a live access token.
#[derive(Clone, Debug)]
struct Account {
    id: String,
    email: String,
    password: String,
    token: String,
}

const PASSWORD: &str = "correct horse battery staple";

/// Logs in; the token response.
async fn login(api: &Api, email: &str, password: &str) -> Value {
    let r = api
        .post(
            None,
            "/api/v1/auth/login",
            json!({"email": email, "password": password}),
        )
        .await;
    assert_eq!(r.status, 200, "login {email}: {}", r.text());
    r.json()
}

/// An admin creates a user with `role`, who logs in.
async fn new_user(api: &Api, admin_token: &str, role: Role) -> Account {
    let email = format!("{}@clinic.example", unique(role.as_str()));
    let r = api
        .post(
            Some(admin_token),
            "/api/v1/users",
            json!({"email": email, "password": PASSWORD, "role": role.as_str()}),
        )
        .await;
    assert_eq!(r.status, 201, "create {role:?}: {}", r.text());
    let tokens = login(api, &email, PASSWORD).await;
    Account {
        id: id_of(&r.json()),
        email,
        password: PASSWORD.into(),
        token: tokens["access_token"].as_str().unwrap().to_owned(),
    }
}

/// A clinic: its owner (the admin who registered it), one user per role, and a
/// superuser connection to its database.
struct Site {
    clinic: Clinic,
    users: HashMap<Caller, Account>,
    db: tokio_postgres::Client,
}

impl Site {
    async fn open(api: &Api, region: Option<&str>) -> Self {
        let clinic = register(&api.http, region).await;
        let mut users = HashMap::new();
        for caller in [Caller::Admin, Caller::Practitioner, Caller::Staff] {
            let role = caller.role().unwrap();
            users.insert(caller, new_user(api, &clinic.token, role).await);
        }
        Self {
            db: clinic_db(&clinic).await,
            clinic,
            users,
        }
    }

    fn owner(&self) -> Option<&str> {
        Some(&self.clinic.token)
    }

    fn token(&self, caller: Caller) -> Option<&str> {
        self.users.get(&caller).map(|u| u.token.as_str())
    }
}

/// A live row of each table samples may refer to: table → id.
type Deps = HashMap<&'static str, String>;

static SEQ: AtomicU32 = AtomicU32::new(1);

fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A distinct hour per `seq` (so appointments never overlap), at `minute`.
fn slot(seq: u32, minute: u32) -> String {
    let day = (seq / 24) % 336;
    format!(
        "{}-{:02}-{:02}T{:02}:{minute:02}:00Z",
        2040 + seq / (24 * 336),
        day / 28 + 1,
        day % 28 + 1,
        seq % 24
    )
}

/// The tables a resource's writable fields and child rows refer to.
fn references(r: &'static Resource) -> Vec<&'static str> {
    r.fields
        .iter()
        .chain(r.children.iter().flat_map(|c| c.fields.iter()))
        .filter(|f| !f.read_only)
        .filter_map(|f| match f.ty {
            FieldType::Reference(table) => Some(table),
            FieldType::ReferenceList { target, .. } => resource::find(target).map(|t| t.table),
            _ => None,
        })
        .collect()
}

/// A valid value for a field; `nth` counts the required instants before it (an
/// end comes half an hour after its start).
fn sample_value(f: &Field, deps: &Deps, seq: u32, nth: usize) -> Value {
    let dep = |table: &str| {
        deps.get(table)
            .unwrap_or_else(|| panic!("no sample row of {table}"))
            .clone()
    };
    match f.ty {
        FieldType::Text { .. } => json!(format!("{} {seq}", f.name)),
        FieldType::Email => json!(format!("{}{seq}@example.org", f.name.replace('_', ""))),
        FieldType::Date => json!("1980-02-29"),
        FieldType::Timestamp => json!(slot(seq, if nth == 0 { 0 } else { 30 })),
        FieldType::Integer { min, max } => json!(1.clamp(min, max)),
        FieldType::Boolean => json!(true),
        FieldType::Enum(values) => json!(values[0]),
        FieldType::Reference(table) => json!(dep(table)),
        FieldType::ReferenceList { target, .. } => {
            json!([dep(resource::find(target).unwrap().table)])
        }
    }
}

fn child_sample(c: &Child, deps: &Deps, seq: u32) -> Value {
    let row: Map<String, Value> = c
        .fields
        .iter()
        .filter(|f| !f.read_only)
        .map(|f| (f.name.to_owned(), sample_value(f, deps, seq, 0)))
        .collect();
    Value::Object(row)
}

/// A valid body for `r`, every writable field set (restricted ones only when
/// `restricted`; optional instants left out), one child row per child list.
fn sample_body(r: &'static Resource, deps: &Deps, restricted: bool) -> Value {
    let seq = next_seq();
    let hidden = restricted_fields(r);
    let mut body = Map::new();
    let mut nth = 0;
    for f in r.fields.iter().filter(|f| !f.read_only) {
        if (hidden.contains(&f.name) && !restricted)
            || (f.ty == FieldType::Timestamp && !f.required)
        {
            continue;
        }
        body.insert(f.name.into(), sample_value(f, deps, seq, nth));
        if f.ty == FieldType::Timestamp {
            nth += 1;
        }
    }
    for c in r.children {
        body.insert(c.name.into(), json!([child_sample(c, deps, seq)]));
    }
    Value::Object(body)
}

/// Creates one row of every resource (in reference order) with `token`; every text
/// value goes through `text` (so foreign clinics can be filled with markers).
async fn seed(api: &Api, token: &str, text: &dyn Fn(&Field, &str) -> String) -> Deps {
    let mut deps = Deps::new();
    while deps.len() < RESOURCES.len() {
        let r = RESOURCES
            .iter()
            .copied()
            .find(|r| {
                !deps.contains_key(r.table) && references(r).iter().all(|t| deps.contains_key(t))
            })
            .expect("resource references form no cycle");
        let mut body = sample_body(r, &deps, true);
        for f in r.fields {
            if let (FieldType::Text { .. }, Some(Value::String(s))) = (f.ty, body.get(f.name)) {
                body[f.name] = json!(text(f, s));
            }
        }
        let reply = api
            .post(Some(token), &format!("/api/v1/{}", r.name), body)
            .await;
        assert_eq!(reply.status, 201, "seed {}: {}", r.name, reply.text());
        deps.insert(r.table, id_of(&reply.json()));
    }
    deps
}

/// A clinic in `region` whose rows are full of hostile strings and a marker; the
/// marker, its ids and e-mail are forbidden in every reply of `api` from now on.
async fn plant_foreign(api: &Api, region: &str) -> (Clinic, Deps) {
    let clinic = register(&api.http, Some(region)).await;
    let marker = format!("FOREIGN{}", &Uuid::new_v4().simple().to_string()[..8]);
    let taint = |f: &Field, s: &str| -> String {
        let FieldType::Text { max_len } = f.ty else {
            return s.to_owned();
        };
        let seq = s.rsplit(' ').next().unwrap_or_default();
        format!("' OR 1=1 %_{marker}{seq}")
            .chars()
            .take(max_len)
            .collect()
    };
    let deps = seed(api, &clinic.token, &taint).await;
    let mut forbidden = vec![
        marker,
        clinic.id.clone(),
        clinic.user_id.clone(),
        clinic.email.clone(),
    ];
    forbidden.extend(deps.values().cloned());
    api.forbid(forbidden);
    (clinic, deps)
}

// ---------------------------------------------------------------------------
// Database snapshots
// ---------------------------------------------------------------------------

/// Everything stored for one row: the row, its child rows and its links (one
/// round trip).
async fn snapshot(db: &tokio_postgres::Client, r: &Resource, id: &str) -> String {
    let id: Uuid = id.parse().unwrap();
    let mut parts = vec![format!(
        "(SELECT row_to_json(t)::text FROM {} t WHERE t.id = $1)",
        r.table
    )];
    for c in r.children {
        parts.push(format!(
            "(SELECT json_agg(c ORDER BY c.position)::text FROM {} c WHERE c.{} = $1)",
            c.table, c.parent_column
        ));
    }
    for f in r.fields {
        if let FieldType::ReferenceList {
            link_table,
            owner_column,
            target_column,
            ..
        } = f.ty
        {
            parts.push(format!(
                "(SELECT json_agg(l.{target_column} ORDER BY l.{target_column})::text FROM {link_table} l WHERE l.{owner_column} = $1)"
            ));
        }
    }
    let sql = format!("SELECT concat_ws(E'\\n', {})", parts.join(", "));
    db.query_one(sql.as_str(), &[&id]).await.unwrap().get(0)
}

/// Row counts of a resource's tables (its own, child and link tables), deleted rows
/// included (one round trip).
async fn counts(db: &tokio_postgres::Client, r: &Resource) -> String {
    let mut tables = vec![r.table];
    tables.extend(r.children.iter().map(|c| c.table));
    tables.extend(r.fields.iter().filter_map(|f| match f.ty {
        FieldType::ReferenceList { link_table, .. } => Some(link_table),
        _ => None,
    }));
    let parts: Vec<String> = tables
        .iter()
        .map(|t| format!("(SELECT count(*) FROM {t})"))
        .collect();
    let sql = format!("SELECT concat_ws(' ', {})", parts.join(", "));
    db.query_one(sql.as_str(), &[]).await.unwrap().get(0)
}

/// How many rows of `r` hold the first text value of `body` (sample text values are
/// distinct).
async fn stored_like(db: &tokio_postgres::Client, r: &Resource, body: &Value) -> i64 {
    let plain = |f: &&Field| matches!(f.ty, FieldType::Text { .. }) && !f.encrypted;
    if let Some((name, value)) = r
        .fields
        .iter()
        .filter(plain)
        .find_map(|f| Some((f.name, body.get(f.name)?.as_str()?)))
    {
        let sql = format!("SELECT count(*) FROM {} WHERE {name} = $1", r.table);
        return db.query_one(sql.as_str(), &[&value]).await.unwrap().get(0);
    }
    // Its only free text is sealed: the rows holding the child rows' text…
    if let Some((c, name, value)) = r.children.iter().find_map(|c| {
        let f = c.fields.iter().find(plain)?;
        let value = body.get(c.name)?.get(0)?.get(f.name)?.as_str()?;
        Some((c, f.name, value))
    }) {
        let sql = format!(
            "SELECT count(*) FROM {} t WHERE EXISTS (SELECT 1 FROM {} c WHERE c.{} = t.id AND c.{name} = $1)",
            r.table, c.table, c.parent_column
        );
        return db.query_one(sql.as_str(), &[&value]).await.unwrap().get(0);
    }
    // …or its (distinct) sample instant.
    let (name, value) = r
        .fields
        .iter()
        .filter(|f| f.ty == FieldType::Timestamp)
        .find_map(|f| Some((f.name, body.get(f.name)?.as_str()?)))
        .expect("a body with a text value or an instant");
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {name} = $1::text::timestamptz",
        r.table
    );
    db.query_one(sql.as_str(), &[&value]).await.unwrap().get(0)
}

// ---------------------------------------------------------------------------
// 1. The role × endpoint matrix
// ---------------------------------------------------------------------------

/// One caller's pass through every operation.
struct Pass {
    api: Arc<Api>,
    site: Arc<Site>,
    deps: Arc<Deps>,
    caller: Caller,
}

/// What a pass carries from one global operation to the next.
struct Session {
    refresh: Option<String>,
    central: tokio_postgres::Client,
}

impl Pass {
    fn token(&self) -> Option<&str> {
        self.site.token(self.caller)
    }

    fn label(&self, op: &Op, variant: &str) -> String {
        format!("{:?} {} {} [{variant}]", self.caller, op.method, op.path)
    }

    /// Sends a request and checks its status against `rule`; the JSON body when
    /// served.
    async fn attempt(
        &self,
        op: &Op,
        variant: &str,
        rule: Rule,
        method: Method,
        path: &str,
        body: Body,
    ) -> Option<Value> {
        self.attempt_reply(op, variant, rule, method, path, body)
            .await
            .map(|reply| reply.json())
    }

    /// [`Pass::attempt`], answering the whole reply.
    async fn attempt_reply(
        &self,
        op: &Op,
        variant: &str,
        rule: Rule,
        method: Method,
        path: &str,
        body: Body,
    ) -> Option<Reply> {
        let reply = self.api.send(self.token(), method, path, body).await;
        let want = match rule {
            Rule::Allow => success_status(op.kind, op.resource),
            Rule::Deny => 403,
            Rule::Unauth => 401,
        };
        let got = reply.status.as_u16();
        if got != want {
            self.api.fail(format!(
                "{}: expected {want}, got {got}: {}",
                self.label(op, variant),
                snippet(&reply)
            ));
            return None;
        }
        (rule == Rule::Allow).then_some(reply)
    }

    /// The row as its clinic's owner sees it (restricted fields included).
    async fn owner_view(&self, r: &Resource, id: &str) -> Value {
        let path = format!("/api/v1/{}/{id}", r.name);
        self.api.get(self.site.owner(), &path).await.json()
    }

    async fn run(self, ops: Arc<Vec<Op>>) {
        for r in RESOURCES {
            let mut mine: Vec<&Op> = ops
                .iter()
                .filter(|o| o.resource.is_some_and(|x| x.name == r.name))
                .collect();
            mine.sort_by_key(|o| rank(o));
            // The row the per-row operations work on: the owner's, restricted fields
            // filled, so that hiding them is observable.
            let reply = self
                .api
                .post(
                    self.site.owner(),
                    &format!("/api/v1/{}", r.name),
                    sample_body(r, &self.deps, true),
                )
                .await;
            assert_eq!(reply.status, 201, "{}: {}", r.name, reply.text());
            let target = reply.json();
            for op in mine {
                self.resource_op(op, r, &target).await;
            }
        }
        let mut global: Vec<&Op> = ops.iter().filter(|o| o.resource.is_none()).collect();
        global.sort_by_key(|o| rank(o));
        let victim = new_user(&self.api, &self.site.clinic.token, Role::Staff).await;
        let mut session = Session {
            refresh: None,
            central: central_db().await,
        };
        for op in global {
            self.global_op(op, &victim, &mut session).await;
        }
    }

    /// The list requests of the matrix: all rows, a search, and each filter with the
    /// target's own value (a restricted filter is refused to callers who may not
    /// see the field).
    fn list_variants(
        &self,
        r: &Resource,
        target: &Value,
        rule: Rule,
    ) -> Vec<(String, String, Rule)> {
        let mut out = vec![("all".to_owned(), "limit=100".to_owned(), rule)];
        if let Some(f) = r.fields.iter().find(|f| f.searchable) {
            let q = target[f.name].as_str().unwrap();
            out.push(("search".into(), format!("q={}&limit=100", enc(q)), rule));
        }
        let hidden = restricted_fields(r);
        for f in r.fields.iter().filter(|f| f.filterable || f.range) {
            let value = match &target[f.name] {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            let key = if f.range {
                format!("{}_from", f.name)
            } else {
                f.name.to_owned()
            };
            let rule = if hidden.contains(&f.name) && rule == A && !self.caller.sees_restricted() {
                D
            } else {
                rule
            };
            out.push((
                format!("filter {key}"),
                format!("{key}={}&limit=100", enc(&value)),
                rule,
            ));
        }
        out
    }

    async fn resource_op(&self, op: &Op, r: &'static Resource, target: &Value) {
        let rule = rule(op.kind, self.caller).unwrap();
        let id = id_of(target);
        let item = format!("/api/v1/{}/{id}", r.name);
        let collection = format!("/api/v1/{}", r.name);
        let sees = self.caller.sees_restricted();
        let hidden = restricted_fields(r);
        let db = &self.site.db;
        // Whatever is refused changes nothing.
        let before = if rule == A {
            None
        } else {
            Some(snapshot(db, r, &id).await)
        };
        match op.kind {
            Kind::List => {
                for (variant, query, rule) in self.list_variants(r, target, rule) {
                    let path = format!("{collection}?{query}");
                    let label = self.label(op, &variant);
                    let served = self
                        .attempt(op, &variant, rule, Method::GET, &path, Body::Empty)
                        .await;
                    if let Some(v) = served {
                        let ids = self.api.check_rows(&label, self.caller, &v);
                        self.api.check(ids.contains(&id), || {
                            format!("{label}: the target row is not listed")
                        });
                    }
                }
            }
            Kind::Create => {
                let body = sample_body(r, &self.deps, sees);
                let label = self.label(op, "create");
                let served = self
                    .attempt(
                        op,
                        "create",
                        rule,
                        Method::POST,
                        &collection,
                        Body::Json(body.clone()),
                    )
                    .await;
                if let Some(v) = served {
                    self.api.check_rows(&label, self.caller, &v);
                    self.api.check_echo(&label, r, &body, &v);
                }
                if !hidden.is_empty() && self.caller.role().is_some() && !sees {
                    let with = sample_body(r, &self.deps, true);
                    self.attempt(
                        op,
                        "with restricted fields",
                        D,
                        Method::POST,
                        &collection,
                        Body::Json(with.clone()),
                    )
                    .await;
                    // Other passes create rows meanwhile: look for this body's own
                    // (distinct) text.
                    self.api.check(stored_like(db, r, &with).await == 0, || {
                        format!("{label}: a refused create stored a row")
                    });
                }
            }
            Kind::Get | Kind::Restore | Kind::Export | Kind::Action(_) => {
                let (method, path) = match op.kind {
                    Kind::Get => (Method::GET, item.clone()),
                    Kind::Export => (Method::GET, format!("{item}/export")),
                    Kind::Restore => (Method::POST, format!("{item}/restore")),
                    Kind::Action(name) => (Method::POST, format!("{item}/{name}")),
                    _ => unreachable!(),
                };
                let label = self.label(op, "target row");
                if let Some(v) = self
                    .attempt(op, "target row", rule, method, &path, Body::Empty)
                    .await
                {
                    let ids = self.api.check_rows(&label, self.caller, &v);
                    let creates = success_status(op.kind, Some(r)) == 201;
                    self.api
                        .check(ids.contains(&id) || (creates && !ids.is_empty()), || {
                            format!("{label}: the answer holds no row")
                        });
                }
                if op.kind == Kind::Export {
                    // The same export as a FHIR bundle: the same rule.
                    let path = format!("{path}?format=fhir");
                    let served = self
                        .attempt_reply(op, "FHIR", rule, Method::GET, &path, Body::Empty)
                        .await;
                    if let Some(reply) = served {
                        self.api.check(reply.text().contains(&id), || {
                            format!("{}: the bundle lacks the row", self.label(op, "FHIR"))
                        });
                    }
                }
            }
            Kind::Put | Kind::Patch => self.write(op, r, rule, &id).await,
            Kind::Delete => {
                let served = self
                    .attempt(op, "target row", rule, Method::DELETE, &item, Body::Empty)
                    .await;
                if served.is_some() {
                    let gone = self.api.get(self.site.owner(), &item).await;
                    self.api.check(gone.status == 404, || {
                        format!("{}: still readable", self.label(op, "delete"))
                    });
                }
            }
            _ => unreachable!("{op:?} is not a resource operation"),
        }
        if let Some(before) = before {
            self.api.check(snapshot(db, r, &id).await == before, || {
                format!(
                    "{}: refused, yet the row changed",
                    self.label(op, "target row")
                )
            });
        }
    }

    /// PUT or PATCH: a caller's own fields are written; restricted fields are written
    /// by those who see them, refused to the others and never cleared by them.
    async fn write(&self, op: &Op, r: &'static Resource, rule: Rule, id: &str) {
        let method = Method::from_bytes(op.method.as_bytes()).unwrap();
        let item = format!("/api/v1/{}/{id}", r.name);
        let sees = self.caller.sees_restricted();
        let hidden = restricted_fields(r);
        let guarded = !hidden.is_empty() && self.caller.role().is_some() && !sees;
        let label = self.label(op, "own fields");
        let owner_before = self.owner_view(r, id).await;
        let body = sample_body(r, &self.deps, sees);
        let served = self
            .attempt(
                op,
                "own fields",
                rule,
                method.clone(),
                &item,
                Body::Json(body.clone()),
            )
            .await;
        if let Some(v) = served {
            self.api.check_rows(&label, self.caller, &v);
            self.api.check_echo(&label, r, &body, &v);
        }
        if !guarded {
            return;
        }
        let unchanged = |after: &Value, what: &str| {
            for f in &hidden {
                self.api.check(after[*f] == owner_before[*f], || {
                    format!(
                        "{}: {:?} changed `{}.{f}`",
                        self.label(op, what),
                        self.caller,
                        r.name
                    )
                });
            }
        };
        unchanged(&self.owner_view(r, id).await, "own fields");
        for f in &hidden {
            // Setting it: refused, nothing changes.
            let before = snapshot(&self.site.db, r, id).await;
            let mut with = if method == Method::PATCH {
                json!({})
            } else {
                sample_body(r, &self.deps, false)
            };
            with[*f] = json!(format!("set by staff {}", next_seq()));
            let variant = format!("setting `{f}`");
            self.attempt(
                op,
                &variant,
                D,
                method.clone(),
                &item,
                Body::Json(with.clone()),
            )
            .await;
            self.api
                .check(snapshot(&self.site.db, r, id).await == before, || {
                    format!("{}: refused, yet the row changed", self.label(op, &variant))
                });
            // Clearing it: refused or ignored, never applied.
            with[*f] = Value::Null;
            let variant = format!("clearing `{f}`");
            let reply = self
                .api
                .send(self.token(), method.clone(), &item, Body::Json(with))
                .await;
            self.api
                .check(matches!(reply.status.as_u16(), 200 | 403), || {
                    format!("{}: {}", self.label(op, &variant), snippet(&reply))
                });
            if reply.status == 200 {
                self.api.check_rows(&variant, self.caller, &reply.json());
            }
            unchanged(&self.owner_view(r, id).await, &variant);
        }
    }

    async fn global_op(&self, op: &Op, victim: &Account, session: &mut Session) {
        let rule = rule(op.kind, self.caller).unwrap();
        let api = &self.api;
        let central = &session.central;
        let victim_disabled = || async {
            let id: Uuid = victim.id.parse().unwrap();
            central
                .query_one(
                    "SELECT disabled_at IS NOT NULL FROM users WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        };
        // The anonymous column logs in with the owner's account.
        let (email, password) = match self.site.users.get(&self.caller) {
            Some(u) => (u.email.clone(), u.password.clone()),
            None => (
                self.site.clinic.email.clone(),
                self.site.clinic.password.clone(),
            ),
        };
        let label = self.label(op, "");
        match op.kind {
            Kind::ListUsers => {
                if let Some(v) = self
                    .attempt(op, "", rule, Method::GET, "/api/v1/users", Body::Empty)
                    .await
                {
                    let users = v["data"].as_array().cloned().unwrap_or_default();
                    for u in self.site.users.values() {
                        api.check(users.iter().any(|x| x["id"] == u.id.as_str()), || {
                            format!("{label}: {} not listed", u.email)
                        });
                    }
                    let allowed = ["id", "email", "role", "disabled", "created_at"];
                    api.check(
                        users.iter().all(|u| {
                            u.as_object()
                                .is_some_and(|o| o.keys().all(|k| allowed.contains(&k.as_str())))
                        }),
                        || format!("{label}: unexpected user fields: {v}"),
                    );
                }
            }
            Kind::CreateUser => {
                let email = format!("{}@clinic.example", unique("new"));
                let body = json!({"email": email, "password": PASSWORD, "role": "staff"});
                let served = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::POST,
                        "/api/v1/users",
                        Body::Json(body),
                    )
                    .await;
                if let Some(v) = &served {
                    api.check(v["email"] == email.as_str() && v["role"] == "staff", || {
                        format!("{label}: {v}")
                    });
                }
                let stored: i64 = central
                    .query_one("SELECT count(*) FROM users WHERE email = $1", &[&email])
                    .await
                    .unwrap()
                    .get(0);
                api.check(stored == i64::from(served.is_some()), || {
                    format!("{label}: {stored} users stored")
                });
            }
            Kind::DisableUser | Kind::EnableUser => {
                let disable = op.kind == Kind::DisableUser;
                if !disable {
                    let path = format!("/api/v1/users/{}/disable", victim.id);
                    let r = api.post(self.site.owner(), &path, json!({})).await;
                    assert_eq!(r.status, 200, "{}", r.text());
                }
                let action = if disable { "disable" } else { "enable" };
                let path = format!("/api/v1/users/{}/{action}", victim.id);
                let served = self
                    .attempt(op, "", rule, Method::POST, &path, Body::Empty)
                    .await;
                if let Some(v) = &served {
                    api.check(v["disabled"] == disable, || format!("{label}: {v}"));
                }
                // Served: the state the caller asked for; refused: as it was.
                let expected = if served.is_some() { disable } else { !disable };
                api.check(victim_disabled().await == expected, || {
                    format!("{label}: the user's state is wrong afterwards")
                });
                if !disable {
                    let path = format!("/api/v1/users/{}/enable", victim.id);
                    api.post(self.site.owner(), &path, json!({})).await;
                }
            }
            Kind::ExportClinic => {
                let served = self
                    .attempt_reply(op, "", rule, Method::GET, "/api/v1/export", Body::Empty)
                    .await;
                if let Some(reply) = served {
                    let mut rows = 0;
                    for line in reply.text().lines().filter(|l| !l.trim().is_empty()) {
                        let record: Value = serde_json::from_str(line).unwrap_or_default();
                        rows += api.check_rows(&label, self.caller, &record["data"]).len();
                    }
                    api.check(rows > 0, || format!("{label}: no rows exported"));
                }
            }
            Kind::AuditLogs => {
                let path = "/api/v1/audit-logs?limit=5";
                if let Some(v) = self
                    .attempt(op, "", rule, Method::GET, path, Body::Empty)
                    .await
                {
                    api.check(v["data"].is_array(), || format!("{label}: {v}"));
                }
            }
            Kind::Login => {
                let body = json!({"email": email, "password": password});
                if let Some(v) = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::POST,
                        "/api/v1/auth/login",
                        Body::Json(body),
                    )
                    .await
                {
                    session.refresh = v["refresh_token"].as_str().map(str::to_owned);
                }
            }
            Kind::Refresh => {
                let body = json!({"refresh_token": session.refresh.clone().unwrap_or_default()});
                if let Some(v) = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::POST,
                        "/api/v1/auth/refresh",
                        Body::Json(body),
                    )
                    .await
                {
                    session.refresh = v["refresh_token"].as_str().map(str::to_owned);
                }
            }
            Kind::Logout => {
                let token = session.refresh.clone().unwrap_or_default();
                let body = json!({"refresh_token": token});
                let served = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::POST,
                        "/api/v1/auth/logout",
                        Body::Json(body.clone()),
                    )
                    .await;
                if served.is_some() {
                    let again = api.post(None, "/api/v1/auth/refresh", body).await;
                    api.check(again.status == 401, || {
                        format!("{label}: refresh after logout: {}", again.status)
                    });
                }
            }
            Kind::Register => {
                let body = json!({
                    "clinic_name": unique("Matrix clinic"),
                    "email": format!("{}@clinic.example", unique("owner")),
                    "password": PASSWORD,
                });
                self.attempt(
                    op,
                    "",
                    rule,
                    Method::POST,
                    "/api/v1/auth/register",
                    Body::Json(body),
                )
                .await;
            }
            Kind::OpenApi => {
                if let Some(v) = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::GET,
                        "/api/v1/openapi.json",
                        Body::Empty,
                    )
                    .await
                {
                    api.check(v["openapi"].is_string(), || format!("{label}: no document"));
                }
            }
            Kind::Jwks => {
                if let Some(v) = self
                    .attempt(
                        op,
                        "",
                        rule,
                        Method::GET,
                        "/.well-known/jwks.json",
                        Body::Empty,
                    )
                    .await
                {
                    api.check(v["keys"].as_array().is_some_and(|k| !k.is_empty()), || {
                        format!("{label}: no keys")
                    });
                }
            }
            Kind::ChangeUserRole | Kind::SignOutUser => {
                let id: Uuid = victim.id.parse().unwrap();
                let state = || async {
                    let row = central
                        .query_one(
                            "SELECT role, token_version FROM users WHERE id = $1",
                            &[&id],
                        )
                        .await
                        .unwrap();
                    (row.get::<_, String>(0), row.get::<_, i64>(1))
                };
                let before = state().await;
                let (method, path, body) = if op.kind == Kind::ChangeUserRole {
                    (
                        Method::PATCH,
                        format!("/api/v1/users/{}", victim.id),
                        Body::Json(json!({"role": "practitioner"})),
                    )
                } else {
                    (
                        Method::POST,
                        format!("/api/v1/users/{}/sign-out", victim.id),
                        Body::Empty,
                    )
                };
                let served = self.attempt(op, "", rule, method, &path, body).await;
                let after = state().await;
                match served {
                    Some(v) => {
                        api.check(after.1 > before.1, || {
                            format!("{label}: the user's tokens were not revoked")
                        });
                        if op.kind == Kind::ChangeUserRole {
                            api.check(
                                v["role"] == "practitioner" && after.0 == "practitioner",
                                || format!("{label}: {v}"),
                            );
                            let back = format!("/api/v1/users/{}", victim.id);
                            let r = api
                                .send(
                                    self.site.owner(),
                                    Method::PATCH,
                                    &back,
                                    Body::Json(json!({"role": "staff"})),
                                )
                                .await;
                            assert_eq!(r.status, 200, "{}", r.text());
                        }
                    }
                    None => api.check(after == before, || {
                        format!("{label}: refused, yet the user changed: {before:?} → {after:?}")
                    }),
                }
            }
            _ => unreachable!("{op:?} is a resource operation"),
        }
    }
}

#[tokio::test]
async fn every_role_on_every_endpoint() {
    let api = Api::new();
    plant_foreign(&api, "eu-central").await;
    let site = Arc::new(Site::open(&api, Some("eu-west")).await);
    let doc = api.get(None, "/api/v1/openapi.json").await.json();
    let ops = Arc::new(operations(&doc));
    let deps = Arc::new(seed(&api, &site.clinic.token, &|_, s| s.to_owned()).await);
    let mut passes = JoinSet::new();
    for caller in CALLERS {
        let pass = Pass {
            api: api.clone(),
            site: site.clone(),
            deps: deps.clone(),
            caller,
        };
        passes.spawn(pass.run(ops.clone()));
    }
    while let Some(done) = passes.join_next().await {
        done.unwrap();
    }
    api.finish("role × endpoint matrix");
}

/// A disabled user can no longer log in or refresh, its refresh tokens are revoked
/// at once, and every access token it holds stops working within a second, on the
/// gateway and on the worker (a stale or forged twin of it too).
#[tokio::test]
async fn a_disabled_user_is_locked_out() {
    let api = Api::new();
    let owner = register(&api.http, None).await;
    let user = new_user(&api, &owner.token, Role::Staff).await;
    let tokens = login(&api, &user.email, &user.password).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].clone();
    let ok = api.get(Some(&access), "/api/v1/patients").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    // The token carries the lifetime the login announced, at most JWT_EXPIRE (the
    // stack runs with the default, 900 s).
    let payload = access.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(json!(lifetime), tokens["expires_in"]);
    assert!((1..=900).contains(&lifetime), "lifetime {lifetime}");

    let path = format!("/api/v1/users/{}/disable", user.id);
    let disabled = api.post(Some(&owner.token), &path, json!({})).await;
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    assert_eq!(disabled.json()["disabled"], true);
    let at = std::time::Instant::now();

    // Within a second the token in hand is refused.
    loop {
        let r = api.get(Some(&access), "/api/v1/patients").await;
        if r.status == 401 {
            break;
        }
        assert!(
            at.elapsed() < std::time::Duration::from_secs(1),
            "the disabled user's token still answers {} after {:?}",
            r.status,
            at.elapsed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // No login, no refresh, every refresh token revoked.
    let again = json!({"email": user.email, "password": user.password});
    let refused = api.post(None, "/api/v1/auth/login", again).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    let refused = api
        .post(
            None,
            "/api/v1/auth/refresh",
            json!({"refresh_token": refresh}),
        )
        .await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    let user_id: Uuid = user.id.parse().unwrap();
    let live: i64 = central_db()
        .await
        .query_one(
            "SELECT count(*) FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL",
            &[&user_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0, "refresh tokens left unrevoked");

    // A fresh twin of the token (same user and version, signed by a gateway's own
    // key) is refused as well, and so is the token sent to the worker directly
    // with a valid gateway signature: workers revoke on their own.
    let signer = stack().tokens().unwrap();
    let now = common::token::now_secs();
    let mut twin: common::token::Claims = serde_json::from_value(claims.clone()).unwrap();
    twin.iat = now;
    twin.exp = now + 60;
    let twin = signer.sign(&twin).unwrap();
    assert_eq!(api.get(Some(&twin), "/api/v1/patients").await.status, 401);
    let worker = signed_worker_get(&owner, &access, "/api/v1/patients").await;
    assert_eq!(worker.status, 401, "{}", worker.text());
    // The refusals are on the clinic's trail.
    wait_audit_for(&owner.id, "action = 'access' AND outcome = 'revoked'").await;

    // Enabled again, the user logs in; the admin was never affected.
    let path = format!("/api/v1/users/{}/enable", user.id);
    let enabled = api.post(Some(&owner.token), &path, json!({})).await;
    assert_eq!(enabled.json()["disabled"], false, "{}", enabled.text());
    login(&api, &user.email, &user.password).await;
    let ok = api.get(Some(&owner.token), "/api/v1/users").await;
    assert_eq!(ok.status, 200);
    api.finish("disabled user");
}

// ---------------------------------------------------------------------------
// 2. Hostile input
// ---------------------------------------------------------------------------

/// A hostile value for a string.
#[derive(Clone, Debug)]
enum Probe {
    /// A string JSON can carry.
    Str(&'static str, String),
    /// Raw JSON text in place of the string, with what it decodes to if it is valid
    /// (a lone surrogate escape is not; a Rust string cannot even hold one).
    Raw(&'static str, &'static str, Option<&'static str>),
}

impl Probe {
    fn label(&self) -> &'static str {
        match self {
            Probe::Str(label, _) | Probe::Raw(label, _, _) => label,
        }
    }

    /// The string the server receives, when it is one.
    fn decoded(&self) -> Option<String> {
        match self {
            Probe::Str(_, s) => Some(s.clone()),
            Probe::Raw(_, _, decoded) => decoded.map(str::to_owned),
        }
    }
}

/// Where the probe goes in a JSON body before it is serialised.
const PLACEHOLDER: &str = "@@PROBE@@";

/// Serialises `body` with the probe in place of [`PLACEHOLDER`].
fn with_probe(body: &Value, probe: &Probe) -> Body {
    let text = serde_json::to_string(body).unwrap();
    let quoted = format!("\"{PLACEHOLDER}\"");
    let literal = match probe {
        Probe::Str(_, s) => serde_json::to_string(s).unwrap(),
        Probe::Raw(_, raw, _) => (*raw).to_owned(),
    };
    Body::Raw(text.replace(&quoted, &literal))
}

/// Quotes, comment and statement separators, LIKE wildcards and escapes,
/// placeholders, dollar quoting and casts: the telling ones first, so that a cut to
/// a short field's limit keeps them.
const METACHARACTERS: &str =
    "';--\"%_\\ Robert'); DROP TABLE patients;-- ' OR '1'='1 $1 $$ E'\\x00' ::text /* */ \\u0000";

/// The hostile strings for free text of at most `max_len` characters.
fn text_probes(max_len: usize) -> Vec<Probe> {
    use Probe::{Raw, Str};
    let metacharacters = METACHARACTERS.chars().take(max_len).collect();
    vec![
        Str("SQL and LIKE metacharacters", metacharacters),
        Str("NUL inside", "a\u{0}b".into()),
        Raw("lone high surrogate", r#""\ud800""#, None),
        Str(
            "bidi override and zero-width",
            "\u{202E}evil\u{200B}\u{200D}\u{FEFF}txt".into(),
        ),
        Str("one over the limit (2-byte chars)", "é".repeat(max_len + 1)),
        Str(
            "control characters",
            "\u{1}\u{7}\u{1b}[31m\u{7f}\t\r\n".into(),
        ),
        Str("astral and combining", "𝕏🦀 é\u{301} \u{FDFD}".into()),
        Str("whitespace only", "   ".into()),
        Str("at the limit (4-byte chars)", "🦀".repeat(max_len)),
        Str("very long", "x".repeat(100_000)),
        Str("near the body limit", "x".repeat(1_000_000)),
        Raw(
            "lone low surrogate, then high, then an escape",
            r#""x\udfff\ud800\u0041""#,
            None,
        ),
        Raw("valid surrogate pair", r#""\ud83e\udd80""#, Some("🦀")),
    ]
}

/// E-mail-shaped hostile strings, each holding `m` (so they can be told apart).
fn email_probes(m: &str) -> Vec<Probe> {
    use Probe::{Raw, Str};
    vec![
        Str(
            "quote, plus and LIKE in the local part",
            format!("o'brien+%_{m}@Example.ORG"),
        ),
        Str("SQL in the local part", format!("x'--;DROP{m}@example.org")),
        Str("padded and upper case", format!("  Ada{m}@Example.org  ")),
        Str("NUL in the local part", format!("a\u{0}{m}@example.org")),
        Str("trailing NUL", format!("{m}@example.org\u{0}")),
        Str(
            "bidi in the local part",
            format!("a\u{202E}\u{200B}{m}@example.org"),
        ),
        Str(
            "over 254 characters",
            format!("{}{m}@example.org", "a".repeat(250)),
        ),
        Raw(
            "lone surrogate in the local part",
            r#""\ud800@example.org""#,
            None,
        ),
    ]
}

/// What the API must do with a value.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Stored, reading back as this.
    Accept(String),
    /// Refused with a 4xx, nothing stored.
    Reject,
    /// Either, consistently (the rules leave it open).
    Either(String),
}

/// E-mail rules: no NUL, control or white space inside, at most 254 bytes, an `@`;
/// plain ASCII of the usual shape is accepted, trimmed and lower-cased.
fn email_verdict(s: &str) -> Verdict {
    let t = s.trim();
    let shaped = t.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.contains('@') && domain.contains('.')
    });
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) || t.len() > 254 || !shaped {
        Verdict::Reject
    } else if t.is_ascii() {
        Verdict::Accept(t.to_lowercase())
    } else {
        Verdict::Either(t.to_lowercase())
    }
}

fn verdict(f: &Field, probe: &Probe) -> Verdict {
    let Some(s) = probe.decoded() else {
        return Verdict::Reject; // not even valid JSON
    };
    match f.ty {
        FieldType::Text { max_len } => {
            if s.contains('\0')
                || s.chars().count() > max_len
                || (f.required && s.trim().is_empty())
            {
                Verdict::Reject
            } else {
                Verdict::Accept(s)
            }
        }
        FieldType::Email => email_verdict(&s),
        // No hostile string is a date, an instant, an enum value or an id.
        _ => Verdict::Reject,
    }
}

/// Where a string goes in a resource's body.
#[derive(Clone, Copy, Debug)]
enum Slot {
    Field(&'static Field),
    /// An id inside a reference list.
    ListItem(&'static Field),
    ChildField(&'static Child, &'static Field),
}

impl Slot {
    fn field(self) -> &'static Field {
        match self {
            Slot::Field(f) | Slot::ListItem(f) | Slot::ChildField(_, f) => f,
        }
    }

    fn name(self) -> String {
        match self {
            Slot::Field(f) => f.name.into(),
            Slot::ListItem(f) => format!("{}[0]", f.name),
            Slot::ChildField(c, f) => format!("{}[0].{}", c.name, f.name),
        }
    }

    /// Every place a string goes in `r`'s bodies.
    fn all(r: &'static Resource) -> Vec<Slot> {
        let stringy = |f: &Field| {
            !f.read_only && !matches!(f.ty, FieldType::Integer { .. } | FieldType::Boolean)
        };
        let mut slots = Vec::new();
        for f in r.fields.iter().filter(|f| stringy(f)) {
            slots.push(match f.ty {
                FieldType::ReferenceList { .. } => Slot::ListItem(f),
                _ => Slot::Field(f),
            });
        }
        for c in r.children {
            for f in c.fields.iter().filter(|f| stringy(f)) {
                slots.push(Slot::ChildField(c, f));
            }
        }
        slots
    }

    /// The probes for this slot: every text probe for free text; e-mail-shaped
    /// ones for e-mails; for values that are parsed (dates, instants, enum values,
    /// ids), a valid value with SQL or a NUL after it, and the metacharacters.
    fn probes(self, deps: &Deps) -> Vec<Probe> {
        let f = self.field();
        match f.ty {
            FieldType::Text { max_len } => text_probes(max_len),
            FieldType::Email => {
                let mut p = email_probes("");
                p.push(Probe::Str(
                    "SQL and LIKE metacharacters",
                    METACHARACTERS.into(),
                ));
                p
            }
            _ => {
                let valid = sample_value(f, deps, next_seq(), 0);
                let valid = valid.as_str().or(valid[0].as_str()).unwrap().to_owned();
                vec![
                    Probe::Str("a valid value, then SQL", format!("{valid}' OR '1'='1")),
                    Probe::Str("a valid value, then NUL", format!("{valid}\u{0}")),
                    Probe::Str("SQL and LIKE metacharacters", METACHARACTERS.into()),
                ]
            }
        }
    }

    /// Puts [`PLACEHOLDER`] into a body: a whole one (create, PUT) or, for a PATCH,
    /// one holding only this slot.
    fn fill(self, r: &'static Resource, deps: &Deps, patch: bool) -> Value {
        let mut body = if patch {
            json!({})
        } else {
            sample_body(r, deps, true)
        };
        match self {
            Slot::Field(f) => body[f.name] = json!(PLACEHOLDER),
            Slot::ListItem(f) => body[f.name] = json!([PLACEHOLDER]),
            Slot::ChildField(c, f) => {
                let mut row = child_sample(c, deps, next_seq());
                row[f.name] = json!(PLACEHOLDER);
                body[c.name] = json!([row]);
            }
        }
        body
    }

    /// The slot's value in a row.
    fn read(self, row: &Value) -> Value {
        match self {
            Slot::Field(f) => row[f.name].clone(),
            Slot::ListItem(f) => row[f.name][0].clone(),
            Slot::ChildField(c, f) => row[c.name][0][f.name].clone(),
        }
    }
}

/// One resource's probing: its clinic, and the row PUT and PATCH change.
struct Prober {
    api: Arc<Api>,
    site: Arc<Site>,
    deps: Arc<Deps>,
    r: &'static Resource,
    target: String,
}

impl Prober {
    /// Every probe in every slot, by create, PUT and PATCH (bulky values by create
    /// only: the size checks do not depend on the method).
    async fn run(self) {
        for slot in Slot::all(self.r) {
            for probe in slot.probes(&self.deps) {
                let bulky = probe.decoded().is_some_and(|s| s.len() > 50_000);
                for method in [Method::POST, Method::PUT, Method::PATCH] {
                    if method == Method::POST || !bulky {
                        self.once(slot, &probe, method).await;
                    }
                }
            }
        }
    }

    async fn once(&self, slot: Slot, probe: &Probe, method: Method) {
        let (api, db, r) = (&self.api, &self.site.db, self.r);
        let token = self.site.owner();
        let expected = verdict(slot.field(), probe);
        let what = format!(
            "{method} {}.{} ← {} ({})",
            r.name,
            slot.name(),
            probe.label(),
            short(&format!("{expected:?}"))
        );
        let creates = method == Method::POST;
        let collection = format!("/api/v1/{}", r.name);
        let path = if creates {
            collection.clone()
        } else {
            format!("{collection}/{}", self.target)
        };
        let body = with_probe(&slot.fill(r, &self.deps, method == Method::PATCH), probe);
        // What a refusal must leave as it was: the row counts for a create, the
        // row for a PUT or PATCH.
        let state = || async {
            if creates {
                counts(db, r).await
            } else {
                snapshot(db, r, &self.target).await
            }
        };
        // (An accepted value is read back instead.)
        let before = match expected {
            Verdict::Accept(_) => None,
            _ => Some(state().await),
        };
        let reply = api.send(token, method.clone(), &path, body).await;
        let status = reply.status.as_u16();
        let stored = match (&expected, before) {
            (Verdict::Accept(s), _) => s,
            (Verdict::Either(s), _) if reply.status.is_success() => s,
            (_, before) => {
                api.check(matches!(status, 400 | 413), || {
                    format!(
                        "{what}: expected a refusal, got {status}: {}",
                        snippet(&reply)
                    )
                });
                api.check(Some(state().await) == before, || {
                    format!("{what}: refused, yet the database changed")
                });
                return;
            }
        };
        let ok = if creates { 201 } else { 200 };
        if status != ok {
            api.fail(format!(
                "{what}: expected {ok}, got {status}: {}",
                snippet(&reply)
            ));
            return;
        }
        // Read back exactly: in the answer, through GET, in the database.
        let answer = reply.json();
        let id = id_of(&answer);
        let row_path = format!("{collection}/{id}");
        let mut reads = vec![("answer", slot.read(&answer))];
        if creates {
            // (A PUT or PATCH answers with the row read again already.)
            reads.push(("GET", slot.read(&api.get(token, &row_path).await.json())));
        }
        for (source, v) in reads {
            api.check(v == json!(stored), || {
                format!("{what}: the {source} reads back {}", short(&v.to_string()))
            });
        }
        let Slot::Field(f) = slot else {
            return;
        };
        if !f.encrypted && matches!(f.ty, FieldType::Text { .. } | FieldType::Email) {
            let sql = format!("SELECT {}::text FROM {} WHERE id = $1", f.name, r.table);
            let uuid: Uuid = id.parse().unwrap();
            let in_db: Option<String> = db.query_one(sql.as_str(), &[&uuid]).await.unwrap().get(0);
            api.check(in_db.as_deref() == Some(stored.as_str()), || {
                format!("{what}: the database holds {:?}", in_db.map(|s| short(&s)))
            });
        }
        if f.encrypted && stored.len() >= 4 {
            // Sealed: the database holds ciphertext, never the text sent.
            let sql = format!("SELECT {}_enc FROM {} WHERE id = $1", f.name, r.table);
            let uuid: Uuid = id.parse().unwrap();
            let sealed: Option<Vec<u8>> =
                db.query_one(sql.as_str(), &[&uuid]).await.unwrap().get(0);
            let plain = stored.as_bytes();
            api.check(
                sealed
                    .as_ref()
                    .is_some_and(|s| !s.windows(plain.len()).any(|w| w == plain)),
                || format!("{what}: not stored sealed"),
            );
        }
        if creates && matches!(f.ty, FieldType::Text { .. }) {
            // Out of the way of names that must be unique (categories, and a
            // consent template's name and version).
            let fresh = json!({f.name: format!("{} {}", f.name, next_seq())});
            let moved = api
                .send(token, Method::PATCH, &row_path, Body::Json(fresh))
                .await;
            assert_eq!(moved.status, 200, "{}", moved.text());
        }
    }
}

#[tokio::test]
async fn hostile_strings_in_every_field_of_every_resource() {
    let api = Api::new();
    plant_foreign(&api, "eu-central").await;
    plant_foreign(&api, "eu-west").await;
    let clinic = register(&api.http, Some("eu-west")).await;
    let site = Arc::new(Site {
        db: clinic_db(&clinic).await,
        clinic,
        users: HashMap::new(),
    });
    let deps = Arc::new(seed(&api, &site.clinic.token, &|_, s| s.to_owned()).await);
    let mut tasks = JoinSet::new();
    for r in RESOURCES {
        let collection = format!("/api/v1/{}", r.name);
        let target = api
            .post(site.owner(), &collection, sample_body(r, &deps, true))
            .await;
        assert_eq!(target.status, 201, "{}", target.text());
        let prober = Prober {
            api: api.clone(),
            site: site.clone(),
            deps: deps.clone(),
            r,
            target: id_of(&target.json()),
        };
        tasks.spawn(prober.run());
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    api.finish("hostile strings in fields");
}

/// A query-string value: as sent (already encoded) and as the server decodes it.
struct QueryProbe {
    label: &'static str,
    encoded: String,
    decoded: String,
}

fn query_probes() -> Vec<QueryProbe> {
    let plain = |label, s: &str| QueryProbe {
        label,
        encoded: enc(s),
        decoded: s.to_owned(),
    };
    let raw = |label, encoded: &str, decoded: &str| QueryProbe {
        label,
        encoded: encoded.to_owned(),
        decoded: decoded.to_owned(),
    };
    vec![
        plain("quote tautology", "' OR '1'='1"),
        plain("SQL injection", "1; DROP TABLE patients;--"),
        plain("LIKE metacharacters", "%_\\"),
        plain("bidi and zero-width", "\u{202E}\u{200B}x"),
        plain("at the limit", &"x".repeat(200)),
        plain("over the limit", &"x".repeat(201)),
        plain("very long", &"x".repeat(10_000)),
        raw("NUL", "%00", "\0"),
        raw("NUL inside", "a%00b", "a\0b"),
        raw("invalid UTF-8", "%FF%FE", "\u{FFFD}\u{FFFD}"),
        raw(
            "UTF-8 of a lone surrogate",
            "%ED%A0%80",
            "\u{FFFD}\u{FFFD}\u{FFFD}",
        ),
        raw("malformed escapes", "%zz%", "%zz%"),
        raw("plus", "a+b", "a b"),
    ]
}

/// The query probes that matter for values that are parsed rather than searched.
const TELLING: &[&str] = &[
    "quote tautology",
    "NUL",
    "invalid UTF-8",
    "malformed escapes",
    "over the limit",
    "very long",
];

/// A row's searchable values, lower-cased.
fn searchable_text(r: &Resource, row: &Value) -> Vec<String> {
    r.fields
        .iter()
        .filter(|f| f.searchable)
        .filter_map(|f| row[f.name].as_str().map(str::to_lowercase))
        .collect()
}

/// Whether a listed row matches the probe sent as parameter `key`.
fn row_matches(r: &Resource, key: &str, probe: &QueryProbe, row: &Value) -> bool {
    let needle = probe.decoded.to_lowercase();
    if key == "q" {
        // Case folding beyond ASCII is the database's; blank searches match all.
        return !probe.decoded.is_ascii()
            || needle.trim().is_empty()
            || !r.fields.iter().any(|f| f.searchable)
            || searchable_text(r, row).iter().any(|s| s.contains(&needle));
    }
    match r.field(key) {
        Some(f) if matches!(f.ty, FieldType::Text { .. }) => row[key] == probe.decoded.as_str(),
        _ => true,
    }
}

/// Every list query parameter of `r` with every probe; every path id with every
/// method; methods the document does not list for a path.
async fn probe_queries(
    api: Arc<Api>,
    site: Arc<Site>,
    deps: Arc<Deps>,
    foreign: Arc<Deps>,
    r: &'static Resource,
) {
    let token = site.owner();
    let collection = format!("/api/v1/{}", r.name);
    let probes = query_probes();
    let plantable = |p: &QueryProbe| p.decoded.len() < 50 && !p.decoded.contains('\0');
    // Rows whose searchable text holds each probe: a search must find them, and
    // only rows that match.
    let searchable = r.fields.iter().find(|f| f.searchable);
    if let Some(f) = searchable {
        for p in probes.iter().filter(|p| plantable(p)) {
            let mut body = sample_body(r, &deps, true);
            body[f.name] = json!(format!("needle {}", p.decoded));
            let made = api.post(token, &collection, body).await;
            assert_eq!(made.status, 201, "{}", made.text());
        }
    }
    let mut keys = vec![
        "q".to_owned(),
        "limit".into(),
        "cursor".into(),
        "company_id".into(),
    ];
    for f in r.fields {
        if f.filterable {
            keys.push(f.name.into());
        }
        if f.range {
            keys.push(format!("{}_from", f.name));
            keys.push(format!("{}_to", f.name));
        }
    }
    for key in &keys {
        // Every probe for what takes free text (a search, a text filter); the
        // telling ones for what is parsed (limits, cursors, ids, enums, instants).
        let free_text = key == "q"
            || r.field(key)
                .is_some_and(|f| matches!(f.ty, FieldType::Text { .. }));
        for p in probes
            .iter()
            .filter(|p| free_text || TELLING.contains(&p.label))
        {
            let limit = if key == "limit" { "" } else { "&limit=100" };
            let path = format!("{collection}?{key}={}{limit}", p.encoded);
            let what = format!("GET {}?{key}= ← {}", r.name, p.label);
            let reply = api.get(token, &path).await;
            let status = reply.status.as_u16();
            let refused = p.decoded.contains('\0') || p.decoded.len() > 200;
            // A search or an ignored parameter takes any legal string.
            let allowed: &[u16] = match (refused, key == "q" || key == "company_id") {
                (true, _) => &[400],
                (false, true) => &[200],
                (false, false) => &[200, 400],
            };
            if !allowed.contains(&status) {
                api.fail(format!(
                    "{what}: expected {allowed:?}, got {status}: {}",
                    snippet(&reply)
                ));
                continue;
            }
            if status != 200 {
                continue;
            }
            let rows = reply.json()["data"].as_array().cloned().unwrap_or_default();
            for row in &rows {
                api.check(row_matches(r, key, p, row), || {
                    format!(
                        "{what}: listed a row that does not match: {}",
                        short(&row.to_string())
                    )
                });
            }
            if key == "q" && searchable.is_some() && plantable(p) {
                let needle = format!("needle {}", p.decoded.to_lowercase());
                let found = rows
                    .iter()
                    .any(|row| searchable_text(r, row).iter().any(|s| s.contains(&needle)));
                api.check(found, || format!("{what}: the row holding it is not found"));
            }
        }
    }
    // Any string as a parameter name is ignored; a query string over 4 KiB, or a
    // parameter given twice, is refused.
    for p in probes.iter().filter(|p| TELLING.contains(&p.label)) {
        let reply = api
            .get(token, &format!("{collection}?{}=1", p.encoded))
            .await;
        let expected = if p.encoded.len() > common::query::MAX_QUERY_BYTES {
            400
        } else {
            200
        };
        api.check(reply.status == expected, || {
            format!("GET {}?<{}>=1: {}", r.name, p.label, reply.status)
        });
    }
    for twice in [
        "limit=5&limit=6",
        "q=a&q=b",
        "cursor=x&cursor=y",
        "q=a&%71=b",
    ] {
        let reply = api.get(token, &format!("{collection}?{twice}")).await;
        api.check(reply.status == 400, || {
            format!(
                "GET {}?{twice}: {} (a repeated parameter)",
                r.name, reply.status
            )
        });
    }

    // Path ids: refused (400) or not found (404), never served; another clinic's
    // row is 404 exactly like a missing one.
    let theirs = foreign[r.table].clone();
    let mut ids: Vec<(&str, String, bool)> = vec![
        ("another clinic's row", theirs.clone(), true),
        ("missing", Uuid::now_v7().to_string(), true),
        ("RTL before an id", format!("%E2%80%AE{theirs}"), false),
    ];
    let for_ids = ["quote tautology", "NUL", "invalid UTF-8"];
    ids.extend(
        probes
            .iter()
            .filter(|p| for_ids.contains(&p.label))
            .map(|p| (p.label, p.encoded.clone(), false)),
    );
    let mut calls: Vec<(Method, String)> = vec![
        (Method::GET, String::new()),
        (Method::PUT, String::new()),
        (Method::PATCH, String::new()),
        (Method::DELETE, String::new()),
        (Method::POST, "/restore".into()),
        (Method::GET, "/export".into()),
    ];
    calls.extend(
        r.actions
            .iter()
            .map(|a| (Method::POST, format!("/{}", a.name))),
    );
    for (label, id, exact) in &ids {
        for (method, suffix) in &calls {
            let body = match *method {
                Method::PUT => Body::Json(sample_body(r, &deps, true)),
                Method::PATCH => Body::Json(json!({})),
                _ => Body::Empty,
            };
            let path = format!("{collection}/{id}{suffix}");
            let reply = api.send(token, method.clone(), &path, body).await;
            let status = reply.status.as_u16();
            api.check(status == 404 || (!exact && status == 400), || {
                format!(
                    "{method} {}/<{label}>{suffix}: {status}: {}",
                    r.name,
                    snippet(&reply)
                )
            });
        }
    }

    // Methods the document does not list for a path: 405 problem+json.
    let item = format!("{collection}/{}", Uuid::now_v7());
    for (method, path) in [
        (Method::PUT, collection.clone()),
        (Method::DELETE, collection.clone()),
        (Method::PATCH, collection.clone()),
        (Method::POST, item.clone()),
        (Method::DELETE, format!("{item}/restore")),
        (Method::PUT, format!("{item}/restore")),
    ] {
        let reply = api.send(token, method.clone(), &path, Body::Empty).await;
        api.check(reply.status == 405, || {
            format!(
                "{method} {}: expected 405, got {}",
                short(&path),
                reply.status
            )
        });
    }
}

/// Every stored row of a foreign clinic, for checking nothing touched them.
async fn foreign_state(clinic: &Clinic, deps: &Deps) -> Vec<String> {
    let db = clinic_db(clinic).await;
    let mut out = Vec::new();
    for r in RESOURCES {
        out.push(snapshot(&db, r, &deps[r.table]).await);
    }
    out
}

#[tokio::test]
async fn hostile_query_parameters_path_ids_and_methods() {
    let api = Api::new();
    let (other, theirs) = plant_foreign(&api, "eu-west").await;
    let before = foreign_state(&other, &theirs).await;
    let clinic = register(&api.http, Some("eu-west")).await;
    let site = Arc::new(Site {
        db: clinic_db(&clinic).await,
        clinic,
        users: HashMap::new(),
    });
    let deps = Arc::new(seed(&api, &site.clinic.token, &|_, s| s.to_owned()).await);
    let theirs = Arc::new(theirs);
    let mut tasks = JoinSet::new();
    for r in RESOURCES {
        tasks.spawn(probe_queries(
            api.clone(),
            site.clone(),
            deps.clone(),
            theirs.clone(),
            r,
        ));
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(
        foreign_state(&other, &theirs).await,
        before,
        "another clinic's rows changed"
    );
    api.finish("hostile query parameters, ids and methods");
}

/// A distinct marker for values that must be found (or not) in the database.
fn marker() -> String {
    format!("h{}", &Uuid::new_v4().simple().to_string()[..10])
}

/// How many rows of a central table hold `marker` in `column`.
async fn central_count(
    central: &tokio_postgres::Client,
    table: &str,
    column: &str,
    marker: &str,
) -> i64 {
    central
        .query_one(
            format!("SELECT count(*) FROM {table} WHERE {column} LIKE '%' || $1 || '%'").as_str(),
            &[&marker],
        )
        .await
        .unwrap()
        .get(0)
}

/// Password rules: 12 to 128 characters; nothing else is promised about a NUL.
fn password_verdict(probe: &Probe) -> Verdict {
    match probe.decoded() {
        Some(s) if (12..=128).contains(&s.chars().count()) => {
            if s.contains('\0') {
                Verdict::Either(s)
            } else {
                Verdict::Accept(s)
            }
        }
        _ => Verdict::Reject,
    }
}

fn password_probes() -> Vec<Probe> {
    use Probe::{Raw, Str};
    vec![
        Str("SQL injection", "' OR '1'='1'; DROP TABLE users;--".into()),
        Str("NUL inside", "correct horse\u{0}battery".into()),
        Str("bidi and zero-width only", "\u{202E}\u{200B}".repeat(6)),
        Str("128 two-byte characters", "é".repeat(128)),
        Str("129 characters", "é".repeat(129)),
        Str("11 characters", "x".repeat(11)),
        Str("near the body limit", "x".repeat(1_000_000)),
        Raw("lone surrogate", r#""correct horse \ud800 battery""#, None),
    ]
}

/// Users and auth endpoints: e-mail, password, role, ids, login, registration,
/// refresh tokens and audit-trail filters, each with hostile values.
#[tokio::test]
async fn hostile_users_and_auth_input() {
    let api = Api::new();
    let (other, _) = plant_foreign(&api, "eu-central").await;
    let owner = register(&api.http, Some("eu-west")).await;
    let token = Some(owner.token.as_str());
    let central = central_db().await;

    // New users: the e-mail address.
    for i in 0..email_probes("").len() {
        let mk = marker();
        let probe = email_probes(&mk).swap_remove(i);
        let expected = probe
            .decoded()
            .map_or(Verdict::Reject, |s| email_verdict(&s));
        let what = format!("POST users email ← {} ({expected:?})", probe.label());
        let body = json!({"email": PLACEHOLDER, "password": PASSWORD, "role": "staff"});
        let reply = api
            .send(
                token,
                Method::POST,
                "/api/v1/users",
                with_probe(&body, &probe),
            )
            .await;
        let stored = central_count(&central, "users", "email", &mk).await;
        match expected {
            Verdict::Accept(email) | Verdict::Either(email) if reply.status.is_success() => {
                api.check(
                    reply.status == 201 && reply.json()["email"] == email.as_str(),
                    || format!("{what}: {} {}", reply.status, snippet(&reply)),
                );
                api.check(stored == 1, || format!("{what}: {stored} rows"));
                login(&api, &probe.decoded().unwrap(), PASSWORD).await;
            }
            Verdict::Accept(_) => api.fail(format!("{what}: refused: {}", snippet(&reply))),
            _ => {
                api.check(reply.status == 400, || format!("{what}: {}", reply.status));
                api.check(stored == 0, || {
                    format!("{what}: refused, yet {stored} rows")
                });
            }
        }
    }
    // New users: the password, which must then open the account.
    for probe in password_probes() {
        let mk = marker();
        let email = format!("{mk}@clinic.example");
        let expected = password_verdict(&probe);
        let what = format!(
            "POST users password ← {} ({:?})",
            probe.label(),
            short(&format!("{expected:?}"))
        );
        let body = json!({"email": email, "password": PLACEHOLDER, "role": "staff"});
        let reply = api
            .send(
                token,
                Method::POST,
                "/api/v1/users",
                with_probe(&body, &probe),
            )
            .await;
        let stored = central_count(&central, "users", "email", &mk).await;
        match expected {
            Verdict::Accept(password) | Verdict::Either(password) if reply.status.is_success() => {
                api.check(reply.status == 201 && stored == 1, || {
                    format!("{what}: {}", reply.status)
                });
                login(&api, &email, &password).await;
            }
            Verdict::Accept(_) => api.fail(format!("{what}: refused: {}", snippet(&reply))),
            _ => {
                api.check(reply.status == 400, || format!("{what}: {}", reply.status));
                api.check(stored == 0, || {
                    format!("{what}: refused, yet {stored} rows")
                });
            }
        }
    }
    // New users: the role.
    for role in [
        "admin' --",
        "ADMIN",
        "admin\u{0}",
        "owner",
        "",
        "staff OR 1=1",
    ] {
        let mk = marker();
        let body =
            json!({"email": format!("{mk}@clinic.example"), "password": PASSWORD, "role": role});
        let reply = api.post(token, "/api/v1/users", body).await;
        api.check(reply.status == 400, || {
            format!("POST users role {role:?}: {}", reply.status)
        });
        let stored = central_count(&central, "users", "email", &mk).await;
        api.check(stored == 0, || {
            format!("POST users role {role:?}: {stored} rows")
        });
    }
    let listed = api.get(token, "/api/v1/users").await;
    api.check(listed.status == 200, || {
        format!("GET users: {}", listed.status)
    });

    // User ids in paths; another clinic's user is not found, and stays enabled.
    let mut ids: Vec<(&str, String, bool)> = vec![
        ("another clinic's user", other.user_id.clone(), true),
        ("missing", Uuid::now_v7().to_string(), true),
    ];
    ids.extend(
        query_probes()
            .into_iter()
            .map(|p| (p.label, p.encoded, false)),
    );
    for (label, id, exact) in &ids {
        for action in ["disable", "enable"] {
            let reply = api
                .post(token, &format!("/api/v1/users/{id}/{action}"), json!({}))
                .await;
            let status = reply.status.as_u16();
            api.check(status == 404 || (!exact && status == 400), || {
                format!("POST users/<{label}>/{action}: {status}")
            });
        }
    }
    let other_id: Uuid = other.user_id.parse().unwrap();
    let disabled: bool = central
        .query_one(
            "SELECT disabled_at IS NOT NULL FROM users WHERE id = $1",
            &[&other_id],
        )
        .await
        .unwrap()
        .get(0);
    api.check(!disabled, || "another clinic's user was disabled".into());

    // Logins: refused (400/401), never a session. Few reach the throttle (it
    // counts failures per client IP), so the rest of the binary can still log in.
    let logins: Vec<(&str, Body)> = vec![
        (
            "e-mail with an SQL comment",
            Body::Json(
                json!({"email": format!("{}' --", owner.email), "password": owner.password}),
            ),
        ),
        (
            "tautologies",
            Body::Json(json!({"email": "' OR '1'='1", "password": "' OR '1'='1"})),
        ),
        (
            "LIKE wildcards",
            Body::Json(json!({"email": "%", "password": "_"})),
        ),
        (
            "NUL in the e-mail",
            Body::Json(json!({"email": "a\u{0}@example.org", "password": PASSWORD})),
        ),
        (
            "real e-mail, then NUL",
            Body::Json(
                json!({"email": format!("{}\u{0}", owner.email), "password": owner.password}),
            ),
        ),
        (
            "very long e-mail",
            Body::Json(json!({"email": "x".repeat(300), "password": PASSWORD})),
        ),
        (
            "129-character password",
            Body::Json(json!({"email": owner.email, "password": "é".repeat(129)})),
        ),
        (
            "lone surrogate",
            Body::Raw(r#"{"email":"\ud800","password":"x"}"#.into()),
        ),
        (
            "wrong types",
            Body::Json(json!({"email": 1, "password": []})),
        ),
    ];
    for (label, body) in logins {
        let reply = api
            .send(None, Method::POST, "/api/v1/auth/login", body)
            .await;
        api.check(matches!(reply.status.as_u16(), 400 | 401), || {
            format!("login ← {label}: {} {}", reply.status, snippet(&reply))
        });
    }

    // Registration: refused values store nothing; a hostile but legal clinic name
    // and e-mail are stored as sent (trimmed; the e-mail lower-cased).
    type Refusal = (&'static str, &'static str, fn(&str) -> Probe);
    let refusals: Vec<Refusal> = vec![
        ("clinic_name", "NUL", |m| {
            Probe::Str("", format!("Clinic\u{0}{m}"))
        }),
        ("clinic_name", "201 characters", |m| {
            Probe::Str("", format!("{m}{}", "x".repeat(201)))
        }),
        ("clinic_name", "blank", |_| Probe::Str("", "   ".into())),
        ("clinic_name", "lone surrogate", |_| {
            Probe::Raw("", r#""\ud800""#, None)
        }),
        ("email", "NUL", |m| {
            Probe::Str("", format!("{m}\u{0}@example.org"))
        }),
        ("email", "tautology", |m| {
            Probe::Str("", format!("' OR '1'='1 {m}"))
        }),
        ("password", "11 characters", |_| {
            Probe::Str("", "x".repeat(11))
        }),
        ("password", "129 characters", |_| {
            Probe::Str("", "é".repeat(129))
        }),
        ("region", "tautology", |_| {
            Probe::Str("", "eu-west' OR '1'='1".into())
        }),
        ("region", "NUL", |_| Probe::Str("", "eu-west\u{0}".into())),
        ("region", "300 characters", |_| {
            Probe::Str("", "x".repeat(300))
        }),
        ("region", "lone surrogate", |_| {
            Probe::Raw("", r#""eu\ud800""#, None)
        }),
    ];
    for (field, label, make) in refusals {
        let mk = marker();
        let mut body = json!({"clinic_name": format!("Clinic {mk}"), "email": format!("{mk}@clinic.example"), "password": PASSWORD});
        body[field] = json!(PLACEHOLDER);
        let reply = api
            .send(
                None,
                Method::POST,
                "/api/v1/auth/register",
                with_probe(&body, &make(&mk)),
            )
            .await;
        let what = format!("register {field} ← {label}");
        api.check(reply.status == 400, || {
            format!("{what}: {} {}", reply.status, snippet(&reply))
        });
        let companies = central_count(&central, "companies", "name", &mk).await;
        let users = central_count(&central, "users", "email", &mk).await;
        api.check(companies + users == 0, || {
            format!("{what}: refused, yet stored")
        });
    }
    let mk = marker();
    let name = format!("  Robert'); DROP TABLE companies;-- \u{202E}{mk}\u{200B}%_  ");
    let email = format!("O'Hara+%_{mk}@Example.org");
    let password = "' OR '1'='1'; --pass";
    let body = json!({"clinic_name": name, "email": email, "password": password});
    let reply = api.post(None, "/api/v1/auth/register", body).await;
    if reply.status == 201 {
        let clinic: Uuid = reply.json()["clinic_id"].as_str().unwrap().parse().unwrap();
        let row = central
            .query_one("SELECT c.name, u.email FROM companies c JOIN users u ON u.company_id = c.id WHERE c.id = $1", &[&clinic])
            .await
            .unwrap();
        api.check(row.get::<_, String>(0) == name.trim(), || {
            "register: the name changed".into()
        });
        api.check(row.get::<_, String>(1) == email.to_lowercase(), || {
            "register: the e-mail changed".into()
        });
        login(&api, &email, password).await;
    } else {
        api.fail(format!(
            "register with a hostile but legal name: {} {}",
            reply.status,
            snippet(&reply)
        ));
    }

    // Refresh tokens: refused (400/401); logout answers 204 whatever the token.
    for probe in text_probes(200) {
        let body = with_probe(&json!({"refresh_token": PLACEHOLDER}), &probe);
        let reply = api
            .send(None, Method::POST, "/api/v1/auth/refresh", body)
            .await;
        api.check(matches!(reply.status.as_u16(), 400 | 401), || {
            format!("refresh ← {}: {}", probe.label(), reply.status)
        });
        let body = with_probe(&json!({"refresh_token": PLACEHOLDER}), &probe);
        let reply = api
            .send(None, Method::POST, "/api/v1/auth/logout", body)
            .await;
        let valid_json = probe.decoded().is_some();
        api.check(reply.status == if valid_json { 204 } else { 400 }, || {
            format!("logout ← {}: {}", probe.label(), reply.status)
        });
    }

    // Audit-trail filters.
    let keys = [
        "from",
        "to",
        "action",
        "resource",
        "outcome",
        "user_id",
        "resource_id",
        "cursor",
        "limit",
        "clinic_id",
    ];
    for key in keys {
        for p in query_probes() {
            let path = format!("/api/v1/audit-logs?{key}={}", p.encoded);
            let reply = api.get(token, &path).await;
            let status = reply.status.as_u16();
            let refused = p.decoded.contains('\0') || p.decoded.len() > 200;
            let allowed: &[u16] = match (refused, key == "clinic_id") {
                (true, _) => &[400],
                (false, true) => &[200],
                (false, false) => &[200, 400],
            };
            let what = format!("GET audit-logs?{key}= ← {}", p.label);
            api.check(allowed.contains(&status), || format!("{what}: {status}"));
            if status == 200 && ["action", "resource", "outcome"].contains(&key) {
                let entries = reply.json()["data"].as_array().cloned().unwrap_or_default();
                api.check(entries.iter().all(|e| e[key] == p.decoded.as_str()), || {
                    format!("{what}: entries that do not match")
                });
            }
        }
    }
    api.finish("hostile users and auth input");
}
