//! Process-level behaviour, each test on a stack of its own: the gateway drains
//! in-flight requests on SIGTERM and exits cleanly, it serves TLS 1.2/1.3 only, and
//! workers under mutual TLS serve only peers holding a gateway certificate and still
//! require the gateway's signed credential; TLS settings are checked at start-up.

use crate::support::turn;
use devstack::certs::{Authority, Issued, Usage};
use devstack::{Http, Stack, StackOptions};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A test's own stack of one region (see `support::options`).
fn options(name: &str) -> StackOptions {
    crate::support::options(name, &["eu-west"], &[])
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_stops() {
    let _turn = turn();
    let mut options = options("drain");
    // Plain HTTP between gateway and worker here, so that mode stays covered too.
    options.worker_mtls = false;
    // As behind a load balancer: keep accepting briefly after SIGTERM, not ready.
    options.extra_env = vec![("SHUTDOWN_DELAY_SECS".into(), "1".into())];
    let mut stack = Stack::start(options).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = Http::new(&stack.gateway_url());
    let in_flight: Vec<_> = (0..4)
        .map(|i| {
            let http = http.clone();
            rt.spawn(async move {
                // Registration is the slowest call (argon2 + provisioning a database).
                let body = json!({"clinic_name": format!("Drain {i}"), "email": format!("drain-{i}-{}@x.org", std::process::id()), "password": "long enough password"});
                http.post("/api/v1/auth/register", None, &body).await.map(|r| r.status.as_u16())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(60));
    assert!(
        in_flight.iter().any(|r| !r.is_finished()),
        "requests are still in flight"
    );
    stack.gateway.terminate();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        devstack::stack::http_status(stack.gateway.admin_addr, "/readyz"),
        Some(503),
        "not ready while draining"
    );
    for request in in_flight {
        let status = rt
            .block_on(request)
            .unwrap()
            .expect("in-flight request answered");
        assert_eq!(status, 201, "an in-flight request was cut short");
    }
    assert!(
        stack.gateway.wait(),
        "gateway exits with success after draining"
    );
    let after = rt.block_on(http.get("/api/v1/openapi.json", None));
    assert!(after.is_err(), "no new requests after shutdown");
    let dir = stack.options.data_dir.clone();
    drop(stack);
    let _ = std::fs::remove_dir_all(dir);
}

fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sk", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed")
}

#[test]
fn the_gateway_serves_tls_1_2_and_1_3_only() {
    let _turn = turn();
    let certs = std::env::temp_dir().join(format!("medicalpro-test-{}-certs", std::process::id()));
    std::fs::create_dir_all(&certs).unwrap();
    let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut options = options("tls");
    options.extra_env = vec![
        ("TLS_CERT_FILE".into(), cert.display().to_string()),
        ("TLS_KEY_FILE".into(), key.display().to_string()),
    ];
    let stack = Stack::start(options).unwrap();
    let url = format!("https://{}/api/v1/openapi.json", stack.gateway.addr);
    for version in ["--tlsv1.2", "--tlsv1.3"] {
        let ok = curl(&[version, "-o", "/dev/null", "-w", "%{http_code}", &url]);
        assert_eq!(
            String::from_utf8_lossy(&ok.stdout),
            "200",
            "{version}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }
    let old = curl(&["--tlsv1.1", "--tls-max", "1.1", "-o", "/dev/null", &url]);
    assert!(!old.status.success(), "TLS 1.1 must be refused");
    let plain = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &url.replace("https://", "http://"),
    ]);
    assert_ne!(
        String::from_utf8_lossy(&plain.stdout),
        "200",
        "plain HTTP is not served on the TLS port"
    );
    let dir = stack.options.data_dir.clone();
    drop(stack);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(&certs);
}

/// `curl` to a worker, verifying its certificate against `ca` and presenting
/// `client` when given; prints the status code (`000` when no HTTP answer came).
fn curl_worker(
    ca: &Path,
    client: Option<&Issued>,
    args: &[&str],
    url: &str,
) -> std::process::Output {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
    ])
    .arg("--cacert")
    .arg(ca);
    if let Some(client) = client {
        cmd.arg("--cert")
            .arg(&client.cert)
            .arg("--key")
            .arg(&client.key);
    }
    cmd.args(args).arg(url).output().expect("curl is installed")
}

fn assert_refused(out: &std::process::Output, what: &str) {
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stdout) == "000",
        "{what}: expected a refused handshake, got {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn workers_under_mutual_tls_serve_gateways_only() {
    let _turn = turn();
    let stack = Stack::start(options("mtls")).unwrap();
    let certs = stack
        .certs
        .clone()
        .expect("mutual TLS between gateway and workers is the default");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    // Through the gateway everything works: registration (the provisioning call)
    // and clinic requests travel over mutual TLS.
    let http = Http::new(&stack.gateway_url());
    let email = format!("mtls-{}@clinic.example", std::process::id());
    let password = "correct horse battery staple";
    let token = rt.block_on(async {
        let reg = http
            .post(
                "/api/v1/auth/register",
                None,
                &json!({"clinic_name": "mTLS clinic", "email": email, "password": password}),
            )
            .await
            .unwrap();
        assert_eq!(reg.status, 201, "{}", reg.text());
        let login = http
            .post(
                "/api/v1/auth/login",
                None,
                &json!({"email": email, "password": password}),
            )
            .await
            .unwrap();
        assert_eq!(login.status, 200, "{}", login.text());
        let token = login.json()["access_token"].as_str().unwrap().to_owned();
        let created = http
            .post(
                "/api/v1/patients",
                Some(&token),
                &json!({"first_name": "Ada", "last_name": "Lovelace"}),
            )
            .await
            .unwrap();
        assert_eq!(created.status, 201, "{}", created.text());
        let id = created.json()["id"].as_str().unwrap().to_owned();
        let read = http
            .get(&format!("/api/v1/patients/{id}"), Some(&token))
            .await
            .unwrap();
        assert_eq!(read.status, 200, "{}", read.text());
        assert_eq!(read.json()["last_name"], "Lovelace");
        token
    });

    let worker = &stack.regions[0].worker;
    let url = format!("{}/api/v1/patients", worker.url());
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // No client certificate: refused at the handshake, under TLS 1.3 and 1.2.
    for version in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"]] {
        let out = curl_worker(&certs.ca, None, version, &url);
        assert_refused(&out, &format!("no client certificate, {version:?}"));
    }
    // A client certificate from another CA, and one from the right CA that is not
    // for client authentication (the workers' own server certificate).
    let elsewhere =
        std::env::temp_dir().join(format!("medicalpro-test-{}-other-ca", std::process::id()));
    std::fs::create_dir_all(&elsewhere).unwrap();
    let stranger = Authority::new("Another CA")
        .unwrap()
        .issue(&elsewhere, "stranger", Usage::Client)
        .unwrap();
    assert_refused(
        &curl_worker(&certs.ca, Some(&stranger), &[], &url),
        "another CA",
    );
    assert_refused(
        &curl_worker(&certs.ca, Some(&certs.worker), &[], &url),
        "a server certificate",
    );
    // TLS 1.1 and plain HTTP are not served on the worker's port.
    let old = curl_worker(
        &certs.ca,
        Some(&certs.gateway),
        &["--tlsv1.1", "--tls-max", "1.1"],
        &url,
    );
    assert_refused(&old, "TLS 1.1");
    let plain = curl_worker(&certs.ca, None, &[], &url.replace("https://", "http://"));
    assert_ne!(
        String::from_utf8_lossy(&plain.stdout),
        "200",
        "plain HTTP on the TLS port"
    );

    // A gateway's certificate is not enough: without the signed credential the
    // worker still answers with a problem.
    let direct = stack.worker_client(&stack.regions[0].name).unwrap();
    for token in [Some(token.as_str()), None] {
        let reply = rt.block_on(direct.get("/api/v1/patients", token)).unwrap();
        assert!(
            reply.status == 401 || reply.status == 403,
            "{}: {}",
            reply.status,
            reply.text()
        );
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
        assert!(reply.json()["type"].is_string(), "{}", reply.text());
    }
    let curl_signed_nothing = curl_worker(&certs.ca, Some(&certs.gateway), &[], &url);
    assert_eq!(String::from_utf8_lossy(&curl_signed_nothing.stdout), "403");

    // The admin listener stays plain HTTP and counts the refused handshakes.
    let admin = Http::new(&format!("http://{}", worker.admin_addr));
    let metrics = rt.block_on(admin.get("/metrics", None)).unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .text()
            .contains("medicalpro_tls_handshake_failures_total{reason=\"refused\"}"),
        "{}",
        metrics.text()
    );

    let dir = stack.options.data_dir.clone();
    drop(stack);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(elsewhere);
}

/// Key files a valid configuration names: the token signing key and its public
/// key, and a CA for the PostgreSQL connections.
struct KeyFiles {
    signing: String,
    public: String,
    db_ca: String,
}

fn key_files() -> &'static KeyFiles {
    static FILES: std::sync::OnceLock<KeyFiles> = std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("medicalpro-test-{}-keys", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (private, public) = common::token::generate_key_pair().unwrap();
        let (signing, public_path, db_ca) = (
            dir.join("jwt.pem"),
            dir.join("jwt.pub.pem"),
            dir.join("db-ca.pem"),
        );
        std::fs::write(&signing, private.as_bytes()).unwrap();
        std::fs::write(&public_path, public).unwrap();
        devstack::certs::Authority::new("check CA")
            .unwrap()
            .write_cert(&db_ca)
            .unwrap();
        KeyFiles {
            signing: signing.display().to_string(),
            public: format!("k1:{}", public_path.display()),
            db_ca: db_ca.display().to_string(),
        }
    })
}

/// Runs `<component> --check` with a valid base environment plus `extra`.
fn check(component: &str, extra: &[(&str, String)]) -> std::process::Output {
    let keys = key_files();
    Command::new(env!("CARGO_BIN_EXE_devstack"))
        .args([devstack::process::COMPONENT_ARG, component, "--check"])
        .env_remove("MEDICALPRO_CONFIG")
        .env("JWT_SIGNING_KEY_FILE", &keys.signing)
        .env("JWT_PUBLIC_KEYS", &keys.public)
        .env("DB_SSLROOTCERT", &keys.db_ca)
        .env("REGION_DB_SSLROOTCERT", &keys.db_ca)
        .env("AUDIT_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
        .env(
            "INTERNAL_SECRET",
            "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d",
        )
        .env("MASTER_KEY", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
        .env("REGION", "eu-west")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

/// Keys, certificates and policies are checked at start-up: each wrong one is
/// refused (exit 64) naming its setting.
#[test]
fn security_settings_are_checked_at_start_up() {
    let _turn = turn();
    let refused = |out: &std::process::Output, setting: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(setting), "{stderr}");
    };
    for component in ["gateway", "worker"] {
        let out = check(component, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        refused(
            &check(component, &[("DB_SSLROOTCERT", String::new())]),
            "DB_SSLROOTCERT",
        );
        refused(
            &check(component, &[("DB_SSLMODE", "prefer".into())]),
            "DB_SSLMODE",
        );
        refused(
            &check(
                component,
                &[("DB_SSLROOTCERT", "/nonexistent/ca.pem".into())],
            ),
            "DB_SSLROOTCERT",
        );
        refused(
            &check(component, &[("AUDIT_KEY", "c2hvcnQ=".into())]),
            "AUDIT_KEY",
        );
    }
    let keys = key_files();
    // The gateway signs: a public key, or nothing, is no signing key.
    let public_path = keys.public.trim_start_matches("k1:").to_owned();
    refused(
        &check("gateway", &[("JWT_SIGNING_KEY_FILE", public_path.clone())]),
        "JWT_SIGNING_KEY_FILE",
    );
    refused(
        &check("gateway", &[("JWT_SIGNING_KEY_FILE", String::new())]),
        "JWT_SIGNING_KEY_FILE",
    );
    refused(
        &check("gateway", &[("REGISTRATION", "anyone".into())]),
        "REGISTRATION",
    );
    // Workers only verify: they need public keys, and a private key is none.
    refused(
        &check("worker", &[("JWT_PUBLIC_KEYS", String::new())]),
        "JWT_PUBLIC_KEYS",
    );
    refused(
        &check(
            "worker",
            &[("JWT_PUBLIC_KEYS", format!("k1:{}", keys.signing))],
        ),
        "JWT_PUBLIC_KEYS",
    );
    refused(
        &check("worker", &[("JWT_PUBLIC_KEYS", public_path)]),
        "JWT_PUBLIC_KEYS",
    );
    // Plain TCP to PostgreSQL only when said explicitly.
    let out = check(
        "worker",
        &[
            ("DB_SSLMODE", "disable".into()),
            ("DB_SSLROOTCERT", String::new()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_settings_are_checked_at_start_up() {
    let _turn = turn();
    let dir =
        std::env::temp_dir().join(format!("medicalpro-test-{}-tls-check", std::process::id()));
    let certs = devstack::certs::StackCerts::generate(&dir).unwrap();
    let path = |p: &Path| p.display().to_string();
    let refused = |out: &std::process::Output, setting: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(setting), "{stderr}");
    };

    let worker_ok = [
        ("WORKER_TLS_CERT_FILE", path(&certs.worker.cert)),
        ("WORKER_TLS_KEY_FILE", path(&certs.worker.key)),
        ("WORKER_TLS_CLIENT_CA_FILE", path(&certs.ca)),
    ];
    let out = check("worker", &worker_ok);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused(
        &check("worker", &worker_ok[..2]),
        "WORKER_TLS_CLIENT_CA_FILE",
    );
    let mut missing_key = worker_ok.clone();
    missing_key[1].1 = path(&dir.join("nowhere.pem"));
    refused(&check("worker", &missing_key), "WORKER_TLS_KEY_FILE");
    let mut plain_url = worker_ok.to_vec();
    plain_url.push(("WORKER_URL", "http://worker:8081".into()));
    refused(&check("worker", &plain_url), "WORKER_URL");

    let gateway_ok = [
        ("UPSTREAM_TLS_CERT_FILE", path(&certs.gateway.cert)),
        ("UPSTREAM_TLS_KEY_FILE", path(&certs.gateway.key)),
        ("UPSTREAM_TLS_CA_FILE", path(&certs.ca)),
    ];
    let out = check("gateway", &gateway_ok);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused(
        &check("gateway", &gateway_ok[1..]),
        "UPSTREAM_TLS_CERT_FILE",
    );
    let mut key_as_ca = gateway_ok.clone();
    key_as_ca[2].1 = path(&certs.gateway.key);
    refused(&check("gateway", &key_as_ca), "UPSTREAM_TLS_CA_FILE");
    let _ = std::fs::remove_dir_all(dir);
}
