//! Relocation end to end: a clinic with data of every kind moves from eu-west to
//! eu-central while a reader and a writer keep going. Every read succeeds; writes
//! are refused (503 + retry-after) only during the switch; afterwards the clinic is
//! served from the other region with exactly the data it had plus every write that
//! was acknowledged, every acknowledged access is in the audit trail, and the source
//! database is closed.

use crate::support::*;
use admin::relocate;
use common::ClinicId;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Every live row of every resource as the API shows it, by resource.
async fn snapshot(http: &devstack::Http, clinic: &Clinic) -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for r in common::resource::RESOURCES {
        let reply = http
            .get(
                &format!("/api/v1/{}?limit=100", r.name),
                Some(&clinic.token),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let mut rows = reply.json()["data"].as_array().unwrap().clone();
        rows.sort_by_key(|v| v["id"].as_str().unwrap_or_default().to_owned());
        out.push((r.name.to_owned(), rows));
    }
    out
}

async fn post(http: &devstack::Http, clinic: &Clinic, path: &str, body: Value) -> Value {
    let r = http.post(path, Some(&clinic.token), &body).await.unwrap();
    assert!(r.status.is_success(), "{path}: {}", r.text());
    r.json()
}

/// A clinic with a practitioner, patients, a product, a booked appointment, an
/// issued invoice, a file of several chunks on a patient and a consent pointing at
/// it; the file's id and bytes.
async fn populate(http: &devstack::Http, clinic: &Clinic) -> (String, Vec<u8>) {
    let practitioner = post(
        http,
        clinic,
        "/api/v1/practitioners",
        json!({"first_name": "Grace", "last_name": "Hopper"}),
    )
    .await;
    let patient = create_patient(http, clinic, patient_body("Moving", "Patient")).await;
    for i in 0..5 {
        create_patient(http, clinic, patient_body("Other", &format!("P{i}"))).await;
    }
    let product = post(http, clinic, "/api/v1/products", json!({"name": "Consultation", "kind": "service", "unit_price_cents": 2500, "vat_rate_bp": 2000})).await;
    post(
        http,
        clinic,
        "/api/v1/appointments",
        json!({
            "patient_id": patient["id"], "practitioner_id": practitioner["id"],
            "starts_at": "2031-03-01T09:00:00Z", "ends_at": "2031-03-01T09:30:00Z",
            "items": [{"product_id": product["id"], "quantity": 1}]
        }),
    )
    .await;
    let invoice = post(http, clinic, "/api/v1/documents", json!({
        "kind": "invoice", "patient_id": patient["id"],
        "lines": [{"description": "Consultation", "quantity": 1, "unit_price_cents": 2500, "vat_rate_bp": 2000}]
    })).await;
    post(
        http,
        clinic,
        &format!(
            "/api/v1/documents/{}/issue",
            invoice["id"].as_str().unwrap()
        ),
        json!({}),
    )
    .await;
    let template = post(
        http,
        clinic,
        "/api/v1/consent-templates",
        json!({"name": "Care", "body": "I agree."}),
    )
    .await;
    let mut file = b"%PDF-1.4\n".to_vec();
    while file.len() < 150_000 {
        file.extend_from_slice(b"% a scanned consent form, moved with its clinic\n");
    }
    file.extend_from_slice(b"%%EOF\n");
    let auth = format!("Bearer {}", clinic.token);
    let path = format!(
        "/api/v1/patients/{}/attachments",
        patient["id"].as_str().unwrap()
    );
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/pdf"),
    ];
    let made = http
        .send(
            http::Method::POST,
            &path,
            &headers,
            Some(file.clone().into()),
        )
        .await
        .unwrap();
    assert_eq!(made.status, 201, "{}", made.text());
    let attachment = made.json()["id"].as_str().unwrap().to_owned();
    post(
        http,
        clinic,
        "/api/v1/consents",
        json!({"patient_id": patient["id"], "template_id": template["id"], "attachment_id": attachment}),
    )
    .await;
    (attachment, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_moves_region_readable_throughout_with_nothing_lost() {
    let _turn = turn();
    let http = http();
    let clinic = register(&http, Some("eu-west")).await;
    let neighbour = register(&http, Some("eu-west")).await;
    let (attachment, file) = populate(&http, &clinic).await;
    let before = snapshot(&http, &clinic).await;
    let probe = before[0].1[0]["id"].as_str().unwrap().to_owned();
    let probe_path = format!("/api/v1/{}/{probe}", before[0].0);

    // A reader and a writer run during the whole move.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (http, done, token, path) = (
            http.clone(),
            done.clone(),
            clinic.token.clone(),
            probe_path.clone(),
        );
        tokio::spawn(async move {
            let mut request_ids = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let r = http.get(&path, Some(&token)).await.unwrap();
                assert_eq!(r.status, 200, "a read during the move: {}", r.text());
                request_ids.push(r.header("x-request-id").unwrap().to_owned());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            request_ids
        })
    };
    let writer = {
        let (http, done, token) = (http.clone(), done.clone(), clinic.token.clone());
        tokio::spawn(async move {
            let (mut written, mut refused_for, mut first_refusal) =
                (Vec::new(), Duration::ZERO, None::<Instant>);
            let mut i = 0;
            while !done.load(Ordering::Relaxed) {
                i += 1;
                let r = http
                    .post(
                        "/api/v1/patients",
                        Some(&token),
                        &json!({"first_name": "During", "last_name": format!("W{i}")}),
                    )
                    .await
                    .unwrap();
                match r.status.as_u16() {
                    201 => {
                        if let Some(t) = first_refusal.take() {
                            refused_for += t.elapsed();
                        }
                        written.push(r.json()["id"].as_str().unwrap().to_owned());
                    }
                    503 => {
                        assert!(r.header("retry-after").is_some());
                        assert_eq!(r.json()["type"], "urn:medicalpro:problem:unavailable");
                        first_refusal.get_or_insert_with(Instant::now);
                    }
                    s => panic!("a write during the move got {s}: {}", r.text()),
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            (written, refused_for)
        })
    };

    let stack = stack();
    let mut settings = admin_settings("eu-west");
    settings.target = Some(admin_settings("eu-central").regional);
    let id = ClinicId::from_uuid(clinic.id.parse().unwrap());
    let moved = relocate::relocate(&settings, &stack.keys().unwrap(), id, "eu-central", false)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::Relaxed);
    let read_ids = reader.await.unwrap();
    let (written, refused_for) = writer.await.unwrap();
    eprintln!(
        "relocated {} rows; writes paused {:?} (refused for {refused_for:?} as seen by the writer); {} reads, {} writes acknowledged during the move; {} audit records carried over",
        moved.rows,
        moved.write_pause,
        read_ids.len(),
        written.len(),
        moved.carried_audit
    );
    assert_eq!(
        (moved.from.as_str(), moved.to.as_str()),
        ("eu-west", "eu-central")
    );
    assert!(read_ids.len() > 20, "reads kept going: {}", read_ids.len());
    assert!(!written.is_empty());
    assert!(
        refused_for < moved.write_pause + Duration::from_secs(2),
        "writes were refused for {refused_for:?} (switch took {:?})",
        moved.write_pause
    );
    assert!(
        moved.write_pause < Duration::from_secs(10),
        "{:?}",
        moved.write_pause
    );

    // Placement switched; the data is what it was plus every acknowledged write.
    let central = central_db().await;
    let region: String = central
        .query_one(
            "SELECT region FROM companies WHERE id = $1",
            &[id.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(region, "eu-central");
    let mut after = snapshot(&http, &clinic).await;
    let patients = after.iter_mut().find(|(n, _)| n == "patients").unwrap();
    let during: Vec<String> = patients
        .1
        .iter()
        .filter(|p| p["first_name"] == "During")
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    for w in &written {
        assert!(during.contains(w), "acknowledged write {w} is there");
    }
    patients.1.retain(|p| p["first_name"] != "During");
    assert_eq!(before, after, "every record came over unchanged");
    // The file came over too, byte for byte.
    let got = http
        .get(
            &format!("/api/v1/attachments/{attachment}"),
            Some(&clinic.token),
        )
        .await
        .unwrap();
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body.as_ref(), file.as_slice());
    // Served from eu-central now: its database is there, eu-west's is closed.
    let target = stack
        .region("eu-central")
        .unwrap()
        .server
        .connect(&format!("medicalpro_clinic_{}", clinic.id))
        .await
        .unwrap();
    let n: i64 = target
        .query_one("SELECT count(*) FROM patients", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, 6 + during.len());
    let source = stack
        .region("eu-west")
        .unwrap()
        .server
        .connect("postgres")
        .await
        .unwrap();
    let closed: bool = source
        .query_one(
            "SELECT NOT datallowconn FROM pg_database WHERE datname = $1",
            &[&moved.previous_db],
        )
        .await
        .unwrap()
        .get(0);
    assert!(closed);
    // Writes work again; the neighbour in eu-west never noticed.
    create_patient(&http, &clinic, patient_body("After", "Move")).await;
    assert_eq!(
        http.get("/api/v1/patients", Some(&neighbour.token))
            .await
            .unwrap()
            .status,
        200
    );
    // Every acknowledged read has its audit record, including those served by the
    // source during the switch.
    let clinic_id: Uuid = clinic.id.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let audited: std::collections::HashSet<String> = central
            .query(
                "SELECT request_id FROM audit_logs WHERE clinic_id = $1 AND request_id IS NOT NULL",
                &[&clinic_id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let missing = read_ids.iter().filter(|r| !audited.contains(*r)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} reads have no audit record"
        );
        // Wake the destination's shipper.
        http.get("/api/v1/patients", Some(&clinic.token))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let settings = admin_settings("eu-west");
    let report = admin::audit::verify(
        &settings.central,
        settings.audit_keys.as_ref(),
        Some(id),
        None,
    )
    .await
    .unwrap();
    assert!(report.is_intact(), "{}", report.summary());
}
