//! Clinic offboarding (`medicalpro-admin offboard`) against a real stack: refused
//! without `--confirm` (nothing changes); the final export holds what
//! `GET /api/v1/export` gives; nothing destructive happens during the grace period;
//! after it the clinic's databases, role, data keys and backup key are gone (a
//! backup taken before can no longer be restored, and never held a patient's name
//! in the clear), the clinic is `deleted`, its users can neither sign in nor use an
//! old token, and its audit trail ends with the offboarding, intact; an offboarding
//! stopped after any step is finished by running it again.
//!
//! On a stack of its own ([`SETUP`]): region-wide backups see only this module's
//! clinics.

use crate::support::*;
use admin::offboard::{self, Outcome, Request, Step};
use common::ClinicId;
use devstack::Stack;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Its own stack: region-wide backups see only this module's clinics.
static SETUP: Setup = Setup {
    name: "offboarding",
    env: &[],
    server_conf: &[],
};

fn stack() -> Arc<Stack> {
    stack_of(&SETUP)
}

const REGION: &str = "eu-central";

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "medicalpro-offboarding-{}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The clinic's databases and role on its regional server: (databases, role exists).
async fn leftovers(clinic: &Clinic) -> (Vec<String>, bool) {
    let server = stack()
        .region(REGION)
        .unwrap()
        .server
        .connect("postgres")
        .await
        .unwrap();
    let simple = clinic.id.replace('-', "");
    let dbs: Vec<String> = server
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE '%' || $1 || '%' OR datname LIKE '%' || $2 || '%' ORDER BY 1",
            &[&clinic.id, &simple],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let central = stack().central_db().await;
    let db_role: String = central
        .query_one(
            "SELECT db_role FROM companies WHERE id = $1",
            &[&clinic.id.parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    let role: bool = server
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
            &[&db_role],
        )
        .await
        .unwrap()
        .get(0);
    (dbs, role)
}

/// (status, data keys, backup keys) of the clinic in the central database.
async fn central_state(clinic: &Clinic) -> (String, i64, i64) {
    let central = stack().central_db().await;
    let id: uuid::Uuid = clinic.id.parse().unwrap();
    let row = central
        .query_one(
            "SELECT status, (SELECT count(*) FROM clinic_data_keys WHERE clinic_id = c.id), \
                    (SELECT count(*) FROM clinic_backup_keys WHERE clinic_id = c.id) \
             FROM companies c WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

fn request(clinic: &Clinic, export: PathBuf, grace_days: u32, stop_after: Option<Step>) -> Request {
    Request {
        clinic: ClinicId::from_uuid(clinic.id.parse().unwrap()),
        export,
        grace_days,
        stop_after,
    }
}

async fn login_status(http: &devstack::Http, clinic: &Clinic) -> u16 {
    http.post(
        "/api/v1/auth/login",
        None,
        &serde_json::json!({"email": clinic.email, "password": clinic.password}),
    )
    .await
    .unwrap()
    .status
    .as_u16()
}

/// Waits until `path` with the clinic's token answers `want`.
async fn answers(http: &devstack::Http, clinic: &Clinic, path: &str, want: &[u16]) -> u16 {
    let mut got = 0;
    for _ in 0..250 {
        got = http
            .get(path, Some(&clinic.token))
            .await
            .unwrap()
            .status
            .as_u16();
        if want.contains(&got) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} still answers {got}, not one of {want:?}");
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v.to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinic_is_exported_then_gone_for_good_after_its_grace_period() {
    let _stack = hold(&SETUP);
    let http = stack().http();
    let settings = stack().admin_settings_of(REGION);
    let ring = stack().keys().unwrap();
    let clinic = register(&http, Some(REGION)).await;
    let other = register(&http, Some(REGION)).await;
    let dir = work_dir("gone");
    let export_path = dir.join("final.ndjson");
    let patient = create_patient(&http, &clinic, patient_body("Philomena", "Quartermaine")).await;
    // A file on the patient: its metadata is in the export, its content in the
    // database that goes.
    let letter = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n\
2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n% Quartermaine referral\n\
trailer\n<< /Root 1 0 R >>\n%%EOF\n"
        .to_vec();
    let auth = format!("Bearer {}", clinic.token);
    let attached = http
        .send(
            http::Method::POST,
            &format!(
                "/api/v1/patients/{}/attachments?filename=referral.pdf",
                patient["id"].as_str().unwrap()
            ),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/pdf"),
            ],
            Some(letter.into()),
        )
        .await
        .unwrap();
    assert_eq!(attached.status, 201, "{}", attached.text());
    create_patient(&http, &clinic, patient_body("Ottoline", "Brackenbury")).await;
    create_patient(&http, &other, patient_body("Other", "Clinic")).await;
    let api_export = http
        .get("/api/v1/export", Some(&clinic.token))
        .await
        .unwrap();
    assert_eq!(api_export.status, 200, "{}", api_export.text());

    // A backup before offboarding: sealed, no name in the clear.
    let backups = admin::backup::backup_region(
        &settings,
        &ring,
        REGION,
        &dir.join("backups"),
        2,
        Duration::ZERO,
        false,
    )
    .await
    .unwrap();
    assert!(backups.failed.is_empty(), "{:?}", backups.failed);
    let clinic_uuid: uuid::Uuid = clinic.id.parse().unwrap();
    let dump = backups
        .done
        .iter()
        .find(|d| d.id == clinic_uuid)
        .unwrap()
        .file
        .clone();
    let bytes = std::fs::read(&dump).unwrap();
    assert!(bytes.starts_with(b"MPBACKUP"));
    for name in [&b"Quartermaine"[..], b"Brackenbury", b"PGDMP"] {
        assert!(
            !bytes.windows(name.len()).any(|w| w == name),
            "the backup holds {} in the clear",
            String::from_utf8_lossy(name)
        );
    }

    // A restore leaves the replaced database behind, kept: offboarding drops it too.
    let restored =
        admin::backup::restore_clinic(&settings, &ring, ClinicId::from_uuid(clinic_uuid), &dump)
            .await
            .unwrap();
    assert!(restored.previous_db.starts_with("mpold_"));

    // Without --confirm: refused, nothing changed.
    let refused = admin::cli::run(
        admin::cli::Command::Offboard {
            clinic: ClinicId::from_uuid(clinic_uuid),
            export: export_path.clone(),
            grace_days: 0,
            confirm: false,
            stop_after: None,
        },
        &settings,
    )
    .await
    .unwrap();
    assert_eq!(refused, ExitCode::from(1));
    assert!(!export_path.exists());
    assert_eq!(central_state(&clinic).await, ("active".into(), 1, 1));
    let started: i64 = stack()
        .central_db()
        .await
        .query_one(
            "SELECT count(*) FROM offboardings WHERE clinic_id = $1",
            &[&clinic_uuid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(started, 0);
    assert_eq!(
        http.get("/api/v1/patients", Some(&clinic.token))
            .await
            .unwrap()
            .status,
        200
    );

    // Confirmed, with a grace period: suspended and exported, nothing destroyed.
    let first = offboard::offboard(
        &settings,
        &ring,
        &request(&clinic, export_path.clone(), 30, None),
    )
    .await
    .unwrap();
    assert_eq!(first.done_now, [Step::Suspend, Step::Export]);
    let Outcome::Waiting {
        grace_until,
        remaining,
    } = &first.outcome
    else {
        panic!("{:?}", first.outcome)
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(grace_until.timestamp() > now + 29 * 86_400);
    assert_eq!(remaining.first(), Some(&Step::Delete));
    let exported = std::fs::read_to_string(&export_path).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&export_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the export is the operator's alone");
    }
    assert_eq!(
        lines(&exported),
        lines(&api_export.text()),
        "the export is the API's"
    );
    assert!(exported.contains("Quartermaine") && exported.contains("Brackenbury"));
    assert!(exported.contains("\"resource\":\"attachments\"") && exported.contains("referral.pdf"));
    assert!(!exported.contains("Other"));
    assert_eq!(first.export_rows, Some(exported.lines().count() as i64));
    assert_eq!(
        answers(&http, &clinic, "/api/v1/patients", &[403]).await,
        403
    );
    // Again within the grace period: what remains and when, nothing done.
    let again = offboard::offboard(
        &settings,
        &ring,
        &request(&clinic, export_path.clone(), 0, None),
    )
    .await
    .unwrap();
    assert!(again.done_now.is_empty());
    assert!(matches!(again.outcome, Outcome::Waiting { grace_until: g, .. } if g == *grace_until));
    let text = offboard::format_report(&again);
    assert!(text.contains("grace period until"), "{text}");
    let (dbs, role) = leftovers(&clinic).await;
    assert_eq!(dbs.len(), 2, "{dbs:?}");
    assert!(role);
    assert_eq!(central_state(&clinic).await, ("suspended".into(), 1, 1));
    // Nor can it be resumed meanwhile.
    let resume = admin::ops::set_status(
        &settings.central,
        settings.audit_keys.as_ref().unwrap(),
        ClinicId::from_uuid(clinic_uuid),
        admin::ops::Change::Resume,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(resume.contains("being offboarded"), "{resume}");

    // The grace period is over.
    stack()
        .central_db()
        .await
        .execute(
            "UPDATE offboardings SET grace_until = now() - interval '1 second' WHERE clinic_id = $1",
            &[&clinic_uuid],
        )
        .await
        .unwrap();
    let last = offboard::offboard(
        &settings,
        &ring,
        &request(&clinic, export_path.clone(), 0, None),
    )
    .await
    .unwrap();
    assert_eq!(
        last.done_now,
        [
            Step::Delete,
            Step::DropDatabases,
            Step::DropRole,
            Step::ShredKeys,
            Step::Finish
        ]
    );
    assert!(matches!(last.outcome, Outcome::Done { .. }));
    assert_eq!(leftovers(&clinic).await, (vec![], false));
    assert_eq!(central_state(&clinic).await, ("deleted".into(), 0, 0));
    // The trail ends with the offboarding, and is intact (refused attempts of its
    // users later are recorded after it).
    let actions: Vec<String> = stack()
        .central_db()
        .await
        .query(
            "SELECT action FROM audit_logs WHERE clinic_id = $1 ORDER BY chain_seq DESC LIMIT 2",
            &[&clinic_uuid],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actions[0], "offboard");
    let report = admin::audit::verify(
        &settings.central,
        settings.audit_keys.as_ref(),
        Some(ClinicId::from_uuid(clinic_uuid)),
        None,
    )
    .await
    .unwrap();
    assert!(report.is_intact(), "{:?}", report.breaks);
    // Its users: an old token refused, sign-in refused like a suspended clinic's.
    let refused_token = answers(&http, &clinic, "/api/v1/patients", &[401, 403]).await;
    assert!(matches!(refused_token, 401 | 403));
    assert_eq!(login_status(&http, &clinic).await, 403);
    // A worker reached as a gateway that missed every notification refuses it too.
    let mut straight = 0;
    for _ in 0..250 {
        straight = stack()
            .signed_worker_get(&clinic, &clinic.token, "/api/v1/patients")
            .await
            .status
            .as_u16();
        if matches!(straight, 401 | 403 | 404) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(straight, 401 | 403 | 404), "{straight}");
    let refresh = http
        .post(
            "/api/v1/auth/refresh",
            None,
            &serde_json::json!({"refresh_token": clinic.refresh_token}),
        )
        .await
        .unwrap();
    assert!(
        matches!(refresh.status.as_u16(), 401 | 403),
        "{}",
        refresh.text()
    );
    // The backup taken before cannot be restored (its key is gone).
    let restore =
        admin::backup::restore_clinic(&settings, &ring, ClinicId::from_uuid(clinic_uuid), &dump)
            .await
            .unwrap_err()
            .to_string();
    assert!(restore.contains("backup key"), "{restore}");
    assert_eq!(leftovers(&clinic).await, (vec![], false));
    // Done is done; the other clinic untouched.
    let done = offboard::offboard(
        &settings,
        &ring,
        &request(&clinic, export_path.clone(), 0, None),
    )
    .await
    .unwrap();
    assert!(done.done_now.is_empty() && matches!(done.outcome, Outcome::Done { .. }));
    let list = http
        .get("/api/v1/patients", Some(&other.token))
        .await
        .unwrap();
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["data"].as_array().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offboarding_stopped_after_any_step_is_finished_by_running_it_again() {
    let _stack = hold(&SETUP);
    let http = stack().http();
    let settings = stack().admin_settings_of(REGION);
    let ring = stack().keys().unwrap();
    let clinic = register(&http, Some(REGION)).await;
    create_patient(&http, &clinic, patient_body("Cut", "Short")).await;
    let dir = work_dir("resume");
    let export_path = dir.join("final.ndjson");
    let id: uuid::Uuid = clinic.id.parse().unwrap();

    for step in Step::ALL {
        if step == Step::Delete {
            // Pointed at another region's server: refused, nothing done.
            let elsewhere = stack().admin_settings_of("eu-west");
            let err = offboard::offboard(
                &elsewhere,
                &ring,
                &request(&clinic, export_path.clone(), 0, Some(step)),
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(err.contains("point REGION_DB_* at"), "{err}");
            assert_eq!(central_state(&clinic).await.0, "suspended");
        }
        let run = offboard::offboard(
            &settings,
            &ring,
            &request(&clinic, export_path.clone(), 0, Some(step)),
        )
        .await
        .unwrap();
        assert_eq!(
            run.done_now,
            [step],
            "one step per run when stopped after each"
        );
        let (status, data_keys, _) = central_state(&clinic).await;
        let (dbs, role) = leftovers(&clinic).await;
        match step {
            Step::Suspend => {
                assert_eq!(status, "suspended");
                assert!(!export_path.exists());
            }
            Step::Export => {
                assert!(std::fs::read_to_string(&export_path)
                    .unwrap()
                    .contains("Short"));
                assert_eq!(dbs.len(), 1);
            }
            Step::Delete => {
                assert_eq!(status, "deleted");
                assert_eq!(dbs.len(), 1, "the database waits for its step");
            }
            Step::DropDatabases => {
                assert!(dbs.is_empty());
                assert!(role);
                assert_eq!(data_keys, 1);
            }
            Step::DropRole => {
                assert!(!role);
                assert_eq!(data_keys, 1);
            }
            Step::ShredKeys => assert_eq!(data_keys, 0),
            Step::Finish => {}
        }
        if step == Step::Finish {
            assert!(matches!(run.outcome, Outcome::Done { .. }));
        } else {
            let Outcome::Stopped { after, remaining } = &run.outcome else {
                panic!("{:?}", run.outcome)
            };
            assert_eq!(*after, step);
            assert_eq!(remaining.first(), Step::ALL.iter().find(|s| **s > step));
        }
    }
    let finished: bool = stack()
        .central_db()
        .await
        .query_one(
            "SELECT finished_at IS NOT NULL FROM offboardings WHERE clinic_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(finished);
    assert_eq!(login_status(&http, &clinic).await, 403);
    let _ = std::fs::remove_dir_all(&dir);
}
