//! End-to-end tests of every clinic resource through the gateway: the isolation
//! matrix over all of them, and the rules a clinic relies on (no double booking,
//! computed totals, gapless invoice numbers, frozen issued invoices, versioned
//! consent templates, product categories), each with its refusals.

use crate::support::*;
use devstack::Http;
use http::Method;
use serde_json::{json, Value};

/// One object of each resource, with what they depend on.
struct World {
    objects: Vec<(&'static str, Value, Value)>,
    /// The issued invoice the payment pays.
    invoice: Value,
    /// A booked recurring series (`/api/v1/appointment-series/{id}`).
    series: Value,
}

async fn world(http: &Http, c: &Clinic) -> World {
    let patient = create(http, c, "patients", patient_body("World", "Patient")).await;
    let practitioner = create(
        http,
        c,
        "practitioners",
        json!({"first_name": "Greg", "last_name": "House", "specialty": "diagnostics"}),
    )
    .await;
    let category = create(
        http,
        c,
        "categories",
        json!({"name": format!("Care {}", unique("c"))}),
    )
    .await;
    let product = create(
        http,
        c,
        "products",
        json!({"name": "Consultation", "kind": "service", "unit_price_cents": 2500, "vat_rate_bp": 0, "category_ids": [id(&category)]}),
    )
    .await;
    let appointment = create(
        http,
        c,
        "appointments",
        json!({"patient_id": id(&patient), "practitioner_id": id(&practitioner), "starts_at": "2030-01-07T09:00:00Z", "ends_at": "2030-01-07T09:30:00Z", "items": [{"product_id": id(&product)}]}),
    )
    .await;
    let document = create(
        http,
        c,
        "documents",
        json!({"kind": "quote", "patient_id": id(&patient), "lines": [{"description": "Visit", "quantity": 1, "unit_price_cents": 2500, "vat_rate_bp": 0}]}),
    )
    .await;
    let template = create(
        http,
        c,
        "consent-templates",
        json!({"name": unique("Consent"), "body": "I agree."}),
    )
    .await;
    let used = create(
        http,
        c,
        "consent-templates",
        json!({"name": unique("Consent"), "body": "I agree too."}),
    )
    .await;
    let consent = create(
        http,
        c,
        "consents",
        json!({"patient_id": id(&patient), "template_id": id(&used)}),
    )
    .await;
    let kind = create(
        http,
        c,
        "appointment-types",
        json!({"name": unique("Check-up"), "duration_minutes": 20, "buffer_after_minutes": 5, "default_product_id": id(&product), "colour": "#3A7BD5"}),
    )
    .await;
    let hours = create(
        http,
        c,
        "working-hours",
        json!({"practitioner_id": id(&practitioner), "weekday": "monday", "start_time": "08:00", "end_time": "12:00"}),
    )
    .await;
    let exception = create(
        http,
        c,
        "hours-exceptions",
        json!({"practitioner_id": id(&practitioner), "date": "2030-01-14", "change": "closed", "reason": "training"}),
    )
    .await;
    // A payment needs an issued invoice; it and the series below are another
    // patient's (a patient's export holds one row of each resource).
    let regular = create(http, c, "patients", patient_body("Series", "Patient")).await;
    let invoice = create(
        http,
        c,
        "documents",
        json!({"kind": "invoice", "patient_id": id(&regular), "lines": [{"description": "Visit", "quantity": 1, "unit_price_cents": 2500, "vat_rate_bp": 0}]}),
    )
    .await;
    status(
        &post(
            http,
            c,
            &format!("/api/v1/documents/{}/issue", id(&invoice)),
            json!({}),
        )
        .await,
        200,
    );
    let payment = create(
        http,
        c,
        "payments",
        json!({"document_id": id(&invoice), "amount_cents": 1000, "method": "card", "paid_on": "2030-01-07", "reference": "T-1"}),
    )
    .await;
    // A recurring series (its occurrences outside the hours on purpose).
    let series = status(
        &post(
            http,
            c,
            "/api/v1/appointments/series",
            json!({"patient_id": id(&regular), "practitioner_id": id(&practitioner),
                "starts_at": "2030-02-04T15:00:00Z", "appointment_type_id": id(&kind), "outside_hours": true,
                "recurrence": {"frequency": "weekly", "count": 2}}),
        )
        .await,
        201,
    );
    let patch = |v: Value| v;
    World {
        objects: vec![
            (
                "patients",
                patient,
                patch(json!({"phone": "+33 6 00 00 00 00"})),
            ),
            (
                "practitioners",
                practitioner,
                json!({"specialty": "nephrology"}),
            ),
            ("categories", category, json!({"description": "updated"})),
            ("products", product, json!({"unit_price_cents": 2600})),
            (
                "appointments",
                appointment,
                json!({"notes": "bring results"}),
            ),
            ("documents", document, json!({"notes": "thanks"})),
            (
                "consent-templates",
                template,
                json!({"body": "I agree, v1 edited."}),
            ),
            (
                "consents",
                consent,
                json!({"revoked_at": "2031-01-01T00:00:00Z"}),
            ),
            ("appointment-types", kind, json!({"colour": "#00aa00"})),
            ("working-hours", hours, json!({"end_time": "13:00"})),
            ("hours-exceptions", exception, json!({"reason": "holiday"})),
            // A recorded payment never changes: a patch to what it holds.
            ("payments", payment, json!({"reference": "T-1"})),
        ],
        invoice,
        series,
    }
}

#[tokio::test]
async fn every_resource_is_isolated_patchable_deletable_and_restorable() {
    let _turn = turn();
    let http = http();
    let a = register(&http, Some("eu-west")).await;
    let b = register(&http, Some("eu-central")).await;
    let w = world(&http, &a).await;
    assert_eq!(w.objects.len(), common::resource::RESOURCES.len());
    for (resource, object, patch) in &w.objects {
        let path = format!("/api/v1/{resource}/{}", id(object));
        // Another clinic: every verb is 404, exactly like a missing id.
        let missing = format!("/api/v1/{resource}/{}", uuid::Uuid::now_v7());
        for p in [&path, &missing] {
            let get = status(&send(&http, &b, Method::GET, p, None).await, 404);
            assert_eq!(
                status(
                    &send(&http, &b, Method::PATCH, p, Some(patch.clone())).await,
                    404
                ),
                get
            );
            assert_eq!(
                status(&send(&http, &b, Method::DELETE, p, None).await, 404),
                get
            );
            assert_eq!(
                status(
                    &send(&http, &b, Method::POST, &format!("{p}/restore"), None).await,
                    404
                ),
                get
            );
        }
        let listed = status(
            &send(&http, &b, Method::GET, &format!("/api/v1/{resource}"), None).await,
            200,
        );
        assert!(
            listed["data"].as_array().unwrap().is_empty(),
            "{resource} leaked: {listed}"
        );

        // The owner reads, patches, deletes and restores.
        assert_eq!(
            status(&send(&http, &a, Method::GET, &path, None).await, 200),
            *object
        );
        let patched = status(
            &send(&http, &a, Method::PATCH, &path, Some(patch.clone())).await,
            200,
        );
        for (k, v) in patch.as_object().unwrap() {
            let got = &patched[k];
            assert!(
                got == v || (k.ends_with("_at") && got.as_str().unwrap().starts_with("2031-01-01")),
                "{resource}.{k}: {got}"
            );
        }
        assert_eq!(
            send(&http, &a, Method::DELETE, &path, None).await.status,
            204
        );
        status(&send(&http, &a, Method::GET, &path, None).await, 404);
        let restored = status(
            &send(&http, &a, Method::POST, &format!("{path}/restore"), None).await,
            200,
        );
        assert_eq!(restored["id"], object["id"]);
        // Restoring a live row changes nothing and answers it as it is.
        let again = status(
            &send(&http, &a, Method::POST, &format!("{path}/restore"), None).await,
            200,
        );
        assert_eq!(again["id"], object["id"]);
        assert_eq!(again["updated_at"], restored["updated_at"]);
        status(&send(&http, &a, Method::GET, &path, None).await, 200);
    }
    // Every resource's accesses reach the central audit trail, the other clinic's
    // probes included (recorded against the prober, as misses).
    for (resource, object, _) in &w.objects {
        let object_id = id(object);
        for action in ["create", "read", "update", "delete", "restore"] {
            let rows = wait_audit(&a, &format!("resource = '{resource}' AND resource_id = '{object_id}' AND action = '{action}'")).await;
            assert!(
                rows.iter().any(|r| r.get::<_, String>(5) == "success"),
                "{resource} {action}"
            );
        }
        let probes = wait_audit(
            &b,
            &format!("resource = '{resource}' AND resource_id = '{object_id}'"),
        )
        .await;
        assert!(
            probes.iter().all(|r| r.get::<_, String>(5) == "not_found"),
            "{resource}"
        );
    }
}

#[tokio::test]
async fn practitioners_are_never_double_booked() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let other_clinic = register(&http, None).await;
    let patient = create(&http, &c, "patients", patient_body("Busy", "Patient")).await;
    let doc1 = create(
        &http,
        &c,
        "practitioners",
        json!({"first_name": "A", "last_name": "One"}),
    )
    .await;
    let doc2 = create(
        &http,
        &c,
        "practitioners",
        json!({"first_name": "B", "last_name": "Two"}),
    )
    .await;
    let book = |practitioner: &Value, from: &str, to: &str| json!({"patient_id": id(&patient), "practitioner_id": id(practitioner), "starts_at": from, "ends_at": to});
    let first = create(
        &http,
        &c,
        "appointments",
        book(&doc1, "2030-03-01T09:00:00Z", "2030-03-01T09:30:00Z"),
    )
    .await;
    assert_eq!(first["status"], "booked");
    let clash = post(
        &http,
        &c,
        "/api/v1/appointments",
        book(&doc1, "2030-03-01T09:15:00+00:00", "2030-03-01T09:45:00Z"),
    )
    .await;
    status(&clash, 409);
    // Same slot, other practitioner: fine. Back-to-back: fine.
    create(
        &http,
        &c,
        "appointments",
        book(&doc2, "2030-03-01T09:15:00Z", "2030-03-01T09:45:00Z"),
    )
    .await;
    create(
        &http,
        &c,
        "appointments",
        book(&doc1, "2030-03-01T09:30:00Z", "2030-03-01T10:00:00Z"),
    )
    .await;
    // Moving into a taken slot is refused too.
    let later = create(
        &http,
        &c,
        "appointments",
        book(&doc1, "2030-03-01T11:00:00Z", "2030-03-01T11:30:00Z"),
    )
    .await;
    let moved = send(
        &http,
        &c,
        Method::PATCH,
        &format!("/api/v1/appointments/{}", id(&later)),
        Some(json!({"starts_at": "2030-03-01T09:10:00Z", "ends_at": "2030-03-01T09:20:00Z"})),
    )
    .await;
    status(&moved, 409);
    // A cancelled appointment frees its slot.
    send(
        &http,
        &c,
        Method::PATCH,
        &format!("/api/v1/appointments/{}", id(&first)),
        Some(json!({"status": "cancelled"})),
    )
    .await;
    create(
        &http,
        &c,
        "appointments",
        book(&doc1, "2030-03-01T09:00:00Z", "2030-03-01T09:20:00Z"),
    )
    .await;
    // Concurrent bookings of one slot: exactly one wins.
    let attempts: Vec<_> = (0..6)
        .map(|_| {
            let http = http.clone();
            let c = c.clone();
            let body = book(&doc2, "2030-03-02T14:00:00Z", "2030-03-02T15:00:00Z");
            tokio::spawn(async move {
                post(&http, &c, "/api/v1/appointments", body)
                    .await
                    .status
                    .as_u16()
            })
        })
        .collect();
    let mut codes = Vec::new();
    for a in attempts {
        codes.push(a.await.unwrap());
    }
    codes.sort();
    assert_eq!(codes, vec![201, 409, 409, 409, 409, 409]);

    // Refusals change nothing.
    status(
        &post(
            &http,
            &c,
            "/api/v1/appointments",
            book(&doc1, "2030-03-05T10:00:00Z", "2030-03-05T09:00:00Z"),
        )
        .await,
        400,
    );
    status(&post(&http, &c, "/api/v1/appointments", json!({"patient_id": id(&patient), "practitioner_id": id(&doc1), "starts_at": "2030-03-05T10:00:00Z", "ends_at": "2030-03-05T11:00:00Z", "status": "maybe"})).await, 400);
    let foreign = create(
        &http,
        &other_clinic,
        "patients",
        patient_body("Foreign", "Patient"),
    )
    .await;
    let mut cross = book(&doc1, "2030-03-06T10:00:00Z", "2030-03-06T11:00:00Z");
    cross["patient_id"] = foreign["id"].clone();
    status(&post(&http, &c, "/api/v1/appointments", cross).await, 400);
    let list = status(
        &send(
            &http,
            &c,
            Method::GET,
            "/api/v1/appointments?starts_at_from=2030-03-05T00:00:00Z",
            None,
        )
        .await,
        200,
    );
    assert!(list["data"].as_array().unwrap().is_empty());

    // Filters: practitioner, patient, date range.
    let by_doc2 = status(
        &send(
            &http,
            &c,
            Method::GET,
            &format!("/api/v1/appointments?practitioner_id={}", id(&doc2)),
            None,
        )
        .await,
        200,
    );
    assert_eq!(by_doc2["data"].as_array().unwrap().len(), 2);
    let day = status(&send(&http, &c, Method::GET, &format!("/api/v1/appointments?patient_id={}&starts_at_from=2030-03-02T00:00:00Z&starts_at_to=2030-03-03T00:00:00Z", id(&patient)), None).await, 200);
    assert_eq!(day["data"].as_array().unwrap().len(), 1);
    status(
        &send(
            &http,
            &c,
            Method::GET,
            "/api/v1/appointments?starts_at_from=tomorrow",
            None,
        )
        .await,
        400,
    );
    status(
        &send(
            &http,
            &c,
            Method::GET,
            "/api/v1/appointments?practitioner_id=nope",
            None,
        )
        .await,
        400,
    );
}

#[tokio::test]
async fn appointment_items_keep_the_price_at_booking() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let patient = create(&http, &c, "patients", patient_body("Item", "Patient")).await;
    let doc = create(
        &http,
        &c,
        "practitioners",
        json!({"first_name": "I", "last_name": "Tem"}),
    )
    .await;
    let product = create(
        &http,
        &c,
        "products",
        json!({"name": "X-ray", "kind": "service", "unit_price_cents": 4000, "vat_rate_bp": 2000}),
    )
    .await;
    assert_eq!(product["active"], true);
    let appt = create(
        &http,
        &c,
        "appointments",
        json!({"patient_id": id(&patient), "practitioner_id": id(&doc), "starts_at": "2030-04-01T08:00:00Z", "ends_at": "2030-04-01T08:30:00Z", "items": [{"product_id": id(&product), "quantity": 2}]}),
    )
    .await;
    assert_eq!(appt["items"][0]["unit_price_cents"], 4000);
    assert_eq!(appt["items"][0]["quantity"], 2);
    send(
        &http,
        &c,
        Method::PATCH,
        &format!("/api/v1/products/{}", id(&product)),
        Some(json!({"unit_price_cents": 5000})),
    )
    .await;
    let again = status(
        &send(
            &http,
            &c,
            Method::GET,
            &format!("/api/v1/appointments/{}", id(&appt)),
            None,
        )
        .await,
        200,
    );
    assert_eq!(again["items"][0]["unit_price_cents"], 4000);
    let bad = json!({"patient_id": id(&patient), "practitioner_id": id(&doc), "starts_at": "2030-04-02T08:00:00Z", "ends_at": "2030-04-02T08:30:00Z", "items": [{"product_id": uuid::Uuid::now_v7().to_string()}]});
    status(&post(&http, &c, "/api/v1/appointments", bad).await, 400);
}

async fn invoice(http: &Http, c: &Clinic, patient: &Value, kind: &str) -> Value {
    create(
        http,
        c,
        "documents",
        json!({"kind": kind, "patient_id": id(patient), "lines": [
            {"description": "Consultation", "quantity": 2, "unit_price_cents": 1000, "vat_rate_bp": 2000},
            {"description": "Gauze", "quantity": 1, "unit_price_cents": 333, "vat_rate_bp": 550}
        ]}),
    )
    .await
}

#[tokio::test]
async fn documents_compute_totals_number_invoices_without_gaps_and_freeze_once_issued() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let other = register(&http, None).await;
    let patient = create(&http, &c, "patients", patient_body("Bill", "Payer")).await;
    let other_patient = create(&http, &other, "patients", patient_body("Other", "Payer")).await;

    let doc = invoice(&http, &c, &patient, "invoice").await;
    assert_eq!(doc["status"], "draft");
    assert_eq!(doc["number"], Value::Null);
    // 2 × 10.00 at 20 % + 1 × 3.33 at 5.5 % (0.183 → 0.18): all in integer cents.
    assert_eq!(
        (
            doc["net_cents"].as_i64(),
            doc["vat_cents"].as_i64(),
            doc["gross_cents"].as_i64()
        ),
        (Some(2333), Some(418), Some(2751))
    );
    assert_eq!(doc["lines"][0]["net_cents"], 2000);
    assert_eq!(doc["lines"][1]["vat_cents"], 18);
    // Client-sent totals, status and numbers are ignored.
    let sneaky = create(&http, &c, "documents", json!({"kind": "invoice", "patient_id": id(&patient), "status": "paid", "number": "F-1999-000001", "gross_cents": 1, "lines": []})).await;
    assert_eq!(
        (
            sneaky["status"].as_str(),
            sneaky["gross_cents"].as_i64(),
            sneaky["number"].as_str()
        ),
        (Some("draft"), Some(0), None)
    );
    // Computed amounts stay within the documented money range: a line (or a sum of
    // lines) beyond it is refused, whatever its parts.
    for lines in [
        json!([{"description": "Huge", "quantity": 100000, "unit_price_cents": 100000000000i64, "vat_rate_bp": 0}]),
        json!([
            {"description": "A", "quantity": 1, "unit_price_cents": 60000000000i64, "vat_rate_bp": 0},
            {"description": "B", "quantity": 1, "unit_price_cents": 60000000000i64, "vat_rate_bp": 0}
        ]),
    ] {
        let r = post(
            &http,
            &c,
            "/api/v1/documents",
            json!({"kind": "quote", "patient_id": id(&patient), "lines": lines}),
        )
        .await;
        status(&r, 400);
    }
    // An empty draft cannot be issued.
    status(
        &post(
            &http,
            &c,
            &format!("/api/v1/documents/{}/issue", id(&sneaky)),
            json!({}),
        )
        .await,
        400,
    );

    // Gapless per clinic and year, even when issued concurrently.
    let mut drafts = vec![doc.clone()];
    for _ in 0..5 {
        drafts.push(invoice(&http, &c, &patient, "invoice").await);
    }
    let issues: Vec<_> = drafts
        .iter()
        .map(|d| {
            let http = http.clone();
            let c = c.clone();
            let path = format!("/api/v1/documents/{}/issue", id(d));
            tokio::spawn(async move { post(&http, &c, &path, json!({})).await })
        })
        .collect();
    let mut numbers = Vec::new();
    for i in issues {
        let issued = status(&i.await.unwrap(), 200);
        assert_eq!(issued["status"], "issued");
        assert!(issued["issued_at"].is_string());
        numbers.push(issued["number"].as_str().unwrap().to_owned());
    }
    numbers.sort();
    let year = chrono_year();
    let expected: Vec<String> = (1..=6).map(|n| format!("F-{year}-{n:06}")).collect();
    assert_eq!(numbers, expected);
    // Another clinic has its own sequence.
    let theirs = invoice(&http, &other, &other_patient, "invoice").await;
    let theirs = status(
        &post(
            &http,
            &other,
            &format!("/api/v1/documents/{}/issue", id(&theirs)),
            json!({}),
        )
        .await,
        200,
    );
    assert_eq!(theirs["number"], format!("F-{year}-000001"));

    // An issued invoice can no longer change or go away.
    let path = format!("/api/v1/documents/{}", id(&doc));
    let before = status(&send(&http, &c, Method::GET, &path, None).await, 200);
    status(
        &send(
            &http,
            &c,
            Method::PATCH,
            &path,
            Some(json!({"notes": "changed"})),
        )
        .await,
        409,
    );
    status(
        &send(
            &http,
            &c,
            Method::PUT,
            &path,
            Some(json!({"kind": "invoice", "patient_id": id(&patient), "lines": []})),
        )
        .await,
        409,
    );
    status(&send(&http, &c, Method::DELETE, &path, None).await, 409);
    status(
        &post(&http, &c, &format!("{path}/issue"), json!({})).await,
        409,
    );
    assert_eq!(
        status(&send(&http, &c, Method::GET, &path, None).await, 200),
        before
    );

    // A quote converts into a draft invoice with the same lines, once.
    let quote = invoice(&http, &c, &patient, "quote").await;
    let converted = status(
        &post(
            &http,
            &c,
            &format!("/api/v1/documents/{}/convert", id(&quote)),
            json!({}),
        )
        .await,
        201,
    );
    assert_eq!(converted["kind"], "invoice");
    assert_eq!(converted["status"], "draft");
    assert_eq!(converted["converted_from"], quote["id"]);
    assert_eq!(converted["gross_cents"], quote["gross_cents"]);
    assert_eq!(converted["lines"].as_array().unwrap().len(), 2);
    let quote_after = status(
        &send(
            &http,
            &c,
            Method::GET,
            &format!("/api/v1/documents/{}", id(&quote)),
            None,
        )
        .await,
        200,
    );
    assert_eq!(quote_after["status"], "accepted");
    status(
        &post(
            &http,
            &c,
            &format!("/api/v1/documents/{}/convert", id(&quote)),
            json!({}),
        )
        .await,
        409,
    );
    status(
        &post(
            &http,
            &c,
            &format!("/api/v1/documents/{}/convert", id(&doc)),
            json!({}),
        )
        .await,
        409,
    );

    // Filters by kind, status and patient.
    let quotes = status(
        &send(&http, &c, Method::GET, "/api/v1/documents?kind=quote", None).await,
        200,
    );
    assert_eq!(quotes["data"].as_array().unwrap().len(), 1);
    let issued = status(
        &send(
            &http,
            &c,
            Method::GET,
            &format!(
                "/api/v1/documents?status=issued&patient_id={}",
                id(&patient)
            ),
            None,
        )
        .await,
        200,
    );
    assert_eq!(issued["data"].as_array().unwrap().len(), 6);
    status(
        &send(
            &http,
            &c,
            Method::GET,
            "/api/v1/documents?kind=receipt",
            None,
        )
        .await,
        400,
    );
    // Another clinic's document id: 404 for actions too.
    status(
        &post(
            &http,
            &other,
            &format!("/api/v1/documents/{}/issue", id(&quote)),
            json!({}),
        )
        .await,
        404,
    );
}

fn chrono_year() -> i32 {
    // Days since the epoch → civil year (UTC), without a date library in the tests.
    let days = common::token::now_secs().div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2)) as i32
}

#[tokio::test]
async fn consent_templates_are_versioned_and_a_used_version_is_immutable() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let patient = create(&http, &c, "patients", patient_body("Con", "Sent")).await;
    let name = unique("Surgery");
    let v1 = create(
        &http,
        &c,
        "consent-templates",
        json!({"name": name, "body": "Risks: A."}),
    )
    .await;
    let v2 = create(
        &http,
        &c,
        "consent-templates",
        json!({"name": name, "body": "Risks: A, B."}),
    )
    .await;
    assert_eq!(
        (v1["version"].as_i64(), v2["version"].as_i64()),
        (Some(1), Some(2))
    );
    let consent = create(
        &http,
        &c,
        "consents",
        json!({"patient_id": id(&patient), "template_id": id(&v1)}),
    )
    .await;
    assert!(consent["given_at"].is_string());
    assert_eq!(consent["revoked_at"], Value::Null);
    let v1_path = format!("/api/v1/consent-templates/{}", id(&v1));
    status(
        &send(
            &http,
            &c,
            Method::PUT,
            &v1_path,
            Some(json!({"name": name, "body": "Rewritten"})),
        )
        .await,
        409,
    );
    status(&send(&http, &c, Method::DELETE, &v1_path, None).await, 409);
    assert_eq!(
        status(&send(&http, &c, Method::GET, &v1_path, None).await, 200)["body"],
        "Risks: A."
    );
    // An unused version may still be corrected; its number stays.
    let fixed = status(
        &send(
            &http,
            &c,
            Method::PATCH,
            &format!("/api/v1/consent-templates/{}", id(&v2)),
            Some(json!({"body": "Risks: A, B, C."})),
        )
        .await,
        200,
    );
    assert_eq!(fixed["version"], 2);
    let by_name = status(
        &send(
            &http,
            &c,
            Method::GET,
            &format!("/api/v1/consent-templates?name={name}"),
            None,
        )
        .await,
        200,
    );
    assert_eq!(by_name["data"].as_array().unwrap().len(), 2);
    // Revocation, and the rule that it comes after consent.
    let path = format!("/api/v1/consents/{}", id(&consent));
    status(
        &send(
            &http,
            &c,
            Method::PATCH,
            &path,
            Some(json!({"revoked_at": "1999-01-01T00:00:00Z"})),
        )
        .await,
        400,
    );
    let revoked = status(
        &send(
            &http,
            &c,
            Method::PATCH,
            &path,
            Some(json!({"revoked_at": "2099-01-01T00:00:00Z"})),
        )
        .await,
        200,
    );
    assert!(revoked["revoked_at"]
        .as_str()
        .unwrap()
        .starts_with("2099-01-01"));
    status(
        &post(
            &http,
            &c,
            "/api/v1/consents",
            json!({"patient_id": id(&patient), "template_id": uuid::Uuid::now_v7().to_string()}),
        )
        .await,
        400,
    );
}

#[tokio::test]
async fn products_belong_to_many_categories_of_the_same_clinic() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let other = register(&http, None).await;
    let c1 = create(&http, &c, "categories", json!({"name": "Dental"})).await;
    let c2 = create(&http, &c, "categories", json!({"name": "Imaging"})).await;
    status(
        &post(&http, &c, "/api/v1/categories", json!({"name": "dental"})).await,
        409,
    );
    let foreign = create(&http, &other, "categories", json!({"name": "Theirs"})).await;
    let mut ids = vec![id(&c1), id(&c2)];
    ids.sort();
    let product = create(&http, &c, "products", json!({"name": "Panoramic", "kind": "service", "unit_price_cents": 9000, "vat_rate_bp": 0, "category_ids": [id(&c2), id(&c1)]})).await;
    assert_eq!(product["category_ids"], json!(ids));
    let path = format!("/api/v1/products/{}", id(&product));
    let narrowed = status(
        &send(
            &http,
            &c,
            Method::PATCH,
            &path,
            Some(json!({"category_ids": [id(&c1)]})),
        )
        .await,
        200,
    );
    assert_eq!(narrowed["category_ids"], json!([id(&c1)]));
    status(
        &send(
            &http,
            &c,
            Method::PATCH,
            &path,
            Some(json!({"category_ids": [id(&foreign)]})),
        )
        .await,
        400,
    );
    assert_eq!(
        status(&send(&http, &c, Method::GET, &path, None).await, 200)["category_ids"],
        json!([id(&c1)])
    );
    let services = status(
        &send(
            &http,
            &c,
            Method::GET,
            "/api/v1/products?kind=service&active=true",
            None,
        )
        .await,
        200,
    );
    assert_eq!(services["data"].as_array().unwrap().len(), 1);
    let goods = status(
        &send(
            &http,
            &c,
            Method::GET,
            "/api/v1/products?kind=product",
            None,
        )
        .await,
        200,
    );
    assert!(goods["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn the_openapi_document_and_the_served_routes_agree() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let w = world(&http, &c).await;
    let doc = http.get("/api/v1/openapi.json", None).await.unwrap().json();
    let documented = common::openapi::operations(&doc);
    // A subscription to an event the walk never causes (its `{}` bodies record
    // no payment), so nothing is sent.
    let hook = status(
        &post(
            &http,
            &c,
            "/api/v1/webhook-subscriptions",
            json!({"url": "https://hooks.example.org/medicalpro", "event_types": ["invoice.paid"]}),
        )
        .await,
        201,
    );
    // A file for the attachment routes, on a patient of its own (the walk erases
    // the world's patient, and its files with it, before it deletes).
    let patient = id(&create_patient(&http, &c, patient_body("Filed", "Patient")).await);
    let auth = format!("Bearer {}", c.token);
    let file = http
        .send(
            Method::POST,
            &format!("/api/v1/patients/{patient}/attachments"),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/pdf"),
            ],
            Some(b"%PDF-1.4\n%%EOF\n".to_vec().into()),
        )
        .await
        .unwrap();
    let file = id(&status(&file, 201));
    let existing = |resource: &str| match resource {
        "appointment-series" => id(&w.series),
        "webhook-subscriptions" => id(&hook),
        "attachments" => file.clone(),
        _ => w
            .objects
            .iter()
            .find(|(r, _, _)| *r == resource)
            .map(|(_, o, _)| id(o))
            .unwrap_or_else(|| panic!("no {resource} in the world")),
    };
    // The row a documented path's `{id}` names: an invoice's payments are an
    // issued invoice's, the other document routes take the quote.
    let row_for = |method: &str, path: &str| match (method, path) {
        (_, "/api/v1/documents/{id}/payments") => id(&w.invoice),
        _ => {
            let segments: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
            existing(segments[0])
        }
    };
    // The statuses documented for an operation (`4XX`: any client error).
    let statuses = |method: &str, path: &str| -> Vec<String> {
        doc["paths"][path][method.to_ascii_lowercase()]["responses"]
            .as_object()
            .map(|r| r.keys().cloned().collect())
            .unwrap_or_default()
    };
    let documents_status = |got: u16, listed: &[String]| {
        listed
            .iter()
            .any(|s| *s == got.to_string() || (s.as_str() == "4XX" && (400..500).contains(&got)))
    };
    // Every documented clinic route is served for an object that exists, answering
    // one of its documented statuses (never an unknown-route 404 or a 405): reads
    // and writes first, then row actions, then deletes, then restores.
    let phase = |method: &str, path: &str| match (method, path) {
        (_, p) if p.ends_with("/restore") => 3,
        ("DELETE", _) => 2,
        ("POST", p) if p.ends_with("}") || p.matches('/').count() > 4 => 1,
        _ => 0,
    };
    let mut ordered: Vec<&(String, String)> = documented.iter().collect();
    ordered.sort_by_key(|(m, p)| phase(m, p));
    let mut reached = 0;
    for (method, path) in ordered {
        if path.starts_with("/api/v1/auth/")
            || path == "/api/v1/openapi.json"
            || path == "/api/v1/audit-logs"
            || path.starts_with("/api/v1/users")
            || path.starts_with("/api/v1/api-clients")
            || path == "/api/v1/oauth/token"
        {
            continue;
        }
        let concrete = if path.contains("{id}") {
            path.replace("{id}", &row_for(method, path))
        } else {
            path.clone()
        };
        let listed = statuses(method, path);
        let method: Method = method.parse().unwrap();
        let body = match method {
            Method::POST | Method::PUT | Method::PATCH => Some(json!({})),
            _ => None,
        };
        let r = send(&http, &c, method.clone(), &concrete, body).await;
        let got = r.status.as_u16();
        assert_ne!(got, 405, "{method} {path}");
        if got == 404 {
            panic!(
                "{method} {path} is documented but answers 404: {}",
                r.text()
            );
        }
        assert!(
            documents_status(got, &listed),
            "{method} {path} answers {got}, documented {listed:?}: {}",
            r.text()
        );
        reached += 1;
        // Every other documented type of a successful GET is served on request:
        // by its `format` parameter when it has one, else by `Accept`.
        if method == Method::GET {
            let operation = &doc["paths"][path.as_str()]["get"];
            let ok = &operation["responses"]["200"]["content"];
            let by_format = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["name"] == "format");
            if path == "/api/v1/attachments/{id}" {
                // A file is served as the type found in its bytes, whatever `Accept`
                // says: one of the documented ones.
                let served = r.header("content-type").unwrap_or_default();
                assert!(ok.get(served).is_some(), "GET {path} served {served}");
                continue;
            }
            for media in ok.as_object().into_iter().flat_map(|m| m.keys()) {
                if media == "application/json" {
                    continue;
                }
                if by_format {
                    let fhir = format!("{concrete}?format=fhir");
                    let r = send(&http, &c, Method::GET, &fhir, None).await;
                    assert_eq!(r.status, 200, "GET {path}?format=fhir: {}", r.text());
                    assert_eq!(r.header("content-type"), Some(media.as_str()), "GET {path}");
                    reached += 1;
                    continue;
                }
                let auth = format!("Bearer {}", c.token);
                let r = http
                    .send(
                        Method::GET,
                        &concrete,
                        &[("authorization", auth.as_str()), ("accept", media.as_str())],
                        None,
                    )
                    .await
                    .unwrap();
                assert_eq!(r.status, 200, "GET {path} as {media}: {}", r.text());
                assert_eq!(r.header("content-type"), Some(media.as_str()), "GET {path}");
                reached += 1;
            }
        }
    }
    // The clinic's routes of the clinic's day are among them.
    for (method, path) in [
        ("GET", "/api/v1/clinic"),
        ("PUT", "/api/v1/clinic"),
        ("GET", "/api/v1/availability"),
        ("POST", "/api/v1/appointments/series"),
        ("GET", "/api/v1/appointment-series/{id}"),
        ("PATCH", "/api/v1/appointment-series/{id}"),
        ("POST", "/api/v1/appointment-series/{id}/cancel"),
        ("GET", "/api/v1/documents/{id}/payments"),
        ("POST", "/api/v1/documents/{id}/payments"),
    ] {
        assert!(
            documented.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is not documented"
        );
    }
    assert!(reached > 100, "{reached} operations reached");
    // And what is served but not documented is refused.
    for resource in common::resource::RESOURCES {
        for action in ["issue", "convert", "archive"] {
            let documented_here = documented
                .iter()
                .any(|(_, p)| *p == format!("/api/v1/{}/{{id}}/{action}", resource.name));
            let r = send(
                &http,
                &c,
                Method::POST,
                &format!(
                    "/api/v1/{}/{}/{action}",
                    resource.name,
                    existing(resource.name)
                ),
                None,
            )
            .await;
            if !documented_here {
                status(&r, 404);
            }
        }
        for (method, p) in [
            (Method::PATCH, format!("/api/v1/{}", resource.name)),
            (Method::DELETE, format!("/api/v1/{}", resource.name)),
        ] {
            assert!(!documented.contains(&(method.to_string(), p.clone())));
            let r = send(&http, &c, method, &p, None).await;
            assert!(r.status == 405 || r.status == 404, "{p}: {}", r.status);
        }
    }
}

#[tokio::test]
async fn erasing_a_patient_removes_personal_data_but_keeps_invoices() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let patient = create(&http, &c, "patients", patient_body("Forget", "Me")).await;
    let doc = create(
        &http,
        &c,
        "practitioners",
        json!({"first_name": "E", "last_name": "Rase"}),
    )
    .await;
    let appt = create(
        &http,
        &c,
        "appointments",
        json!({"patient_id": id(&patient), "practitioner_id": id(&doc), "starts_at": "2030-06-01T08:00:00Z", "ends_at": "2030-06-01T08:30:00Z", "notes": "history of Forget Me"}),
    )
    .await;
    let bill = invoice(&http, &c, &patient, "invoice").await;
    let bill = status(
        &post(
            &http,
            &c,
            &format!("/api/v1/documents/{}/issue", id(&bill)),
            json!({}),
        )
        .await,
        200,
    );
    let path = format!("/api/v1/patients/{}/erase", id(&patient));

    let staff = token_as(stack(), &c, common::token::Role::Staff);
    let refused = http.post(&path, Some(&staff), &json!({})).await.unwrap();
    status(&refused, 403);
    // The refused attempt is in the audit trail, as are refused exports.
    wait_audit(
        &c,
        &format!(
            "action = 'erase' AND resource_id = '{}' AND outcome = 'rejected'",
            id(&patient)
        ),
    )
    .await;
    let export = format!("/api/v1/patients/{}/export", id(&patient));
    status(&http.get(&export, Some(&staff)).await.unwrap(), 403);
    wait_audit(
        &c,
        &format!(
            "action = 'export' AND resource_id = '{}' AND outcome = 'rejected'",
            id(&patient)
        ),
    )
    .await;

    let erased = status(&post(&http, &c, &path, json!({})).await, 200);
    assert_eq!(erased["first_name"], "Erased");
    for field in ["email", "phone", "birth_date", "ssn"] {
        assert_eq!(erased[field], Value::Null, "{field}");
    }
    // Nothing of the person is left in the clinic's database.
    let db = clinic_db(&c).await;
    let rows: Vec<String> = db
        .query("SELECT row_to_json(p)::text FROM patients p UNION ALL SELECT row_to_json(a)::text FROM appointments a", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        rows.iter()
            .all(|r| !r.contains("Forget") && !r.contains("p@example.org")),
        "{rows:?}"
    );
    let found = status(
        &send(
            &http,
            &c,
            Method::GET,
            "/api/v1/patients?ssn=180027512345678",
            None,
        )
        .await,
        200,
    );
    assert!(found["data"].as_array().unwrap().is_empty());
    let appt = status(
        &send(
            &http,
            &c,
            Method::GET,
            &format!("/api/v1/appointments/{}", id(&appt)),
            None,
        )
        .await,
        200,
    );
    assert_eq!(appt["notes"], Value::Null);
    // The invoice the law requires is kept — number, dates, amounts — pointing at
    // the pseudonym, with the patient's free text gone from it and its lines.
    let kept = status(
        &send(
            &http,
            &c,
            Method::GET,
            &format!("/api/v1/documents/{}", id(&bill)),
            None,
        )
        .await,
        200,
    );
    let mut expected = bill.clone();
    expected["notes"] = Value::Null;
    for line in expected["lines"].as_array_mut().unwrap() {
        line["description"] = "Erased".into();
    }
    assert_eq!(kept, expected);
    wait_audit(
        &c,
        &format!(
            "action = 'erase' AND resource_id = '{}' AND outcome = 'success'",
            id(&patient)
        ),
    )
    .await;
    status(
        &post(
            &http,
            &c,
            &format!("/api/v1/patients/{}/erase", uuid::Uuid::now_v7()),
            json!({}),
        )
        .await,
        404,
    );
}

#[tokio::test]
async fn a_patient_export_holds_everything_about_them_and_nobody_else() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let other = register(&http, None).await;
    let w = world(&http, &c).await;
    let patient = &w.objects[0].1;
    let someone_else = create(&http, &c, "patients", patient_body("Someone", "Else")).await;
    create(
        &http,
        &c,
        "documents",
        json!({"kind": "quote", "patient_id": id(&someone_else), "lines": []}),
    )
    .await;
    let path = format!("/api/v1/patients/{}/export", id(patient));
    let export = status(&send(&http, &c, Method::GET, &path, None).await, 200);
    assert_eq!(export["patient"], *patient);
    assert_eq!(export["patient"]["ssn"], "1 80 02 75 123 456 78");
    for (resource, count) in [("appointments", 1), ("documents", 1), ("consents", 1)] {
        let rows = export[resource].as_array().unwrap();
        assert_eq!(rows.len(), count, "{resource}: {rows:?}");
        assert!(rows.iter().all(|r| r["patient_id"] == patient["id"]));
    }
    let staff = token_as(stack(), &c, common::token::Role::Staff);
    status(&http.get(&path, Some(&staff)).await.unwrap(), 403);
    status(&send(&http, &other, Method::GET, &path, None).await, 404);
    status(
        &send(
            &http,
            &c,
            Method::GET,
            &format!("/api/v1/documents/{}/export", id(patient)),
            None,
        )
        .await,
        404,
    );
    wait_audit(
        &c,
        &format!("action = 'export' AND resource_id = '{}'", id(patient)),
    )
    .await;
}

/// Searches come by relevance — names starting with the term, then names
/// containing it — each in name order, and page through every match whichever
/// way they are found: one range of the order index (starting with the term), a
/// short walk of it (a common term), or the trigram index (a term whose matches
/// all sort after a long run of other names).
#[tokio::test]
async fn patient_search_ranks_prefixes_first_and_finds_matches_far_down_the_order() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let clinic: uuid::Uuid = c.id.parse().unwrap();
    let db = clinic_db(&c).await;
    for (first, last, n) in [
        ("Early", "Aaron", 1500),
        ("Late", "Zzyzx", 30),
        ("X", "Ronald", 2),
    ] {
        db.execute(
            "INSERT INTO patients (id, company_id, first_name, last_name) \
             SELECT gen_random_uuid(), $1, $2, $3 || lpad(i::text, 4, '0') FROM generate_series(1, $4) i",
            &[&clinic, &first, &last, &n],
        )
        .await
        .unwrap();
    }
    db.batch_execute("ANALYZE patients").await.unwrap();
    let pages = |q: &'static str, limit: usize, max: usize| {
        let http = http.clone();
        let c = c.clone();
        async move {
            let mut seen = Vec::new();
            let mut path = format!("/api/v1/patients?q={q}&limit={limit}");
            while seen.len() < max {
                let page = status(&send(&http, &c, Method::GET, &path, None).await, 200);
                for p in page["data"].as_array().unwrap() {
                    seen.push(p["last_name"].as_str().unwrap().to_owned());
                }
                match page["next_cursor"].as_str() {
                    Some(cursor) => {
                        path = format!("/api/v1/patients?q={q}&limit={limit}&cursor={cursor}")
                    }
                    None => break,
                }
            }
            seen.truncate(max);
            seen
        }
    };
    let names = |last: &str, range: std::ops::RangeInclusive<u32>| -> Vec<String> {
        range.map(|i| format!("{last}{i:04}")).collect()
    };
    // Starting with the term: one range of the index, every page.
    assert_eq!(pages("zzyzx", 20, 100).await, names("Zzyzx", 1..=30));
    // Containing it, common and early: the walk (`arly` is in every "… early").
    assert_eq!(pages("arly", 7, 14).await, names("Aaron", 1..=14));
    // Containing it, all after 1 500 other names: the trigram index, every page.
    assert_eq!(pages("ate", 20, 100).await, names("Zzyzx", 1..=30));
    // Both ranks, the page boundary between them crossed by a cursor.
    let mut both = names("Ronald", 1..=2);
    both.extend(names("Aaron", 1..=5));
    assert_eq!(pages("ron", 3, 7).await, both);
}

#[tokio::test]
async fn patient_search_comes_in_name_order_and_pages_through_every_match() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    for (first, last) in [
        ("Zoe", "Alvarez"),
        ("Ann", "Alvarez"),
        ("Bob", "Calvin"),
        ("Eve", "Adams"),
        ("Hal", "Valverde"),
    ] {
        create(&http, &c, "patients", patient_body(first, last)).await;
    }
    // "alv" is in four names; the fifth (Adams) does not match.
    let mut seen = Vec::new();
    let mut path = "/api/v1/patients?q=ALV&limit=1".to_owned();
    loop {
        let page = status(&send(&http, &c, Method::GET, &path, None).await, 200);
        for p in page["data"].as_array().unwrap() {
            seen.push(format!(
                "{} {}",
                p["last_name"].as_str().unwrap(),
                p["first_name"].as_str().unwrap()
            ));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/patients?q=ALV&limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["Alvarez Ann", "Alvarez Zoe", "Calvin Bob", "Valverde Hal"]
    );
    // A search's cursor belongs to its search.
    let first = status(
        &send(
            &http,
            &c,
            Method::GET,
            "/api/v1/patients?q=alv&limit=1",
            None,
        )
        .await,
        200,
    );
    let cursor = first["next_cursor"].as_str().unwrap();
    let other = send(
        &http,
        &c,
        Method::GET,
        &format!("/api/v1/patients?cursor={cursor}"),
        None,
    )
    .await;
    status(&other, 400);
    // Searching by the whole name works too.
    let full = status(
        &send(
            &http,
            &c,
            Method::GET,
            "/api/v1/patients?q=alvarez%20zo",
            None,
        )
        .await,
        200,
    );
    assert_eq!(full["data"].as_array().unwrap().len(), 1);
}
