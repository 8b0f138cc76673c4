//! The fleet migration: every clinic database of a region brought to the latest
//! clinic schema ([`migrations::CLINIC`]).
//!
//! [`migrate_region`] runs, in order:
//!
//! 1. the central database's own migrations (as the gateway and worker do at
//!    start-up), so the columns it records progress in exist;
//! 2. the region's template database ([`migrations::CLINIC_TEMPLATE_DB`]) first, so
//!    clinics provisioned from now on are cloned at the new version; recorded in
//!    `region_templates`. If this fails nothing else is touched;
//! 3. every `active` or `suspended` clinic of the region whose recorded
//!    `companies.schema_version` is below the latest version, `jobs` at a time, each
//!    on its own connection to its own database as the regional admin role. A clinic
//!    that reached the latest version is recorded at once (`schema_version`,
//!    `schema_migrated_at`); one that fails is reported and left as it was.
//!
//! Each database is migrated by [`migrations::apply`] (advisory lock, checksums, one
//! transaction per migration), so a run cut short anywhere, or a failed clinic, is
//! simply completed by running again: clinics already recorded at the latest version
//! are skipped, and a database migrated but not yet recorded is found current.
//! `schema_version` 0 means "never recorded" (clinics provisioned by the worker
//! start there); such clinics are checked and recorded on the next run.

use crate::config::AdminSettings;
use crate::{db, runner};
use anyhow::{bail, Context};
use common::config::DbSettings;
use migrations::{CLINIC, CLINIC_TEMPLATE_DB};
use std::sync::Arc;
use tokio_postgres::Client;
use uuid::Uuid;

/// A clinic database the run brought to (or found at) the latest version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClinicUpgrade {
    pub id: Uuid,
    pub db_name: String,
    /// The version recorded in the clinic database before the run (0: none).
    pub from_version: i32,
    pub to_version: i32,
}

/// A clinic database the run could not upgrade or record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClinicFailure {
    pub id: Uuid,
    pub db_name: String,
    pub error: String,
}

/// What one [`migrate_region`] run did.
#[derive(Clone, Debug, Default)]
pub struct FleetReport {
    pub region: String,
    /// The latest clinic schema version: what every database was brought to.
    pub target_version: i32,
    /// The template's version before and after the run.
    pub template_from: i32,
    pub template_version: i32,
    /// Clinics brought to (or found and recorded at) `target_version`, by id.
    pub upgraded: Vec<ClinicUpgrade>,
    /// Clinics already recorded at `target_version`, not connected to.
    pub skipped: usize,
    /// Clinics left as they were, by id; the next run retries them.
    pub failed: Vec<ClinicFailure>,
    /// Things an operator should look at that did not stop the run.
    pub warnings: Vec<String>,
}

impl FleetReport {
    /// `upgraded N, skipped M, failed K`.
    pub fn summary(&self) -> String {
        format!(
            "upgraded {}, skipped {}, failed {}",
            self.upgraded.len(),
            self.skipped,
            self.failed.len()
        )
    }

    pub fn is_success(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Migrates the template and the clinic databases of `region` (see the module
/// docs), at most `jobs` clinic databases at a time (at least 1). With `progress`, a
/// progress bar is drawn on stderr when it is a terminal.
///
/// Errors only when the run cannot proceed (central database, unknown region,
/// template); a clinic's failure is reported in [`FleetReport::failed`] instead.
pub async fn migrate_region(
    settings: &AdminSettings,
    region: &str,
    jobs: usize,
    progress: bool,
) -> anyhow::Result<FleetReport> {
    let jobs = jobs.max(1);
    let target = migrations::latest_version(CLINIC);
    let central = db::central(settings).await?;

    let mut report = FleetReport {
        region: region.to_owned(),
        target_version: target,
        ..FleetReport::default()
    };
    let placement = central
        .query_opt(
            "SELECT pg_host, pg_port FROM regions WHERE name = $1",
            &[&region],
        )
        .await
        .context("reading the region")?;
    let Some(placement) = placement else {
        bail!("unknown region {region:?}: it has no row in `regions` (its worker registers it at start-up)");
    };
    let (pg_host, pg_port): (String, i32) = (placement.get(0), placement.get(1));
    if pg_host != settings.regional.host || pg_port != i32::from(settings.regional.port) {
        report.warnings.push(format!(
            "region {region} is recorded on PostgreSQL {pg_host}:{pg_port} but REGION_DB_* point to {}:{}",
            settings.regional.host, settings.regional.port
        ));
    }

    let bar = runner::progress_bar(progress, region);
    bar.set_message(format!("template {CLINIC_TEMPLATE_DB}"));
    let (from, to) = upgrade_database(settings.regional.with_dbname(CLINIC_TEMPLATE_DB))
        .await
        .with_context(|| {
            format!(
                "migrating the region's template database {CLINIC_TEMPLATE_DB} \
                 (the region's worker creates it at start-up)"
            )
        })?;
    report.template_from = from;
    report.template_version = to;
    central
        .execute(
            "INSERT INTO region_templates (region, schema_version, migrated_at) VALUES ($1, $2, now()) \
             ON CONFLICT (region) DO UPDATE SET schema_version = EXCLUDED.schema_version, migrated_at = now()",
            &[&region, &to],
        )
        .await
        .context("recording the template's version")?;

    let current: i64 = central
        .query_one(
            "SELECT count(*) FROM companies \
             WHERE region = $1 AND status IN ('active', 'suspended') AND schema_version >= $2",
            &[&region, &target],
        )
        .await
        .context("counting current clinics")?
        .get(0);
    report.skipped = usize::try_from(current).unwrap_or_default();
    let pending: Vec<(Uuid, String)> = central
        .query(
            "SELECT id, db_name FROM companies \
             WHERE region = $1 AND status IN ('active', 'suspended') AND schema_version < $2 \
             ORDER BY id",
            &[&region, &target],
        )
        .await
        .context("listing the region's clinics")?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    bar.set_message("");
    let central = Arc::new(central);
    let regional = &settings.regional;
    let outcomes = runner::run_bounded(pending, jobs, &bar, |(id, db_name): (Uuid, String)| {
        let (central, settings) = (central.clone(), regional.with_dbname(&db_name));
        async move {
            let (from, to) = upgrade_database(settings).await?;
            if to < target {
                bail!("reached version {to}, not {target}");
            }
            record(&central, id, to).await?;
            Ok((from, to))
        }
    })
    .await;
    bar.finish_and_clear();
    for ((id, db_name), outcome) in outcomes {
        match outcome {
            Ok((from_version, to_version)) => report.upgraded.push(ClinicUpgrade {
                id,
                db_name,
                from_version,
                to_version,
            }),
            Err(e) => report.failed.push(ClinicFailure {
                id,
                db_name,
                error: format!("{e:#}"),
            }),
        }
    }
    report.upgraded.sort_by_key(|u| u.id);
    report.failed.sort_by_key(|f| f.id);
    Ok(report)
}

/// Records a clinic's schema version in the central database (never lowering it).
async fn record(central: &Client, id: Uuid, version: i32) -> anyhow::Result<()> {
    central
        .execute(
            "UPDATE companies SET schema_version = GREATEST(schema_version, $2), schema_migrated_at = now() \
             WHERE id = $1",
            &[&id, &version],
        )
        .await
        .context("recording the clinic's version in the central database")?;
    Ok(())
}

/// Migrates one clinic (or template) database; its versions before and after.
async fn upgrade_database(settings: DbSettings) -> anyhow::Result<(i32, i32)> {
    let mut client = db::connect(&settings).await?;
    let from = migrations::current_version(&client).await?;
    let to = migrations::apply(&mut client, CLINIC).await?;
    // Closed here, before returning: a template in use cannot be cloned.
    drop(client);
    Ok((from, to))
}

/// One clinic as the central database records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClinicRow {
    pub id: Uuid,
    pub region: String,
    pub status: String,
    pub schema_version: i32,
}

/// Every clinic (of `region`, if given), by region then id.
pub async fn list_clinics(
    central: &DbSettings,
    region: Option<&str>,
) -> anyhow::Result<Vec<ClinicRow>> {
    let client = db::connect(central).await.context("the central database")?;
    let rows = client
        .query(
            "SELECT id, region, status, schema_version FROM companies \
             WHERE $1::text IS NULL OR region = $1 ORDER BY region, id",
            &[&region],
        )
        .await
        .context("listing clinics")?;
    Ok(rows
        .iter()
        .map(|r| ClinicRow {
            id: r.get(0),
            region: r.get(1),
            status: r.get(2),
            schema_version: r.get(3),
        })
        .collect())
}

/// The clinics as an aligned text table with a header line.
pub fn format_table(rows: &[ClinicRow]) -> String {
    let header = ["ID", "REGION", "STATUS", "SCHEMA_VERSION"];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.region.clone(),
                r.status.clone(),
                r.schema_version.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |row: [&str; 4]| {
        let mut out = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header);
    for row in &cells {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3]]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts() {
        let report = FleetReport {
            upgraded: vec![ClinicUpgrade {
                id: Uuid::nil(),
                db_name: "a".into(),
                from_version: 1,
                to_version: 2,
            }],
            skipped: 3,
            ..FleetReport::default()
        };
        assert_eq!(report.summary(), "upgraded 1, skipped 3, failed 0");
        assert!(report.is_success());
    }

    #[test]
    fn table_is_aligned() {
        let rows = [
            ClinicRow {
                id: Uuid::nil(),
                region: "eu-west".into(),
                status: "active".into(),
                schema_version: 9,
            },
            ClinicRow {
                id: Uuid::max(),
                region: "eu-central".into(),
                status: "suspended".into(),
                schema_version: 10,
            },
        ];
        let table = format_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID "));
        let col = lines[0].find("REGION").unwrap_or_default();
        assert!(col > 0);
        assert_eq!(lines[1].find("eu-west"), Some(col));
        assert_eq!(lines[2].find("eu-central"), Some(col));
        let col = lines[0].find("SCHEMA_VERSION").unwrap_or_default();
        assert_eq!(lines[2].find("10"), Some(col));
        assert_eq!(format_table(&[]).lines().count(), 1);
    }
}
