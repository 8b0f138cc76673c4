//! End-to-end tests of the GDPR exports through the gateway: a patient's export as a
//! FHIR R4 Bundle, checked against the R4 rules for each resource, and the streamed
//! NDJSON export of a whole clinic (every row exactly once, no other clinic's, one
//! snapshot, admins only, audited, streamed through the gateway without being cut).
//!
//! This module's stack ([`SETUP`]) runs the gateway with a short upstream timeout, so that a
//! reader slower than that timeout shows the export's body is not subject to it.

use crate::support::*;
use bytes::Bytes;
use devstack::{Http, Stack};
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Seconds the gateway waits for a worker's answer head in this binary.
const UPSTREAM_TIMEOUT_SECS: u64 = 3;

/// The gateway's upstream timeout shorter than a slow reader takes.
static SETUP: Setup = Setup {
    name: "export",
    env: &[("UPSTREAM_TIMEOUT_SECS", "3")],
    server_conf: &[],
};

fn stack() -> Arc<Stack> {
    stack_of(&SETUP)
}

fn gateway() -> Http {
    Http::new(&stack().gateway_url())
}

// ---- FHIR ------------------------------------------------------------------------

/// FHIR forbids nulls and empty strings, arrays and objects anywhere.
fn assert_no_empty(v: &Value, at: &str) {
    match v {
        Value::Null => panic!("null at {at}"),
        Value::String(s) => assert!(!s.is_empty(), "empty string at {at}"),
        Value::Array(a) => {
            assert!(!a.is_empty(), "empty array at {at}");
            for (i, x) in a.iter().enumerate() {
                assert_no_empty(x, &format!("{at}[{i}]"));
            }
        }
        Value::Object(o) => {
            assert!(!o.is_empty(), "empty object at {at}");
            for (k, x) in o {
                assert_no_empty(x, &format!("{at}.{k}"));
            }
        }
        _ => {}
    }
}

fn is_code(v: &Value, allowed: &[&str]) -> bool {
    v.as_str().is_some_and(|s| allowed.contains(&s))
}

fn is_codeable_concept(v: &Value) -> bool {
    v["text"].is_string()
        || v["coding"].as_array().is_some_and(|c| {
            !c.is_empty()
                && c.iter()
                    .all(|c| c["system"].is_string() && c["code"].is_string())
        })
}

fn is_money(v: &Value) -> bool {
    v["value"].is_number() && v["currency"].as_str().is_some_and(|c| c.len() == 3)
}

/// A reference that must name an entry of the bundle.
fn resolves(reference: &Value, full_urls: &HashSet<String>) -> bool {
    reference["reference"]
        .as_str()
        .is_some_and(|r| full_urls.contains(r))
}

/// The FHIR R4 rules (cardinalities, required bindings, invariants) of the
/// resources an export holds.
fn assert_r4_resource(r: &Value, full_urls: &HashSet<String>) {
    let kind = r["resourceType"].as_str().unwrap();
    let id = r["id"].as_str().unwrap();
    assert!(
        id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
        "{kind} id {id}"
    );
    match kind {
        "Patient" => {
            for name in r["name"].as_array().unwrap() {
                assert!(name["family"].is_string() || name["given"].is_array());
            }
            for t in r["telecom"].as_array().unwrap() {
                assert!(is_code(
                    &t["system"],
                    &["phone", "fax", "email", "pager", "url", "sms", "other"]
                ));
            }
            assert!(r["birthDate"].as_str().unwrap().len() == 10);
        }
        "Appointment" => {
            assert!(
                is_code(
                    &r["status"],
                    &[
                        "proposed",
                        "pending",
                        "booked",
                        "arrived",
                        "fulfilled",
                        "cancelled",
                        "noshow",
                        "entered-in-error",
                        "checked-in",
                        "waitlist"
                    ]
                ),
                "{r}"
            );
            // app-3: only proposed or cancelled appointments may lack start and end.
            assert!(r["start"].is_string() && r["end"].is_string());
            let participants = r["participant"].as_array().unwrap();
            assert!(!participants.is_empty());
            for p in participants {
                assert!(
                    is_code(
                        &p["status"],
                        &["accepted", "declined", "tentative", "needs-action"]
                    ),
                    "{p}"
                );
                // app-1: a participant has a type or an actor.
                assert!(p["actor"]["reference"].is_string() || p["type"].is_array());
            }
            assert!(participants
                .iter()
                .any(|p| resolves(&p["actor"], full_urls)));
        }
        "Consent" => {
            assert!(is_code(
                &r["status"],
                &[
                    "draft",
                    "proposed",
                    "active",
                    "rejected",
                    "inactive",
                    "entered-in-error"
                ]
            ));
            assert!(is_codeable_concept(&r["scope"]));
            let categories = r["category"].as_array().unwrap();
            assert!(!categories.is_empty() && categories.iter().all(is_codeable_concept));
            // ppc-1: a policy or a policy rule; ppc-2: a privacy consent names its patient.
            assert!(r["policy"].is_array() || r["policyRule"].is_object());
            assert!(resolves(&r["patient"], full_urls));
            assert!(r["dateTime"].is_string());
        }
        "Invoice" => {
            assert!(is_code(
                &r["status"],
                &[
                    "draft",
                    "issued",
                    "balanced",
                    "cancelled",
                    "entered-in-error"
                ]
            ));
            // inv-1: a cancellation reason only when cancelled.
            assert!(r.get("cancelledReason").is_none() || r["status"] == "cancelled");
            assert!(resolves(&r["subject"], full_urls));
            for line in r["lineItem"].as_array().unwrap() {
                assert!(
                    line["chargeItemReference"].is_object()
                        || is_codeable_concept(&line["chargeItemCodeableConcept"])
                );
                for c in line["priceComponent"].as_array().unwrap() {
                    assert!(is_code(
                        &c["type"],
                        &[
                            "base",
                            "surcharge",
                            "deduction",
                            "discount",
                            "tax",
                            "informational"
                        ]
                    ));
                    assert!(is_money(&c["amount"]));
                }
            }
            assert!(is_money(&r["totalNet"]) && is_money(&r["totalGross"]));
        }
        other => panic!("unexpected resource {other}"),
    }
}

#[tokio::test]
async fn a_patient_export_in_fhir_form_is_a_valid_r4_bundle() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    let patient = create_patient(&http, &c, patient_body("Fhir", "Patient")).await;
    let pid = id(&patient);
    let doctor = create(
        &http,
        &c,
        "practitioners",
        json!({"first_name": "Hl", "last_name": "Seven"}),
    )
    .await;
    let booked = create(
        &http,
        &c,
        "appointments",
        json!({"patient_id": pid, "practitioner_id": id(&doctor), "starts_at": "2031-03-01T09:00:00Z", "ends_at": "2031-03-01T09:30:00Z", "notes": "fasting"}),
    )
    .await;
    let confirmed = create(
        &http,
        &c,
        "appointments",
        json!({"patient_id": pid, "practitioner_id": id(&doctor), "starts_at": "2031-03-02T09:00:00Z", "ends_at": "2031-03-02T09:30:00Z"}),
    )
    .await;
    let r = http
        .json(
            Method::PATCH,
            &format!("/api/v1/appointments/{}", id(&confirmed)),
            Some(&c.token),
            Some(&json!({"status": "confirmed"})),
        )
        .await
        .unwrap();
    status(&r, 200);
    let template = create(
        &http,
        &c,
        "consent-templates",
        json!({"name": unique("Care"), "body": "I agree."}),
    )
    .await;
    create(
        &http,
        &c,
        "consents",
        json!({"patient_id": pid, "template_id": id(&template)}),
    )
    .await;
    create(
        &http,
        &c,
        "consents",
        json!({"patient_id": pid, "template_id": id(&template), "given_at": "2020-01-01T00:00:00Z", "revoked_at": "2021-01-01T00:00:00Z"}),
    )
    .await;
    let lines = json!([
        {"description": "Consultation", "quantity": 1, "unit_price_cents": 2500, "vat_rate_bp": 0},
        {"description": "Dressing", "quantity": 3, "unit_price_cents": 199, "vat_rate_bp": 2000}
    ]);
    let invoice = create(
        &http,
        &c,
        "documents",
        json!({"kind": "invoice", "patient_id": pid, "lines": lines}),
    )
    .await;
    let r = http
        .post(
            &format!("/api/v1/documents/{}/issue", id(&invoice)),
            Some(&c.token),
            &json!({}),
        )
        .await
        .unwrap();
    let invoice = status(&r, 200);
    create(
        &http,
        &c,
        "documents",
        json!({"kind": "invoice", "patient_id": pid, "lines": lines}),
    )
    .await;
    let quote = create(
        &http,
        &c,
        "documents",
        json!({"kind": "quote", "patient_id": pid, "lines": lines}),
    )
    .await;
    let r = http
        .post(
            &format!("/api/v1/documents/{}/issue", id(&quote)),
            Some(&c.token),
            &json!({}),
        )
        .await
        .unwrap();
    status(&r, 200);

    let path = format!("/api/v1/patients/{pid}/export?format=fhir");
    let r = http.get(&path, Some(&c.token)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/fhir+json"));
    let bundle = r.json();
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "collection");
    assert!(bundle["timestamp"].is_string());
    assert_no_empty(&bundle, "Bundle");
    let entries = bundle["entry"].as_array().unwrap();
    let full_urls: HashSet<String> = entries
        .iter()
        .map(|e| e["fullUrl"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(full_urls.len(), entries.len(), "fullUrls are unique");
    let mut by_type: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for e in entries {
        let resource = &e["resource"];
        assert_eq!(
            e["fullUrl"],
            format!("urn:uuid:{}", resource["id"].as_str().unwrap())
        );
        assert_r4_resource(resource, &full_urls);
        by_type
            .entry(resource["resourceType"].as_str().unwrap())
            .or_default()
            .push(resource);
    }
    // Every urn:uuid reference names an entry of the bundle.
    let text = bundle.to_string();
    for part in text.split("\"reference\":\"urn:uuid:").skip(1) {
        let target = format!("urn:uuid:{}", &part[..36]);
        assert!(full_urls.contains(&target), "dangling {target}");
    }
    let counts: BTreeMap<&str, usize> = by_type.iter().map(|(k, v)| (*k, v.len())).collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("Appointment", 2),
            ("Consent", 2),
            ("Invoice", 1),
            ("Patient", 1)
        ]),
        "the draft invoice and the quote are no invoices"
    );
    assert_eq!(entries[0]["resource"]["resourceType"], "Patient");

    let p = by_type["Patient"][0];
    assert_eq!(p["id"], pid);
    assert_eq!(p["name"][0]["family"], "Patient");
    assert_eq!(p["name"][0]["given"][0], "Fhir");
    assert_eq!(p["birthDate"], "1980-02-29");
    let ssn = &p["identifier"][0];
    assert_eq!(ssn["value"], "1 80 02 75 123 456 78");
    assert_eq!(ssn["type"]["coding"][0]["code"], "SS");
    assert!(ssn["system"].is_string());

    let appointment = |appt_id: &str| {
        by_type["Appointment"]
            .iter()
            .find(|a| a["id"] == appt_id)
            .copied()
            .unwrap()
    };
    let a = appointment(&id(&booked));
    assert_eq!(a["status"], "pending");
    assert_eq!(a["comment"], "fasting");
    assert_eq!(
        a["participant"][1]["actor"]["reference"],
        format!("Practitioner/{}", id(&doctor))
    );
    assert_eq!(appointment(&id(&confirmed))["status"], "booked");

    let statuses: BTreeSet<&str> = by_type["Consent"]
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, BTreeSet::from(["active", "inactive"]));

    let inv = by_type["Invoice"][0];
    assert_eq!(inv["id"], id(&invoice));
    assert_eq!(inv["status"], "issued");
    assert_eq!(inv["identifier"][0]["value"], invoice["number"]);
    assert_eq!(inv["date"], invoice["issued_at"]);
    // 25.00 + 3 × 1.99 = 30.97 net; VAT 20 % of 5.97 = 1.19 (rounded half up).
    assert_eq!(inv["totalNet"], json!({"value": 30.97, "currency": "EUR"}));
    assert_eq!(
        inv["totalGross"],
        json!({"value": 32.16, "currency": "EUR"})
    );
    assert_eq!(inv["lineItem"].as_array().unwrap().len(), 2);

    // The JSON form stays the default, `format=json` asks for it, anything else is
    // refused; the FHIR form is for admins only, like the JSON one.
    let default = status(
        &http
            .get(&format!("/api/v1/patients/{pid}/export"), Some(&c.token))
            .await
            .unwrap(),
        200,
    );
    let explicit = http
        .get(
            &format!("/api/v1/patients/{pid}/export?format=json"),
            Some(&c.token),
        )
        .await
        .unwrap();
    assert_eq!(explicit.header("content-type"), Some("application/json"));
    assert_eq!(default["patient"], explicit.json()["patient"]);
    assert_eq!(default["documents"].as_array().unwrap().len(), 3);
    status(
        &http
            .get(
                &format!("/api/v1/patients/{pid}/export?format=xml"),
                Some(&c.token),
            )
            .await
            .unwrap(),
        400,
    );
    let staff = token_as(&stack(), &c, common::token::Role::Staff);
    status(&http.get(&path, Some(&staff)).await.unwrap(), 403);
    let other = register(&http, None).await;
    status(&http.get(&path, Some(&other.token)).await.unwrap(), 404);
    stack().wait_audit(&c, &format!("action = 'export' AND resource = 'patients' AND resource_id = '{pid}' AND outcome = 'success'")).await;
}

// ---- the clinic export -----------------------------------------------------------

/// Adds rows straight to the clinic's database: `patients` patients, 20 practitioners,
/// `appointments` appointments, and soft-deletes 3 of the patients.
async fn bulk(c: &Clinic, patients: i32, appointments: i64) {
    let db = stack().clinic_db(c).await;
    let clinic: uuid::Uuid = c.id.parse().unwrap();
    db.execute(
        "INSERT INTO patients (id, company_id, first_name, last_name, email) \
         SELECT gen_random_uuid(), $1, 'Bulk', 'Patient ' || g, 'bulk' || g || '@example.org' FROM generate_series(1, $2) g",
        &[&clinic, &patients],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO practitioners (id, company_id, first_name, last_name) \
         SELECT gen_random_uuid(), $1, 'Bulk', 'Doctor ' || g FROM generate_series(1, 20) g",
        &[&clinic],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO appointments (id, company_id, patient_id, practitioner_id, starts_at, ends_at) \
         SELECT gen_random_uuid(), $1, p.id, d.id, timestamptz '2032-01-01' + p.n * interval '1 hour', \
                timestamptz '2032-01-01' + p.n * interval '1 hour' + interval '30 minutes' \
         FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM patients WHERE company_id = $1 AND first_name = 'Bulk') p \
         CROSS JOIN (SELECT id FROM practitioners WHERE company_id = $1 AND first_name = 'Bulk' ORDER BY id LIMIT 1) d \
         WHERE p.n <= $2",
        &[&clinic, &appointments],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE patients SET deleted_at = now() WHERE id IN \
         (SELECT id FROM patients WHERE company_id = $1 AND first_name = 'Bulk' ORDER BY id DESC LIMIT 3)",
        &[&clinic],
    )
    .await
    .unwrap();
}

/// The ids of the live rows of every resource, straight from the clinic's database.
async fn live_ids(c: &Clinic) -> BTreeMap<String, BTreeSet<String>> {
    let db = stack().clinic_db(c).await;
    let clinic: uuid::Uuid = c.id.parse().unwrap();
    let mut out = BTreeMap::new();
    for r in common::resource::RESOURCES {
        let rows = db
            .query(
                &format!(
                    "SELECT id FROM {} WHERE company_id = $1 AND deleted_at IS NULL",
                    r.table
                ),
                &[&clinic],
            )
            .await
            .unwrap();
        out.insert(
            r.name.to_owned(),
            rows.iter()
                .map(|row| row.get::<_, uuid::Uuid>(0).to_string())
                .collect(),
        );
    }
    out
}

/// Opens `GET /api/v1/export` and returns the answer with its body unread.
async fn open_export(token: &str) -> http::Response<Incoming> {
    let client: httpkit::Client<Full<Bytes>> =
        httpkit::client(&httpkit::ClientSettings::default(), None);
    let req = http::Request::get(format!("{}/api/v1/export", stack().gateway_url()))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    client.request(req).await.unwrap()
}

/// Reads the rest of a body: the data frames received and all their bytes.
async fn read_rest(body: &mut Incoming, bytes: &mut Vec<u8>) -> usize {
    let mut frames = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the body arrives whole");
        if let Ok(data) = frame.into_data() {
            frames += 1;
            bytes.extend_from_slice(&data);
        }
    }
    frames
}

/// The exported ids per resource; panics on a malformed line or a repeated row.
fn exported_ids(bytes: &[u8]) -> BTreeMap<String, BTreeSet<String>> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let object = record.as_object().unwrap();
        assert_eq!(object.len(), 2, "{line}");
        let resource = record["resource"].as_str().unwrap().to_owned();
        let row_id = record["data"]["id"].as_str().unwrap().to_owned();
        assert!(
            out.entry(resource).or_default().insert(row_id),
            "a row exported twice: {line}"
        );
    }
    out
}

#[tokio::test]
async fn a_clinic_export_streams_every_row_exactly_once_and_nothing_else() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    let other = register(&http, None).await;
    // One of everything through the API (sealed ssn, children, links), then a few
    // hundred rows more: several pages of each of the big resources.
    let patient = create_patient(&http, &c, patient_body("Stream", "Me")).await;
    let doctor = create(
        &http,
        &c,
        "practitioners",
        json!({"first_name": "N", "last_name": "Djson"}),
    )
    .await;
    let category = create(&http, &c, "categories", json!({"name": unique("Cat")})).await;
    let product = create(
        &http,
        &c,
        "products",
        json!({"name": "Visit", "kind": "service", "unit_price_cents": 2500, "vat_rate_bp": 0, "category_ids": [id(&category)]}),
    )
    .await;
    create(
        &http,
        &c,
        "appointments",
        json!({"patient_id": id(&patient), "practitioner_id": id(&doctor), "starts_at": "2031-05-01T09:00:00Z", "ends_at": "2031-05-01T09:30:00Z", "items": [{"product_id": id(&product)}]}),
    )
    .await;
    create(
        &http,
        &c,
        "documents",
        json!({"kind": "quote", "patient_id": id(&patient), "lines": [{"description": "Visit", "quantity": 1, "unit_price_cents": 2500, "vat_rate_bp": 0}]}),
    )
    .await;
    let template = create(
        &http,
        &c,
        "consent-templates",
        json!({"name": unique("Data"), "body": "Yes."}),
    )
    .await;
    create(
        &http,
        &c,
        "consents",
        json!({"patient_id": id(&patient), "template_id": id(&template)}),
    )
    .await;
    bulk(&c, 250, 150).await;
    let foreign = create_patient(&http, &other, patient_body("Foreign", "Clinic")).await;
    bulk(&other, 30, 10).await;

    let r = open_export(&c.token).await;
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(
        headers["transfer-encoding"], "chunked",
        "streamed, not buffered"
    );
    assert!(headers.get("content-length").is_none());
    assert!(headers.get("x-request-id").is_some());
    let mut body = r.into_body();
    let mut bytes = Vec::new();
    let frames = read_rest(&mut body, &mut bytes).await;
    assert!(frames > 1, "the body came in {frames} frame(s)");

    let exported = exported_ids(&bytes);
    let expected = live_ids(&c).await;
    for (resource, ids) in &expected {
        let got = exported.get(resource).cloned().unwrap_or_default();
        assert_eq!(got.len(), ids.len(), "{resource}: count");
        assert_eq!(&got, ids, "{resource}: ids");
    }
    assert_eq!(
        exported.len(),
        expected.values().filter(|ids| !ids.is_empty()).count()
    );
    // One patient through the API, 250 in bulk less 3 soft-deleted; 1 + 150 appointments.
    assert_eq!(expected["patients"].len(), 248);
    assert_eq!(expected["appointments"].len(), 151);

    let text = String::from_utf8(bytes).unwrap();
    let foreign_ids = live_ids(&other).await;
    for id in foreign_ids.values().flatten() {
        assert!(!text.contains(id.as_str()), "another clinic's row {id}");
    }
    assert!(!text.contains(&id(&foreign)) && !text.contains("Foreign"));
    // Rows are as the API shows them to an admin: the ssn opened, children and links in.
    let line = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["data"]["id"] == patient["id"])
        .unwrap();
    assert_eq!(line, json!({"resource": "patients", "data": patient}));
    assert!(text.contains(&format!("\"category_ids\":[\"{}\"]", id(&category))));

    let clinic_id = &c.id;
    stack().wait_audit(&c, &format!("action = 'export' AND resource = 'clinic' AND resource_id = '{clinic_id}' AND outcome = 'success'")).await;

    for role in [
        common::token::Role::Staff,
        common::token::Role::Practitioner,
    ] {
        let refused = http
            .get("/api/v1/export", Some(&token_as(&stack(), &c, role)))
            .await
            .unwrap();
        status(&refused, 403);
    }
    stack()
        .wait_audit(
            &c,
            "action = 'export' AND resource = 'clinic' AND outcome = 'rejected'",
        )
        .await;
    // The other clinic's admin exports their own clinic only.
    let r = open_export(&other.token).await;
    let mut bytes = Vec::new();
    read_rest(&mut r.into_body(), &mut bytes).await;
    let theirs: BTreeMap<String, BTreeSet<String>> = live_ids(&other)
        .await
        .into_iter()
        .filter(|(_, ids)| !ids.is_empty())
        .collect();
    assert_eq!(exported_ids(&bytes), theirs);
}

#[tokio::test]
async fn a_slow_reader_gets_the_whole_export_from_one_snapshot() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    bulk(&c, 1500, 0).await;
    let before = live_ids(&c).await;

    let r = open_export(&c.token).await;
    assert_eq!(r.status(), 200);
    let mut body = r.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(!first.is_empty());
    assert!(
        !body.is_end_stream(),
        "the first bytes arrive before the end"
    );
    // Rows written while the export runs are not in it (one REPEATABLE READ
    // snapshot), and a reader slower than the gateway's upstream timeout is not cut.
    let late = create_patient(&http, &c, patient_body("Late", "Comer")).await;
    tokio::time::sleep(Duration::from_secs(UPSTREAM_TIMEOUT_SECS + 1)).await;
    let mut bytes = first.to_vec();
    read_rest(&mut body, &mut bytes).await;
    let exported = exported_ids(&bytes);
    assert_eq!(exported["patients"], before["patients"]);
    assert!(!exported["patients"].contains(&id(&late)));
    assert_eq!(exported["patients"].len(), 1497);

    // The export's connection went back to the pool outside any transaction: the
    // clinic keeps working, and its next export sees the late patient.
    let r = open_export(&c.token).await;
    let mut bytes = Vec::new();
    read_rest(&mut r.into_body(), &mut bytes).await;
    assert!(exported_ids(&bytes)["patients"].contains(&id(&late)));
}

#[tokio::test]
async fn a_client_that_leaves_midway_leaves_no_transaction_open() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    bulk(&c, 3000, 0).await;
    for _ in 0..3 {
        let r = open_export(&c.token).await;
        let mut body = r.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
    }
    // Every connection the clinic's pool lends afterwards is outside a transaction:
    // writes commit and are seen at once by the next request.
    for i in 0..20 {
        let p = create_patient(&http, &c, patient_body("After", &format!("Leave{i}"))).await;
        let r = http
            .get(&format!("/api/v1/patients/{}", id(&p)), Some(&c.token))
            .await
            .unwrap();
        status(&r, 200);
    }
    // And none stays inside a transaction once the workers noticed the clients left.
    let db = stack().clinic_db(&c).await;
    let mut open = -1i64;
    for _ in 0..100 {
        open = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        open, 0,
        "a connection was left inside an export's transaction"
    );
}

#[tokio::test]
async fn an_export_that_fails_midway_ends_visibly_incomplete_and_is_recorded() {
    let _stack = hold(&SETUP);
    let http = gateway();
    let c = register(&http, None).await;
    bulk(&c, 500, 0).await;
    // A sealed value that no longer opens, on the last patient in export order: the
    // export fails on its page, after the first pages were sent.
    let db = stack().clinic_db(&c).await;
    db.execute(
        "UPDATE patients SET ssn_enc = '\\x0102030405'::bytea WHERE id = (SELECT id FROM patients WHERE deleted_at IS NULL ORDER BY id DESC LIMIT 1)",
        &[],
    )
    .await
    .unwrap();

    let r = open_export(&c.token).await;
    assert_eq!(r.status(), 200);
    let mut body = r.into_body();
    let mut bytes = Vec::new();
    let mut outcome = Ok(());
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => bytes.extend_from_slice(&frame.into_data().unwrap_or_default()),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    assert!(
        outcome.is_err(),
        "a failed export must not end like a complete one"
    );
    let sent = exported_ids(&bytes);
    assert_eq!(
        sent["patients"].len(),
        400,
        "the pages before the failing one"
    );
    stack()
        .wait_audit(
            &c,
            "action = 'export' AND resource = 'clinic' AND outcome = 'error'",
        )
        .await;

    // The clinic keeps working on the same pool.
    for i in 0..12 {
        create_patient(&http, &c, patient_body("After", &format!("Failure{i}"))).await;
    }
}
