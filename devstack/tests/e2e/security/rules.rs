//! The expectation table: which caller may do what to which kind of operation
//! ([`RULES`]), the restricted fields, and how the served OpenAPI document's
//! operations are classified; a unit test holds the table against the code's flags.

use super::*;

/// Who calls: a user of the clinic in one of the three roles, or nobody.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Caller {
    Admin,
    Practitioner,
    Staff,
    Anonymous,
}

/// The columns of [`RULES`], in order.
pub(super) const CALLERS: [Caller; 4] = [
    Caller::Admin,
    Caller::Practitioner,
    Caller::Staff,
    Caller::Anonymous,
];

impl Caller {
    pub(super) fn column(self) -> usize {
        self as usize
    }

    pub(super) fn role(self) -> Option<Role> {
        match self {
            Caller::Admin => Some(Role::Admin),
            Caller::Practitioner => Some(Role::Practitioner),
            Caller::Staff => Some(Role::Staff),
            Caller::Anonymous => None,
        }
    }

    pub(super) fn sees_restricted(self) -> bool {
        SEES_RESTRICTED[self.column()]
    }
}

/// A kind of operation; every operation of the OpenAPI document is one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Kind {
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
pub(super) enum Rule {
    /// Served, with the operation's success status.
    Allow,
    /// `403` problem+json; nothing changes.
    Deny,
    /// `401` problem+json (no token); nothing changes.
    Unauth,
}
pub(super) use Rule::{Allow as A, Deny as D, Unauth as U};

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
pub(super) const RULES: &[(Kind, [Rule; 4])] = &[
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
pub(super) const RESTRICTED: &[(&str, &str)] = &[
    ("patients",     "ssn"),
    ("appointments", "notes"),
];

/// Whether each caller (columns as in [`RULES`]) reads and writes restricted fields.
pub(super) const SEES_RESTRICTED: [bool; 4] = [true, true, false, false];

pub(super) fn rule(kind: Kind, caller: Caller) -> Option<Rule> {
    RULES
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, row)| row[caller.column()])
}

pub(super) fn restricted_fields(r: &Resource) -> Vec<&'static str> {
    RESTRICTED
        .iter()
        .filter(|(res, _)| *res == r.name)
        .map(|(_, f)| *f)
        .collect()
}

pub(super) fn success_status(kind: Kind, r: Option<&Resource>) -> u16 {
    match kind {
        Kind::Create | Kind::CreateUser | Kind::Register => 201,
        Kind::Delete | Kind::Logout => 204,
        Kind::Action(name) if r.and_then(|r| r.action(name)).is_some_and(|a| a.creates) => 201,
        _ => 200,
    }
}

/// One operation of the OpenAPI document.
#[derive(Clone, Debug)]
pub(super) struct Op {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) kind: Kind,
    pub(super) resource: Option<&'static Resource>,
}

/// The kind of an operation from its method and path template.
pub(super) fn classify(method: &str, path: &str) -> Option<(Kind, Option<&'static Resource>)> {
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
pub(super) fn operations(doc: &Value) -> Vec<Op> {
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
pub(super) fn rank(op: &Op) -> usize {
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
pub(super) fn the_expectation_table_agrees_with_the_code() {
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
