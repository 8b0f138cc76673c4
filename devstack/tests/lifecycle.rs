//! Process-level behaviour, each test on a stack of its own: the gateway drains
//! in-flight requests on SIGTERM and exits cleanly, and it serves TLS 1.2/1.3 only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use devstack::{Http, Stack, StackOptions};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

fn options(name: &str) -> StackOptions {
    let dir = std::env::temp_dir().join(format!("medicalpro-test-{}-{name}", std::process::id()));
    let mut options = StackOptions::new(env!("CARGO_BIN_EXE_devstack").into(), dir);
    options.listen = ([127, 0, 0, 1], 0).into();
    options.fast_unsafe = true;
    options.regions = vec!["eu-west".into()];
    options.log_level = "warn".into();
    options
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_stops() {
    let mut options = options("drain");
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
