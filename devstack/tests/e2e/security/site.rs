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

/// The tables a resource's writable fields and child rows refer to.
pub(super) fn references(r: &'static Resource) -> Vec<&'static str> {
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
pub(super) fn sample_value(f: &Field, deps: &Deps, seq: u32, nth: usize) -> Value {
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
        // A start in the morning, an end in the afternoon.
        FieldType::Time if f.name.starts_with("end") => json!("17:00"),
        FieldType::Time => json!("09:00"),
        FieldType::Integer { min, max } => json!(1.clamp(min, max)),
        FieldType::Boolean => json!(true),
        FieldType::Enum(values) => json!(values[0]),
        FieldType::Reference(table) => json!(dep(table)),
        FieldType::ReferenceList { target, .. } => {
            json!([dep(resource::find(target).unwrap().table)])
        }
    }
}

pub(super) fn child_sample(c: &Child, deps: &Deps, seq: u32) -> Value {
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
pub(super) fn sample_body(r: &'static Resource, deps: &Deps, restricted: bool) -> Value {
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
pub(super) async fn seed(api: &Api, token: &str, text: &dyn Fn(&Field, &str) -> String) -> Deps {
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
