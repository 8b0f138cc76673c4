//! Test support: one real stack per test binary (started on first use), and helpers
//! to register clinics and reach their databases directly.

#![allow(dead_code)]

use devstack::{Http, Stack, StackOptions};
use serde_json::{json, Value};
use std::sync::OnceLock;

/// The stack shared by the tests of this binary.
pub fn stack() -> &'static Stack {
    stack_with(&[])
}

/// The stack shared by the tests of this binary, started on first use with
/// `extra_env` added to every service's environment. Only the call that starts it
/// counts, so a binary that needs settings of its own reaches the stack through
/// this on every path (see `export.rs`).
pub fn stack_with(extra_env: &[(&str, &str)]) -> &'static Stack {
    stack_configured(extra_env, &[])
}

/// [`stack_with`], also with `server_conf` in every PostgreSQL server's
/// configuration.
pub fn stack_configured(
    extra_env: &[(&str, &str)],
    server_conf: &[(&str, &str)],
) -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        clean_stale_dirs();
        let dir = std::env::temp_dir().join(format!("medicalpro-test-{}", std::process::id()));
        let mut options = StackOptions::new(env!("CARGO_BIN_EXE_devstack").into(), dir);
        options.listen = ([127, 0, 0, 1], 0).into();
        options.fast_unsafe = true;
        options.log_level = "warn,worker=info,gateway=info".into();
        // Short pool timers so the registry's trimming is observable in tests.
        options.extra_env = vec![
            ("CLINIC_POOL_IDLE_SECS".into(), "1".into()),
            ("CLINIC_POOL_INACTIVE_SECS".into(), "4".into()),
            // Test binaries register many clinics from one address; the sign-up
            // limits themselves are tested on stacks of their own (`abuse.rs`).
            ("SIGNUPS_PER_ADDRESS_PER_HOUR".into(), "100000".into()),
            ("SIGNUPS_PER_HOUR".into(), "100000".into()),
            ("SIGNUPS_PROVISIONING_MAX".into(), "1000".into()),
        ];
        options.extra_env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        options.server_conf = server_conf
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        // Stack::start blocks on its own runtime: run it off any test runtime.
        std::thread::spawn(move || Stack::start(options))
            .join()
            .expect("stack thread")
            .expect("stack starts")
    })
}

/// Removes data dirs left by test processes that are gone.
fn clean_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("medicalpro-test-")
            .and_then(|p| p.parse::<u32>().ok())
        {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

pub fn http() -> Http {
    Http::new(&stack().gateway_url())
}

/// A registered clinic with a logged-in admin.
#[derive(Clone, Debug)]
pub struct Clinic {
    pub id: String,
    pub user_id: String,
    pub region: String,
    pub email: String,
    pub password: String,
    pub token: String,
    pub refresh_token: String,
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

pub async fn register(http: &Http, region: Option<&str>) -> Clinic {
    let email = format!("{}@clinic.example", unique("admin"));
    let password = "correct horse battery staple".to_owned();
    let mut body = json!({"clinic_name": unique("Clinic"), "email": email, "password": password});
    if let Some(r) = region {
        body["region"] = r.into();
    }
    let reg = http
        .post("/api/v1/auth/register", None, &body)
        .await
        .unwrap();
    assert_eq!(reg.status, 201, "register: {}", reg.text());
    let reg = reg.json();
    // The registration signs the admin in.
    let login = &reg;
    assert_eq!(login["token_type"], "Bearer", "register: {login}");
    Clinic {
        id: reg["clinic_id"].as_str().unwrap().to_owned(),
        user_id: reg["user_id"].as_str().unwrap().to_owned(),
        region: reg["region"].as_str().unwrap().to_owned(),
        email,
        password,
        token: login["access_token"].as_str().unwrap().to_owned(),
        refresh_token: login["refresh_token"].as_str().unwrap().to_owned(),
    }
}

pub async fn create_patient(http: &Http, clinic: &Clinic, body: Value) -> Value {
    let r = http
        .post("/api/v1/patients", Some(&clinic.token), &body)
        .await
        .unwrap();
    assert_eq!(r.status, 201, "create patient: {}", r.text());
    r.json()
}

pub fn patient_body(first: &str, last: &str) -> Value {
    json!({"first_name": first, "last_name": last, "email": "p@example.org", "phone": "+33 1 23 45 67 89", "birth_date": "1980-02-29", "ssn": "1 80 02 75 123 456 78"})
}

/// A superuser connection to a clinic's own database.
pub async fn clinic_db(clinic: &Clinic) -> tokio_postgres::Client {
    let region = stack().region(&clinic.region).expect("region");
    region
        .server
        .connect(&format!("medicalpro_clinic_{}", clinic.id))
        .await
        .expect("clinic db")
}

/// A superuser connection to the central database.
pub async fn central_db() -> tokio_postgres::Client {
    stack()
        .central
        .connect(devstack::stack::CENTRAL_DB)
        .await
        .expect("central db")
}

/// Waits until the central audit trail has a row matching `filter` (SQL over
/// audit_logs with $1 = clinic id), returning the rows.
pub async fn wait_audit(clinic: &Clinic, filter: &str) -> Vec<tokio_postgres::Row> {
    let central = central_db().await;
    let clinic_id: uuid::Uuid = clinic.id.parse().unwrap();
    let sql = format!("SELECT action, resource, resource_id, host(client_ip), request_id, outcome, user_id FROM audit_logs WHERE clinic_id = $1 AND {filter} ORDER BY id");
    for _ in 0..200 {
        let rows = central.query(sql.as_str(), &[&clinic_id]).await.unwrap();
        if !rows.is_empty() {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no audit row for clinic {} matching {filter}", clinic.id);
}

/// The settings `medicalpro-admin` would read from the environment of the region's
/// worker.
pub fn admin_settings(region: &str) -> admin::AdminSettings {
    let stack = stack();
    let server = &stack.region(region).expect("region").server;
    let ca = stack.central.ca_file().display().to_string();
    let source = common::config::Source::from_pairs([
        ("DB_HOST", "127.0.0.1".to_owned()),
        ("DB_PORT", stack.central.port.to_string()),
        ("DB_USER", devstack::pg::SUPERUSER.to_owned()),
        ("DB_PASSWORD", stack.central.password.clone()),
        ("DB_SSLROOTCERT", ca.clone()),
        ("CENTRAL_DB_NAME", devstack::stack::CENTRAL_DB.to_owned()),
        ("REGION_DB_HOST", "127.0.0.1".to_owned()),
        ("REGION_DB_PORT", server.port.to_string()),
        ("REGION_DB_USER", devstack::pg::SUPERUSER.to_owned()),
        ("REGION_DB_PASSWORD", server.password.clone()),
        ("REGION_DB_SSLROOTCERT", ca),
        ("AUDIT_KEY", stack.secrets.audit_key.clone()),
    ]);
    admin::AdminSettings::from_source(&source).expect("admin settings")
}

/// Sends `method path` straight to a region's worker as a gateway would (its
/// client certificate and a valid gateway signature), with `token`: what a
/// gateway that missed a notification, or a stale route, would forward.
pub async fn signed_worker_send(
    region: &str,
    method: http::Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> devstack::Reply {
    let stack = stack();
    let worker = stack.worker_client(region).expect("worker client");
    let key = common::internal::InternalKey::new(stack.secrets.internal_secret.as_bytes())
        .expect("internal key");
    let timestamp = common::token::now_secs();
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_ip: std::net::IpAddr = "192.0.2.10".parse().expect("ip");
    let signature = key.sign(&common::internal::Forwarded {
        timestamp,
        request_id: &request_id,
        client_ip,
        method: method.as_str(),
        path_and_query: path,
    });
    let auth = format!("Bearer {token}");
    let timestamp = timestamp.to_string();
    let ip = client_ip.to_string();
    let headers = [
        ("authorization", auth.as_str()),
        (common::internal::HEADER_TIMESTAMP, timestamp.as_str()),
        (common::internal::HEADER_CLIENT_IP, ip.as_str()),
        (common::internal::HEADER_REQUEST_ID, request_id.as_str()),
        (common::internal::HEADER_SIGNATURE, signature.as_str()),
    ];
    let body = body.map(|b| bytes::Bytes::from(serde_json::to_vec(&b).expect("json")));
    worker
        .send(method, path, &headers, body)
        .await
        .expect("worker answers")
}

/// [`signed_worker_send`] of a GET, in the clinic's region.
pub async fn signed_worker_get(clinic: &Clinic, token: &str, path: &str) -> devstack::Reply {
    signed_worker_send(&clinic.region, http::Method::GET, token, path, None).await
}

/// [`wait_audit`] by clinic id.
pub async fn wait_audit_for(clinic_id: &str, filter: &str) -> Vec<tokio_postgres::Row> {
    let clinic = Clinic {
        id: clinic_id.to_owned(),
        user_id: String::new(),
        region: String::new(),
        email: String::new(),
        password: String::new(),
        token: String::new(),
        refresh_token: String::new(),
    };
    wait_audit(&clinic, filter).await
}
