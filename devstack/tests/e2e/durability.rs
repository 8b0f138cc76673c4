//! Nothing acknowledged is lost: 64 concurrent clients create, patch and read
//! patients across clinics for a minute (`LOAD_SECS` to change it); afterwards every
//! acknowledged write is in its clinic's database with its last acknowledged value,
//! and every acknowledged request has its audit record in the central trail, found
//! by the request id the client was given.
//!
//! On the shared stack, alone (`support::alone`): its load would slow every test
//! beside it.

use crate::support::*;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const CLIENTS: usize = 64;
const CLINICS: usize = 8;

/// What one client was told.
#[derive(Default)]
struct Acknowledged {
    /// Patient id → its last acknowledged last name, per clinic index.
    patients: Vec<HashMap<Uuid, String>>,
    /// Request ids of acknowledged requests, per clinic index.
    requests: Vec<HashSet<String>>,
    /// Requests not acknowledged (anything but the expected success status).
    failures: Vec<String>,
}

async fn client_loop(n: usize, clinics: Arc<Vec<Clinic>>, until: Instant) -> Acknowledged {
    let http = http();
    let mut ack = Acknowledged {
        patients: vec![HashMap::new(); CLINICS],
        requests: vec![HashSet::new(); CLINICS],
        failures: Vec::new(),
    };
    let c = n % CLINICS;
    let clinic = &clinics[c];
    let mut mine: Vec<Uuid> = Vec::new();
    let mut i = 0usize;
    while Instant::now() < until {
        i += 1;
        let (reply, expected) = match (i % 10, mine.last()) {
            // 20 % patches of one of this client's own patients.
            (0 | 5, Some(_)) => {
                let id = mine[i % mine.len()];
                let last = format!("Patched{n}x{i}");
                let r = http
                    .json(
                        http::Method::PATCH,
                        &format!("/api/v1/patients/{id}"),
                        Some(&clinic.token),
                        Some(&json!({"last_name": last})),
                    )
                    .await
                    .unwrap();
                if r.status == 200 {
                    ack.patients[c].insert(id, last);
                }
                (r, 200)
            }
            // 10 % reads.
            (3, Some(&id)) => {
                let r = http
                    .get(&format!("/api/v1/patients/{id}"), Some(&clinic.token))
                    .await
                    .unwrap();
                (r, 200)
            }
            _ => {
                let last = format!("Load{n}x{i}");
                let r = http
                    .post(
                        "/api/v1/patients",
                        Some(&clinic.token),
                        &json!({"first_name": "Durable", "last_name": last, "ssn": format!("{n} {i}")}),
                    )
                    .await
                    .unwrap();
                if r.status == 201 {
                    let id: Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
                    mine.push(id);
                    ack.patients[c].insert(id, last);
                }
                (r, 201)
            }
        };
        if reply.status == expected {
            let rid = reply.header("x-request-id").expect("request id").to_owned();
            ack.requests[c].insert(rid);
        } else {
            ack.failures
                .push(format!("{} {}", reply.status, reply.text()));
        }
    }
    ack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_concurrent_writes_loses_nothing_and_audits_everything() {
    let _alone = alone();
    let secs: u64 = std::env::var("LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let http = http();
    let mut clinics = Vec::new();
    for i in 0..CLINICS {
        let region = if i % 2 == 0 { "eu-west" } else { "eu-central" };
        clinics.push(register(&http, Some(region)).await);
    }
    let clinics = Arc::new(clinics);
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client_loop(n, clinics.clone(), until)))
        .collect();
    let mut patients: Vec<HashMap<Uuid, String>> = vec![HashMap::new(); CLINICS];
    let mut requests: Vec<HashSet<String>> = vec![HashSet::new(); CLINICS];
    let mut failures = Vec::new();
    for t in tasks {
        let ack = t.await.unwrap();
        for c in 0..CLINICS {
            patients[c].extend(ack.patients[c].clone());
            requests[c].extend(ack.requests[c].iter().cloned());
        }
        failures.extend(ack.failures);
    }
    let total: usize = requests.iter().map(HashSet::len).sum();
    let writes: usize = patients.iter().map(HashMap::len).sum();
    eprintln!(
        "{total} acknowledged requests ({writes} patients) in {secs} s by {CLIENTS} clients; {} failures",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "unacknowledged: {:?}",
        &failures[..failures.len().min(5)]
    );
    assert!(writes >= CLINICS, "the load wrote something");

    let central = central_db().await;
    for (c, clinic) in clinics.iter().enumerate() {
        // Every acknowledged patient is there with its last acknowledged value.
        let db = clinic_db(clinic).await;
        let rows = db
            .query(
                "SELECT id, last_name FROM patients WHERE first_name = 'Durable'",
                &[],
            )
            .await
            .unwrap();
        let stored: HashMap<Uuid, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        for (id, last) in &patients[c] {
            assert_eq!(stored.get(id), Some(last), "patient {id} of clinic {c}");
        }
        // Every acknowledged request has its audit record (the shipper may lag).
        let clinic_id: Uuid = clinic.id.parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let audited: HashSet<String> = central
                .query(
                    "SELECT request_id FROM audit_logs WHERE clinic_id = $1 AND outcome = 'success'",
                    &[&clinic_id],
                )
                .await
                .unwrap()
                .iter()
                .filter_map(|r| r.get::<_, Option<String>>(0))
                .collect();
            let missing: Vec<&String> = requests[c].difference(&audited).collect();
            if missing.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let outbox = db
                    .query(
                        "SELECT * FROM audit_outbox WHERE request_id = ANY($1)",
                        &[&missing.iter().map(|s| s.to_string()).collect::<Vec<_>>()],
                    )
                    .await;
                panic!(
                    "{} acknowledged requests of clinic {c} have no audit record: {missing:?}; outbox: {outbox:?}",
                    missing.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
