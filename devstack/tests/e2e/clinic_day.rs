//! The clinic's day through the gateway: settings and who may change them, working
//! hours and free slots across the DST weeks of Paris and New York, bookings
//! outside hours, recurring series refused whole on a conflict and changed or
//! cancelled from one occurrence on, the invoice year in the clinic's zone,
//! payments that never overpay even when concurrent, credit notes and
//! cancellation, and documents printed as PDF and read back.

use crate::support::*;
use common::token::Role;
use devstack::Http;
use http::Method;
use serde_json::{json, Value};

/// A clinic in `zone` with one practitioner working `hours` on weekdays and a
/// 30-minute appointment type with a 10-minute buffer.
struct Day {
    http: Http,
    clinic: Clinic,
    practitioner: String,
    patient: String,
    follow_up: String,
}

async fn day(zone: &str, hours: (&str, &str)) -> Day {
    let http = http();
    let clinic = register(&http, None).await;
    let settings = send(
        &http,
        &clinic,
        Method::PUT,
        "/api/v1/clinic",
        Some(
            json!({"name": "Cabinet Dupont", "time_zone": zone, "currency": "EUR",
            "address": "12 rue de la Paix\n75002 Paris", "registration_number": "RCS 123 456 789",
            "vat_number": "FR12345678901"}),
        ),
    )
    .await;
    assert_eq!(status(&settings, 200)["time_zone"], zone);
    let practitioner = id(&create(
        &http,
        &clinic,
        "practitioners",
        json!({"first_name": "Marie", "last_name": "Curie"}),
    )
    .await);
    for weekday in ["monday", "tuesday", "wednesday", "thursday", "friday"] {
        create(
            &http,
            &clinic,
            "working-hours",
            json!({"practitioner_id": practitioner, "weekday": weekday, "start_time": hours.0, "end_time": hours.1}),
        )
        .await;
    }
    let patient = id(&create_patient(&http, &clinic, patient_body("Zoë", "Łukasiewicz")).await);
    let follow_up = id(&create(
        &http,
        &clinic,
        "appointment-types",
        json!({"name": "Follow-up", "duration_minutes": 30, "buffer_after_minutes": 10}),
    )
    .await);
    Day {
        http,
        clinic,
        practitioner,
        patient,
        follow_up,
    }
}

impl Day {
    async fn slots(&self, query: &str) -> Value {
        let r = send(
            &self.http,
            &self.clinic,
            Method::GET,
            &format!(
                "/api/v1/availability?practitioner_id={}&{query}",
                self.practitioner
            ),
            None,
        )
        .await;
        status(&r, 200)
    }

    fn starts(v: &Value) -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["starts_at"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn book(&self, body: Value) -> devstack::Reply {
        let mut body = body;
        body["patient_id"] = self.patient.clone().into();
        body["practitioner_id"] = self.practitioner.clone().into();
        post(&self.http, &self.clinic, "/api/v1/appointments", body).await
    }
}

#[tokio::test]
async fn settings_are_read_by_everyone_and_changed_by_admins_only() {
    let _turn = turn();
    let d = day("Europe/Paris", ("09:00", "12:00")).await;
    let staff = token_as(stack(), &d.clinic, Role::Staff);
    let read = d.http.get("/api/v1/clinic", Some(&staff)).await.unwrap();
    let settings = status(&read, 200);
    assert_eq!(settings["name"], "Cabinet Dupont");
    assert_eq!(settings["invoice_prefix"], "F");
    let changed = d
        .http
        .json(
            Method::PUT,
            "/api/v1/clinic",
            Some(&staff),
            Some(&json!({"name": "Mine now", "time_zone": "UTC"})),
        )
        .await
        .unwrap();
    problem(&changed, 403);
    for (body, why) in [
        (
            json!({"name": "X", "time_zone": "Mars/Olympus"}),
            "time_zone",
        ),
        (json!({"name": "X", "time_zone": "+02:00"}), "time_zone"),
        (json!({"name": "X", "currency": "euro"}), "currency"),
        (json!({"name": "X", "invoice_prefix": "F/1"}), "prefix"),
        (json!({"name": ""}), "name"),
        (json!({"name": "X", "colour": "red"}), "unknown"),
    ] {
        let r = send(
            &d.http,
            &d.clinic,
            Method::PUT,
            "/api/v1/clinic",
            Some(body),
        )
        .await;
        problem(&r, 400);
        let _ = why;
    }
    let after = status(
        &send(&d.http, &d.clinic, Method::GET, "/api/v1/clinic", None).await,
        200,
    );
    assert_eq!(after["name"], "Cabinet Dupont", "nothing changed");
    assert_eq!(after["time_zone"], "Europe/Paris");
    wait_audit(
        &d.clinic,
        "resource = 'clinic' AND action = 'update' AND outcome = 'rejected'",
    )
    .await;
}

#[tokio::test]
async fn free_slots_keep_civil_hours_through_the_paris_dst_weeks() {
    let _turn = turn();
    let d = day("Europe/Paris", ("09:00", "10:00")).await;
    // Spring 2027: clocks go forward on Sunday 28 March.
    let spring = d
        .slots(&format!(
            "appointment_type_id={}&from=2027-03-26&to=2027-03-29&step_minutes=30",
            d.follow_up
        ))
        .await;
    assert_eq!(spring["time_zone"], "Europe/Paris");
    assert_eq!(
        Day::starts(&spring),
        [
            "2027-03-26T09:00:00+01:00",
            "2027-03-26T09:30:00+01:00",
            "2027-03-29T09:00:00+02:00",
            "2027-03-29T09:30:00+02:00",
        ]
    );
    // Autumn 2027: back on Sunday 31 October.
    let autumn = d
        .slots(&format!(
            "appointment_type_id={}&from=2027-10-29&to=2027-11-01&step_minutes=30",
            d.follow_up
        ))
        .await;
    assert_eq!(
        Day::starts(&autumn),
        [
            "2027-10-29T09:00:00+02:00",
            "2027-10-29T09:30:00+02:00",
            "2027-11-01T09:00:00+01:00",
            "2027-11-01T09:30:00+01:00",
        ]
    );
    // Extra hours across each DST night: two real hours in spring, four in autumn.
    for (date, expected) in [
        (
            "2027-03-28",
            vec!["2027-03-28T01:00:00+01:00", "2027-03-28T03:00:00+02:00"],
        ),
        (
            "2027-10-31",
            vec![
                "2027-10-31T01:00:00+02:00",
                "2027-10-31T02:00:00+02:00",
                "2027-10-31T02:00:00+01:00",
                "2027-10-31T03:00:00+01:00",
            ],
        ),
    ] {
        create(
            &d.http,
            &d.clinic,
            "hours-exceptions",
            json!({"practitioner_id": d.practitioner, "date": date, "change": "open", "start_time": "01:00", "end_time": "04:00"}),
        )
        .await;
        let night = d
            .slots(&format!(
                "duration_minutes=60&from={date}&to={date}&step_minutes=60"
            ))
            .await;
        assert_eq!(Day::starts(&night), expected, "{date}");
    }
}

#[tokio::test]
async fn slots_in_another_zone_respect_bookings_buffers_and_exceptions() {
    let _turn = turn();
    // New York changes three weeks before Paris: Sunday 14 March 2027.
    let d = day("America/New_York", ("08:00", "10:00")).await;
    let r = d
        .book(json!({"starts_at": "2027-03-15T12:00:00Z", "appointment_type_id": d.follow_up}))
        .await;
    let booked = status(&r, 201);
    // The type gave the end: 08:00–08:30 New York time (EDT, UTC−4).
    assert_eq!(booked["ends_at"], "2027-03-15T12:30:00.000000Z");
    create(
        &d.http,
        &d.clinic,
        "hours-exceptions",
        json!({"practitioner_id": d.practitioner, "date": "2027-03-16", "change": "closed", "reason": "leave"}),
    )
    .await;
    let slots = d
        .slots(&format!(
            "appointment_type_id={}&from=2027-03-12&to=2027-03-16",
            d.follow_up
        ))
        .await;
    let starts = Day::starts(&slots);
    // Friday before the change: 08:00 EST is 13:00Z; Monday after: the booking
    // until 08:30 plus its 10-minute buffer leaves 08:45 (on the 15-minute grid)
    // as the first free start; Tuesday is closed.
    assert_eq!(starts[0], "2027-03-12T08:00:00-05:00");
    let monday: Vec<&String> = starts
        .iter()
        .filter(|s| s.starts_with("2027-03-15"))
        .collect();
    assert_eq!(monday[0], "2027-03-15T08:45:00-04:00");
    assert_eq!(monday.last().unwrap().as_str(), "2027-03-15T09:30:00-04:00");
    assert!(!starts.iter().any(|s| s.starts_with("2027-03-16")));
    // Bad searches change nothing and say why.
    for q in [
        "from=2027-03-12&to=2027-03-16".to_owned(),
        format!("appointment_type_id={}&from=2027-03-12", d.follow_up),
        format!(
            "appointment_type_id={}&from=2027-03-12&to=2027-09-01",
            d.follow_up
        ),
        format!(
            "appointment_type_id={}&from=tomorrow&to=2027-03-16",
            d.follow_up
        ),
        format!(
            "appointment_type_id={}&from=2027-03-16&to=2027-03-12T00:00:00Z",
            d.follow_up
        ),
    ] {
        let r = send(
            &d.http,
            &d.clinic,
            Method::GET,
            &format!("/api/v1/availability?{q}"),
            None,
        )
        .await;
        problem(&r, 400);
    }
}

#[tokio::test]
async fn bookings_outside_hours_need_saying_so_and_double_booking_stays_refused() {
    let _turn = turn();
    let d = day("Europe/Paris", ("09:00", "12:00")).await;
    // 08:30 Paris on a Monday in winter: before hours.
    let early = json!({"starts_at": "2027-01-04T07:30:00Z", "ends_at": "2027-01-04T08:00:00Z"});
    let refused = problem(&d.book(early.clone()).await, 409);
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("outside_hours"),
        "{refused}"
    );
    let mut on_purpose = early.clone();
    on_purpose["outside_hours"] = true.into();
    status(&d.book(on_purpose).await, 201);
    // Inside hours, then the same slot again: the double-booking guard.
    let inside = json!({"starts_at": "2027-01-04T09:00:00Z", "appointment_type_id": d.follow_up});
    status(&d.book(inside.clone()).await, 201);
    problem(&d.book(inside).await, 409);
    // Neither an end nor a type: a clear 400.
    problem(
        &d.book(json!({"starts_at": "2027-01-04T10:00:00Z"})).await,
        400,
    );
}

#[tokio::test]
async fn a_series_across_a_booking_is_refused_whole_then_changed_and_cancelled_from_one_on() {
    let _turn = turn();
    let d = day("Europe/Paris", ("09:00", "12:00")).await;
    // In the way: the third Monday at 10:00 Paris.
    let blocker = id(&status(
        &d.book(json!({"starts_at": "2027-02-15T09:00:00Z", "ends_at": "2027-02-15T09:30:00Z"}))
            .await,
        201,
    ));
    let series = |count: i64| {
        json!({"patient_id": d.patient, "practitioner_id": d.practitioner,
            "starts_at": "2027-02-01T09:00:00Z", "appointment_type_id": d.follow_up,
            "recurrence": {"frequency": "weekly", "every": 1, "count": count}})
    };
    let refused = problem(
        &post(&d.http, &d.clinic, "/api/v1/appointments/series", series(5)).await,
        409,
    );
    let conflicts = refused["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{refused}");
    assert_eq!(conflicts[0]["series_index"], 2);
    assert_eq!(conflicts[0]["reason"], "double_booking");
    assert_eq!(conflicts[0]["appointment_id"], blocker.as_str());
    assert_eq!(conflicts[0]["starts_at"], "2027-02-15T10:00:00+01:00");
    // Nothing of it was booked.
    let db = clinic_db(&d.clinic).await;
    let booked: i64 = db
        .query_one("SELECT count(*) FROM appointments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(booked, 1);
    // Out of the way, the series books whole, each at 10:00 Paris time.
    status(
        &send(
            &d.http,
            &d.clinic,
            Method::DELETE,
            &format!("/api/v1/appointments/{blocker}"),
            None,
        )
        .await,
        204,
    );
    let made = status(
        &post(&d.http, &d.clinic, "/api/v1/appointments/series", series(5)).await,
        201,
    );
    let occurrences = made["appointments"].as_array().unwrap();
    assert_eq!(occurrences.len(), 5);
    let series_id = made["id"].as_str().unwrap().to_owned();
    for (i, o) in occurrences.iter().enumerate() {
        assert_eq!(o["series_index"], i as i64);
        assert_eq!(o["series_id"], series_id.as_str());
    }
    // This and following: from the fourth on, one hour later.
    let moved = status(
        &send(
            &d.http,
            &d.clinic,
            Method::PATCH,
            &format!("/api/v1/appointment-series/{series_id}"),
            Some(json!({"from_index": 3, "shift_minutes": 60})),
        )
        .await,
        200,
    );
    let times: Vec<&str> = moved["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["starts_at"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "2027-02-01T10:00:00+01:00",
            "2027-02-08T10:00:00+01:00",
            "2027-02-15T10:00:00+01:00",
            "2027-02-22T11:00:00+01:00",
            "2027-03-01T11:00:00+01:00",
        ]
    );
    // Moving them past closing time is refused whole, listing each.
    let late = problem(
        &send(
            &d.http,
            &d.clinic,
            Method::PATCH,
            &format!("/api/v1/appointment-series/{series_id}"),
            Some(json!({"from_index": 3, "shift_minutes": 60})),
        )
        .await,
        409,
    );
    assert_eq!(late["conflicts"].as_array().unwrap().len(), 2);
    assert!(late["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["reason"] == "outside_hours"));
    // One occurrence alone, then this and following, cancelled.
    let second = occurrences[1]["id"].as_str().unwrap();
    status(
        &send(
            &d.http,
            &d.clinic,
            Method::PATCH,
            &format!("/api/v1/appointments/{second}"),
            Some(json!({"status": "cancelled"})),
        )
        .await,
        200,
    );
    let cancelled = status(
        &post(
            &d.http,
            &d.clinic,
            &format!("/api/v1/appointment-series/{series_id}/cancel"),
            json!({"from_index": 3}),
        )
        .await,
        200,
    );
    let statuses: Vec<&str> = cancelled["appointments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["booked", "cancelled", "booked", "cancelled", "cancelled"]
    );
    wait_audit(
        &d.clinic,
        "resource = 'appointment-series' AND action = 'cancel'",
    )
    .await;
}

/// An issued invoice of `gross` cents (one line, no VAT) for the day's patient.
async fn issued_invoice(d: &Day, gross: i64) -> Value {
    let draft = create(
        &d.http,
        &d.clinic,
        "documents",
        json!({"kind": "invoice", "patient_id": d.patient, "lines": [
            {"description": "Consultation", "quantity": 1, "unit_price_cents": gross, "vat_rate_bp": 0}]}),
    )
    .await;
    status(
        &post(
            &d.http,
            &d.clinic,
            &format!("/api/v1/documents/{}/issue", id(&draft)),
            json!({}),
        )
        .await,
        200,
    )
}

#[tokio::test]
async fn the_invoice_year_is_the_clinics_and_concurrent_payments_never_overpay() {
    let _turn = turn();
    let d = day("Europe/Paris", ("09:00", "12:00")).await;
    // 23:30 UTC on 31 December is already next year in Paris (the function
    // issuing numbers uses), and still this year in UTC.
    let db = clinic_db(&d.clinic).await;
    let year = |at: &'static str| {
        let db = &db;
        async move {
            db.query_one("SELECT clinic_year($1::text::timestamptz)", &[&at])
                .await
                .unwrap()
                .get::<_, i32>(0)
        }
    };
    assert_eq!(year("2026-12-31T23:30:00Z").await, 2027);
    assert_eq!(year("2026-12-31T22:30:00Z").await, 2026);
    let invoice = issued_invoice(&d, 10_000).await;
    let this_year: i32 = db
        .query_one("SELECT clinic_year(now())", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(invoice["number"], format!("F-{this_year}-000001"));
    assert_eq!(invoice["currency"], "EUR");
    assert_eq!(invoice["balance_cents"], 10_000);

    // Ten payments of 30.00 at once on a 100.00 invoice: three go through.
    let path = format!("/api/v1/documents/{}/payments", id(&invoice));
    let staff = token_as(stack(), &d.clinic, Role::Staff);
    let attempts = (0..10).map(|i| {
        let (http, path, staff) = (d.http.clone(), path.clone(), staff.clone());
        tokio::spawn(async move {
            http.json(
                Method::POST,
                &path,
                Some(&staff),
                Some(&json!({"amount_cents": 3000, "method": "card", "paid_on": "2027-01-02", "reference": format!("T{i}")})),
            )
            .await
            .unwrap()
        })
    });
    let mut outcomes = Vec::new();
    for a in attempts {
        outcomes.push(a.await.unwrap());
    }
    let ok = outcomes.iter().filter(|r| r.status == 201).count();
    assert_eq!(
        ok,
        3,
        "{:?}",
        outcomes.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in outcomes.iter().filter(|r| r.status != 201) {
        let p = problem(r, 409);
        assert!(p["detail"].as_str().unwrap().contains("overpayment"), "{p}");
    }
    let now = status(
        &send(
            &d.http,
            &d.clinic,
            Method::GET,
            &format!("/api/v1/documents/{}", id(&invoice)),
            None,
        )
        .await,
        200,
    );
    assert_eq!(now["paid_cents"], 9000);
    assert_eq!(now["balance_cents"], 1000);
    assert_eq!(now["status"], "issued");
    // The last 10.00: paid.
    status(
        &post(
            &d.http,
            &d.clinic,
            &path,
            json!({"amount_cents": 1000, "method": "cash", "paid_on": "2027-01-03"}),
        )
        .await,
        201,
    );
    let paid = status(
        &send(
            &d.http,
            &d.clinic,
            Method::GET,
            &format!("/api/v1/documents/{}", id(&invoice)),
            None,
        )
        .await,
        200,
    );
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["balance_cents"], 0);
    let listed = status(
        &send(&d.http, &d.clinic, Method::GET, &path, None).await,
        200,
    );
    assert_eq!(listed["data"].as_array().unwrap().len(), 4);
    // Staff may not void a payment; an admin may, and the balance comes back.
    let first = listed["data"][0]["id"].as_str().unwrap().to_owned();
    let voided = d
        .http
        .json(
            Method::DELETE,
            &format!("/api/v1/payments/{first}"),
            Some(&staff),
            None,
        )
        .await
        .unwrap();
    problem(&voided, 403);
    status(
        &send(
            &d.http,
            &d.clinic,
            Method::DELETE,
            &format!("/api/v1/payments/{first}"),
            None,
        )
        .await,
        204,
    );
    let reopened = status(
        &send(
            &d.http,
            &d.clinic,
            Method::GET,
            &format!("/api/v1/documents/{}", id(&invoice)),
            None,
        )
        .await,
        200,
    );
    assert_eq!(reopened["status"], "issued");
    assert_eq!(reopened["balance_cents"], 3000);
    // A payment on a draft or a quote is refused.
    let draft = create(
        &d.http,
        &d.clinic,
        "documents",
        json!({"kind": "invoice", "patient_id": d.patient, "lines": [
            {"description": "Later", "quantity": 1, "unit_price_cents": 500, "vat_rate_bp": 0}]}),
    )
    .await;
    problem(
        &post(
            &d.http,
            &d.clinic,
            &format!("/api/v1/documents/{}/payments", id(&draft)),
            json!({"amount_cents": 100, "method": "cash", "paid_on": "2027-01-03"}),
        )
        .await,
        409,
    );
}

#[tokio::test]
async fn credit_notes_have_their_own_series_and_cancelling_never_edits_the_invoice() {
    let _turn = turn();
    let d = day("Europe/Paris", ("09:00", "12:00")).await;
    let invoice = issued_invoice(&d, 20_000).await;
    // A partial credit: the draft credit note takes the lines; halve the amount.
    let credit = status(
        &post(
            &d.http,
            &d.clinic,
            &format!("/api/v1/documents/{}/credit", id(&invoice)),
            json!({}),
        )
        .await,
        201,
    );
    assert_eq!(credit["kind"], "credit_note");
    assert_eq!(credit["credits"], id(&invoice).as_str());
    status(
        &send(
            &d.http,
            &d.clinic,
            Method::PATCH,
            &format!("/api/v1/documents/{}", id(&credit)),
            Some(json!({"lines": [{"description": "Goodwill", "quantity": 1, "unit_price_cents": 5000, "vat_rate_bp": 0}]})),
        )
        .await,
        200,
    );
    let issued = status(
        &post(
            &d.http,
            &d.clinic,
            &format!("/api/v1/documents/{}/issue", id(&credit)),
            json!({}),
        )
        .await,
        200,
    );
    let number = issued["number"].as_str().unwrap();
    assert!(
        number.starts_with("AV-") && number.ends_with("-000001"),
        "{number}"
    );
    let after = status(
        &send(
            &d.http,
            &d.clinic,
            Method::GET,
            &format!("/api/v1/documents/{}", id(&invoice)),
            None,
        )
        .await,
        200,
    );
    assert_eq!(after["credited_cents"], 5000);
    assert_eq!(after["balance_cents"], 15_000);
    // A partly credited invoice is credited further, not cancelled.
    problem(
        &post(
            &d.http,
            &d.clinic,
            &format!("/api/v1/documents/{}/cancel", id(&invoice)),
            json!({}),
        )
        .await,
        409,
    );
    // Staff may not cancel; an admin cancels a fresh invoice by a full credit note.
    let other = issued_invoice(&d, 7000).await;
    let staff = token_as(stack(), &d.clinic, Role::Staff);
    let r = d
        .http
        .json(
            Method::POST,
            &format!("/api/v1/documents/{}/cancel", id(&other)),
            Some(&staff),
            Some(&json!({})),
        )
        .await
        .unwrap();
    problem(&r, 403);
    let note = status(
        &post(
            &d.http,
            &d.clinic,
            &format!("/api/v1/documents/{}/cancel", id(&other)),
            json!({}),
        )
        .await,
        201,
    );
    assert_eq!(note["status"], "issued");
    assert!(note["number"].as_str().unwrap().ends_with("-000002"));
    assert_eq!(note["gross_cents"], 7000);
    let cancelled = status(
        &send(
            &d.http,
            &d.clinic,
            Method::GET,
            &format!("/api/v1/documents/{}", id(&other)),
            None,
        )
        .await,
        200,
    );
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["balance_cents"], 0);
    // Its content can never change.
    problem(
        &send(
            &d.http,
            &d.clinic,
            Method::PATCH,
            &format!("/api/v1/documents/{}", id(&other)),
            Some(json!({"notes": "edited"})),
        )
        .await,
        409,
    );
    // A credit note is never posted directly.
    problem(
        &post(
            &d.http,
            &d.clinic,
            "/api/v1/documents",
            json!({"kind": "credit_note", "patient_id": d.patient, "lines": []}),
        )
        .await,
        400,
    );
}

#[tokio::test]
async fn hours_are_changed_by_clinicians_and_types_by_admins() {
    let _turn = turn();
    let d = day("Europe/Paris", ("09:00", "12:00")).await;
    let staff = token_as(stack(), &d.clinic, Role::Staff);
    let doctor = token_as(stack(), &d.clinic, Role::Practitioner);
    let hours = json!({"practitioner_id": d.practitioner, "weekday": "saturday", "start_time": "09:00", "end_time": "12:00"});
    let r = d
        .http
        .post("/api/v1/working-hours", Some(&staff), &hours)
        .await
        .unwrap();
    problem(&r, 403);
    let r = d
        .http
        .post("/api/v1/working-hours", Some(&doctor), &hours)
        .await
        .unwrap();
    status(&r, 201);
    let r = d
        .http
        .post(
            "/api/v1/appointment-types",
            Some(&doctor),
            &json!({"name": "Long", "duration_minutes": 60}),
        )
        .await
        .unwrap();
    problem(&r, 403);
    // Staff read them all.
    let r = d
        .http
        .get("/api/v1/working-hours?weekday=saturday", Some(&staff))
        .await
        .unwrap();
    assert_eq!(status(&r, 200)["data"].as_array().unwrap().len(), 1);
    // Bad hours change nothing.
    for body in [
        json!({"practitioner_id": d.practitioner, "weekday": "saturday", "start_time": "12:00", "end_time": "09:00"}),
        json!({"practitioner_id": d.practitioner, "weekday": "someday", "start_time": "09:00", "end_time": "10:00"}),
        json!({"practitioner_id": d.practitioner, "weekday": "monday", "start_time": "9h", "end_time": "10:00"}),
        json!({"practitioner_id": d.practitioner, "weekday": "monday", "start_time": "25:00", "end_time": "26:00"}),
    ] {
        problem(
            &post(&d.http, &d.clinic, "/api/v1/working-hours", body).await,
            400,
        );
    }
    problem(
        &post(
            &d.http,
            &d.clinic,
            "/api/v1/hours-exceptions",
            json!({"practitioner_id": d.practitioner, "date": "2027-05-01", "change": "open"}),
        )
        .await,
        400,
    );
}

#[tokio::test]
async fn an_invoice_prints_as_pdf_with_its_amounts_number_and_balance() {
    let _turn = turn();
    let d = day("Europe/Paris", ("09:00", "12:00")).await;
    let draft = create(
        &d.http,
        &d.clinic,
        "documents",
        json!({"kind": "invoice", "patient_id": d.patient, "notes": "Payable within 30 days.", "lines": [
            {"description": "Consultation", "quantity": 1, "unit_price_cents": 6000, "vat_rate_bp": 0},
            {"description": "Orthèse plantaire", "quantity": 2, "unit_price_cents": 12345, "vat_rate_bp": 2000}]}),
    )
    .await;
    let invoice = status(
        &post(
            &d.http,
            &d.clinic,
            &format!("/api/v1/documents/{}/issue", id(&draft)),
            json!({}),
        )
        .await,
        200,
    );
    status(
        &post(&d.http, &d.clinic, &format!("/api/v1/documents/{}/payments", id(&invoice)),
            json!({"amount_cents": 10000, "method": "card", "paid_on": "2027-01-03", "reference": "TPE 0042"})).await,
        201,
    );
    let auth = format!("Bearer {}", d.clinic.token);
    let r = d
        .http
        .send(
            Method::GET,
            &format!("/api/v1/documents/{}", id(&invoice)),
            &[
                ("authorization", auth.as_str()),
                ("accept", "application/pdf"),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/pdf"));
    assert!(r.body.starts_with(b"%PDF-"));
    let Some(pdftotext) = tool(
        "pdftotext",
        "reading the printed invoice back",
        "apt-get install poppler-utils",
    ) else {
        return;
    };
    let dir = std::env::temp_dir().join(unique("pdf"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("invoice.pdf");
    std::fs::write(&file, &r.body).unwrap();
    let out = std::process::Command::new(pdftotext)
        .args(["-layout", "-enc", "UTF-8"])
        .arg(&file)
        .arg("-")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8(out.stdout).unwrap();
    let stored = status(
        &send(
            &d.http,
            &d.clinic,
            Method::GET,
            &format!("/api/v1/documents/{}", id(&invoice)),
            None,
        )
        .await,
        200,
    );
    let money = |cents: i64| docpdf::format_money(cents, "EUR");
    for needle in [
        format!("No. {}", stored["number"].as_str().unwrap()),
        "Cabinet Dupont".to_owned(),
        "VAT no. FR12345678901".to_owned(),
        "Zoë Łukasiewicz".to_owned(),
        "Orthèse plantaire".to_owned(),
        money(stored["net_cents"].as_i64().unwrap()),
        money(stored["vat_cents"].as_i64().unwrap()),
        money(stored["gross_cents"].as_i64().unwrap()),
        money(stored["paid_cents"].as_i64().unwrap()),
        money(stored["balance_cents"].as_i64().unwrap()),
        money(6000),
        money(24_690),
        "TPE 0042".to_owned(),
        "Payable within 30 days.".to_owned(),
    ] {
        assert!(text.contains(&needle), "{needle:?} not in:\n{text}");
    }
    assert_eq!(stored["balance_cents"], 29_628 + 6000 - 10_000);
}
