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
    /// `POST /api/v1/patients/import`: patients from CSV or NDJSON.
    ImportPatients,
    /// `POST /api/v1/patients/{id}/attachments`: a file onto a patient.
    UploadAttachment,
    /// `GET /api/v1/patients/{id}/attachments`: the patient's files' metadata.
    ListAttachments,
    /// `GET /api/v1/attachments/{id}`: a file's content.
    DownloadAttachment,
    /// `DELETE /api/v1/attachments/{id}`.
    DeleteAttachment,
    ListUsers,
    CreateUser,
    DisableUser,
    EnableUser,
    ChangeUserRole,
    SignOutUser,
    AuditLogs,
    /// `GET /api/v1/api-clients`.
    ListApiClients,
    /// `POST /api/v1/api-clients`.
    CreateApiClient,
    /// `POST /api/v1/api-clients/{id}/revoke`.
    RevokeApiClient,
    /// `POST /api/v1/oauth/token`: an API client's access token (client credentials).
    ClientToken,
    /// `GET /api/v1/webhook-subscriptions`.
    ListWebhooks,
    /// `POST /api/v1/webhook-subscriptions`.
    CreateWebhook,
    /// `GET /api/v1/webhook-subscriptions/{id}`.
    GetWebhook,
    /// `PATCH /api/v1/webhook-subscriptions/{id}`.
    ChangeWebhook,
    /// `DELETE /api/v1/webhook-subscriptions/{id}`.
    DeleteWebhook,
    /// `POST /api/v1/webhook-subscriptions/{id}/replay`.
    ReplayWebhook,
    /// `GET /api/v1/webhook-subscriptions/{id}/deliveries`.
    WebhookDeliveries,
    /// `GET /api/v1/webhook-events`.
    WebhookEvents,
    Login,
    Refresh,
    Logout,
    Register,
    OpenApi,
    Jwks,
    /// `GET /api/v1/clinic`: the clinic's settings.
    Settings,
    /// `PUT /api/v1/clinic`.
    ChangeSettings,
    /// `GET /api/v1/availability`: free slots.
    Availability,
    /// `POST /api/v1/appointments/series`.
    BookSeries,
    /// `GET /api/v1/appointment-series/{id}`.
    GetSeries,
    /// `PATCH /api/v1/appointment-series/{id}`.
    ChangeSeries,
    /// `POST /api/v1/appointment-series/{id}/cancel`.
    CancelSeries,
    /// `GET /api/v1/documents/{id}/payments`.
    InvoicePayments,
    /// `POST /api/v1/documents/{id}/payments`.
    RecordPayment,
    /// `POST /api/v1/auth/mfa/enroll`: a pending TOTP secret for the caller.
    EnrollMfa,
    /// `POST /api/v1/auth/mfa/confirm`: the pending secret proven, MFA on.
    ConfirmMfa,
    /// `POST /api/v1/auth/mfa/verify`: a sign-in's second step (by `mfa_token`).
    VerifyMfa,
    /// `POST /api/v1/auth/mfa/disable`: the caller's own MFA off.
    DisableMfa,
    /// `POST /api/v1/users/{id}/mfa/reset`.
    ResetUserMfa,
    /// `GET /api/v1/clinic-security`.
    ClinicSecurity,
    /// `PATCH /api/v1/clinic-security`.
    ChangeClinicSecurity,
    /// `POST /api/v1/auth/password`: the caller's own password.
    ChangePassword,
    /// `POST /api/v1/auth/password-reset`: a reset link by e-mail.
    RequestPasswordReset,
    /// `POST /api/v1/auth/password-reset/confirm`: a new password with a link's token.
    ConfirmPasswordReset,
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

impl Rule {
    /// Whether the caller passes the access check.
    pub(super) fn admitted(self) -> bool {
        matches!(self, Rule::Allow)
    }
}

/// THE EXPECTATION TABLE: who may do what. Where each rule comes from:
/// - every role reads every resource, restricted fields aside (see
///   [`RESTRICTED`]); every role writes every resource except those of
///   [`RESOURCE_RULES`], which take precedence over the rows here;
/// - credit notes (`credit`, `cancel`) are for admins only, as is changing the
///   clinic's settings, which everyone reads; free slots are for everyone;
///   recurring series are booked, changed and cancelled by whoever books
///   appointments (everyone), and an invoice's payments are listed and recorded
///   by whoever records payments (everyone);
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
    (Kind::Action("credit"),       [A,    D,           D,    U]),
    (Kind::Action("cancel"),       [A,    D,           D,    U]),
    (Kind::Export,                 [A,    D,           D,    U]),
    (Kind::ExportClinic,           [A,    D,           D,    U]),
    // Importing patients is for admins only (`worker/src/import.rs`).
    (Kind::ImportPatients,         [A,    D,           D,    U]),
    // Attachments (`worker/src/attachments.rs`): everyone uploads and lists what is
    // on file (the front desk scans referral letters and signed forms); the content
    // is clinical, so only clinicians download or delete it.
    (Kind::UploadAttachment,       [A,    A,           A,    U]),
    (Kind::ListAttachments,        [A,    A,           A,    U]),
    (Kind::DownloadAttachment,     [A,    A,           D,    U]),
    (Kind::DeleteAttachment,       [A,    A,           D,    U]),
    (Kind::ListUsers,              [A,    D,           D,    U]),
    (Kind::CreateUser,             [A,    D,           D,    U]),
    (Kind::DisableUser,            [A,    D,           D,    U]),
    (Kind::EnableUser,             [A,    D,           D,    U]),
    (Kind::ChangeUserRole,         [A,    D,           D,    U]),
    (Kind::SignOutUser,            [A,    D,           D,    U]),
    (Kind::AuditLogs,              [A,    D,           D,    U]),
    // API clients (`gateway/src/api_clients.rs`) are managed by admins only; the
    // token endpoint is public (the client's own credentials authenticate it).
    (Kind::ListApiClients,         [A,    D,           D,    U]),
    (Kind::CreateApiClient,        [A,    D,           D,    U]),
    (Kind::RevokeApiClient,        [A,    D,           D,    U]),
    (Kind::ClientToken,            [A,    A,           A,    A]),
    // Webhooks (`worker/src/webhooks/api.rs`) are managed by admins only.
    (Kind::ListWebhooks,           [A,    D,           D,    U]),
    (Kind::CreateWebhook,          [A,    D,           D,    U]),
    (Kind::GetWebhook,             [A,    D,           D,    U]),
    (Kind::ChangeWebhook,          [A,    D,           D,    U]),
    (Kind::DeleteWebhook,          [A,    D,           D,    U]),
    (Kind::ReplayWebhook,          [A,    D,           D,    U]),
    (Kind::WebhookDeliveries,      [A,    D,           D,    U]),
    (Kind::WebhookEvents,          [A,    D,           D,    U]),
    (Kind::Login,                  [A,    A,           A,    A]),
    (Kind::Refresh,                [A,    A,           A,    A]),
    (Kind::Logout,                 [A,    A,           A,    A]),
    (Kind::Register,               [A,    A,           A,    A]),
    (Kind::OpenApi,                [A,    A,           A,    A]),
    (Kind::Jwks,                   [A,    A,           A,    A]),
    // Multi-factor sign-in (`gateway/src/mfa.rs`): every user enrols, confirms and
    // switches off its own; a second step with an `mfa_token` from nowhere is 401
    // whoever asks; resets and the clinic's policy are for admins, the policy is
    // read by everyone.
    (Kind::EnrollMfa,              [A,    A,           A,    U]),
    (Kind::ConfirmMfa,             [A,    A,           A,    U]),
    (Kind::VerifyMfa,              [U,    U,           U,    U]),
    (Kind::DisableMfa,             [A,    A,           A,    U]),
    (Kind::ResetUserMfa,           [A,    D,           D,    U]),
    // Passwords (`gateway/src/passwords.rs`): every user changes its own; anyone
    // asks for a reset link (the same 202 for every address) and confirms one with
    // the link's token (whoever holds the token).
    (Kind::ChangePassword,         [A,    A,           A,    U]),
    (Kind::RequestPasswordReset,   [A,    A,           A,    A]),
    (Kind::ConfirmPasswordReset,   [A,    A,           A,    A]),
    (Kind::ClinicSecurity,         [A,    A,           A,    U]),
    (Kind::ChangeClinicSecurity,   [A,    D,           D,    U]),
    (Kind::Settings,               [A,    A,           A,    U]),
    (Kind::ChangeSettings,         [A,    D,           D,    U]),
    (Kind::Availability,           [A,    A,           A,    U]),
    (Kind::BookSeries,             [A,    A,           A,    U]),
    (Kind::GetSeries,              [A,    A,           A,    U]),
    (Kind::ChangeSeries,           [A,    A,           A,    U]),
    (Kind::CancelSeries,           [A,    A,           A,    U]),
    (Kind::InvoicePayments,        [A,    A,           A,    U]),
    (Kind::RecordPayment,          [A,    A,           A,    U]),
];

/// The resources with writers of their own, over [`RULES`]:
/// - appointment types (durations, buffers, prices) are the admins';
/// - working hours and their exceptions are the clinicians' (admins and
///   practitioners), not the front desk's;
/// - anyone records a payment, only an admin voids one (delete), and a voided
///   payment stays void: an admin's restore passes the access check and is
///   refused by the clinic's rules (`409`, the row unchanged), although the
///   document describes restore as for any resource.
#[rustfmt::skip]
pub(super) const RESOURCE_RULES: &[(&str, Kind, [Rule; 4])] = &[
    // resource           kind of operation  admin practitioner staff anonymous
    ("appointment-types", Kind::Create,      [A,    D,           D,    U]),
    ("appointment-types", Kind::Put,         [A,    D,           D,    U]),
    ("appointment-types", Kind::Patch,       [A,    D,           D,    U]),
    ("appointment-types", Kind::Delete,      [A,    D,           D,    U]),
    ("appointment-types", Kind::Restore,     [A,    D,           D,    U]),
    ("working-hours",     Kind::Create,      [A,    A,           D,    U]),
    ("working-hours",     Kind::Put,         [A,    A,           D,    U]),
    ("working-hours",     Kind::Patch,       [A,    A,           D,    U]),
    ("working-hours",     Kind::Delete,      [A,    A,           D,    U]),
    ("working-hours",     Kind::Restore,     [A,    A,           D,    U]),
    ("hours-exceptions",  Kind::Create,      [A,    A,           D,    U]),
    ("hours-exceptions",  Kind::Put,         [A,    A,           D,    U]),
    ("hours-exceptions",  Kind::Patch,       [A,    A,           D,    U]),
    ("hours-exceptions",  Kind::Delete,      [A,    A,           D,    U]),
    ("hours-exceptions",  Kind::Restore,     [A,    A,           D,    U]),
    ("payments",          Kind::Delete,      [A,    D,           D,    U]),
    ("payments",          Kind::Restore,     [A,    D,           D,    U]),
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

/// How `caller` must be answered for `kind` on `resource` (none: a fixed
/// endpoint): the resource's own row, else the kind's.
pub(super) fn rule(kind: Kind, resource: Option<&Resource>, caller: Caller) -> Option<Rule> {
    let own = resource.and_then(|r| {
        RESOURCE_RULES
            .iter()
            .find(|(name, k, _)| *name == r.name && *k == kind)
    });
    match own {
        Some((_, _, row)) => Some(row[caller.column()]),
        None => RULES
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, row)| row[caller.column()]),
    }
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
        Kind::Create
        | Kind::CreateUser
        | Kind::CreateApiClient
        | Kind::Register
        | Kind::BookSeries
        | Kind::ImportPatients
        | Kind::UploadAttachment
        | Kind::CreateWebhook
        | Kind::RecordPayment => 201,
        Kind::Delete
        | Kind::Logout
        | Kind::ResetUserMfa
        | Kind::DisableMfa
        | Kind::DeleteAttachment => 204,
        Kind::RequestPasswordReset | Kind::ReplayWebhook => 202,
        Kind::DeleteWebhook => 204,
        Kind::ConfirmPasswordReset => 204,
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
        ("GET", ["api-clients"]) => Some(Kind::ListApiClients),
        ("POST", ["api-clients"]) => Some(Kind::CreateApiClient),
        ("POST", ["api-clients", "{id}", "revoke"]) => Some(Kind::RevokeApiClient),
        ("POST", ["oauth", "token"]) => Some(Kind::ClientToken),
        ("GET", ["webhook-subscriptions"]) => Some(Kind::ListWebhooks),
        ("POST", ["webhook-subscriptions"]) => Some(Kind::CreateWebhook),
        ("GET", ["webhook-subscriptions", "{id}"]) => Some(Kind::GetWebhook),
        ("PATCH", ["webhook-subscriptions", "{id}"]) => Some(Kind::ChangeWebhook),
        ("DELETE", ["webhook-subscriptions", "{id}"]) => Some(Kind::DeleteWebhook),
        ("POST", ["webhook-subscriptions", "{id}", "replay"]) => Some(Kind::ReplayWebhook),
        ("GET", ["webhook-subscriptions", "{id}", "deliveries"]) => Some(Kind::WebhookDeliveries),
        ("GET", ["webhook-events"]) => Some(Kind::WebhookEvents),
        ("GET", ["export"]) => Some(Kind::ExportClinic),
        ("POST", ["patients", "import"]) => Some(Kind::ImportPatients),
        ("POST", ["patients", "{id}", "attachments"]) => Some(Kind::UploadAttachment),
        ("GET", ["patients", "{id}", "attachments"]) => Some(Kind::ListAttachments),
        ("GET", ["attachments", "{id}"]) => Some(Kind::DownloadAttachment),
        ("DELETE", ["attachments", "{id}"]) => Some(Kind::DeleteAttachment),
        ("GET", ["users"]) => Some(Kind::ListUsers),
        ("POST", ["users"]) => Some(Kind::CreateUser),
        ("POST", ["users", "{id}", "disable"]) => Some(Kind::DisableUser),
        ("POST", ["users", "{id}", "enable"]) => Some(Kind::EnableUser),
        ("PATCH", ["users", "{id}"]) => Some(Kind::ChangeUserRole),
        ("POST", ["users", "{id}", "sign-out"]) => Some(Kind::SignOutUser),
        ("GET", ["clinic"]) => Some(Kind::Settings),
        ("PUT", ["clinic"]) => Some(Kind::ChangeSettings),
        ("GET", ["availability"]) => Some(Kind::Availability),
        ("POST", ["appointments", "series"]) => Some(Kind::BookSeries),
        ("GET", ["appointment-series", "{id}"]) => Some(Kind::GetSeries),
        ("PATCH", ["appointment-series", "{id}"]) => Some(Kind::ChangeSeries),
        ("POST", ["appointment-series", "{id}", "cancel"]) => Some(Kind::CancelSeries),
        ("GET", ["documents", "{id}", "payments"]) => Some(Kind::InvoicePayments),
        ("POST", ["documents", "{id}", "payments"]) => Some(Kind::RecordPayment),
        ("POST", ["auth", "mfa", "enroll"]) => Some(Kind::EnrollMfa),
        ("POST", ["auth", "mfa", "confirm"]) => Some(Kind::ConfirmMfa),
        ("POST", ["auth", "mfa", "verify"]) => Some(Kind::VerifyMfa),
        ("POST", ["auth", "mfa", "disable"]) => Some(Kind::DisableMfa),
        ("POST", ["users", "{id}", "mfa", "reset"]) => Some(Kind::ResetUserMfa),
        ("GET", ["clinic-security"]) => Some(Kind::ClinicSecurity),
        ("PATCH", ["clinic-security"]) => Some(Kind::ChangeClinicSecurity),
        ("POST", ["auth", "password"]) => Some(Kind::ChangePassword),
        ("POST", ["auth", "password-reset"]) => Some(Kind::RequestPasswordReset),
        ("POST", ["auth", "password-reset", "confirm"]) => Some(Kind::ConfirmPasswordReset),
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
            Some((kind, resource)) if rule(kind, resource, Caller::Admin).is_some() => {
                ops.push(Op {
                    method,
                    path,
                    kind,
                    resource,
                })
            }
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
    for (name, kind, _) in RESOURCE_RULES {
        assert!(
            ops.iter()
                .any(|o| o.kind == *kind && o.resource.is_some_and(|r| r.name == *name)),
            "the table has a row for {name} {kind:?} but the document no such operation"
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
        Kind::ImportPatients => 114,
        Kind::UploadAttachment => 115,
        Kind::ListAttachments => 116,
        Kind::DownloadAttachment => 117,
        Kind::DeleteAttachment => 118,
        Kind::Settings => 120,
        Kind::ChangeSettings => 121,
        Kind::Availability => 122,
        Kind::BookSeries => 123,
        Kind::GetSeries => 124,
        Kind::ChangeSeries => 125,
        Kind::CancelSeries => 126,
        Kind::InvoicePayments => 127,
        Kind::RecordPayment => 128,
        Kind::ClinicSecurity => 130,
        Kind::ChangeClinicSecurity => 131,
        Kind::EnrollMfa => 132,
        Kind::ConfirmMfa => 133,
        Kind::VerifyMfa => 134,
        Kind::DisableMfa => 135,
        Kind::ResetUserMfa => 136,
        Kind::RequestPasswordReset => 140,
        Kind::ConfirmPasswordReset => 141,
        Kind::ListApiClients => 150,
        Kind::CreateApiClient => 151,
        Kind::RevokeApiClient => 152,
        Kind::ClientToken => 153,
        Kind::ListWebhooks => 160,
        Kind::CreateWebhook => 161,
        Kind::GetWebhook => 162,
        Kind::ChangeWebhook => 163,
        Kind::ReplayWebhook => 164,
        Kind::WebhookDeliveries => 165,
        Kind::WebhookEvents => 166,
        Kind::DeleteWebhook => 167,
        // Last: it ends every session of the caller, the pass's token too.
        Kind::ChangePassword => 199,
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
            let row = CALLERS.map(|c| rule(Kind::Action(a.name), Some(r), c));
            assert_eq!(row, expected.map(Some), "{}/{}", r.name, a.name);
        }
    }
    // Who passes the access check, as each resource's `access` says.
    const EVERY_ROLE: &[Role] = &[Role::Admin, Role::Practitioner, Role::Staff];
    let admitted =
        |kind: Kind, r: Option<&Resource>| CALLERS.map(|c| rule(kind, r, c).map(Rule::admitted));
    let roles =
        |roles: &[Role]| CALLERS.map(|c| Some(c.role().is_some_and(|role| roles.contains(&role))));
    for r in RESOURCES {
        for kind in [Kind::Create, Kind::Put, Kind::Patch] {
            assert_eq!(
                admitted(kind, Some(r)),
                roles(r.access.write),
                "{} {kind:?}",
                r.name
            );
        }
        for kind in [Kind::Delete, Kind::Restore] {
            assert_eq!(
                admitted(kind, Some(r)),
                roles(r.access.delete),
                "{} {kind:?}",
                r.name
            );
        }
        for kind in [Kind::List, Kind::Get] {
            assert_eq!(
                admitted(kind, Some(r)),
                roles(EVERY_ROLE),
                "{} {kind:?}",
                r.name
            );
        }
    }
    let fixed = [
        (Kind::ChangeSettings, resource::CLINIC_SETTINGS.access.write),
        (Kind::BookSeries, resource::APPOINTMENTS.access.write),
        (Kind::ChangeSeries, resource::APPOINTMENTS.access.write),
        (Kind::CancelSeries, resource::APPOINTMENTS.access.write),
        (Kind::RecordPayment, resource::PAYMENTS.access.write),
        (Kind::UploadAttachment, resource::ATTACHMENTS.access.write),
        (
            Kind::DownloadAttachment,
            resource::ATTACHMENTS.access.delete,
        ),
        (Kind::DeleteAttachment, resource::ATTACHMENTS.access.delete),
    ];
    for (kind, writers) in fixed {
        assert_eq!(admitted(kind, None), roles(writers), "{kind:?}");
    }
    for kind in [
        Kind::Settings,
        Kind::Availability,
        Kind::GetSeries,
        Kind::InvoicePayments,
        Kind::ListAttachments,
    ] {
        assert_eq!(admitted(kind, None), roles(EVERY_ROLE), "{kind:?}");
    }
    operations(&common::openapi::document());
}
