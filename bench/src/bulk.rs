//! Clinic databases reached straight, past the API: where a clinic's database is
//! and its own role's credentials (from the central `companies` table, the role's
//! password opened with the stack's master key), and patients bulk-inserted with
//! one SQL statement, for clinics of a realistic size (the API would take minutes
//! to create a hundred thousand patients, and what is measured is reading them).

use crate::clinics::FIRST_NAMES;
use anyhow::{bail, Context};
use common::ClinicId;
use devstack::Stack;
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use uuid::Uuid;

/// Last names of the bulk-inserted patients, each followed by a number
/// (`Garcia12`): the mixed scenario's names plus a few that share `dur`, so that a
/// search for `dur` is a common one (3 in 32 last names).
pub const BULK_LAST_NAMES: &[&str] = &[
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
    "Durand",
    "Durant",
    "Durieux",
    "Martin",
    "Leroy",
    "Mercier",
    "Faure",
    "Dumont",
];

/// Where a clinic's data lives and how its own role signs in.
#[derive(Clone, Debug)]
pub struct ClinicDb {
    pub clinic_id: Uuid,
    pub db_name: String,
    pub db_role: String,
    /// The role's password, sealed under the stack's master key.
    pub sealed_password: Option<Vec<u8>>,
}

impl ClinicDb {
    /// The role's password in the clear.
    pub fn password(&self, keys: &common::crypto::KeyRing) -> anyhow::Result<String> {
        let sealed = self
            .sealed_password
            .as_deref()
            .with_context(|| format!("clinic {} has no role password", self.clinic_id))?;
        let purpose = common::crypto::role_password_purpose(ClinicId::from_uuid(self.clinic_id));
        let plain = keys
            .open_secret(&purpose, sealed)
            .map_err(|e| anyhow::anyhow!("opening the role password of {}: {e}", self.clinic_id))?;
        String::from_utf8(plain).context("a role password that is not UTF-8")
    }
}

/// The databases and roles of `clinics`, in their order, from the central database.
pub async fn lookup(stack: &Stack, clinics: &[Uuid]) -> anyhow::Result<Vec<ClinicDb>> {
    let central = stack
        .central
        .connect(devstack::stack::CENTRAL_DB)
        .await
        .context("connecting to the central database")?;
    let rows = central
        .query(
            "SELECT id, db_name, db_role, db_role_password FROM companies WHERE id = ANY($1)",
            &[&clinics],
        )
        .await
        .context("reading clinics' databases and roles")?;
    let mut found: std::collections::HashMap<Uuid, ClinicDb> = rows
        .iter()
        .map(|r| {
            let id: Uuid = r.get(0);
            (
                id,
                ClinicDb {
                    clinic_id: id,
                    db_name: r.get(1),
                    db_role: r.get(2),
                    sealed_password: r.get(3),
                },
            )
        })
        .collect();
    clinics
        .iter()
        .map(|id| {
            found
                .remove(id)
                .with_context(|| format!("clinic {id} is not in the central database"))
        })
        .collect()
}

/// The search term that matches exactly one of `count` bulk-inserted patients:
/// the last `Garcia<n>` (every longer number is past the last one inserted).
pub fn rare_term(count: usize) -> String {
    let n = BULK_LAST_NAMES.len();
    let garcia = BULK_LAST_NAMES
        .iter()
        .position(|l| *l == "Garcia")
        .unwrap_or(0);
    let number = count.saturating_sub(1 + garcia) / n;
    format!("garcia{number}")
}

/// Inserts `count` patients into the clinic database `client` is connected to
/// (as the superuser), with varied names (a first name of the mixed scenario's
/// list, a last name of [`BULK_LAST_NAMES`] followed by a number), e-mail, phone
/// and birth date (no social security number); then `ANALYZE`. They belong to
/// the clinic of the patients already there (created through the API). Returns
/// how long it took.
pub async fn patients(client: &Client, count: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let company: Option<Uuid> = client
        .query_opt("SELECT company_id FROM patients LIMIT 1", &[])
        .await
        .context("reading the clinic's id from its patients")?
        .map(|r| r.get(0));
    let Some(company) = company else {
        bail!("bulk patients: the clinic has no patient created through the API yet");
    };
    let count = i64::try_from(count).context("too many patients")?;
    let first: Vec<&str> = FIRST_NAMES.to_vec();
    let last: Vec<&str> = BULK_LAST_NAMES.to_vec();
    client
        .execute(
            "INSERT INTO patients (id, company_id, first_name, last_name, email, phone, birth_date) \
             SELECT gen_random_uuid(), $1, f, l, \
                    lower(f) || '.' || lower(l) || '@example.org', \
                    '+33 6 ' || to_char(10000000 + (i * 7919) % 90000000, 'FM00 00 00 00'), \
                    date '1940-01-01' + ((i * 7877) % 27000)::int \
             FROM (SELECT i, \
                          ($3::text[])[1 + ((i / 7) % cardinality($3::text[]))] AS f, \
                          ($4::text[])[1 + (i % cardinality($4::text[]))] || (i / cardinality($4::text[]))::text AS l \
                   FROM generate_series(0::bigint, $2::bigint - 1) AS i) AS g",
            &[&company, &count, &first, &last],
        )
        .await
        .context("bulk-inserting patients")?;
    client
        .batch_execute("ANALYZE patients")
        .await
        .context("ANALYZE patients")?;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rare_term_is_the_last_garcia() {
        // Row i has last name BULK_LAST_NAMES[i % 32] followed by i / 32; Garcia is
        // 7th (index 6): rows 6, 38, …, the last below 100 000 is 99 974 = 32 × 3124 + 6.
        assert_eq!(rare_term(100_000), "garcia3124");
        assert_eq!(rare_term(99_975), "garcia3124");
        assert_eq!(rare_term(99_974), "garcia3123");
        assert_eq!(BULK_LAST_NAMES.len(), 32);
        let dur = BULK_LAST_NAMES
            .iter()
            .filter(|l| l.to_lowercase().contains("dur"))
            .count();
        assert_eq!(dur, 3);
        assert!(!FIRST_NAMES.iter().any(|f| f.to_lowercase().contains("dur")));
    }
}
