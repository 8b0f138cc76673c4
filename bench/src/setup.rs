//! The product under test: a fresh stack in its own temp dir (removed afterwards),
//! the clinic, access token and patient that the baseline and the read scenario
//! read, and the helpers that register clinics and create rows through the gateway.

use crate::settings::Settings;
use anyhow::{bail, Context};
use devstack::{Http, Stack, StackOptions};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// A data directory that is removed when dropped.
pub struct DataDir(PathBuf);

impl DataDir {
    /// `<temp>/medicalpro-bench-<pid>`, emptied first.
    fn fresh() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("medicalpro-bench-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("bench: could not remove {}: {e}", self.0.display());
        }
    }
}

/// A running stack and its data directory. Fields drop in order: the stack stops
/// (gateway, workers, servers) before its directory is removed.
pub struct Product {
    pub stack: Stack,
    pub dir: DataDir,
}

/// Starts the stack. Blocks; must run outside any tokio runtime.
pub fn start(settings: &Settings) -> anyhow::Result<Product> {
    let dir = DataDir::fresh()?;
    let exe = std::env::current_exe().context("locating the bench binary")?;
    let options = StackOptions {
        exe: exe.clone(),
        data_dir: dir.path().to_owned(),
        listen: ([127, 0, 0, 1], 0).into(),
        fast_unsafe: false,
        log_level: "warn".into(),
        regions: settings.regions.clone(),
        extra_env: settings.service_env.clone(),
        ..StackOptions::new(exe, dir.path().to_owned())
    };
    let stack = Stack::start(options).context("starting the stack")?;
    Ok(Product { stack, dir })
}

/// What the scenarios read: one patient of one clinic, and a token to read it with.
#[derive(Clone, Debug)]
pub struct Fixture {
    pub clinic_id: Uuid,
    pub region: String,
    pub token: String,
    pub patient_id: Uuid,
    pub first_name: String,
}

impl Fixture {
    /// The clinic's own database on its region's server.
    pub fn database(&self) -> String {
        format!("medicalpro_clinic_{}", self.clinic_id.hyphenated())
    }
}

fn field<'a>(v: &'a Value, name: &str, what: &str) -> anyhow::Result<&'a str> {
    v[name]
        .as_str()
        .with_context(|| format!("{what} reply has no `{name}`: {v}"))
}

/// A registered clinic and its administrator's access token.
#[derive(Clone, Debug)]
pub struct Account {
    pub clinic_id: Uuid,
    pub region: String,
    pub token: String,
}

/// Registers a clinic named after `label` and logs its administrator in, through
/// the gateway.
pub async fn register(http: &Http, label: &str) -> anyhow::Result<Account> {
    let tag = Uuid::new_v4().simple().to_string();
    let email = format!("bench-{tag}@clinic.example");
    let password = format!("bench-password-{tag}");

    let reg = http
        .post(
            "/api/v1/auth/register",
            None,
            &json!({"clinic_name": format!("{label} {tag}"), "email": email, "password": password}),
        )
        .await
        .context("register")?;
    if reg.status.as_u16() != 201 {
        bail!("register answered {}: {}", reg.status, reg.text());
    }
    let reg = reg.json();
    let clinic_id: Uuid = field(&reg, "clinic_id", "register")?.parse()?;
    let region = field(&reg, "region", "register")?.to_owned();

    let login = http
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"email": email, "password": password}),
        )
        .await
        .context("login")?;
    if login.status.as_u16() != 200 {
        bail!("login answered {}: {}", login.status, login.text());
    }
    let token = field(&login.json(), "access_token", "login")?.to_owned();
    Ok(Account {
        clinic_id,
        region,
        token,
    })
}

/// Sends `body` to `POST path` and expects `expected`; the answer as JSON.
pub async fn post(
    http: &Http,
    token: &str,
    path: &str,
    body: &Value,
    expected: u16,
) -> anyhow::Result<Value> {
    let reply = http
        .post(path, Some(token), body)
        .await
        .with_context(|| format!("POST {path}"))?;
    if reply.status.as_u16() != expected {
        bail!("POST {path} answered {}: {}", reply.status, reply.text());
    }
    Ok(reply.json())
}

/// Creates one row of `resource` and returns its id.
pub async fn create(
    http: &Http,
    token: &str,
    resource: &str,
    body: &Value,
) -> anyhow::Result<Uuid> {
    let path = format!("/api/v1/{resource}");
    let created = post(http, token, &path, body, 201).await?;
    Ok(field(&created, "id", &path)?.parse()?)
}

/// Registers a clinic, logs in and creates a patient, all through the gateway.
pub async fn seed(gateway_url: &str) -> anyhow::Result<Fixture> {
    let http = Http::new(gateway_url);
    let account = register(&http, "Bench Clinic").await?;
    let first_name = "Ada";
    let patient_id = create(
        &http,
        &account.token,
        "patients",
        &json!({
            "first_name": first_name,
            "last_name": "Lovelace",
            "email": "ada@example.org",
            "phone": "+44 20 7946 0000",
            "birth_date": "1985-12-10",
            "ssn": "2 85 12 75 123 456 78",
        }),
    )
    .await
    .context("create patient")?;
    Ok(Fixture {
        clinic_id: account.clinic_id,
        region: account.region,
        token: account.token,
        patient_id,
        first_name: first_name.to_owned(),
    })
}
