//! The mixed scenario's data: several clinics, each registered and logged in
//! through the gateway and seeded there with patients of varied names,
//! practitioners, products, appointments and documents (a quote and an issued
//! invoice, with lines), plus the patient bodies the load itself creates.

use crate::setup::{self, Account};
use anyhow::Context;
use chrono::{DateTime, Duration as Span, SecondsFormat, TimeZone, Utc};
use devstack::Http;
use serde_json::{json, Value};
use tokio::task::JoinSet;
use uuid::Uuid;

pub const FIRST_NAMES: &[&str] = &[
    "Ada", "Bruno", "Camille", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas",
    "Keiko", "Luca", "Maya", "Nils", "Olga", "Pablo", "Quentin", "Rosa", "Samir", "Tara", "Ulrich",
    "Vera", "Wanda", "Yusuf",
];

pub const LAST_NAMES: &[&str] = &[
    "Andersen",
    "Bernard",
    "Costa",
    "Dubois",
    "Eriksson",
    "Fischer",
    "Garcia",
    "Hoffmann",
    "Ivanova",
    "Jansen",
    "Kowalski",
    "Lambert",
    "Moreau",
    "Novak",
    "Olsen",
    "Petit",
    "Quinn",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Urban",
    "Vidal",
    "Weber",
    "Zimmermann",
];

const PRACTITIONERS: &[(&str, &str, &str)] = &[
    ("Greg", "House", "diagnostics"),
    ("Meredith", "Grey", "general surgery"),
    ("John", "Dorian", "internal medicine"),
];

/// Name, kind, unit price in cents, VAT in basis points.
const PRODUCTS: &[(&str, &str, i64, i64)] = &[
    ("Consultation", "service", 2500, 0),
    ("Follow-up visit", "service", 1800, 0),
    ("Blood panel", "service", 4200, 0),
    ("Compression socks", "product", 1990, 2000),
    ("Knee brace", "product", 3450, 2000),
];

/// Appointments seeded per clinic, one a day from [`seeded_day`] on.
pub const SEEDED_APPOINTMENTS: usize = 12;

/// The day the seeded appointments start on (the load books from 2040 on).
pub fn seeded_day(day: usize) -> DateTime<Utc> {
    let first = Utc
        .with_ymd_and_hms(2035, 1, 1, 9, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH);
    first + Span::days(i64::try_from(day).unwrap_or(0))
}

/// RFC 3339 in UTC, whole seconds.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A valid patient body, varied by `n`: names from the lists above, an e-mail,
/// a phone, a birth date and a social security number.
pub fn patient_body(n: u64) -> Value {
    let pick = |list: &[&'static str], i: u64| -> &'static str {
        list.get((i % list.len().max(1) as u64) as usize)
            .copied()
            .unwrap_or("Doe")
    };
    let first = pick(FIRST_NAMES, n);
    let last = pick(LAST_NAMES, n / 3 + n * 7);
    let year = 1940 + n % 75;
    let month = 1 + n % 12;
    let day = 1 + n % 28;
    json!({
        "first_name": first,
        "last_name": last,
        "email": format!("{}.{}{}@example.org", first.to_lowercase(), last.to_lowercase(), n % 1000),
        "phone": format!("+33 6 {:02} {:02} {:02} {:02}", n % 100, n / 100 % 100, n / 7 % 100, n / 13 % 100),
        "birth_date": format!("{year}-{month:02}-{day:02}"),
        "ssn": format!("{} {:02} {:02} 75 {:03} {:03} {:02}", 1 + n % 2, year % 100, month, n % 1000, n / 1000 % 1000, n % 97),
    })
}

/// One seeded clinic of the mixed scenario.
#[derive(Clone, Debug)]
pub struct Clinic {
    pub account: Account,
    pub patients: Vec<Uuid>,
    pub practitioners: Vec<Uuid>,
    pub products: Vec<Uuid>,
}

/// Registers and seeds `count` clinics with `patients` patients each, the clinics
/// concurrently.
pub async fn seed(gateway_url: &str, count: usize, patients: usize) -> anyhow::Result<Vec<Clinic>> {
    let mut tasks = JoinSet::new();
    for index in 0..count {
        let http = Http::new(gateway_url);
        tasks.spawn(async move {
            let clinic = seed_one(&http, index, patients)
                .await
                .with_context(|| format!("seeding mixed clinic {index}"));
            (index, clinic)
        });
    }
    let mut clinics = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        let (index, clinic) = joined.context("a seeding task failed")?;
        clinics.push((index, clinic?));
    }
    clinics.sort_by_key(|(index, _)| *index);
    Ok(clinics.into_iter().map(|(_, c)| c).collect())
}

async fn seed_one(http: &Http, index: usize, patients: usize) -> anyhow::Result<Clinic> {
    let account = setup::register(http, &format!("Bench Mixed Clinic {index}")).await?;
    let token = account.token.as_str();

    let mut practitioner_ids = Vec::with_capacity(PRACTITIONERS.len());
    for (i, (first, last, specialty)) in PRACTITIONERS.iter().enumerate() {
        let body = json!({
            "first_name": first,
            "last_name": last,
            "specialty": specialty,
            "email": format!("{}@clinic.example", last.to_lowercase()),
            "license_number": format!("RPPS-{index:03}-{i:03}"),
        });
        practitioner_ids.push(setup::create(http, token, "practitioners", &body).await?);
    }

    let mut product_ids = Vec::with_capacity(PRODUCTS.len());
    for (name, kind, price, vat) in PRODUCTS {
        let body =
            json!({"name": name, "kind": kind, "unit_price_cents": price, "vat_rate_bp": vat});
        product_ids.push(setup::create(http, token, "products", &body).await?);
    }

    let mut patient_ids = Vec::with_capacity(patients);
    for k in 0..patients {
        let n = (index * 100_003 + k) as u64;
        patient_ids.push(setup::create(http, token, "patients", &patient_body(n)).await?);
    }

    let nth = |ids: &[Uuid], i: usize| ids.get(i % ids.len().max(1)).copied();
    for day in 0..SEEDED_APPOINTMENTS {
        let start = seeded_day(day);
        let body = json!({
            "patient_id": nth(&patient_ids, day),
            "practitioner_id": nth(&practitioner_ids, day),
            "starts_at": rfc3339(start),
            "ends_at": rfc3339(start + Span::minutes(30)),
            "notes": "seeded by the bench",
            "items": [{"product_id": nth(&product_ids, day), "quantity": 1}],
        });
        setup::create(http, token, "appointments", &body).await?;
    }

    for (i, kind) in ["quote", "invoice"].into_iter().enumerate() {
        let lines: Vec<Value> = PRODUCTS
            .iter()
            .zip(&product_ids)
            .skip(i)
            .take(2)
            .map(|((name, _, price, vat), id)| {
                json!({"description": name, "product_id": id, "quantity": 1 + i, "unit_price_cents": price, "vat_rate_bp": vat})
            })
            .collect();
        let body = json!({"kind": kind, "patient_id": nth(&patient_ids, i), "notes": "seeded by the bench", "lines": lines});
        let id = setup::create(http, token, "documents", &body).await?;
        if kind == "invoice" {
            setup::post(
                http,
                token,
                &format!("/api/v1/documents/{id}/issue"),
                &json!({}),
                200,
            )
            .await?;
        }
    }

    Ok(Clinic {
        account,
        patients: patient_ids,
        practitioners: practitioner_ids,
        products: product_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patient_bodies_vary_and_fit_the_schema() {
        let names: std::collections::BTreeSet<String> = (0..50)
            .map(|n| {
                let b = patient_body(n);
                format!("{} {}", b["first_name"], b["last_name"])
            })
            .collect();
        assert!(names.len() >= 40, "{names:?}");
        for n in [0, 1, 999, 123_456_789] {
            let b = patient_body(n);
            let ssn = b["ssn"].as_str().map(str::len).unwrap_or(99);
            assert!(ssn <= 32);
            let phone = b["phone"].as_str().map(str::len).unwrap_or(99);
            assert!(phone <= 40);
        }
        assert_eq!(rfc3339(seeded_day(1)), "2035-01-02T09:00:00Z");
    }
}
