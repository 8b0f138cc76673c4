//! The `medicalpro-admin` command line.
//!
//! ```text
//! medicalpro-admin migrate-central
//! medicalpro-admin create-service-role --kind gateway|worker --name NAME   (password on stdin)
//! medicalpro-admin invite [--email E] [--region R] [--valid-hours 72] [--note TEXT]
//! medicalpro-admin create-clinic --name N --email E --region R            (password on stdin, or generated)
//! medicalpro-admin migrate-fleet --region eu-west [--jobs 4]
//! medicalpro-admin list-clinics [--region eu-west]
//! medicalpro-admin verify-audit [--clinic ID] [--anchors FILE]
//! medicalpro-admin suspend --clinic ID | resume --clinic ID
//! medicalpro-admin backup --region eu-west --dir /var/backups/medicalpro [--jobs 4] [--fresh-for-hours 20]
//! medicalpro-admin restore --clinic ID --file DUMP
//! medicalpro-admin relocate --clinic ID --to eu-central
//! medicalpro-admin offboard --clinic ID --export PATH [--grace-days 30] --confirm
//! medicalpro-admin rewrap-keys
//! medicalpro-admin rotate-data-keys (--region eu-west | --clinic ID) [--shred-after-secs 600]
//! ```
//!
//! The key commands also read the master keys (`MASTER_KEY`, `MASTER_KEY_ID`,
//! `MASTER_KEYS_RETIRED`) as the worker does.
//!
//! Connection settings come from the environment (see [`crate::config`]). Exit
//! codes: 0 done; 1 some clinic failed (run again to resume); 2 the command could
//! not run; 64 bad configuration.

use crate::config::AdminSettings;
use crate::fleet;
use anyhow::Context;
use clap::{Parser, Subcommand};
use common::config::{Source, EXIT_BAD_CONFIG};
use std::num::NonZeroUsize;
use std::process::ExitCode;

/// MedicalPro operator commands.
#[derive(Parser, Debug)]
#[command(name = "medicalpro-admin", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum Command {
    /// Brings the central database to the latest schema, as its owner (DB_USER must
    /// own it): tables, the services' group roles and their grants. Run before
    /// starting gateways and workers of a new version; they refuse to start on an
    /// older schema.
    MigrateCentral,
    /// Creates or updates a least-privilege login role for a service on the central
    /// database (no ownership, no UPDATE or DELETE on the audit trail). The password
    /// is read from the first line of standard input and stored as a SCRAM verifier.
    CreateServiceRole {
        #[arg(long, value_enum)]
        kind: crate::roles::ServiceKind,
        #[arg(long)]
        name: String,
    },
    /// Issues a single-use sign-up code (for REGISTRATION=invite); prints it once.
    Invite {
        /// Only this e-mail address may sign up with it.
        #[arg(long)]
        email: Option<String>,
        /// The clinic is placed in this region.
        #[arg(long)]
        region: Option<String>,
        /// How long the code stays valid.
        #[arg(long, default_value = "72")]
        valid_hours: u64,
        /// A note kept with the invitation (who it is for).
        #[arg(long)]
        note: Option<String>,
    },
    /// Creates a clinic with its first admin and provisions its database (the way in
    /// under REGISTRATION=closed). REGION_DB_* must name the region's server; the
    /// master keys are read as the worker reads them. The admin's password is read
    /// from standard input, or generated and printed once when stdin is a terminal
    /// or empty. Running it again resumes a creation cut short.
    CreateClinic {
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        region: String,
    },
    /// Migrates the region's clinic template, then every active or suspended clinic
    /// database of the region not yet recorded at the latest clinic schema version.
    /// Failures do not stop the others; running again resumes.
    MigrateFleet {
        /// The region (as in the central `regions` table); REGION_DB_* must point to
        /// its PostgreSQL server.
        #[arg(long)]
        region: String,
        /// Clinic databases migrated at the same time.
        #[arg(long, default_value = "4")]
        jobs: NonZeroUsize,
    },
    /// Checks that every clinic's audit trail is an unbroken keyed chain (AUDIT_KEY,
    /// AUDIT_KEYS_RETIRED); exits 1 and names the first broken position of each
    /// clinic otherwise.
    VerifyAudit {
        /// Only this clinic.
        #[arg(long)]
        clinic: Option<common::ClinicId>,
        /// Anchors kept outside the database: each clinic's chain must still hold
        /// the position and hash verified last time (a chain cut short or dropped
        /// shows); moved forward when everything is intact. Keep the file where
        /// the database's owner cannot write.
        #[arg(long)]
        anchors: Option<std::path::PathBuf>,
    },
    /// Re-seals every clinic data key and role password still sealed under a master
    /// key other than MASTER_KEY_ID. Resumable; when it reports 0 re-wrapped and 0
    /// failed, retired master keys are no longer needed.
    RewrapKeys,
    /// Gives each clinic a new data-key version and re-encrypts every sealed value
    /// under it, then retires the older versions. An interrupted run is resumed by
    /// running again.
    RotateDataKeys {
        /// Every active or suspended clinic of this region (REGION_DB_* must point to
        /// its PostgreSQL server).
        #[arg(long, conflicts_with = "clinic", required_unless_present = "clinic")]
        region: Option<String>,
        /// Only this clinic.
        #[arg(long)]
        clinic: Option<common::ClinicId>,
        /// Also delete versions retired at least this many seconds ago that no stored
        /// value uses; data still sealed with a deleted version is unreadable for
        /// good. Keep it above the workers' 30 s placement check.
        #[arg(long)]
        shred_after_secs: Option<u64>,
    },
    /// Suspends an active clinic: every gateway refuses its requests within a second.
    Suspend {
        #[arg(long)]
        clinic: common::ClinicId,
    },
    /// Resumes a suspended clinic.
    Resume {
        #[arg(long)]
        clinic: common::ClinicId,
    },
    /// Dumps every active or suspended clinic database of the region (pg_dump custom
    /// format) into DIR, recording each backup in the central database. Clinics
    /// backed up within --fresh-for-hours are skipped, so running again resumes.
    Backup {
        #[arg(long)]
        region: String,
        #[arg(long)]
        dir: std::path::PathBuf,
        #[arg(long, default_value = "4")]
        jobs: NonZeroUsize,
        #[arg(long, default_value = "20")]
        fresh_for_hours: u64,
    },
    /// Replaces one clinic's database with a dump (the clinic is suspended during
    /// the switch; the replaced database is kept, closed, under a new name).
    Restore {
        #[arg(long)]
        clinic: common::ClinicId,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Moves a clinic's database to another region's server while it stays readable;
    /// writes wait (503 + retry-after) only during the final switch. REGION_DB_* is
    /// the clinic's current server, TARGET_REGION_DB_* the destination's.
    Relocate {
        #[arg(long)]
        clinic: common::ClinicId,
        #[arg(long)]
        to: String,
    },
    /// Offboards a clinic that leaves: suspends it and writes its final NDJSON export
    /// to PATH now; after the grace period drops its database (and every kept
    /// copy) and role, shreds its data keys and backup key (every backup of it
    /// becomes unreadable), marks it deleted and closes its audit trail. Each step
    /// is recorded centrally: run it again to continue (before the grace period
    /// ends it says what remains and when, and does nothing destructive).
    /// REGION_DB_* must point to the clinic's region's server; the master keys are
    /// read as the worker reads them.
    Offboard {
        #[arg(long)]
        clinic: common::ClinicId,
        /// Where the final export is written (NDJSON, as GET /api/v1/export).
        #[arg(long)]
        export: std::path::PathBuf,
        /// Days between the first run and the destructive steps (0: none).
        #[arg(long, default_value = "30")]
        grace_days: u32,
        /// Go ahead; without it, prints what would happen and exits 1.
        #[arg(long)]
        confirm: bool,
        /// Stop once this step is done (the next run continues).
        #[arg(long, value_enum, hide = true)]
        stop_after: Option<crate::offboard::Step>,
    },
    /// Prints every clinic's id, region, status and recorded schema version.
    ListClinics {
        /// Only the clinics of this region.
        #[arg(long)]
        region: Option<String>,
    },
}

/// Parses the arguments, runs the command and returns the process's exit code.
pub fn main_entry() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Source::from_env().and_then(|s| AdminSettings::from_source(&s)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("medicalpro-admin: configuration: {e}");
            return exit_code(EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medicalpro-admin: starting the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command, &settings)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("medicalpro-admin: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn success_if(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The master keys, read from the environment like the worker reads them.
fn master_keys() -> anyhow::Result<common::crypto::KeyRing> {
    let source = Source::from_env()?;
    Ok(common::crypto::KeyRing::from_source(&source)?)
}

/// The first line of standard input, unless stdin is a terminal or empty.
fn read_secret_line() -> anyhow::Result<Option<zeroize::Zeroizing<String>>> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(None);
    }
    let mut line = zeroize::Zeroizing::new(String::new());
    stdin.lock().read_line(&mut line)?;
    let trimmed = zeroize::Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
    Ok((!trimmed.is_empty()).then_some(trimmed))
}

/// A random initial password (24 characters).
fn generated_password() -> zeroize::Zeroizing<String> {
    use base64::Engine;
    let mut raw = [0u8; 18];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    zeroize::Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs one command, printing its results on stdout (failures on stderr).
pub async fn run(command: Command, settings: &AdminSettings) -> anyhow::Result<ExitCode> {
    match command {
        Command::MigrateFleet { region, jobs } => {
            let report = fleet::migrate_region(settings, &region, jobs.get(), true).await?;
            for warning in &report.warnings {
                eprintln!("warning: {warning}");
            }
            println!(
                "region {}: template {} at version {} (was {})",
                report.region,
                migrations::CLINIC_TEMPLATE_DB,
                report.template_version,
                report.template_from
            );
            for f in &report.failed {
                eprintln!("failed: clinic {} ({}): {}", f.id, f.db_name, f.error);
            }
            println!("{}", report.summary());
            Ok(success_if(report.is_success()))
        }
        Command::MigrateCentral => {
            let (before, after) = crate::db::migrate_central(settings).await?;
            println!("central database at schema version {after} (was {before})");
            Ok(ExitCode::SUCCESS)
        }
        Command::CreateServiceRole { kind, name } => {
            let password =
                read_secret_line()?.context("give the role's password on standard input")?;
            crate::roles::create_service_role(&settings.central, kind, &name, &password).await?;
            println!("service role {name} ready (member of {})", kind.group());
            Ok(ExitCode::SUCCESS)
        }
        Command::Invite {
            email,
            region,
            valid_hours,
            note,
        } => {
            let invitation = crate::signup::invite(
                settings,
                email.as_deref(),
                region.as_deref(),
                note.as_deref(),
                std::time::Duration::from_secs(valid_hours * 3600),
            )
            .await?;
            println!("{}", invitation.code.as_str());
            eprintln!(
                "single-use sign-up code, valid until {}; send it as `invite_code` with POST /api/v1/auth/register",
                invitation.expires_at.to_rfc3339()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CreateClinic {
            name,
            email,
            region,
        } => {
            let ring = master_keys()?;
            let (password, generated) = match read_secret_line()? {
                Some(p) => (p, false),
                None => (generated_password(), true),
            };
            let created =
                crate::signup::create_clinic(settings, &ring, &name, &email, &password, &region)
                    .await?;
            println!(
                "clinic {} created in {} with admin {} ({})",
                created.clinic, created.region, created.user, email
            );
            if generated {
                println!("initial password (shown once): {}", password.as_str());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyAudit { clinic, anchors } => {
            let report = crate::audit::verify(
                &settings.central,
                settings.audit_keys.as_ref(),
                clinic,
                anchors.as_deref(),
            )
            .await?;
            for b in &report.breaks {
                eprintln!(
                    "broken: clinic {} at chain position {}: {}",
                    b.clinic, b.chain_seq, b.reason
                );
            }
            println!("{}", report.summary());
            Ok(success_if(report.is_intact()))
        }
        Command::Suspend { clinic } | Command::Resume { clinic } => {
            let change = if matches!(command, Command::Suspend { .. }) {
                crate::ops::Change::Suspend
            } else {
                crate::ops::Change::Resume
            };
            let changed =
                crate::ops::set_status(&settings.central, settings.audit_keys()?, clinic, change)
                    .await?;
            println!(
                "clinic {clinic}: {}",
                match (change, changed) {
                    (crate::ops::Change::Suspend, true) => "suspended",
                    (crate::ops::Change::Resume, true) => "resumed",
                    _ => "already so; nothing changed",
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup {
            region,
            dir,
            jobs,
            fresh_for_hours,
        } => {
            let ring = master_keys()?;
            let fresh = std::time::Duration::from_secs(fresh_for_hours * 3600);
            let report = crate::backup::backup_region(
                settings,
                &ring,
                &region,
                &dir,
                jobs.get(),
                fresh,
                true,
            )
            .await?;
            for d in &report.done {
                println!(
                    "clinic {}: {} ({} bytes)",
                    d.id,
                    d.file.display(),
                    d.size_bytes
                );
            }
            for (id, e) in &report.failed {
                eprintln!("failed: clinic {id}: {e}");
            }
            println!("{}", report.summary());
            Ok(success_if(report.failed.is_empty()))
        }
        Command::Restore { clinic, file } => {
            let ring = master_keys()?;
            let restored = crate::backup::restore_clinic(settings, &ring, clinic, &file).await?;
            println!(
                "clinic {clinic}: {} restored from {}; the replaced database is kept as {} (drop it when no longer needed)",
                restored.db_name,
                file.display(),
                restored.previous_db
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Relocate { clinic, to } => {
            let ring = master_keys()?;
            let moved = crate::relocate::relocate(settings, &ring, clinic, &to, true).await?;
            println!(
                "clinic {clinic}: moved from {} to {} ({} rows; writes paused {:.1} s; {} audit records carried over); the source database is kept closed as {}",
                moved.from,
                moved.to,
                moved.rows,
                moved.write_pause.as_secs_f64(),
                moved.carried_audit,
                moved.previous_db
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::RewrapKeys => {
            let ring = master_keys()?;
            let report = crate::keys::rewrap(settings, &ring, true).await?;
            for f in &report.failed {
                eprintln!("failed: {f}");
            }
            println!("{}", report.summary());
            Ok(success_if(report.failed.is_empty()))
        }
        Command::RotateDataKeys {
            region,
            clinic,
            shred_after_secs,
        } => {
            let ring = master_keys()?;
            let scope = match (clinic, region) {
                (Some(c), _) => crate::keys::Scope::Clinic(c),
                (None, Some(r)) => crate::keys::Scope::Region(r),
                (None, None) => anyhow::bail!("give --region or --clinic"),
            };
            let shred = shred_after_secs.map(std::time::Duration::from_secs);
            let report =
                crate::keys::rotate_data_keys(settings, &ring, &scope, shred, true).await?;
            for r in &report.rotated {
                println!(
                    "clinic {}: version {}, {} values re-encrypted{}",
                    r.id,
                    r.version,
                    r.reencrypted,
                    if r.shredded.is_empty() {
                        String::new()
                    } else {
                        format!(", shredded versions {:?}", r.shredded)
                    }
                );
            }
            for (id, e) in &report.failed {
                eprintln!("failed: clinic {id}: {e}");
            }
            println!("{}", report.summary());
            Ok(success_if(report.failed.is_empty()))
        }
        Command::Offboard {
            clinic,
            export,
            grace_days,
            confirm,
            stop_after,
        } => {
            if !confirm {
                let plan = crate::offboard::plan(settings, clinic).await?;
                eprintln!("medicalpro-admin: offboard refused without --confirm; nothing was changed. It would:");
                for line in plan {
                    eprintln!("  {line}");
                }
                eprintln!(
                    "Run again with --confirm to go ahead (the export goes to {}).",
                    export.display()
                );
                return Ok(ExitCode::from(1));
            }
            let ring = master_keys()?;
            let request = crate::offboard::Request {
                clinic,
                export,
                grace_days,
                stop_after,
            };
            let report = crate::offboard::offboard(settings, &ring, &request).await?;
            print!("{}", crate::offboard::format_report(&report));
            Ok(ExitCode::SUCCESS)
        }
        Command::ListClinics { region } => {
            let rows = fleet::list_clinics(&settings.central, region.as_deref()).await?;
            print!("{}", fleet::format_table(&rows));
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn migrate_fleet_defaults_to_four_jobs() {
        let cli = Cli::try_parse_from(["medicalpro-admin", "migrate-fleet", "--region", "eu-west"])
            .unwrap();
        assert_eq!(
            cli.command,
            Command::MigrateFleet {
                region: "eu-west".into(),
                jobs: NonZeroUsize::new(4).unwrap(),
            }
        );
    }

    #[test]
    fn zero_jobs_and_a_missing_region_are_refused() {
        assert!(Cli::try_parse_from([
            "medicalpro-admin",
            "migrate-fleet",
            "--region",
            "eu-west",
            "--jobs",
            "0"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["medicalpro-admin", "migrate-fleet"]).is_err());
    }

    #[test]
    fn offboard_waits_30_days_unless_told_and_names_its_steps() {
        let cli = Cli::try_parse_from([
            "medicalpro-admin",
            "offboard",
            "--clinic",
            "0190a5b2-7c4e-7d1a-9e0f-123456789abc",
            "--export",
            "/tmp/x.ndjson",
        ])
        .unwrap();
        let Command::Offboard {
            grace_days,
            confirm,
            stop_after,
            ..
        } = cli.command
        else {
            panic!("{:?}", cli.command)
        };
        assert_eq!((grace_days, confirm, stop_after), (30, false, None));
        let cli = Cli::try_parse_from([
            "medicalpro-admin",
            "offboard",
            "--clinic",
            "0190a5b2-7c4e-7d1a-9e0f-123456789abc",
            "--export",
            "/tmp/x.ndjson",
            "--grace-days",
            "0",
            "--confirm",
            "--stop-after",
            "drop-databases",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Offboard {
                grace_days: 0,
                confirm: true,
                stop_after: Some(crate::offboard::Step::DropDatabases),
                ..
            }
        ));
        assert!(Cli::try_parse_from(["medicalpro-admin", "offboard", "--confirm"]).is_err());
        for step in crate::offboard::Step::ALL {
            let name = step.to_string();
            let parsed = <crate::offboard::Step as clap::ValueEnum>::from_str(&name, false);
            assert_eq!(parsed, Ok(step), "{name}");
        }
    }

    #[test]
    fn list_clinics_region_is_optional() {
        let cli = Cli::try_parse_from(["medicalpro-admin", "list-clinics"]).unwrap();
        assert_eq!(cli.command, Command::ListClinics { region: None });
        let cli = Cli::try_parse_from(["medicalpro-admin", "list-clinics", "--region", "eu-west"])
            .unwrap();
        assert_eq!(
            cli.command,
            Command::ListClinics {
                region: Some("eu-west".into())
            }
        );
    }
}
