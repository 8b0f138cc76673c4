//! Clinics with a user per role ([`Site`]), sample rows generated from
//! `common::resource`, and foreign clinics planted with markers.

use super::*;

/// A user with a live access token.
#[derive(Clone, Debug)]
pub(super) struct Account {
    pub(super) id: String,
    pub(super) email: String,
    pub(super) password: String,
    pub(super) token: String,
}

pub(super) const PASSWORD: &str = "correct horse battery staple";

/// Logs in; the token response.
pub(super) async fn login(api: &Api, email: &str, password: &str) -> Value {
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
pub(super) async fn new_user(api: &Api, admin_token: &str, role: Role) -> Account {
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
pub(super) struct Site {
    pub(super) clinic: Clinic,
    pub(super) users: HashMap<Caller, Account>,
    pub(super) db: tokio_postgres::Client,
}

impl Site {
    pub(super) async fn open(api: &Api, region: Option<&str>) -> Self {
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

    pub(super) fn owner(&self) -> Option<&str> {
        Some(&self.clinic.token)
    }

    pub(super) fn token(&self, caller: Caller) -> Option<&str> {
        self.users.get(&caller).map(|u| u.token.as_str())
    }
}

/// A live row of each table samples may refer to: table → id.
pub(super) type Deps = HashMap<&'static str, String>;

pub(super) static SEQ: AtomicU32 = AtomicU32::new(1);

pub(super) fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A distinct hour per `seq` (so appointments never overlap), at `minute`.
pub(super) fn slot(seq: u32, minute: u32) -> String {
    let day = (seq / 24) % 336;
    format!(
        "{}-{:02}-{:02}T{:02}:{minute:02}:00Z",
        2040 + seq / (24 * 336),
        day / 28 + 1,
        day % 28 + 1,
        seq % 24
    )
}

/// The key in [`Deps`] of an issued invoice with a large balance: what payments
/// refer to (the seeded `documents` row is a draft quote, and a payment needs an
/// issued invoice), made right after the seeded document.
pub(super) const ISSUED_INVOICE: &str = "issued invoice";

/// References whose sample is not the seeded row of their table:
/// (resource, field, key in [`Deps`]).
#[rustfmt::skip]
pub(super) const SAMPLE_REFERENCES: &[(&str, &str, &str)] = &[
    ("payments", "document_id", ISSUED_INVOICE),
];

/// Text fields with a shape the database checks, wherever a field of that name
/// appears: (field, a valid sample, the shape). They are no free text: never
/// tainted, and hostile strings are refused unless they have the shape.
#[rustfmt::skip]
pub(super) const SHAPED_TEXT: &[(&str, &str, Shape)] = &[
    ("colour", "#3A7BD5", is_colour),
];

/// Whether a value has a field's shape.
pub(super) type Shape = fn(&str) -> bool;

/// `^#[0-9A-Fa-f]{6}$`
pub(super) fn is_colour(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].chars().all(|c| c.is_ascii_hexdigit())
}

/// The shape a text field must have, if it is not free text.
pub(super) fn shape(f: &Field) -> Option<(&'static str, Shape)> {
    SHAPED_TEXT
        .iter()
        .find(|(name, _, _)| *name == f.name)
        .map(|(_, sample, check)| (*sample, *check))
}

/// Whether a field takes any text up to its length (hostile strings included).
pub(super) fn free_text(f: &Field) -> bool {
    matches!(f.ty, FieldType::Text { .. }) && shape(f).is_none()
}

/// Rows that never change once written: a recorded payment is a fact (voided,
/// never edited). A `PUT` or `PATCH` that changes nothing is served; one that
/// changes a value is `409`.
pub(super) const FROZEN: &[&str] = &["payments"];

pub(super) fn frozen(r: &Resource) -> bool {
    FROZEN.contains(&r.name)
}

/// Row actions that work on an issued invoice (the per-row target is a quote).
pub(super) const ON_ISSUED_INVOICE: &[&str] = &["credit", "cancel"];

/// The key in [`Deps`] a reference field of `owner` takes its sample from.
pub(super) fn dependency(owner: &str, f: &Field) -> Option<&'static str> {
    let table = match f.ty {
        FieldType::Reference(table) => table,
        FieldType::ReferenceList { target, .. } => resource::find(target)?.table,
        _ => return None,
    };
    Some(
        SAMPLE_REFERENCES
            .iter()
            .find(|(r, field, _)| *r == owner && *field == f.name)
            .map_or(table, |(_, _, key)| *key),
    )
}

/// The keys of [`Deps`] a resource's writable fields and child rows refer to.
pub(super) fn references(r: &'static Resource) -> Vec<&'static str> {
    let own = r
        .fields
        .iter()
        .filter(|f| !f.read_only)
        .filter_map(|f| dependency(r.name, f));
    let children = r.children.iter().flat_map(|c| {
        c.fields
            .iter()
            .filter(|f| !f.read_only)
            .filter_map(|f| dependency(c.name, f))
    });
    own.chain(children).collect()
}

/// A valid value for a field of `owner` (a resource or a child list); `nth`
/// counts the required instants before it (an end comes half an hour after its
/// start).
pub(super) fn sample_value(owner: &str, f: &Field, deps: &Deps, seq: u32, nth: usize) -> Value {
    let dep = |key: &str| {
        deps.get(key)
            .unwrap_or_else(|| panic!("no sample row of {key}"))
            .clone()
    };
    match f.ty {
        FieldType::Text { .. } => match shape(f) {
            Some((sample, _)) => json!(sample),
            None => json!(format!("{} {seq}", f.name)),
        },
        FieldType::Email => json!(format!("{}{seq}@example.org", f.name.replace('_', ""))),
        FieldType::Date => json!("1980-02-29"),
        FieldType::Timestamp => json!(slot(seq, if nth == 0 { 0 } else { 30 })),
        // A start in the morning, an end twelve hours later: distinct per `seq`.
        FieldType::Time => {
            let start = seq % 600;
            let at = if f.name.starts_with("end") {
                start + 720
            } else {
                start
            };
            json!(format!("{:02}:{:02}", at / 60, at % 60))
        }
        FieldType::Integer { min, max } => json!(1.clamp(min, max)),
        FieldType::Boolean => json!(true),
        FieldType::Enum(values) => json!(values[0]),
        FieldType::Reference(_) => json!(dep(dependency(owner, f).unwrap())),
        FieldType::ReferenceList { .. } => json!([dep(dependency(owner, f).unwrap())]),
    }
}

pub(super) fn child_sample(c: &Child, deps: &Deps, seq: u32) -> Value {
    let row: Map<String, Value> = c
        .fields
        .iter()
        .filter(|f| !f.read_only)
        .map(|f| (f.name.to_owned(), sample_value(c.name, f, deps, seq, 0)))
        .collect();
    Value::Object(row)
}

/// A valid body for `r`, every writable field set (restricted ones only when
/// `restricted`; optional instants left out unless they end a required one), one
/// child row per child list.
pub(super) fn sample_body(r: &'static Resource, deps: &Deps, restricted: bool) -> Value {
    let seq = next_seq();
    let hidden = restricted_fields(r);
    let mut body = Map::new();
    let mut nth = 0;
    for f in r.fields.iter().filter(|f| !f.read_only) {
        // An optional instant after a required one is its end: given, so that a
        // PATCH moving the start keeps the row consistent.
        if (hidden.contains(&f.name) && !restricted)
            || (f.ty == FieldType::Timestamp && !f.required && nth == 0)
        {
            continue;
        }
        body.insert(f.name.into(), sample_value(r.name, f, deps, seq, nth));
        if f.ty == FieldType::Timestamp {
            nth += 1;
        }
    }
    for c in r.children {
        body.insert(c.name.into(), json!([child_sample(c, deps, seq)]));
    }
    Value::Object(body)
}

/// The writable values of a stored row: a body that changes nothing.
pub(super) fn own_values(r: &Resource, row: &Value) -> Value {
    let body: Map<String, Value> = r
        .fields
        .iter()
        .filter(|f| !f.read_only && !row[f.name].is_null())
        .map(|f| (f.name.to_owned(), row[f.name].clone()))
        .collect();
    Value::Object(body)
}

/// An issued invoice made with `token` (sample values, text through `text`) whose
/// balance takes any number of sample payments; the issued document.
pub(super) async fn issued_invoice(
    api: &Api,
    token: &str,
    deps: &Deps,
    text: &(dyn Fn(&Field, &str) -> String + Sync),
) -> Value {
    let documents = resource::find("documents").unwrap();
    let mut body = sample_body(documents, deps, true);
    taint(documents, &mut body, text);
    body["kind"] = json!("invoice");
    body["lines"][0]["unit_price_cents"] = json!(1_000_000_000);
    let draft = api.post(Some(token), "/api/v1/documents", body).await;
    assert_eq!(draft.status, 201, "invoice: {}", draft.text());
    let path = format!("/api/v1/documents/{}/issue", id_of(&draft.json()));
    let issued = api.post(Some(token), &path, json!({})).await;
    assert_eq!(issued.status, 200, "issue: {}", issued.text());
    issued.json()
}

/// Sends every free-text value of a body through `text`.
fn taint(r: &Resource, body: &mut Value, text: &(dyn Fn(&Field, &str) -> String + Sync)) {
    for f in r.fields.iter().filter(|f| free_text(f)) {
        if let Some(Value::String(s)) = body.get(f.name) {
            body[f.name] = json!(text(f, s));
        }
    }
}

/// A small valid PDF whose text is `marker`.
pub(super) fn sample_pdf(marker: &str) -> String {
    format!(
        "%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n% {marker}\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    )
}

/// Uploads a PDF onto `patient` with `token` (its text `marker`); the metadata.
pub(super) async fn upload_pdf(
    api: &Api,
    token: Option<&str>,
    patient: &str,
    marker: &str,
) -> Reply {
    api.send_with(
        token,
        Method::POST,
        &format!("/api/v1/patients/{patient}/attachments?filename=signed.pdf"),
        &[("content-type", "application/pdf")],
        Body::Raw(sample_pdf(marker)),
    )
    .await
}

/// Creates one row of every resource (in reference order) with `token`, an issued
/// invoice ([`ISSUED_INVOICE`]) and a file on the patient (what a consent's
/// `attachment_id` refers to); every free-text value goes through `text` (so
/// foreign clinics can be filled with markers).
pub(super) async fn seed(
    api: &Api,
    token: &str,
    text: &(dyn Fn(&Field, &str) -> String + Sync),
) -> Deps {
    let mut deps = Deps::new();
    while RESOURCES.iter().any(|r| !deps.contains_key(r.table)) {
        let r = RESOURCES
            .iter()
            .copied()
            .find(|r| {
                !deps.contains_key(r.table) && references(r).iter().all(|t| deps.contains_key(t))
            })
            .expect("resource references form no cycle");
        let mut body = sample_body(r, &deps, true);
        taint(r, &mut body, text);
        let reply = api
            .post(Some(token), &format!("/api/v1/{}", r.name), body)
            .await;
        assert_eq!(reply.status, 201, "seed {}: {}", r.name, reply.text());
        deps.insert(r.table, id_of(&reply.json()));
        if r.name == "documents" {
            let invoice = issued_invoice(api, token, &deps, text).await;
            deps.insert(ISSUED_INVOICE, id_of(&invoice));
        }
        if r.name == "patients" {
            let marker = unique("seeded file");
            let file = upload_pdf(api, Some(token), &deps["patients"], &marker).await;
            assert_eq!(file.status, 201, "seed attachments: {}", file.text());
            deps.insert(resource::ATTACHMENTS.table, id_of(&file.json()));
        }
    }
    deps
}

/// A clinic in `region` whose rows are full of hostile strings and a marker; the
/// marker, its ids and e-mail are forbidden in every reply of `api` from now on.
pub(super) async fn plant_foreign(api: &Api, region: &str) -> (Clinic, Deps) {
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
