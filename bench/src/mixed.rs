//! The mixed clinic workload: every request goes to one of the seeded clinics
//! (round-robin per load task) and is one operation drawn from a fixed weighted
//! mix of searches, filtered lists, reads and writes, like a front desk's day.
//! Appointments are booked in 30-minute slots from 2040 on, numbered by one shared
//! counter, so no two requests ever ask for the same slot (a `409` is an error).

use crate::clinics::{self, Clinic, FIRST_NAMES, LAST_NAMES, SEEDED_APPOINTMENTS};
use crate::load::{self, Body, Job, LoadClient, Rng, Task, Workload};
use anyhow::{bail, Context};
use bytes::Bytes;
use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

/// One kind of operation of the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    SearchPatients,
    ListAppointments,
    GetPatient,
    CreatePatient,
    UpdatePatient,
    CreateAppointment,
    ListDocuments,
}

/// The mix: each operation, its name in the report, and its weight in percent.
const MIX: &[(Op, &str, u32)] = &[
    (Op::SearchPatients, "search patients (?q=)", 35),
    (Op::ListAppointments, "list appointments (filtered)", 20),
    (Op::GetPatient, "get patient", 15),
    (Op::CreatePatient, "create patient", 10),
    (Op::UpdatePatient, "update patient (PATCH)", 10),
    (Op::CreateAppointment, "create appointment", 5),
    (Op::ListDocuments, "list documents (?kind=)", 5),
];

/// The names of [`MIX`], in its order (what [`Workload::ops`] reports).
const OP_NAMES: &[&str] = &[
    "search patients (?q=)",
    "list appointments (filtered)",
    "get patient",
    "create patient",
    "update patient (PATCH)",
    "create appointment",
    "list documents (?kind=)",
];

/// A seeded clinic and its ready-made authorization header.
struct Tenant {
    clinic: Clinic,
    auth: HeaderValue,
}

/// The mixed workload over the seeded clinics.
pub struct Mixed {
    base: String,
    tenants: Vec<Tenant>,
    /// The next free appointment slot, shared by all tasks and runs.
    slot: AtomicU64,
    /// The first bookable slot.
    epoch: DateTime<Utc>,
}

impl Mixed {
    /// The workload against the gateway at `gateway_url` over `clinics`.
    pub fn new(gateway_url: &str, clinics: Vec<Clinic>) -> anyhow::Result<Self> {
        if clinics.is_empty() {
            bail!("the mixed workload needs at least one clinic");
        }
        let tenants = clinics
            .into_iter()
            .map(|clinic| {
                let auth = HeaderValue::try_from(format!("Bearer {}", clinic.account.token))
                    .context("the access token is not a header value")?;
                if clinic.patients.is_empty() || clinic.practitioners.is_empty() {
                    bail!(
                        "clinic {} has no patients or practitioners",
                        clinic.account.clinic_id
                    );
                }
                Ok(Tenant { clinic, auth })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let epoch = Utc
            .with_ymd_and_hms(2040, 1, 1, 0, 0, 0)
            .single()
            .context("the booking epoch")?;
        Ok(Self {
            base: gateway_url.trim_end_matches('/').to_owned(),
            tenants,
            slot: AtomicU64::new(0),
            epoch,
        })
    }

    /// The weights of the mix, by operation name, in percent.
    pub fn weights() -> impl Iterator<Item = (&'static str, u32)> {
        MIX.iter().map(|(_, name, w)| (*name, *w))
    }

    /// Sends every operation once to every clinic and fails on anything but a
    /// 2xx with a JSON body: the scenario is measured only when it works.
    pub async fn check(&self, client: &LoadClient) -> anyhow::Result<()> {
        let mut rng = Rng::new(0x5EED);
        for tenant in &self.tenants {
            for (op, name, _) in MIX {
                let req = self
                    .request(*op, tenant, &mut rng)
                    .with_context(|| format!("mixed: building `{name}`"))?;
                let (status, body) = load::send(client, req)
                    .await
                    .with_context(|| format!("mixed: `{name}`"))?;
                if !status.is_success() {
                    bail!(
                        "mixed: `{name}` for clinic {} answered {status}: {}",
                        tenant.clinic.account.clinic_id,
                        String::from_utf8_lossy(&body)
                    );
                }
                serde_json::from_slice::<Value>(&body)
                    .with_context(|| format!("mixed: `{name}` answered no JSON"))?;
            }
        }
        Ok(())
    }

    fn op(rng: &mut Rng) -> usize {
        let total: u32 = MIX.iter().map(|(_, _, w)| w).sum();
        let mut roll = rng.below(total as usize) as u32;
        for (i, (_, _, w)) in MIX.iter().enumerate() {
            if roll < *w {
                return i;
            }
            roll -= w;
        }
        0
    }

    fn request(&self, op: Op, tenant: &Tenant, rng: &mut Rng) -> anyhow::Result<Request<Body>> {
        let c = &tenant.clinic;
        let one = |rng: &mut Rng, ids: &[Uuid]| -> anyhow::Result<Uuid> {
            rng.pick(ids).copied().context("no ids to pick from")
        };
        let (method, path, body) = match op {
            Op::SearchPatients => {
                let names = if rng.below(2) == 0 {
                    FIRST_NAMES
                } else {
                    LAST_NAMES
                };
                let name = rng.pick(names).copied().unwrap_or("ada");
                let prefix: String = name.chars().take(3).collect::<String>().to_lowercase();
                (Method::GET, format!("/api/v1/patients?q={prefix}"), None)
            }
            Op::ListAppointments => {
                let practitioner = one(rng, &c.practitioners)?;
                let from = clinics::rfc3339(clinics::seeded_day(rng.below(SEEDED_APPOINTMENTS)));
                let path = format!(
                    "/api/v1/appointments?practitioner_id={practitioner}&starts_at_from={from}"
                );
                (Method::GET, path, None)
            }
            Op::GetPatient => {
                let id = one(rng, &c.patients)?;
                (Method::GET, format!("/api/v1/patients/{id}"), None)
            }
            Op::CreatePatient => {
                let body = clinics::patient_body(rng.next_u64() % 1_000_000_000);
                (Method::POST, "/api/v1/patients".to_owned(), Some(body))
            }
            Op::UpdatePatient => {
                let id = one(rng, &c.patients)?;
                let n = rng.next_u64();
                let phone = format!(
                    "+33 7 {:02} {:02} {:02} {:02}",
                    n % 100,
                    n / 100 % 100,
                    n / 10_000 % 100,
                    n / 1_000_000 % 100
                );
                (
                    Method::PATCH,
                    format!("/api/v1/patients/{id}"),
                    Some(json!({ "phone": phone })),
                )
            }
            Op::CreateAppointment => {
                let n = self.slot.fetch_add(1, Ordering::Relaxed);
                let minutes = i64::try_from(n.saturating_mul(30)).context("slot out of range")?;
                let start = self.epoch + Span::minutes(minutes);
                let practitioner = c
                    .practitioners
                    .get((n % c.practitioners.len().max(1) as u64) as usize)
                    .copied()
                    .context("no practitioner")?;
                let mut body = json!({
                    "patient_id": one(rng, &c.patients)?,
                    "practitioner_id": practitioner,
                    "starts_at": clinics::rfc3339(start),
                    "ends_at": clinics::rfc3339(start + Span::minutes(30)),
                });
                if let Some(product) = rng.pick(&c.products) {
                    body["items"] = json!([{ "product_id": product, "quantity": 1 }]);
                }
                (Method::POST, "/api/v1/appointments".to_owned(), Some(body))
            }
            Op::ListDocuments => {
                let kind = if rng.below(2) == 0 {
                    "quote"
                } else {
                    "invoice"
                };
                (Method::GET, format!("/api/v1/documents?kind={kind}"), None)
            }
        };
        let builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(AUTHORIZATION, tenant.auth.clone());
        let req = match body {
            Some(body) => builder
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(Body::new(Bytes::from(serde_json::to_vec(&body)?)))?,
            None => builder.body(Body::default())?,
        };
        Ok(req)
    }
}

impl Workload for Mixed {
    fn ops(&self) -> &[&'static str] {
        OP_NAMES
    }

    fn next(&self, task: &mut Task) -> Job {
        let op = Self::op(&mut task.rng);
        let i = (task.index as u64 + task.sent) % self.tenants.len().max(1) as u64;
        let request = match (MIX.get(op), self.tenants.get(i as usize)) {
            (Some((kind, _, _)), Some(tenant)) => self.request(*kind, tenant, &mut task.rng),
            _ => Err(anyhow::anyhow!("no operation {op} or clinic {i}")),
        };
        Job { op, request }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_mix_and_weights_add_up() {
        let names: Vec<&str> = MIX.iter().map(|(_, n, _)| *n).collect();
        assert_eq!(names, OP_NAMES);
        assert_eq!(Mixed::weights().map(|(_, w)| w).sum::<u32>(), 100);
    }

    #[test]
    fn draws_follow_the_weights() {
        let mut rng = Rng::new(42);
        let mut counts = vec![0u32; MIX.len()];
        let draws = 100_000;
        for _ in 0..draws {
            if let Some(n) = counts.get_mut(Mixed::op(&mut rng)) {
                *n += 1;
            }
        }
        for ((_, name, w), n) in MIX.iter().zip(counts) {
            let share = f64::from(n) * 100.0 / f64::from(draws);
            assert!(
                (share - f64::from(*w)).abs() < 1.0,
                "{name}: {share:.2}% for {w}%"
            );
        }
    }
}
