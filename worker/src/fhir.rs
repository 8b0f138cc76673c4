//! The FHIR R4 form of a patient's export (`GET /api/v1/patients/{id}/export?format=fhir`):
//! a `collection` Bundle mapped from the JSON [`crate::data::export_patient`] already
//! returns, so there is one read path, and what the caller's role may not see (the
//! restricted fields the data layer left out) is absent here too.
//!
//! | clinic data | FHIR R4 |
//! |---|---|
//! | patient | `Patient`: `name` (official: given, family), `telecom` (email, phone), `birthDate`; the `ssn`, when present, as an `identifier` of type `SS` (v2-0203) in [`SSN_SYSTEM`]. No gender or address is held, so none is sent. |
//! | appointment | `Appointment`: `status` booked → `pending` (not yet confirmed), confirmed → `booked`, done → `fulfilled`, no_show → `noshow`, cancelled → `cancelled`; `start`, `end`, `created`, `notes` as `comment`; participants the patient (an entry of the bundle) and the practitioner (`Practitioner/<id>`, outside the bundle). Booked items stay in the JSON form. |
//! | consent | `Consent`: `status` active, or inactive once `revoked_at` has passed; `scope` patient-privacy; `category` LOINC 59284-0 (patient consent); `patient`; `dateTime` the time given; `policyRule` OPTIN; `policy.uri` the template version consented to (`urn:uuid:<template id>`); `provision.period` given → revoked. |
//! | issued invoice | `Invoice`: `identifier` its number (per-clinic system), `status` issued → `issued`, paid → `balanced`, cancelled → `cancelled`; `subject` and `recipient` the patient; `date` the issue time; `lineItem` per line (description, a `base` price component with the quantity as factor and the net amount, a `tax` component with the VAT rate as factor); `totalNet`, `totalGross`; `notes` as `note`. |
//! | quote, draft invoice | not mapped: a quote is an offer, not a claim for payment, and a draft has no number or legal existence yet. Both stay in the (complete) JSON form. |
//!
//! Amounts are integer minor units in the data layer; a document carries the
//! clinic's currency of when it was created (`currency`, ISO 4217), which every
//! `Money` of its invoice names, with that currency's decimal places ([`CURRENCY`]
//! for rows from before documents had one).

use crate::error::WorkerError;
use chrono::{DateTime, SecondsFormat, Utc};
use common::resource::{APPOINTMENTS, CONSENTS, DOCUMENTS};
use common::ClinicId;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// The media type of a FHIR resource in JSON.
pub const MEDIA_TYPE: &str = "application/fhir+json";

/// The currency of a document that names none (written before documents had one).
pub const CURRENCY: &str = "EUR";

/// The identifier system of social security numbers. The clinic's country is not
/// recorded, so no national system (`us-ssn`, the French INS-NIR OID, …) is claimed;
/// the identifier's `type` (v2-0203 `SS`) says what the number is.
pub const SSN_SYSTEM: &str = "urn:medicalpro:ssn";

const IDENTIFIER_TYPES: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
const CONSENT_SCOPES: &str = "http://terminology.hl7.org/CodeSystem/consentscope";
const LOINC: &str = "http://loinc.org";
const ACT_CODES: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// The two forms of a patient's export, chosen with `?format=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The data layer's own JSON (the default): everything, as the API shows it.
    Json,
    /// A FHIR R4 `collection` Bundle.
    Fhir,
}

impl Format {
    /// Reads `format` from a query string (absent: JSON); other parameters are ignored.
    pub fn from_query(raw: Option<&str>) -> Result<Self, WorkerError> {
        let mut format = Format::Json;
        for (key, value) in common::query::pairs(raw.unwrap_or("")) {
            if key == "format" {
                format = match value.as_str() {
                    "json" => Format::Json,
                    "fhir" => Format::Fhir,
                    _ => {
                        return Err(WorkerError::BadRequest(
                            "`format` must be `json` or `fhir`.".into(),
                        ))
                    }
                };
            }
        }
        Ok(format)
    }
}

/// Maps a patient's export (as [`crate::data::export_patient`] returns it) to a FHIR
/// R4 `collection` Bundle stamped `now`.
pub fn bundle(export: &Value, clinic: ClinicId, now: DateTime<Utc>) -> Result<Value, WorkerError> {
    let source = export
        .get("patient")
        .ok_or_else(|| shape("the export has no `patient`"))?;
    let patient_id = required(source, "patient", "id")?;
    let subject = json!({"reference": urn(patient_id), "type": "Patient"});
    let mut entries = vec![entry(patient_id, patient(source)?)];
    for a in rows(export, APPOINTMENTS.name)? {
        entries.push(entry(
            required(a, "appointment", "id")?,
            appointment(a, &subject)?,
        ));
    }
    for c in rows(export, CONSENTS.name)? {
        entries.push(entry(
            required(c, "consent", "id")?,
            consent(c, &subject, now)?,
        ));
    }
    for d in rows(export, DOCUMENTS.name)? {
        if let Some(invoice) = invoice(d, &subject, clinic)? {
            entries.push(entry(required(d, "document", "id")?, invoice));
        }
    }
    let stamp = now.to_rfc3339_opts(SecondsFormat::Micros, true);
    Ok(json!({
        "resourceType": "Bundle",
        "id": Uuid::now_v7().to_string(),
        "meta": {"lastUpdated": stamp},
        "type": "collection",
        "timestamp": stamp,
        "entry": entries,
    }))
}

/// The data layer's JSON no longer has the shape this mapping reads: our bug.
fn shape(what: &str) -> WorkerError {
    WorkerError::Internal(format!("FHIR mapping: {what}"))
}

/// A non-empty string field.
fn text<'a>(obj: &'a Value, name: &str) -> Option<&'a str> {
    obj.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn required<'a>(obj: &'a Value, what: &str, name: &str) -> Result<&'a str, WorkerError> {
    text(obj, name).ok_or_else(|| shape(&format!("{what} without `{name}`")))
}

fn cents(obj: &Value, what: &str, name: &str) -> Result<i64, WorkerError> {
    obj.get(name)
        .and_then(Value::as_i64)
        .ok_or_else(|| shape(&format!("{what} without `{name}`")))
}

fn rows<'a>(export: &'a Value, resource: &str) -> Result<&'a [Value], WorkerError> {
    export
        .get(resource)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| shape(&format!("the export has no `{resource}` list")))
}

fn urn(id: &str) -> String {
    format!("urn:uuid:{id}")
}

fn entry(id: &str, resource: Value) -> Value {
    json!({"fullUrl": urn(id), "resource": resource})
}

/// `resourceType`, `id` and `meta.lastUpdated` of the row's resource.
fn base(resource_type: &str, row: &Value, what: &str) -> Result<Map<String, Value>, WorkerError> {
    let mut r = Map::new();
    r.insert("resourceType".into(), resource_type.into());
    r.insert("id".into(), required(row, what, "id")?.into());
    if let Some(updated) = text(row, "updated_at") {
        r.insert("meta".into(), json!({"lastUpdated": updated}));
    }
    Ok(r)
}

/// Inserts `value` under `key` when there is one (FHIR forbids nulls and empty values).
fn put(r: &mut Map<String, Value>, key: &str, value: Option<impl Into<Value>>) {
    if let Some(v) = value {
        r.insert(key.into(), v.into());
    }
}

/// An amount of integer minor units of `currency` as FHIR `Money`.
fn money(minor: i64, currency: &str) -> Value {
    // Exact: a whole number of minor units below 2^53 divided by a power of ten
    // prints as itself.
    let scale = 10f64.powi(docpdf::minor_unit_digits(currency) as i32);
    json!({"value": minor as f64 / scale, "currency": currency})
}

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}]})
}

fn patient(p: &Value) -> Result<Value, WorkerError> {
    let mut r = base("Patient", p, "patient")?;
    if let Some(ssn) = text(p, "ssn") {
        r.insert(
            "identifier".into(),
            json!([{
                "use": "official",
                "type": coding(IDENTIFIER_TYPES, "SS", "Social Security number"),
                "system": SSN_SYSTEM,
                "value": ssn,
            }]),
        );
    }
    let mut name = Map::new();
    name.insert("use".into(), "official".into());
    put(&mut name, "family", text(p, "last_name"));
    put(
        &mut name,
        "given",
        text(p, "first_name").map(|g| json!([g])),
    );
    if name.len() > 1 {
        r.insert("name".into(), json!([name]));
    }
    let telecom: Vec<Value> = [("email", "email"), ("phone", "phone")]
        .into_iter()
        .filter_map(|(field, system)| text(p, field).map(|v| json!({"system": system, "value": v})))
        .collect();
    if !telecom.is_empty() {
        r.insert("telecom".into(), telecom.into());
    }
    put(&mut r, "birthDate", text(p, "birth_date"));
    Ok(Value::Object(r))
}

/// The FHIR `Appointment.status` of a clinic appointment status, and the patient's
/// participation status under it.
fn appointment_status(status: &str) -> Option<(&'static str, &'static str)> {
    Some(match status {
        "booked" => ("pending", "needs-action"),
        "confirmed" => ("booked", "accepted"),
        "done" => ("fulfilled", "accepted"),
        "no_show" => ("noshow", "accepted"),
        "cancelled" => ("cancelled", "accepted"),
        _ => return None,
    })
}

fn appointment(a: &Value, subject: &Value) -> Result<Value, WorkerError> {
    let mut r = base("Appointment", a, "appointment")?;
    let status = required(a, "appointment", "status")?;
    let (fhir_status, patient_status) = appointment_status(status)
        .ok_or_else(|| shape(&format!("unknown appointment status `{status}`")))?;
    r.insert("status".into(), fhir_status.into());
    put(&mut r, "start", text(a, "starts_at"));
    put(&mut r, "end", text(a, "ends_at"));
    put(&mut r, "created", text(a, "created_at"));
    put(&mut r, "comment", text(a, "notes"));
    let practitioner = required(a, "appointment", "practitioner_id")?;
    r.insert(
        "participant".into(),
        json!([
            {"actor": subject, "required": "required", "status": patient_status},
            {
                "actor": {"reference": format!("Practitioner/{practitioner}"), "type": "Practitioner"},
                "required": "required",
                "status": "accepted",
            },
        ]),
    );
    Ok(Value::Object(r))
}

fn consent(c: &Value, subject: &Value, now: DateTime<Utc>) -> Result<Value, WorkerError> {
    let mut r = base("Consent", c, "consent")?;
    let revoked = text(c, "revoked_at");
    let withdrawn = match revoked {
        Some(t) => {
            DateTime::parse_from_rfc3339(t)
                .map_err(|_| shape("consent with a malformed `revoked_at`"))?
                <= now
        }
        None => false,
    };
    r.insert(
        "status".into(),
        if withdrawn { "inactive" } else { "active" }.into(),
    );
    r.insert(
        "scope".into(),
        coding(CONSENT_SCOPES, "patient-privacy", "Privacy Consent"),
    );
    r.insert(
        "category".into(),
        json!([coding(LOINC, "59284-0", "Patient Consent")]),
    );
    r.insert("patient".into(), subject.clone());
    let given = text(c, "given_at");
    put(&mut r, "dateTime", given);
    r.insert(
        "policy".into(),
        json!([{"uri": urn(required(c, "consent", "template_id")?)}]),
    );
    r.insert("policyRule".into(), coding(ACT_CODES, "OPTIN", "opt-in"));
    let mut period = Map::new();
    put(&mut period, "start", given);
    put(&mut period, "end", revoked);
    if !period.is_empty() {
        r.insert("provision".into(), json!({"period": period}));
    }
    Ok(Value::Object(r))
}

/// The FHIR `Invoice.status` of an issued invoice's status.
fn invoice_status(status: &str) -> Option<&'static str> {
    Some(match status {
        "issued" | "accepted" => "issued",
        "paid" => "balanced",
        "cancelled" => "cancelled",
        _ => return None,
    })
}

/// An issued invoice as a FHIR `Invoice`; `None` for quotes and drafts.
fn invoice(d: &Value, subject: &Value, clinic: ClinicId) -> Result<Option<Value>, WorkerError> {
    let status = required(d, "document", "status")?;
    if text(d, "kind") != Some("invoice") || status == "draft" || text(d, "issued_at").is_none() {
        return Ok(None);
    }
    let mut r = base("Invoice", d, "document")?;
    let currency = text(d, "currency").unwrap_or(CURRENCY);
    if let Some(number) = text(d, "number") {
        r.insert(
            "identifier".into(),
            json!([{"system": format!("urn:medicalpro:clinic:{clinic}:invoice-number"), "value": number}]),
        );
    }
    let fhir_status = invoice_status(status)
        .ok_or_else(|| shape(&format!("unknown invoice status `{status}`")))?;
    r.insert("status".into(), fhir_status.into());
    r.insert("subject".into(), subject.clone());
    r.insert("recipient".into(), subject.clone());
    put(&mut r, "date", text(d, "issued_at"));
    let mut items = Vec::new();
    for (i, line) in rows(d, "lines")?.iter().enumerate() {
        let what = "invoice line";
        let vat_rate = cents(line, what, "vat_rate_bp")? as f64 / 10_000.0;
        items.push(json!({
            "sequence": i + 1,
            "chargeItemCodeableConcept": {"text": required(line, what, "description")?},
            "priceComponent": [
                {"type": "base", "factor": cents(line, what, "quantity")?, "amount": money(cents(line, what, "net_cents")?, currency)},
                {"type": "tax", "code": {"text": "VAT"}, "factor": vat_rate, "amount": money(cents(line, what, "vat_cents")?, currency)},
            ],
        }));
    }
    if !items.is_empty() {
        r.insert("lineItem".into(), items.into());
    }
    r.insert(
        "totalNet".into(),
        money(cents(d, "document", "net_cents")?, currency),
    );
    r.insert(
        "totalGross".into(),
        money(cents(d, "document", "gross_cents")?, currency),
    );
    if let Some(notes) = text(d, "notes") {
        r.insert("note".into(), json!([{"text": notes}]));
    }
    Ok(Some(Value::Object(r)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use common::resource::FieldType;

    const PATIENT: &str = "0190a8f0-0000-7000-8000-000000000001";
    const PRACTITIONER: &str = "0190a8f0-0000-7000-8000-000000000002";
    const TEMPLATE: &str = "0190a8f0-0000-7000-8000-000000000003";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2030-06-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn patient_json(with_ssn: bool) -> Value {
        let mut p = json!({
            "id": PATIENT, "created_at": "2030-01-01T00:00:00.000000Z", "updated_at": "2030-01-02T00:00:00.000000Z",
            "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.org", "phone": "+44 20 0000 0000",
            "birth_date": "1815-12-10",
        });
        if with_ssn {
            p["ssn"] = "1 80 02 75 123 456 78".into();
        }
        p
    }

    fn appointment_json(id: &str, status: &str) -> Value {
        json!({
            "id": id, "created_at": "2030-01-03T00:00:00.000000Z", "updated_at": "2030-01-03T00:00:00.000000Z",
            "patient_id": PATIENT, "practitioner_id": PRACTITIONER,
            "starts_at": "2030-02-01T09:00:00.000000Z", "ends_at": "2030-02-01T09:30:00.000000Z",
            "status": status, "notes": "bring results", "items": [],
        })
    }

    fn document_json(id: &str, kind: &str, status: &str, number: Option<&str>) -> Value {
        let issued = status != "draft";
        json!({
            "id": id, "created_at": "2030-01-04T00:00:00.000000Z", "updated_at": "2030-01-04T00:00:00.000000Z",
            "kind": kind, "status": status, "patient_id": PATIENT, "number": number,
            "issued_at": if issued { Value::from("2030-01-05T10:00:00.000000Z") } else { Value::Null },
            "converted_from": null, "net_cents": 4999, "vat_cents": 1000, "gross_cents": 5999, "notes": null,
            "lines": [
                {"description": "Visit", "product_id": null, "quantity": 1, "unit_price_cents": 2500, "vat_rate_bp": 2000, "net_cents": 2500, "vat_cents": 500, "gross_cents": 3000},
                {"description": "Test", "product_id": null, "quantity": 1, "unit_price_cents": 2499, "vat_rate_bp": 2000, "net_cents": 2499, "vat_cents": 500, "gross_cents": 2999},
            ],
        })
    }

    fn consent_json(id: &str, revoked_at: Option<&str>) -> Value {
        json!({
            "id": id, "created_at": "2030-01-06T00:00:00.000000Z", "updated_at": "2030-01-06T00:00:00.000000Z",
            "patient_id": PATIENT, "template_id": TEMPLATE,
            "given_at": "2030-01-06T08:00:00.000000Z", "revoked_at": revoked_at,
        })
    }

    fn export(with_ssn: bool) -> Value {
        json!({
            "patient": patient_json(with_ssn),
            "appointments": [appointment_json("0190a8f0-0000-7000-8000-0000000000a1", "booked"),
                             appointment_json("0190a8f0-0000-7000-8000-0000000000a2", "done")],
            "documents": [
                document_json("0190a8f0-0000-7000-8000-0000000000d1", "invoice", "issued", Some("F-2030-000001")),
                document_json("0190a8f0-0000-7000-8000-0000000000d2", "invoice", "draft", None),
                document_json("0190a8f0-0000-7000-8000-0000000000d3", "quote", "issued", None),
            ],
            "consents": [consent_json("0190a8f0-0000-7000-8000-0000000000c1", None),
                         consent_json("0190a8f0-0000-7000-8000-0000000000c2", Some("2030-03-01T00:00:00Z"))],
        })
    }

    fn of_type<'a>(b: &'a Value, t: &str) -> Vec<&'a Value> {
        b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .filter(|r| r["resourceType"] == t)
            .collect()
    }

    #[test]
    fn a_bundle_is_a_collection_of_entries_addressed_by_urn_uuid() {
        let clinic = ClinicId::generate();
        let b = bundle(&export(true), clinic, now()).unwrap();
        assert_eq!(b["resourceType"], "Bundle");
        assert_eq!(b["type"], "collection");
        assert_eq!(b["timestamp"], "2030-06-01T12:00:00.000000Z");
        let entries = b["entry"].as_array().unwrap();
        // The patient, two appointments, two consents, one issued invoice.
        assert_eq!(entries.len(), 6);
        assert_eq!(entries[0]["resource"]["resourceType"], "Patient");
        for e in entries {
            let id = e["resource"]["id"].as_str().unwrap();
            assert_eq!(e["fullUrl"], format!("urn:uuid:{id}"));
        }
        // No nulls and no empty values anywhere (FHIR forbids both).
        fn clean(v: &Value) -> bool {
            match v {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty() && a.iter().all(clean),
                Value::Object(o) => !o.is_empty() && o.values().all(clean),
                _ => true,
            }
        }
        assert!(clean(&b), "{b:#}");
    }

    #[test]
    fn the_patient_carries_names_contacts_birth_date_and_the_ssn_when_seen() {
        let clinic = ClinicId::generate();
        let b = bundle(&export(true), clinic, now()).unwrap();
        let p = of_type(&b, "Patient")[0];
        assert_eq!(p["id"], PATIENT);
        assert_eq!(p["meta"]["lastUpdated"], "2030-01-02T00:00:00.000000Z");
        assert_eq!(
            p["name"],
            json!([{"use": "official", "family": "Lovelace", "given": ["Ada"]}])
        );
        assert_eq!(
            p["telecom"],
            json!([{"system": "email", "value": "ada@example.org"}, {"system": "phone", "value": "+44 20 0000 0000"}])
        );
        assert_eq!(p["birthDate"], "1815-12-10");
        assert!(p.get("gender").is_none() && p.get("address").is_none());
        assert_eq!(p["identifier"][0]["system"], SSN_SYSTEM);
        assert_eq!(p["identifier"][0]["value"], "1 80 02 75 123 456 78");
        assert_eq!(p["identifier"][0]["type"]["coding"][0]["code"], "SS");

        // A role that does not see the ssn gets an export without it: no identifier.
        let b = bundle(&export(false), clinic, now()).unwrap();
        assert!(of_type(&b, "Patient")[0].get("identifier").is_none());
        assert!(!b.to_string().contains("123 456"));
        // Missing optional fields are left out, never null.
        let bare = json!({"patient": {"id": PATIENT, "first_name": "A", "last_name": "B", "email": null, "phone": null, "birth_date": null},
                          "appointments": [], "documents": [], "consents": []});
        let p = bundle(&bare, clinic, now()).unwrap()["entry"][0]["resource"].clone();
        assert!(p.get("telecom").is_none() && p.get("birthDate").is_none());
    }

    #[test]
    fn appointments_map_every_status_and_both_participants() {
        let FieldType::Enum(statuses) = APPOINTMENTS.field("status").unwrap().ty else {
            panic!("appointment status is an enum");
        };
        for s in statuses {
            assert!(appointment_status(s).is_some(), "{s} has no FHIR status");
        }
        let b = bundle(&export(true), ClinicId::generate(), now()).unwrap();
        let appts = of_type(&b, "Appointment");
        assert_eq!(appts.len(), 2);
        assert_eq!(appts[0]["status"], "pending");
        assert_eq!(appts[1]["status"], "fulfilled");
        let a = appts[0];
        assert_eq!(a["start"], "2030-02-01T09:00:00.000000Z");
        assert_eq!(a["end"], "2030-02-01T09:30:00.000000Z");
        assert_eq!(a["comment"], "bring results");
        let participants = a["participant"].as_array().unwrap();
        assert_eq!(participants.len(), 2);
        assert_eq!(
            participants[0]["actor"]["reference"],
            format!("urn:uuid:{PATIENT}")
        );
        assert_eq!(participants[0]["status"], "needs-action");
        assert_eq!(
            participants[1]["actor"]["reference"],
            format!("Practitioner/{PRACTITIONER}")
        );
        assert!(participants.iter().all(|p| p["status"].is_string()));
        let mut unknown = export(true);
        unknown["appointments"][0]["status"] = "teleported".into();
        assert!(matches!(
            bundle(&unknown, ClinicId::generate(), now()),
            Err(WorkerError::Internal(_))
        ));
    }

    #[test]
    fn consents_are_active_until_revoked() {
        let b = bundle(&export(true), ClinicId::generate(), now()).unwrap();
        let consents = of_type(&b, "Consent");
        assert_eq!(consents.len(), 2);
        let active = consents[0];
        assert_eq!(active["status"], "active");
        assert_eq!(active["scope"]["coding"][0]["code"], "patient-privacy");
        assert_eq!(active["category"][0]["coding"][0]["code"], "59284-0");
        assert_eq!(
            active["patient"]["reference"],
            format!("urn:uuid:{PATIENT}")
        );
        assert_eq!(active["dateTime"], "2030-01-06T08:00:00.000000Z");
        assert_eq!(active["policy"][0]["uri"], format!("urn:uuid:{TEMPLATE}"));
        assert!(active["provision"]["period"].get("end").is_none());
        let revoked = consents[1];
        assert_eq!(revoked["status"], "inactive");
        assert_eq!(
            revoked["provision"]["period"]["end"],
            "2030-03-01T00:00:00Z"
        );
        // A withdrawal planned for later leaves the consent active until then.
        let later = bundle(
            &export(true),
            ClinicId::generate(),
            DateTime::parse_from_rfc3339("2030-02-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        )
        .unwrap();
        assert_eq!(of_type(&later, "Consent")[1]["status"], "active");
    }

    #[test]
    fn only_issued_invoices_become_invoices_with_money_in_euros() {
        let FieldType::Enum(statuses) = DOCUMENTS.field("status").unwrap().ty else {
            panic!("document status is an enum");
        };
        for s in statuses.iter().filter(|s| **s != "draft") {
            assert!(invoice_status(s).is_some(), "{s} has no FHIR status");
        }
        let clinic = ClinicId::generate();
        let b = bundle(&export(true), clinic, now()).unwrap();
        let invoices = of_type(&b, "Invoice");
        assert_eq!(invoices.len(), 1, "neither the draft nor the quote");
        let inv = invoices[0];
        assert_eq!(inv["id"], "0190a8f0-0000-7000-8000-0000000000d1");
        assert_eq!(inv["status"], "issued");
        assert_eq!(inv["identifier"][0]["value"], "F-2030-000001");
        assert_eq!(
            inv["identifier"][0]["system"],
            format!("urn:medicalpro:clinic:{clinic}:invoice-number")
        );
        assert_eq!(inv["date"], "2030-01-05T10:00:00.000000Z");
        assert_eq!(inv["subject"]["reference"], format!("urn:uuid:{PATIENT}"));
        assert_eq!(inv["totalNet"], json!({"value": 49.99, "currency": "EUR"}));
        assert_eq!(
            inv["totalGross"],
            json!({"value": 59.99, "currency": "EUR"})
        );
        let lines = inv["lineItem"].as_array().unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["sequence"], 1);
        assert_eq!(lines[0]["chargeItemCodeableConcept"]["text"], "Visit");
        assert_eq!(
            lines[0]["priceComponent"],
            json!([
                {"type": "base", "factor": 1, "amount": {"value": 25.0, "currency": "EUR"}},
                {"type": "tax", "code": {"text": "VAT"}, "factor": 0.2, "amount": {"value": 5.0, "currency": "EUR"}},
            ])
        );
        let mut paid = export(true);
        paid["documents"][0]["status"] = "paid".into();
        let b = bundle(&paid, clinic, now()).unwrap();
        assert_eq!(of_type(&b, "Invoice")[0]["status"], "balanced");
    }

    #[test]
    fn money_names_the_documents_currency_with_its_decimals() {
        assert_eq!(
            money(1500, "JPY"),
            json!({"value": 1500.0, "currency": "JPY"})
        );
        assert_eq!(
            money(1234, "KWD"),
            json!({"value": 1.234, "currency": "KWD"})
        );
        assert_eq!(
            money(1999, "CHF"),
            json!({"value": 19.99, "currency": "CHF"})
        );
    }

    #[test]
    fn money_is_exact_in_cents() {
        for cents in [0, 1, 10, 99, 1999, 123_456_789, 100_000_000_000] {
            let v = money(cents, "EUR");
            assert_eq!(
                v["value"].to_string().parse::<f64>().unwrap(),
                cents as f64 / 100.0
            );
            let text = v["value"].to_string();
            let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
            assert!(decimals <= 2, "{cents} → {text}");
        }
    }

    #[test]
    fn the_format_comes_from_the_query_string() {
        assert_eq!(Format::from_query(None).unwrap(), Format::Json);
        assert_eq!(
            Format::from_query(Some("format=json")).unwrap(),
            Format::Json
        );
        assert_eq!(
            Format::from_query(Some("x=1&format=fhir")).unwrap(),
            Format::Fhir
        );
        assert!(matches!(
            Format::from_query(Some("format=xml")),
            Err(WorkerError::BadRequest(_))
        ));
    }

    #[test]
    fn a_malformed_export_is_an_internal_error_not_a_panic() {
        for bad in [
            json!({}),
            json!({"patient": {}}),
            json!({"patient": {"id": PATIENT}}),
        ] {
            assert!(matches!(
                bundle(&bad, ClinicId::generate(), now()),
                Err(WorkerError::Internal(_))
            ));
        }
    }
}
