//! Clinics and what a test reaches of a stack besides its gateway: databases, the
//! audit trail, the admin tool's settings, workers signed to as a gateway.

use super::stacks::stack;
use devstack::{Http, Stack};
use serde_json::{json, Value};

/// What a test reaches of a stack; the free functions of the same names do it on
/// the shared stack.
#[allow(async_fn_in_trait)]
pub trait StackExt {
    /// A client of the stack's gateway.
    fn http(&self) -> Http;
    /// A superuser connection to a clinic's own database.
    async fn clinic_db(&self, clinic: &Clinic) -> tokio_postgres::Client;
    /// A superuser connection to the central database.
    async fn central_db(&self) -> tokio_postgres::Client;
    /// Waits until the central audit trail has a row matching `filter` (SQL over
    /// audit_logs with $1 = clinic id), returning the rows.
    async fn wait_audit(&self, clinic: &Clinic, filter: &str) -> Vec<tokio_postgres::Row>;
    /// The settings `medicalpro-admin` would read from the environment of the
    /// region's worker.
    fn admin_settings_of(&self, region: &str) -> admin::AdminSettings;
    /// Sends `method path` straight to a region's worker as a gateway would (its
    /// client certificate and a valid gateway signature), with `token`: what a
    /// gateway that missed a notification, or a stale route, would forward.
    async fn signed_worker_send(
        &self,
        region: &str,
        method: http::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> devstack::Reply;
    /// [`StackExt::signed_worker_send`] of a GET, in the clinic's region.
    async fn signed_worker_get(&self, clinic: &Clinic, token: &str, path: &str) -> devstack::Reply {
        self.signed_worker_send(&clinic.region, http::Method::GET, token, path, None)
            .await
    }
}

impl StackExt for Stack {
    fn http(&self) -> Http {
        Http::new(&self.gateway_url())
    }

    async fn clinic_db(&self, clinic: &Clinic) -> tokio_postgres::Client {
        let region = self.region(&clinic.region).expect("region");
        region
            .server
            .connect(&format!("medicalpro_clinic_{}", clinic.id))
            .await
            .expect("clinic db")
    }

    async fn central_db(&self) -> tokio_postgres::Client {
        self.central
            .connect(devstack::stack::CENTRAL_DB)
            .await
            .expect("central db")
    }

    async fn wait_audit(&self, clinic: &Clinic, filter: &str) -> Vec<tokio_postgres::Row> {
        let central = self.central_db().await;
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

    fn admin_settings_of(&self, region: &str) -> admin::AdminSettings {
        let server = &self.region(region).expect("region").server;
        let ca = self.central.ca_file().display().to_string();
        let source = common::config::Source::from_pairs([
            ("DB_HOST", "127.0.0.1".to_owned()),
            ("DB_PORT", self.central.port.to_string()),
            ("DB_USER", devstack::pg::SUPERUSER.to_owned()),
            ("DB_PASSWORD", self.central.password.clone()),
            ("DB_SSLROOTCERT", ca.clone()),
            ("CENTRAL_DB_NAME", devstack::stack::CENTRAL_DB.to_owned()),
            ("REGION_DB_HOST", "127.0.0.1".to_owned()),
            ("REGION_DB_PORT", server.port.to_string()),
            ("REGION_DB_USER", devstack::pg::SUPERUSER.to_owned()),
            ("REGION_DB_PASSWORD", server.password.clone()),
            ("REGION_DB_SSLROOTCERT", ca),
            ("AUDIT_KEY", self.secrets.audit_key.clone()),
        ]);
        admin::AdminSettings::from_source(&source).expect("admin settings")
    }

    async fn signed_worker_send(
        &self,
        region: &str,
        method: http::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> devstack::Reply {
        let worker = self.worker_client(region).expect("worker client");
        let key = common::internal::InternalKey::new(self.secrets.internal_secret.as_bytes())
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
}

/// A client of the shared stack's gateway.
pub fn http() -> Http {
    stack().http()
}

/// [`StackExt::clinic_db`] on the shared stack.
pub async fn clinic_db(clinic: &Clinic) -> tokio_postgres::Client {
    stack().clinic_db(clinic).await
}

/// [`StackExt::central_db`] on the shared stack.
pub async fn central_db() -> tokio_postgres::Client {
    stack().central_db().await
}

/// [`StackExt::wait_audit`] on the shared stack.
pub async fn wait_audit(clinic: &Clinic, filter: &str) -> Vec<tokio_postgres::Row> {
    stack().wait_audit(clinic, filter).await
}

/// [`StackExt::admin_settings_of`] on the shared stack.
pub fn admin_settings(region: &str) -> admin::AdminSettings {
    stack().admin_settings_of(region)
}

/// [`StackExt::signed_worker_send`] on the shared stack.
pub async fn signed_worker_send(
    region: &str,
    method: http::Method,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> devstack::Reply {
    stack()
        .signed_worker_send(region, method, token, path, body)
        .await
}

/// [`StackExt::signed_worker_get`] on the shared stack.
pub async fn signed_worker_get(clinic: &Clinic, token: &str, path: &str) -> devstack::Reply {
    stack().signed_worker_get(clinic, token, path).await
}

/// [`wait_audit`] by clinic id.
pub async fn wait_audit_for(clinic_id: &str, filter: &str) -> Vec<tokio_postgres::Row> {
    wait_audit(&Clinic::with_id(clinic_id), filter).await
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

impl Clinic {
    /// A clinic known by its id alone.
    pub fn with_id(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            user_id: String::new(),
            region: String::new(),
            email: String::new(),
            password: String::new(),
            token: String::new(),
            refresh_token: String::new(),
        }
    }
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
