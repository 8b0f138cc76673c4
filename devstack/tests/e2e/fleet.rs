//! The fleet migration (`medicalpro-admin migrate-fleet`) against a real stack:
//! clinic databases left at an old schema are brought to the latest one with their
//! data intact, progress is recorded centrally so a second run has nothing to do,
//! and one clinic's failure neither stops the others nor survives a re-run once its
//! cause is gone.
//!
//! Each test owns a region (eu-west, eu-central) of the module's own stack
//! ([`SETUP`]) so they can run side by side.

use crate::support::*;
use admin::migrations::{self, CLINIC, CLINIC_TEMPLATE_DB};
use admin::{AdminSettings, FleetReport};
use devstack::Stack;
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

/// Its own stack: migrating a region's template would hold up other modules'
/// registrations there.
static SETUP: Setup = Setup {
    name: "fleet",
    env: &[],
    server_conf: &[],
};

fn stack() -> Arc<Stack> {
    stack_of(&SETUP)
}

fn latest() -> i32 {
    migrations::latest_version(CLINIC)
}

fn settings(region: &str) -> AdminSettings {
    stack().admin_settings_of(region)
}

async fn migrate(region: &str, jobs: usize) -> FleetReport {
    admin::migrate_region(&settings(region), region, jobs, false)
        .await
        .unwrap()
}

/// A clinic as it would look had it been provisioned before the newer clinic
/// migrations existed: its database made from scratch at version 1 only, a patient
/// written directly, and a central row never recorded by a fleet run
/// (`schema_version` 0, the column default every pre-existing clinic gets).
struct OldClinic {
    id: Uuid,
    db_name: String,
    patient: Uuid,
}

async fn create_old_database(region: &str, db_name: &str, company: Uuid) -> Uuid {
    let stack = stack();
    let server = &stack.region(region).expect("region").server;
    let maintenance = server.connect("postgres").await.unwrap();
    maintenance
        .batch_execute(&format!("CREATE DATABASE {}", migrations::ident(db_name)))
        .await
        .unwrap();
    let mut db = server.connect(db_name).await.unwrap();
    assert_eq!(migrations::apply_to(&mut db, CLINIC, 1).await.unwrap(), 1);
    assert_eq!(migrations::current_version(&db).await.unwrap(), 1);
    let patient = Uuid::new_v4();
    db.execute(
        "INSERT INTO patients (id, company_id, first_name, last_name, email) \
         VALUES ($1, $2, 'Ada', 'Lovelace', 'ada@example.org')",
        &[&patient, &company],
    )
    .await
    .unwrap();
    patient
}

async fn insert_company(id: Uuid, region: &str, db_name: &str, status: &str) {
    stack()
        .central_db()
        .await
        .execute(
            "INSERT INTO companies (id, name, region, db_name, db_role, status, schema_version) \
             VALUES ($1, $2, $3, $4, $5, $6, 0)",
            &[
                &id,
                &unique("Old clinic"),
                &region,
                &db_name,
                &format!("medicalpro_old_{}", id.simple()),
                &status,
            ],
        )
        .await
        .unwrap();
}

async fn old_clinic(region: &str, status: &str) -> OldClinic {
    let id = Uuid::new_v4();
    let db_name = format!("medicalpro_clinic_{id}");
    let patient = create_old_database(region, &db_name, id).await;
    insert_company(id, region, &db_name, status).await;
    OldClinic {
        id,
        db_name,
        patient,
    }
}

async fn db_version(region: &str, db_name: &str) -> i32 {
    let stack = stack();
    let server = &stack.region(region).expect("region").server;
    let db = server.connect(db_name).await.unwrap();
    db.query_one("SELECT max(version) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0)
}

async fn assert_patient_intact(region: &str, clinic: &OldClinic) {
    let stack = stack();
    let server = &stack.region(region).expect("region").server;
    let db = server.connect(&clinic.db_name).await.unwrap();
    let row = db
        .query_one(
            "SELECT company_id, first_name, last_name, email, deleted_at IS NULL FROM patients WHERE id = $1",
            &[&clinic.patient],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Uuid>(0), clinic.id);
    assert_eq!(row.get::<_, String>(1), "Ada");
    assert_eq!(row.get::<_, String>(2), "Lovelace");
    assert_eq!(
        row.get::<_, Option<String>>(3).as_deref(),
        Some("ada@example.org")
    );
    assert!(row.get::<_, bool>(4));
}

/// `companies.schema_version` and whether `schema_migrated_at` is set.
async fn recorded(id: Uuid) -> (i32, bool) {
    let row = stack()
        .central_db()
        .await
        .query_one(
            "SELECT schema_version, schema_migrated_at IS NOT NULL FROM companies WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

fn upgraded_ids(report: &FleetReport) -> BTreeSet<Uuid> {
    report.upgraded.iter().map(|u| u.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_clinics_are_upgraded_with_their_data_and_a_rerun_has_nothing_to_do() {
    let _stack = hold(&SETUP);
    let region = "eu-west";
    let http = stack().http();
    let mut registered = Vec::new();
    for name in ["Grace", "Alan"] {
        let clinic = register(&http, Some(region)).await;
        assert_eq!(clinic.region, region);
        create_patient(&http, &clinic, patient_body(name, "Hopper")).await;
        registered.push(clinic);
    }
    let old = [
        old_clinic(region, "active").await,
        old_clinic(region, "active").await,
    ];

    let report = migrate(region, 2).await;
    assert!(report.is_success(), "{:?}", report.failed);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.target_version, latest());
    assert_eq!(report.template_version, latest());
    assert_eq!(report.skipped, 0);
    let registered_ids: BTreeSet<Uuid> = registered.iter().map(|c| c.id.parse().unwrap()).collect();
    let old_ids: BTreeSet<Uuid> = old.iter().map(|c| c.id).collect();
    assert_eq!(
        upgraded_ids(&report),
        registered_ids.union(&old_ids).copied().collect()
    );
    for u in &report.upgraded {
        assert_eq!(u.to_version, latest());
        // Databases cloned from the template are current already; the old ones
        // started at version 1.
        let expected_from = if old_ids.contains(&u.id) { 1 } else { latest() };
        assert_eq!(u.from_version, expected_from, "{u:?}");
    }
    assert_eq!(report.summary(), "upgraded 4, skipped 0, failed 0");

    for clinic in &old {
        assert_eq!(db_version(region, &clinic.db_name).await, latest());
        assert_patient_intact(region, clinic).await;
    }
    for id in registered_ids.iter().chain(&old_ids) {
        assert_eq!(recorded(*id).await, (latest(), true));
    }
    assert_eq!(db_version(region, CLINIC_TEMPLATE_DB).await, latest());
    let template: i32 = stack()
        .central_db()
        .await
        .query_one(
            "SELECT schema_version FROM region_templates WHERE region = $1",
            &[&region],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(template, latest());

    // The registered clinics still work through the API, their data intact.
    for clinic in &registered {
        let db = stack().clinic_db(clinic).await;
        let version: i32 = db
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(version, latest());
        let list = http
            .get("/api/v1/patients", Some(&clinic.token))
            .await
            .unwrap();
        assert_eq!(list.status, 200, "{}", list.text());
        assert!(list.text().contains("Hopper"), "{}", list.text());
    }

    // Everything is recorded at the latest version: a second run skips them all.
    let again = migrate(region, 2).await;
    assert!(again.is_success(), "{:?}", again.failed);
    assert!(again.upgraded.is_empty(), "{:?}", again.upgraded);
    assert_eq!(again.skipped, 4);
    assert_eq!(again.template_from, latest());
    assert_eq!(again.summary(), "upgraded 0, skipped 4, failed 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_clinic_does_not_stop_the_others_and_a_rerun_resumes_it() {
    let _stack = hold(&SETUP);
    let region = "eu-central";
    let active = old_clinic(region, "active").await;
    let suspended = old_clinic(region, "suspended").await;
    // A clinic whose database is missing: its upgrade fails.
    let broken = Uuid::new_v4();
    let broken_db = format!("medicalpro_clinic_{broken}");
    insert_company(broken, region, &broken_db, "active").await;

    let report = migrate(region, 4).await;
    assert!(!report.is_success());
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert_eq!(report.failed[0].id, broken);
    assert_eq!(report.failed[0].db_name, broken_db);
    assert!(
        report.failed[0].error.contains("does not exist"),
        "{}",
        report.failed[0].error
    );
    assert_eq!(
        upgraded_ids(&report),
        BTreeSet::from([active.id, suspended.id])
    );
    assert_eq!(report.summary(), "upgraded 2, skipped 0, failed 1");
    for clinic in [&active, &suspended] {
        assert_eq!(db_version(region, &clinic.db_name).await, latest());
        assert_patient_intact(region, clinic).await;
        assert_eq!(recorded(clinic.id).await, (latest(), true));
    }
    assert_eq!(recorded(broken).await, (0, false));

    // Once the database is there (still at version 1), a re-run upgrades only it.
    let broken = OldClinic {
        id: broken,
        patient: create_old_database(region, &broken_db, broken).await,
        db_name: broken_db,
    };
    let again = migrate(region, 4).await;
    assert!(again.is_success(), "{:?}", again.failed);
    assert_eq!(upgraded_ids(&again), BTreeSet::from([broken.id]));
    assert_eq!(again.upgraded[0].from_version, 1);
    assert_eq!(again.skipped, 2);
    assert_eq!(db_version(region, &broken.db_name).await, latest());
    assert_patient_intact(region, &broken).await;
    assert_eq!(recorded(broken.id).await, (latest(), true));
}
