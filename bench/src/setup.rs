//! The product under test: a fresh stack in its own temp dir (removed afterwards),
//! with `max_connections` and the worker's connection budget from the settings and
//! `pg_stat_statements` loaded (counted on the central server only); the clinic,
//! access token and patient that the baseline and the read scenario read; and the
//! helpers that register clinics, log in, forge access tokens with the stack's own
//! token service, and create rows through the gateway.

use crate::settings::Settings;
use anyhow::{bail, Context};
use common::token::{Role, TokenSigner};
use common::{ClinicId, UserId};
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
        max_connections: settings.max_connections,
        // The bench's budget first: `BENCH_SERVICE_ENV` may override it.
        // The bench registers its clinics from one address, far more than open
        // sign-up allows a stranger.
        extra_env: [
            (
                "CLINIC_POOL_BUDGET".to_owned(),
                settings.pool_budget.to_string(),
            ),
            (
                "SIGNUPS_PER_ADDRESS_PER_HOUR".to_owned(),
                "100000".to_owned(),
            ),
            ("SIGNUPS_PER_HOUR".to_owned(), "100000".to_owned()),
            ("SIGNUPS_PROVISIONING_MAX".to_owned(), "1000".to_owned()),
            // The webhook figure's receiver listens on loopback.
            (
                "WEBHOOK_ALLOW_PRIVATE_TARGETS".to_owned(),
                "true".to_owned(),
            ),
        ]
        .into_iter()
        .chain(settings.service_env.iter().cloned())
        .collect(),
        server_conf: vec![(
            "shared_preload_libraries".into(),
            "pg_stat_statements".into(),
        )],
        ..StackOptions::new(exe, dir.path().to_owned())
    };
    let stack = Stack::start(options).context("starting the stack")?;
    Ok(Product { stack, dir })
}

/// Statement statistics on the central server (where the placement figure counts),
/// none on the regional servers (their load is the measured one).
pub async fn statement_stats(stack: &Stack) -> anyhow::Result<()> {
    let central = stack
        .central
        .connect(devstack::stack::CENTRAL_DB)
        .await
        .context("connecting to the central database")?;
    central
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .context("loading pg_stat_statements on the central server")?;
    for region in &stack.regions {
        let server = region.server.connect("postgres").await?;
        // ALTER SYSTEM refuses to run in the implicit transaction of a batch.
        for sql in [
            "ALTER SYSTEM SET pg_stat_statements.track = 'none'",
            "SELECT pg_reload_conf()",
        ] {
            server
                .batch_execute(sql)
                .await
                .with_context(|| format!("turning statement statistics off in {}", region.name))?;
        }
    }
    Ok(())
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

/// What registration answers, and the administrator's credentials.
#[derive(Clone, Debug)]
pub struct Registration {
    pub clinic_id: Uuid,
    pub user_id: Uuid,
    pub region: String,
    pub email: String,
    pub password: String,
    /// The access token the registration answered with (its admin signed in).
    pub token: String,
}

impl Registration {
    /// An access token for the clinic's administrator, issued by the stack's own
    /// token service exactly as a login would (no password check, no argon2).
    pub fn forge(&self, tokens: &TokenSigner) -> anyhow::Result<Account> {
        let (token, _) = tokens.issue(
            UserId::from_uuid(self.user_id),
            ClinicId::from_uuid(self.clinic_id),
            Role::Admin,
            1,
        )?;
        Ok(Account {
            clinic_id: self.clinic_id,
            region: self.region.clone(),
            token,
        })
    }
}

/// Registers a clinic named after `label` through the gateway (which provisions it).
pub async fn register_only(http: &Http, label: &str) -> anyhow::Result<Registration> {
    let tag = Uuid::new_v4().simple().to_string();
    let email = format!("bench-{tag}@clinic.example");
    let password = format!("bench-password-{tag}");
    let body =
        json!({"clinic_name": format!("{label} {tag}"), "email": email, "password": password});
    let reg = http
        .post("/api/v1/auth/register", None, &body)
        .await
        .context("register")?;
    if reg.status.as_u16() != 201 {
        bail!("register answered {}: {}", reg.status, reg.text());
    }
    let reg = reg.json();
    Ok(Registration {
        clinic_id: field(&reg, "clinic_id", "register")?.parse()?,
        user_id: field(&reg, "user_id", "register")?.parse()?,
        region: field(&reg, "region", "register")?.to_owned(),
        token: field(&reg, "access_token", "register")?.to_owned(),
        email,
        password,
    })
}

/// Registers a clinic named after `label` through the gateway, its administrator
/// signed in by the registration.
pub async fn register(http: &Http, label: &str) -> anyhow::Result<Account> {
    let reg = register_only(http, label).await?;
    Ok(Account {
        clinic_id: reg.clinic_id,
        region: reg.region,
        token: reg.token,
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

/// The first name of [`ada`].
pub const FIRST_NAME: &str = "Ada";

/// The patient every single-read scenario reads.
pub fn ada() -> Value {
    json!({
        "first_name": FIRST_NAME,
        "last_name": "Lovelace",
        "email": "ada@example.org",
        "phone": "+44 20 7946 0000",
        "birth_date": "1985-12-10",
        "ssn": "2 85 12 75 123 456 78",
    })
}

/// Registers a clinic, logs in and creates a patient, all through the gateway.
pub async fn seed(gateway_url: &str) -> anyhow::Result<Fixture> {
    let http = Http::new(gateway_url);
    let account = register(&http, "Bench Clinic").await?;
    let patient_id = create(&http, &account.token, "patients", &ada())
        .await
        .context("create patient")?;
    Ok(Fixture {
        clinic_id: account.clinic_id,
        region: account.region,
        token: account.token,
        patient_id,
        first_name: FIRST_NAME.to_owned(),
    })
}
