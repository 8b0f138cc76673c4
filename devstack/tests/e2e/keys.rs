//! Envelope encryption against a real stack: every clinic has its own data key,
//! wrapped by the master key in the central database; `rotate-data-keys`
//! re-encrypts a clinic's sealed values under a new version while the clinic is being
//! read, retires and finally shreds the old versions; `rewrap-keys` moves every
//! wrapped key (data keys, backup keys) and role password to a new master key,
//! resumably.
//!
//! One test, in order, on a stack of its own ([`SETUP`]), because the last step
//! changes the master key the running workers would need for pools they have not
//! opened yet.

use crate::support::*;
use admin::keys::{self, Scope};
use common::config::Source;
use common::crypto::{
    role_password_purpose, sealed_key_id, ClinicKeys, CryptoError, FieldContext, KeyRing,
};
use common::ClinicId;
use devstack::Stack;
use pgconn::keystore;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use uuid::Uuid;

/// Its own stack: the last step gives every wrapped key a new master key.
static SETUP: Setup = Setup {
    name: "keys",
    env: &[],
    server_conf: &[],
};

fn stack() -> Arc<Stack> {
    stack_of(&SETUP)
}

/// `(id, ssn_enc)` of every patient of the clinic, straight from its database.
async fn sealed_ssns(clinic: &Clinic) -> Vec<(Uuid, Vec<u8>)> {
    stack()
        .clinic_db(clinic)
        .await
        .query(
            "SELECT id, ssn_enc FROM patients WHERE ssn_enc IS NOT NULL ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn versions(sealed: &[(Uuid, Vec<u8>)]) -> Vec<u32> {
    let mut v: Vec<u32> = sealed
        .iter()
        .map(|(_, s)| sealed_key_id(s).unwrap())
        .collect();
    v.dedup();
    v
}

/// `(version, retired)` of the clinic's stored data keys.
async fn stored_keys(id: Uuid) -> Vec<(i32, bool)> {
    stack().central_db()
        .await
        .query(
            "SELECT version, retired_at IS NOT NULL FROM clinic_data_keys WHERE clinic_id = $1 ORDER BY version",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn ssn(i: usize) -> String {
    format!("2 90 01 75 {i:03} 456 78")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_keys_rotate_under_load_shred_and_rewrap_under_a_new_master_key() {
    let _stack = hold(&SETUP);
    let http = stack().http();
    let clinic = register(&http, None).await;
    let other = register(&http, None).await;
    let id: Uuid = clinic.id.parse().unwrap();
    let mut patients = Vec::new();
    for i in 0..25 {
        let mut body = patient_body("Rot", &format!("Patient{i}"));
        body["ssn"] = ssn(i).into();
        patients.push(create_patient(&http, &clinic, body).await);
    }
    create_patient(&http, &other, patient_body("Other", "Clinic")).await;

    // Each clinic has its own key; its values are sealed under version 1.
    let before = sealed_ssns(&clinic).await;
    assert_eq!(before.len(), 25);
    assert_eq!(versions(&before), vec![1]);
    assert_eq!(stored_keys(id).await, vec![(1, false)]);
    let ring = stack().keys().unwrap();
    let central = stack().central_db().await;
    let own = keystore::load_versions(&central, &ring, ClinicId::from_uuid(id))
        .await
        .unwrap();
    let theirs = keystore::load_versions(&central, &ring, other.id.parse().unwrap())
        .await
        .unwrap();
    let other_keys = ClinicKeys::new(other.id.parse().unwrap(), theirs).unwrap();
    let (row, sealed) = &before[0];
    let ctx = FieldContext {
        clinic: ClinicId::from_uuid(id),
        table: "patients",
        row,
        column: "ssn",
    };
    assert_eq!(
        other_keys.open_field(&ctx, sealed),
        Err(CryptoError::Integrity),
        "another clinic's data key opens nothing of this clinic"
    );
    drop(own);

    // Readers keep going while the rotation runs: every answer is a 200 with the
    // right ssn, whatever version it is sealed with at that moment.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, http, token) = (
            stop.clone(),
            reads.clone(),
            http.clone(),
            clinic.token.clone(),
        );
        let patients = patients.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) || i < 10 {
                let p = &patients[i % patients.len()];
                let r = http
                    .get(
                        &format!("/api/v1/patients/{}", p["id"].as_str().unwrap()),
                        Some(&token),
                    )
                    .await
                    .unwrap();
                assert_eq!(r.status, 200, "read during rotation: {}", r.text());
                assert_eq!(r.json()["ssn"], p["ssn"]);
                reads.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let settings = stack().admin_settings_of(&clinic.region);
    let report = keys::rotate_data_keys(
        &settings,
        &ring,
        &Scope::Clinic(ClinicId::from_uuid(id)),
        None,
        false,
    )
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    assert!(reads.load(Ordering::Relaxed) >= 10);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.rotated.len(), 1);
    assert_eq!(report.rotated[0].version, 2);
    assert_eq!(report.rotated[0].reencrypted, 25);
    let after = sealed_ssns(&clinic).await;
    assert_eq!(versions(&after), vec![2]);
    assert!(before
        .iter()
        .zip(&after)
        .all(|(b, a)| b.0 == a.0 && b.1 != a.1));
    assert_eq!(stored_keys(id).await, vec![(1, true), (2, false)]);
    // The other clinic was not touched.
    assert_eq!(
        stored_keys(other.id.parse().unwrap()).await,
        vec![(1, false)]
    );

    // The worker reads the new version, finds by the unchanged blind index, and seals
    // new values with the new version.
    for (i, p) in patients.iter().enumerate() {
        let r = http
            .get(
                &format!("/api/v1/patients/{}", p["id"].as_str().unwrap()),
                Some(&clinic.token),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["ssn"], ssn(i));
    }
    let found = http
        .get(
            &format!("/api/v1/patients?ssn={}", ssn(7).replace(' ', "%20")),
            Some(&clinic.token),
        )
        .await
        .unwrap()
        .json();
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    assert_eq!(found["data"][0]["id"], patients[7]["id"]);
    let fresh = create_patient(
        &http,
        &clinic,
        json!({"first_name": "New", "last_name": "Key", "ssn": "3 00 01"}),
    )
    .await;
    let fresh_id: Uuid = fresh["id"].as_str().unwrap().parse().unwrap();
    let stored = sealed_ssns(&clinic).await;
    let (_, fresh_sealed) = stored.iter().find(|(i, _)| *i == fresh_id).unwrap();
    assert_eq!(sealed_key_id(fresh_sealed).unwrap(), 2);

    // Running again rotates again (2 → 3); with a zero grace, retired versions no
    // value uses are shredded: the old ciphertexts can no longer be opened by anyone.
    let report = keys::rotate_data_keys(
        &settings,
        &ring,
        &Scope::Clinic(ClinicId::from_uuid(id)),
        Some(std::time::Duration::ZERO),
        false,
    )
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.rotated[0].version, 3);
    assert_eq!(report.rotated[0].reencrypted, 26);
    assert_eq!(report.rotated[0].shredded, vec![1, 2]);
    assert_eq!(stored_keys(id).await, vec![(3, false)]);
    let remaining = keystore::load_versions(&central, &ring, ClinicId::from_uuid(id))
        .await
        .unwrap();
    let remaining = ClinicKeys::new(ClinicId::from_uuid(id), remaining).unwrap();
    assert_eq!(
        remaining.open_field(&ctx, sealed),
        Err(CryptoError::UnknownKey(1))
    );
    let r = http
        .get(
            &format!("/api/v1/patients/{}", patients[3]["id"].as_str().unwrap()),
            Some(&clinic.token),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ssn"], ssn(3));
    // The rotations are in the clinic's audit trail.
    let rotations: i64 = central
        .query_one(
            "SELECT count(*) FROM audit_logs WHERE clinic_id = $1 AND action = 'rotate_keys'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rotations, 2);

    // A new master key: everything wrapped is re-sealed under id 2; a second run
    // has nothing left; the new key alone opens every data key and role password.
    let old_b64 = stack().secrets.master_key.clone();
    let new_b64 = KeyRing::generate_master_key();
    let ring2 = KeyRing::from_source(&Source::from_pairs([
        ("MASTER_KEY", new_b64.clone()),
        ("MASTER_KEY_ID", "2".to_owned()),
        ("MASTER_KEYS_RETIRED", format!("1:{old_b64}")),
    ]))
    .unwrap();
    // The clinic's backup key (made with its first backup) is re-sealed too.
    admin::backup::backup_key(&central, &ring, ClinicId::from_uuid(id))
        .await
        .unwrap();
    let first = keys::rewrap(&settings, &ring2, false).await.unwrap();
    assert!(first.failed.is_empty(), "{:?}", first.failed);
    assert!(
        first.data_keys >= 2 && first.role_passwords >= 2 && first.backup_keys >= 1,
        "{first:?}"
    );
    let second = keys::rewrap(&settings, &ring2, false).await.unwrap();
    assert_eq!(
        (second.data_keys, second.role_passwords, second.backup_keys),
        (0, 0, 0)
    );
    assert_eq!(
        second.current,
        first.data_keys + first.role_passwords + first.backup_keys + first.current
    );
    let only_new = KeyRing::from_source(&Source::from_pairs([
        ("MASTER_KEY", new_b64),
        ("MASTER_KEY_ID", "2".to_owned()),
    ]))
    .unwrap();
    let companies = central
        .query(
            "SELECT id, db_role_password FROM companies WHERE db_role_password IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    for c in &companies {
        let cid = ClinicId::from_uuid(c.get(0));
        let pw: Vec<u8> = c.get(1);
        only_new
            .open_secret(&role_password_purpose(cid), &pw)
            .unwrap();
        assert_eq!(
            ring.open_secret(&role_password_purpose(cid), &pw),
            Err(CryptoError::UnknownKey(2))
        );
        keystore::load_versions(&central, &only_new, cid)
            .await
            .unwrap();
    }
    admin::backup::backup_key(&central, &only_new, ClinicId::from_uuid(id))
        .await
        .unwrap();
    let remaining = keystore::load_versions(&central, &only_new, ClinicId::from_uuid(id))
        .await
        .unwrap();
    let remaining = ClinicKeys::new(ClinicId::from_uuid(id), remaining).unwrap();
    let now = sealed_ssns(&clinic).await;
    let (row, sealed) = now.iter().find(|(i, _)| *i == fresh_id).unwrap();
    let ctx = FieldContext {
        clinic: ClinicId::from_uuid(id),
        table: "patients",
        row,
        column: "ssn",
    };
    assert_eq!(remaining.open_field(&ctx, sealed).unwrap(), b"3 00 01");
}
