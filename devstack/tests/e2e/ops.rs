//! Fleet operations of `medicalpro-admin` against a real stack: suspending and
//! resuming a clinic takes effect at once through the gateway; a region's backup
//! dumps every clinic, records it centrally and is resumable; restoring a clinic
//! puts its database back as it was at the backup while the clinic keeps its
//! identity and is served again right after.
//!
//! The tests use the eu-central region only, on a stack of their own ([`SETUP`]),
//! so no other module's clinics are part of these region-wide runs.

use crate::support::*;
use admin::backup;
use admin::ops::{self, Change};
use common::ClinicId;
use devstack::Stack;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Its own stack: region-wide backups see only this module's clinics.
static SETUP: Setup = Setup {
    name: "ops",
    env: &[],
    server_conf: &[],
};

fn stack() -> Arc<Stack> {
    stack_of(&SETUP)
}

const REGION: &str = "eu-central";

async fn status_within(http: &devstack::Http, clinic: &Clinic, path: &str, want: u16) -> Duration {
    let started = Instant::now();
    loop {
        let got = http.get(path, Some(&clinic.token)).await.unwrap().status;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still {got}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_and_resume_take_effect_at_once() {
    let _stack = hold(&SETUP);
    let http = stack().http();
    let clinic = register(&http, Some(REGION)).await;
    let id = ClinicId::from_uuid(clinic.id.parse().unwrap());
    let settings = stack().admin_settings_of(REGION);
    let path = "/api/v1/patients";
    assert_eq!(
        http.get(path, Some(&clinic.token)).await.unwrap().status,
        200
    );

    assert!(ops::set_status(
        &settings.central,
        settings.audit_keys.as_ref().unwrap(),
        id,
        Change::Suspend
    )
    .await
    .unwrap());
    assert!(status_within(&http, &clinic, path, 403).await < Duration::from_secs(1));
    // Twice is harmless; resuming an active clinic is not a thing.
    assert!(!ops::set_status(
        &settings.central,
        settings.audit_keys.as_ref().unwrap(),
        id,
        Change::Suspend
    )
    .await
    .unwrap());
    let login = http
        .post(
            "/api/v1/auth/login",
            None,
            &serde_json::json!({"email": clinic.email, "password": clinic.password}),
        )
        .await
        .unwrap();
    assert_eq!(
        login.status,
        403,
        "a suspended clinic's users cannot log in: {}",
        login.text()
    );

    assert!(ops::set_status(
        &settings.central,
        settings.audit_keys.as_ref().unwrap(),
        id,
        Change::Resume
    )
    .await
    .unwrap());
    assert!(status_within(&http, &clinic, path, 200).await < Duration::from_secs(1));
    let err = ops::set_status(
        &settings.central,
        settings.audit_keys.as_ref().unwrap(),
        id,
        Change::Resume,
    )
    .await
    .unwrap();
    assert!(!err);
    let unknown = ops::set_status(
        &settings.central,
        settings.audit_keys.as_ref().unwrap(),
        ClinicId::generate(),
        Change::Suspend,
    )
    .await;
    assert!(unknown.unwrap_err().to_string().contains("no clinic"));
    let actions: Vec<String> = stack().central_db()
        .await
        .query(
            "SELECT action FROM audit_logs WHERE clinic_id = $1 AND resource = 'clinic' ORDER BY id",
            &[id.as_uuid()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actions, ["suspend", "resume"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_is_backed_up_resumably_and_a_clinic_restored() {
    let _stack = hold(&SETUP);
    let http = stack().http();
    let clinic = register(&http, Some(REGION)).await;
    let other = register(&http, Some(REGION)).await;
    let kept = create_patient(&http, &clinic, patient_body("Kept", "Before")).await;
    let doomed = create_patient(&http, &clinic, patient_body("Deleted", "After")).await;
    create_patient(&http, &other, patient_body("Other", "Clinic")).await;
    let settings = stack().admin_settings_of(REGION);
    let ring = stack().keys().unwrap();
    let dir = std::env::temp_dir().join(format!("medicalpro-backups-{}", std::process::id()));

    let first = backup::backup_region(
        &settings,
        &ring,
        REGION,
        &dir,
        2,
        Duration::from_secs(3600),
        false,
    )
    .await
    .unwrap();
    assert!(first.failed.is_empty(), "{:?}", first.failed);
    let ids: Vec<Uuid> = first.done.iter().map(|d| d.id).collect();
    let clinic_id: Uuid = clinic.id.parse().unwrap();
    assert!(ids.contains(&clinic_id) && ids.contains(&other.id.parse().unwrap()));
    for d in &first.done {
        assert!(d.size_bytes > 0 && d.file.exists());
    }
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".partial")));
    let recorded: i64 = stack().central_db()
        .await
        .query_one(
            "SELECT count(*) FROM clinic_backups WHERE clinic_id = $1 AND status = 'success' AND size_bytes > 0",
            &[&clinic_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recorded, 1);
    // A second run finds every clinic freshly backed up.
    let second = backup::backup_region(
        &settings,
        &ring,
        REGION,
        &dir,
        2,
        Duration::from_secs(3600),
        false,
    )
    .await
    .unwrap();
    assert!(second.done.is_empty());
    assert!(second.skipped >= 2);

    // Changes after the backup: one patient deleted, one added.
    let gone = http
        .json(
            http::Method::DELETE,
            &format!("/api/v1/patients/{}", doomed["id"].as_str().unwrap()),
            Some(&clinic.token),
            None,
        )
        .await
        .unwrap();
    assert_eq!(gone.status, 204);
    let added = create_patient(&http, &clinic, patient_body("Added", "Later")).await;

    let dump = &first.done.iter().find(|d| d.id == clinic_id).unwrap().file;
    let restored = backup::restore_clinic(&settings, &ring, ClinicId::from_uuid(clinic_id), dump)
        .await
        .unwrap();
    assert!(restored.previous_db.starts_with("mpold_"));
    // Served again at once, with the data as it was at the backup.
    let mut request_ids = Vec::new();
    for (patient, want) in [(&kept, 200), (&doomed, 200), (&added, 404)] {
        let r = http
            .get(
                &format!("/api/v1/patients/{}", patient["id"].as_str().unwrap()),
                Some(&clinic.token),
            )
            .await
            .unwrap();
        assert_eq!(r.status, want, "{}", r.text());
        request_ids.push(r.header("x-request-id").unwrap().to_owned());
    }
    // Reads after the restore reach the central trail: the restored outbox hands
    // out sequence numbers already shipped before, but records are known by id.
    for _ in 0..5 {
        let r = http
            .get(
                &format!("/api/v1/patients/{}", kept["id"].as_str().unwrap()),
                Some(&clinic.token),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        request_ids.push(r.header("x-request-id").unwrap().to_owned());
    }
    for request_id in &request_ids {
        stack()
            .wait_audit(&clinic, &format!("request_id = '{request_id}'"))
            .await;
    }
    let keys = settings.audit_keys.as_ref().unwrap();
    let report = admin::audit::verify(
        &settings.central,
        Some(keys),
        Some(ClinicId::from_uuid(clinic_id)),
        None,
    )
    .await
    .unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    // The other clinic was not touched; the clinic is active again.
    let list = http
        .get("/api/v1/patients", Some(&other.token))
        .await
        .unwrap();
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 1);
    let status: String = stack()
        .central_db()
        .await
        .query_one("SELECT status FROM companies WHERE id = $1", &[&clinic_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "active");
    let missing = backup::restore_clinic(
        &settings,
        &ring,
        ClinicId::from_uuid(clinic_id),
        &dir.join("nope.dump"),
    )
    .await;
    assert!(missing.unwrap_err().to_string().contains("does not exist"));
    let _ = std::fs::remove_dir_all(&dir);
}
