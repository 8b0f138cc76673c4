//! Signing clinics up by the operator: `invite` issues a single-use sign-up code for
//! `REGISTRATION=invite` (only its hash is stored; it may be bound to one e-mail
//! and region, and expires), and `create-clinic` creates a clinic, its first admin
//! and its database directly (the only way under `REGISTRATION=closed`), audited
//! as `create_clinic`.

use crate::config::AdminSettings;
use crate::db;
use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::audit::Record;
use common::crypto::KeyRing;
use common::{ClinicId, Email, UserId};
use rand::RngCore;
use std::time::Duration;
use zeroize::Zeroizing;

/// An issued invitation.
#[derive(Debug)]
pub struct Invitation {
    /// The code to hand to the clinic (shown once; only its hash is stored).
    pub code: Zeroizing<String>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Issues a single-use sign-up code, valid for `valid_for`, optionally bound to an
/// e-mail address and a region.
pub async fn invite(
    settings: &AdminSettings,
    email: Option<&str>,
    region: Option<&str>,
    note: Option<&str>,
    valid_for: Duration,
) -> anyhow::Result<Invitation> {
    let email = email
        .map(|e| Email::parse(e).with_context(|| format!("{e:?} is not an e-mail address")))
        .transpose()?;
    let central = db::central(settings).await?;
    if let Some(region) = region {
        if central
            .query_opt("SELECT 1 FROM regions WHERE name = $1", &[&region])
            .await?
            .is_none()
        {
            bail!("unknown region {region:?} (its worker registers it at start-up)");
        }
    }
    let mut raw = Zeroizing::new([0u8; 24]);
    rand::rng().fill_bytes(raw.as_mut());
    let code = Zeroizing::new(URL_SAFE_NO_PAD.encode(raw.as_ref()));
    let row = central
        .query_one(
            "INSERT INTO signup_invites (code_hash, email, region, note, expires_at) \
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5)) RETURNING expires_at",
            &[
                &common::crypto::signup_code_hash(&code),
                &email.as_ref().map(|e| e.as_str().to_owned()),
                &region,
                &note,
                &valid_for.as_secs_f64(),
            ],
        )
        .await
        .context("storing the invitation")?;
    Ok(Invitation {
        code,
        expires_at: row.get(0),
    })
}

/// A clinic created by [`create_clinic`].
#[derive(Debug)]
pub struct Created {
    pub clinic: ClinicId,
    pub user: UserId,
    pub region: String,
}

/// Creates a clinic with its first admin (`email`, `password`) in `region`, whose
/// PostgreSQL server `REGION_DB_*` must name, and provisions its database. Running
/// it again for the same e-mail finishes a creation that was cut short.
pub async fn create_clinic(
    settings: &AdminSettings,
    ring: &KeyRing,
    name: &str,
    email: &str,
    password: &str,
    region: &str,
) -> anyhow::Result<Created> {
    let keys = settings.audit_keys()?;
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        bail!("the clinic name must be 1 to 200 characters");
    }
    let email =
        Email::parse(email).with_context(|| format!("{email:?} is not an e-mail address"))?;
    if !common::password::acceptable(password) {
        bail!(
            "the password must be {} to {} characters long",
            common::password::MIN_LEN,
            common::password::MAX_LEN
        );
    }
    let mut central = db::central(settings).await?;
    let server = central
        .query_opt(
            "SELECT pg_host, pg_port FROM regions WHERE name = $1",
            &[&region],
        )
        .await?
        .with_context(|| {
            format!("unknown region {region:?} (its worker registers it at start-up)")
        })?;
    let (host, port): (String, i32) = (server.get(0), server.get(1));
    if host != settings.regional.host || port != i32::from(settings.regional.port) {
        bail!(
            "region {region} lives on {host}:{port}, but REGION_DB_HOST/REGION_DB_PORT name {}:{}",
            settings.regional.host,
            settings.regional.port
        );
    }
    let existing = central
        .query_opt(
            "SELECT u.id, u.company_id, c.status, c.region FROM users u JOIN companies c ON c.id = u.company_id \
             WHERE lower(u.email) = $1",
            &[&email.as_str()],
        )
        .await?;
    let (clinic, user) = match existing {
        Some(row) => {
            let (status, placed): (String, String) = (row.get(2), row.get(3));
            if status != "provisioning" || placed != region {
                bail!(
                    "an account with the e-mail {} exists already",
                    email.as_str()
                );
            }
            (
                ClinicId::from_uuid(row.get(1)),
                UserId::from_uuid(row.get(0)),
            )
        }
        None => {
            let hash = {
                let password = Zeroizing::new(password.to_owned());
                tokio::task::spawn_blocking(move || common::password::hash(&password))
                    .await?
                    .map_err(anyhow::Error::msg)?
            };
            let (clinic, user) = (ClinicId::generate(), UserId::generate());
            let tx = central.transaction().await?;
            tx.execute(
                "INSERT INTO companies (id, name, region, db_name, db_role, status) VALUES ($1, $2, $3, $4, $5, 'provisioning')",
                &[clinic.as_uuid(), &name, &region, &clinic.database_name(), &clinic.role_name()],
            )
            .await
            .context("creating the clinic")?;
            tx.execute(
                "INSERT INTO users (id, company_id, email, password_hash, role) VALUES ($1, $2, $3, $4, 'admin')",
                &[user.as_uuid(), clinic.as_uuid(), &email.as_str(), &hash],
            )
            .await
            .context("creating the clinic's admin")?;
            let mut record = Record::now("create_clinic", "clinic", "success");
            record.resource_id = Some(*clinic.as_uuid());
            pgconn::audit::append(&tx, keys, clinic, &[record]).await?;
            tx.commit().await?;
            (clinic, user)
        }
    };
    let row = central
        .query_one(
            "SELECT db_name, db_role, db_role_password FROM companies WHERE id = $1",
            &[clinic.as_uuid()],
        )
        .await?;
    let target = pgconn::provision::ClinicDb {
        clinic,
        db_name: row.get(0),
        db_role: row.get(1),
        sealed_password: row.get(2),
    };
    let admin = db::connect(&settings.regional)
        .await
        .context("the region's server")?;
    pgconn::provision::provision(
        &central,
        &admin,
        ring,
        &target,
        &tokio::sync::Mutex::new(()),
    )
    .await
    .context("provisioning the clinic's database (run the same command again to resume)")?;
    Ok(Created {
        clinic,
        user,
        region: region.to_owned(),
    })
}
