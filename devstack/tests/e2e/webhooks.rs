//! Webhooks end to end, with receivers that are real HTTP servers in the test:
//! events from the clinic's own writes arrive signed as Standard Webhooks says
//! (checked with the specification's reference library), in order, carrying the
//! subscription role's view of the row; a receiver that answers 500 or never
//! answers is retried in order, then the subscription is disabled with the reason
//! shown, and resumes from the first undelivered event when enabled again; a
//! replay sends the events after a cursor again; a hanging receiver never holds
//! up a write; internal addresses are refused as targets.

use crate::support::*;
use bytes::Bytes;
use devstack::{Http, Stack};
use http::Method;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Private targets allowed (receivers are on loopback), quick retries, a short
/// answer timeout, a subscription disabled after 3 s of failures.
static SETUP: Setup = Setup {
    name: "webhooks",
    env: &[
        ("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ("WEBHOOK_RETRY_BASE_MS", "200"),
        ("WEBHOOK_RETRY_MAX_SECS", "1"),
        ("WEBHOOK_TIMEOUT_SECS", "1"),
        ("WEBHOOK_DISABLE_AFTER_SECS", "3"),
        ("WEBHOOK_SWEEP_SECS", "1"),
    ],
    server_conf: &[],
};

fn stack() -> Arc<Stack> {
    stack_of(&SETUP)
}

fn gateway() -> Http {
    Http::new(&stack().gateway_url())
}

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// One delivery as the receiver got it.
struct Received {
    headers: http::HeaderMap,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn id(&self) -> String {
        self.headers["webhook-id"].to_str().unwrap().to_owned()
    }
}

/// An HTTP server that records every request and answers `204`, `500`, or not
/// at all (for 30 s), as its mode says.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    mode: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(mode: u8) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let mode = Arc::new(AtomicU8::new(mode));
        let (g, m) = (got.clone(), mode.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (g, m) = (g.clone(), m.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (g, m) = (g.clone(), m.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                g.lock().unwrap().push(Received {
                                    headers: parts.headers,
                                    body,
                                });
                                let status = match m.load(Ordering::SeqCst) {
                                    OK => 204,
                                    FAIL => 500,
                                    _ => {
                                        tokio::time::sleep(Duration::from_secs(30)).await;
                                        204
                                    }
                                };
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            got,
            mode,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hooks/medicalpro", self.addr)
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    /// Waits until `n` requests arrived (30 s at most), then returns what did.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "{} of {n} deliveries arrived",
                self.count()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got = self.got.lock().unwrap();
        got.iter()
            .map(|r| Received {
                headers: r.headers.clone(),
                body: r.body.clone(),
            })
            .collect()
    }
}

async fn subscribe(http: &Http, c: &Clinic, url: &str, types: &[&str], role: &str) -> Value {
    status(
        &post(
            http,
            c,
            "/api/v1/webhook-subscriptions",
            json!({"url": url, "event_types": types, "role": role, "description": "front desk sync"}),
        )
        .await,
        201,
    )
}

async fn subscription(http: &Http, c: &Clinic, id: &str) -> Value {
    status(
        &http
            .get(
                &format!("/api/v1/webhook-subscriptions/{id}"),
                Some(&c.token),
            )
            .await
            .unwrap(),
        200,
    )
}

/// Verifies `r` as a Standard Webhooks receiver would.
fn verify(secret: &str, r: &Received) {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    wh.verify(&r.body, &r.headers)
        .unwrap_or_else(|e| panic!("bad signature: {e:?}"));
    let mut tampered = r.body.to_vec();
    tampered.push(b' ');
    assert!(wh.verify(&tampered, &r.headers).is_err());
}

#[tokio::test]
async fn events_arrive_signed_in_order_with_what_the_role_may_see() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    let receiver = Receiver::start(OK).await;
    let types = [
        "patient.created",
        "patient.updated",
        "patient.erased",
        "appointment.booked",
        "appointment.moved",
        "appointment.cancelled",
        "invoice.issued",
        "invoice.paid",
    ];
    let sub = subscribe(&http, &c, &receiver.url(), &types, "staff").await;
    let secret = sub["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{sub}");
    assert_eq!(sub["enabled"], true);
    let listed = status(
        &http
            .get("/api/v1/webhook-subscriptions", Some(&c.token))
            .await
            .unwrap(),
        200,
    );
    assert!(listed["data"][0].get("secret").is_none(), "{listed}");

    let patient = create_patient(
        &http,
        &c,
        json!({"first_name": "Hook", "last_name": "Receiver", "ssn": "1 85 05 78 006 084"}),
    )
    .await;
    let pid = id(&patient);
    status(
        &send(
            &http,
            &c,
            Method::PATCH,
            &format!("/api/v1/patients/{pid}"),
            Some(json!({"phone": "+33 1 23 45 67 89"})),
        )
        .await,
        200,
    );
    let practitioner = id(&create(
        &http,
        &c,
        "practitioners",
        json!({"first_name": "Ada", "last_name": "Hook"}),
    )
    .await);
    let appointment = id(&create(
        &http,
        &c,
        "appointments",
        json!({"patient_id": pid, "practitioner_id": practitioner, "outside_hours": true,
               "starts_at": "2031-03-03T09:00:00Z", "ends_at": "2031-03-03T09:30:00Z"}),
    )
    .await);
    let path = format!("/api/v1/appointments/{appointment}");
    let moved = json!({"starts_at": "2031-03-03T10:00:00Z", "ends_at": "2031-03-03T10:30:00Z"});
    status(
        &send(&http, &c, Method::PATCH, &path, Some(moved)).await,
        200,
    );
    let cancelled = json!({"status": "cancelled"});
    status(
        &send(&http, &c, Method::PATCH, &path, Some(cancelled)).await,
        200,
    );
    let draft = create(
        &http,
        &c,
        "documents",
        json!({"kind": "invoice", "patient_id": pid, "lines": [
            {"description": "Consultation", "quantity": 1, "unit_price_cents": 5000, "vat_rate_bp": 0}]}),
    )
    .await;
    let invoice = id(&draft);
    status(
        &post(
            &http,
            &c,
            &format!("/api/v1/documents/{invoice}/issue"),
            json!({}),
        )
        .await,
        200,
    );
    status(
        &post(
            &http,
            &c,
            &format!("/api/v1/documents/{invoice}/payments"),
            json!({"amount_cents": 5000, "method": "card", "paid_on": "2031-03-03"}),
        )
        .await,
        201,
    );
    status(
        &post(
            &http,
            &c,
            &format!("/api/v1/patients/{pid}/erase"),
            json!({}),
        )
        .await,
        200,
    );

    let got = receiver.wait_for(8).await;
    let kinds: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "patient.created",
            "patient.updated",
            "appointment.booked",
            "appointment.moved",
            "appointment.cancelled",
            "invoice.issued",
            "invoice.paid",
            "patient.erased",
        ],
    );
    let mut last_seq = 0;
    for r in &got {
        verify(&secret, r);
        let v = r.json();
        let seq = v["data"]["seq"].as_i64().unwrap();
        assert!(seq > last_seq, "in order: {seq} after {last_seq}");
        last_seq = seq;
        // A staff subscription never sees the social security number.
        assert!(!String::from_utf8_lossy(&r.body).contains("006 084"), "{v}");
    }
    let ids: std::collections::HashSet<String> = got.iter().map(Received::id).collect();
    assert_eq!(ids.len(), got.len(), "one webhook-id per event");
    let booked = got[2].json();
    assert_eq!(booked["data"]["resource"], "appointments");
    assert_eq!(booked["data"]["id"], appointment.as_str());
    assert_eq!(
        booked["data"]["object"]["practitioner_id"],
        practitioner.as_str()
    );
    assert_eq!(got[6].json()["data"]["object"]["status"], "paid");
    let erased = got[7].json();
    assert!(erased["data"]["object"].is_null(), "{erased}");
    assert_eq!(erased["data"]["id"], pid.as_str());

    // The events are listed with their cursor; every delivery is done.
    let events = status(
        &http
            .get("/api/v1/webhook-events?limit=100", Some(&c.token))
            .await
            .unwrap(),
        200,
    );
    assert_eq!(events["data"].as_array().unwrap().len(), 8, "{events}");
    assert_eq!(events["data"][0]["id"].as_str().unwrap(), got[0].id());
    let sid = sub["id"].as_str().unwrap();
    let deliveries = status(
        &http
            .get(
                &format!("/api/v1/webhook-subscriptions/{sid}/deliveries?limit=100"),
                Some(&c.token),
            )
            .await
            .unwrap(),
        200,
    );
    assert!(
        deliveries["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["delivered_at"].is_string() && d["last_status"] == 204),
        "{deliveries}"
    );
    // The reads deliveries made are in the trail, under the subscription.
    stack()
        .wait_audit(&c, &format!("action = 'webhook' AND user_id = '{sid}'"))
        .await;

    // A clinic without subscriptions writes no events, and nothing reaches the
    // receiver from it.
    let other = register(&http, None).await;
    create_patient(&http, &other, patient_body("Not", "Subscribed")).await;
    let events: i64 = stack()
        .clinic_db(&other)
        .await
        .query_one("SELECT count(*) FROM webhook_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.count(), 8);
}

#[tokio::test]
async fn a_failing_receiver_is_retried_in_order_then_disabled_and_resumes_when_enabled() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    let receiver = Receiver::start(FAIL).await;
    let sub = subscribe(&http, &c, &receiver.url(), &["patient.created"], "admin").await;
    let sid = sub["id"].as_str().unwrap().to_owned();
    let secret = sub["secret"].as_str().unwrap().to_owned();
    let first = id(&create_patient(&http, &c, patient_body("First", "Failing")).await);
    let second = id(&create_patient(&http, &c, patient_body("Second", "Waiting")).await);

    // Retried, the first event only: the second waits behind it.
    let tries = receiver.wait_for(3).await;
    let first_id = tries[0].id();
    assert!(tries.iter().all(|r| r.id() == first_id), "in order");
    assert!(tries
        .iter()
        .all(|r| r.json()["data"]["id"] == first.as_str()));
    for r in &tries {
        verify(&secret, r);
    }

    // Disabled after failing for longer than the limit, the reason shown.
    let deadline = Instant::now() + Duration::from_secs(20);
    let disabled = loop {
        let s = subscription(&http, &c, &sid).await;
        if s["enabled"] == false {
            break s;
        }
        assert!(Instant::now() < deadline, "never disabled: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("500"), "{reason}");
    assert!(reason.contains("enabled: true"), "{reason}");
    assert_eq!(disabled["pending_deliveries"], 2);
    let deliveries = status(
        &http
            .get(
                &format!("/api/v1/webhook-subscriptions/{sid}/deliveries"),
                Some(&c.token),
            )
            .await
            .unwrap(),
        200,
    );
    assert_eq!(deliveries["data"][0]["last_status"], 500, "{deliveries}");
    assert!(deliveries["data"][0]["attempts"].as_i64().unwrap() >= 3);
    assert_eq!(deliveries["data"][1]["attempts"], 0);

    // Nothing more while disabled; a new event is not even recorded for it.
    let quiet = receiver.count();
    create_patient(&http, &c, patient_body("While", "Disabled")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.count(), quiet);

    // Fixed and enabled again: the first, then the second, once each.
    receiver.set(OK);
    let enabled = status(
        &send(
            &http,
            &c,
            Method::PATCH,
            &format!("/api/v1/webhook-subscriptions/{sid}"),
            Some(json!({"enabled": true})),
        )
        .await,
        200,
    );
    assert!(enabled["disabled_reason"].is_null(), "{enabled}");
    let got = receiver.wait_for(quiet + 2).await;
    let resumed: Vec<Value> = got[quiet..].iter().map(Received::json).collect();
    assert_eq!(resumed[0]["data"]["id"], first.as_str());
    assert_eq!(resumed[1]["data"]["id"], second.as_str());
    assert_eq!(got[quiet].id(), first_id, "the same webhook-id on a retry");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = subscription(&http, &c, &sid).await;
        if s["pending_deliveries"] == 0 {
            assert!(
                s["failing_since"].is_null() && s["last_success_at"].is_string(),
                "{s}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_hanging_receiver_holds_up_no_write_and_events_replay_from_a_cursor() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    let receiver = Receiver::start(HANG).await;
    let sub = subscribe(&http, &c, &receiver.url(), &["patient.created"], "admin").await;
    let sid = sub["id"].as_str().unwrap().to_owned();

    // Writes answer while the receiver keeps the deliveries waiting 30 s.
    for i in 0..3 {
        let started = Instant::now();
        create_patient(&http, &c, patient_body("Quick", &format!("Write{i}"))).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a write waited {:?} for a receiver",
            started.elapsed()
        );
    }
    receiver.wait_for(1).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = subscription(&http, &c, &sid).await;
        if s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no answer within"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The receiver recovers: all three arrive; then a replay after the first
    // event's cursor sends the other two again, with their ids.
    receiver.set(OK);
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        let got = receiver.wait_for(1).await;
        let ok: Vec<String> = {
            let mut ids: Vec<String> = got.iter().map(Received::id).collect();
            ids.dedup();
            ids
        };
        let s = subscription(&http, &c, &sid).await;
        if s["pending_deliveries"] == 0 {
            break ok;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    let events = status(
        &http
            .get("/api/v1/webhook-events", Some(&c.token))
            .await
            .unwrap(),
        200,
    );
    let first_seq = events["data"][0]["seq"].as_i64().unwrap();
    let before = receiver.count();
    let replay = status(
        &post(
            &http,
            &c,
            &format!("/api/v1/webhook-subscriptions/{sid}/replay"),
            json!({"after": first_seq}),
        )
        .await,
        202,
    );
    assert_eq!(replay["queued"], 2);
    let got = receiver.wait_for(before + 2).await;
    let again: Vec<String> = got[before..].iter().map(Received::id).collect();
    assert_eq!(again, delivered[1..].to_vec());
    problem(
        &post(
            &http,
            &c,
            &format!("/api/v1/webhook-subscriptions/{sid}/replay"),
            json!({"after": "yesterday"}),
        )
        .await,
        400,
    );

    // Deleted: nothing more is recorded or sent.
    let r = send(
        &http,
        &c,
        Method::DELETE,
        &format!("/api/v1/webhook-subscriptions/{sid}"),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let count = receiver.count();
    create_patient(&http, &c, patient_body("After", "Delete")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.count(), count);
}

/// On a stack as deployed (private targets not allowed): a free account cannot
/// point deliveries at internal services, and only admins manage webhooks.
#[tokio::test]
async fn internal_targets_are_refused_and_only_admins_manage_webhooks() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    for url in [
        "http://127.0.0.1:9/hooks",
        "https://127.0.0.1/hooks",
        "https://localhost/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hooks",
        "https://10.0.0.7/hooks",
        "https://user:secret@hooks.example.org/in",
        "http://hooks.example.org/in",
    ] {
        let body = json!({"url": url, "event_types": ["patient.created"]});
        let p = problem(
            &post(&http, &c, "/api/v1/webhook-subscriptions", body).await,
            400,
        );
        assert!(p["detail"].as_str().unwrap().contains("url"), "{url}: {p}");
    }
    let unknown = json!({"url": "https://hooks.example.org/in", "event_types": ["patient.read"]});
    problem(
        &post(&http, &c, "/api/v1/webhook-subscriptions", unknown).await,
        400,
    );
    let none = json!({"url": "https://hooks.example.org/in", "event_types": []});
    problem(
        &post(&http, &c, "/api/v1/webhook-subscriptions", none).await,
        400,
    );
    let staff = token_as(crate::support::stack(), &c, common::token::Role::Staff);
    let body = json!({"url": "https://hooks.example.org/in", "event_types": ["patient.created"]});
    problem(
        &http
            .post("/api/v1/webhook-subscriptions", Some(&staff), &body)
            .await
            .unwrap(),
        403,
    );
    problem(
        &http
            .get("/api/v1/webhook-events", Some(&staff))
            .await
            .unwrap(),
        403,
    );
    let listed = status(
        &http
            .get("/api/v1/webhook-subscriptions", Some(&c.token))
            .await
            .unwrap(),
        200,
    );
    assert!(listed["data"].as_array().unwrap().is_empty());
    // Asking for another clinic's (or no) subscription is a miss, and recorded.
    let nobody = uuid::Uuid::new_v4();
    problem(
        &http
            .get(
                &format!("/api/v1/webhook-subscriptions/{nobody}"),
                Some(&c.token),
            )
            .await
            .unwrap(),
        404,
    );
    wait_audit(
        &c,
        &format!("resource = 'webhook-subscriptions' AND resource_id = '{nobody}' AND outcome = 'not_found'"),
    )
    .await;
}

/// Key rotation re-seals a subscription's secret with the clinic's other sealed
/// values: after two rotations and the old versions shredded, deliveries are
/// still signed with the secret the receiver was given.
#[tokio::test]
async fn deliveries_survive_key_rotation_and_shredding() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    let receiver = Receiver::start(OK).await;
    let sub = subscribe(&http, &c, &receiver.url(), &["patient.created"], "admin").await;
    let secret = sub["secret"].as_str().unwrap().to_owned();
    let ring = stack().keys().unwrap();
    let settings = stack().admin_settings_of(&c.region);
    let clinic = common::ClinicId::from_uuid(c.id.parse().unwrap());
    for shred in [None, Some(Duration::ZERO)] {
        let report = admin::keys::rotate_data_keys(
            &settings,
            &ring,
            &admin::keys::Scope::Clinic(clinic),
            shred,
            false,
        )
        .await
        .unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert!(report.rotated[0].reencrypted >= 1, "the secret re-sealed");
    }
    let versions: Vec<i32> = stack()
        .central_db()
        .await
        .query(
            "SELECT version FROM clinic_data_keys WHERE clinic_id = $1",
            &[&clinic.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![3], "versions 1 and 2 shredded");
    let sealed: Vec<u8> = stack()
        .clinic_db(&c)
        .await
        .query_one("SELECT secret_enc FROM webhook_subscriptions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(common::crypto::sealed_key_id(&sealed).unwrap(), 3);
    // No sealed field in this write: the worker may still seal with the version
    // it had until it reloads (which is why shredding has a grace period).
    let body = json!({"first_name": "After", "last_name": "Rotation"});
    create_patient(&http, &c, body).await;
    let got = receiver.wait_for(1).await;
    verify(&secret, &got[0]);
}

/// What an admin set up for integrations stops with their admin rights: their
/// webhook subscriptions are disabled at the next delivery (the reason says so;
/// another admin may take one over by enabling it), their API clients revoked.
#[tokio::test]
async fn an_admins_integrations_stop_when_they_stop_being_admin() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    let email = format!("{}@clinic.example", unique("second-admin"));
    let password = "a second admin's passphrase";
    let made = status(
        &post(
            &http,
            &c,
            "/api/v1/users",
            json!({"email": email, "password": password, "role": "admin"}),
        )
        .await,
        201,
    );
    let second = status(
        &http
            .post(
                "/api/v1/auth/login",
                None,
                &json!({"email": email, "password": password}),
            )
            .await
            .unwrap(),
        200,
    );
    let second = Clinic {
        token: second["access_token"].as_str().unwrap().to_owned(),
        ..c.clone()
    };
    let receiver = Receiver::start(OK).await;
    let sub = subscribe(
        &http,
        &second,
        &receiver.url(),
        &["patient.created"],
        "admin",
    )
    .await;
    let sid = sub["id"].as_str().unwrap().to_owned();
    let client = status(
        &post(
            &http,
            &second,
            "/api/v1/api-clients",
            json!({"name": "Their integration", "role": "staff"}),
        )
        .await,
        201,
    );
    create_patient(&http, &c, patient_body("Before", "Demotion")).await;
    receiver.wait_for(1).await;

    // Disabled by the first admin.
    let uid = made["id"].as_str().unwrap();
    status(
        &post(
            &http,
            &c,
            &format!("/api/v1/users/{uid}/disable"),
            json!({}),
        )
        .await,
        200,
    );
    create_patient(&http, &c, patient_body("After", "Demotion")).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let disabled = loop {
        let s = subscription(&http, &c, &sid).await;
        if s["enabled"] == false {
            break s;
        }
        assert!(Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = disabled["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("no longer an active admin"), "{reason}");
    assert_eq!(receiver.count(), 1, "nothing sent for a disabled admin");
    let clients = status(
        &http
            .get("/api/v1/api-clients", Some(&c.token))
            .await
            .unwrap(),
        200,
    );
    let theirs = clients["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == client["id"])
        .unwrap()
        .clone();
    assert!(theirs["revoked_at"].is_string(), "{theirs}");

    // The first admin takes the subscription over: delivery resumes.
    status(
        &send(
            &http,
            &c,
            Method::PATCH,
            &format!("/api/v1/webhook-subscriptions/{sid}"),
            Some(json!({"enabled": true})),
        )
        .await,
        200,
    );
    let got = receiver.wait_for(2).await;
    assert_eq!(got[1].json()["data"]["object"]["last_name"], "Demotion");
}
