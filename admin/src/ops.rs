//! Per-clinic operations on the central record: suspending and resuming a clinic
//! (a clinic being offboarded is not resumed).
//! The status change is announced by the central trigger (LISTEN/NOTIFY), so every
//! gateway drops its cached placement within a second and the change takes effect
//! at once; the operation is written to the clinic's audit trail.

use crate::db;
use anyhow::{bail, Context};
use common::audit::{AuditKeys, Record};
use common::config::DbSettings;
use common::ClinicId;
use tokio_postgres::Client;

/// A clinic status an operator can set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Suspend,
    Resume,
}

impl Change {
    fn transition(self) -> (&'static str, &'static str) {
        match self {
            Change::Suspend => ("active", "suspended"),
            Change::Resume => ("suspended", "active"),
        }
    }

    fn action(self) -> &'static str {
        match self {
            Change::Suspend => "suspend",
            Change::Resume => "resume",
        }
    }
}

/// Suspends or resumes a clinic. Doing it twice is not an error: the second call
/// reports that nothing changed (`Ok(false)`).
pub async fn set_status(
    central: &DbSettings,
    keys: &AuditKeys,
    clinic: ClinicId,
    change: Change,
) -> anyhow::Result<bool> {
    let client = db::connect(central).await.context("the central database")?;
    set_status_with(&client, keys, clinic, change).await
}

/// [`set_status`] on an open central connection: the change and its audit record
/// commit together.
pub async fn set_status_with(
    client: &Client,
    keys: &AuditKeys,
    clinic: ClinicId,
    change: Change,
) -> anyhow::Result<bool> {
    let (from, to) = change.transition();
    if change == Change::Resume {
        let offboarding = client
            .query_opt(
                "SELECT grace_until FROM offboardings WHERE clinic_id = $1",
                &[clinic.as_uuid()],
            )
            .await
            .context("checking for an offboarding")?;
        if let Some(row) = offboarding {
            let grace: chrono::DateTime<chrono::Utc> = row.get(0);
            bail!(
                "clinic {clinic} is being offboarded (grace period until {}); it stays suspended: run `offboard` again to finish it",
                grace.to_rfc3339()
            );
        }
    }
    client.batch_execute("BEGIN").await?;
    let result = async {
        let updated = client
            .execute(
                "UPDATE companies SET status = $3, updated_at = now() WHERE id = $1 AND status = $2",
                &[clinic.as_uuid(), &from, &to],
            )
            .await
            .context("updating the clinic's status")?;
        if updated == 1 {
            let record = Record::now(change.action(), "clinic", "success");
            pgconn::audit::append(client, keys, clinic, &[record])
                .await
                .context("recording the operation in the audit trail")?;
        }
        anyhow::Ok(updated)
    }
    .await;
    let updated = match result {
        Ok(n) => {
            client.batch_execute("COMMIT").await?;
            n
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    };
    if updated == 0 {
        let status: Option<String> = client
            .query_opt(
                "SELECT status FROM companies WHERE id = $1",
                &[clinic.as_uuid()],
            )
            .await?
            .map(|r| r.get(0));
        return match status {
            None => bail!("there is no clinic {clinic}"),
            Some(s) if s == to => Ok(false),
            Some(s) => {
                bail!("clinic {clinic} is {s}; only a clinic that is {from} can be made {to}")
            }
        };
    }
    Ok(true)
}

/// Writes an operator action to the clinic's central audit trail.
pub(crate) async fn record(
    client: &Client,
    keys: &AuditKeys,
    clinic: ClinicId,
    action: &str,
) -> anyhow::Result<()> {
    let record = Record::now(action, "clinic", "success");
    pgconn::audit::record(client, keys, clinic, &record)
        .await
        .context("recording the operation in the audit trail")?;
    Ok(())
}
