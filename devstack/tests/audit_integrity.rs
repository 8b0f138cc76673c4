//! The central audit trail is append-only and hash-chained per clinic: edits and
//! removals are refused, and any tampering that bypasses that is found by
//! `medicalpro-admin verify-audit`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use common::config::DbSettings;
use common::ClinicId;
use support::*;

fn central_settings() -> DbSettings {
    stack().central.superuser(devstack::stack::CENTRAL_DB)
}

async fn verify(clinic: Option<ClinicId>, anchors: Option<&std::path::Path>) -> admin::audit::AuditReport {
    let keys = stack().audit_keys().unwrap();
    admin::audit::verify(&central_settings(), Some(&keys), clinic, anchors)
        .await
        .unwrap()
}

async fn activity(c: &Clinic) {
    let http = http();
    let p = create_patient(&http, c, patient_body("Chain", "Link")).await;
    for _ in 0..3 {
        http.get(
            &format!("/api/v1/patients/{}", p["id"].as_str().unwrap()),
            Some(&c.token),
        )
        .await
        .unwrap();
    }
    http.get("/api/v1/patients", Some(&c.token)).await.unwrap();
    wait_audit(c, "action = 'list'").await;
}

/// Runs `sql` with the append-only trigger disabled, as an intruder with superuser
/// rights could.
async fn tamper(sql: &str, clinic: &Clinic) {
    let db = central_db().await;
    let id: uuid::Uuid = clinic.id.parse().unwrap();
    db.batch_execute("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only")
        .await
        .unwrap();
    let result = db.execute(sql, &[&id]).await;
    db.batch_execute("ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_append_only")
        .await
        .unwrap();
    assert_eq!(result.unwrap(), 1, "{sql}");
}

#[tokio::test]
async fn the_audit_trail_is_append_only_and_tampering_is_detected() {
    let http = http();
    let edited = register(&http, None).await;
    let removed = register(&http, None).await;
    let untouched = register(&http, None).await;
    for c in [&edited, &removed, &untouched] {
        activity(c).await;
    }
    let report = verify(None, None).await;
    assert!(report.is_intact(), "{:?}", report.breaks);
    assert!(report.rows >= 18, "{}", report.summary());

    // The application cannot rewrite history.
    let db = central_db().await;
    let id: uuid::Uuid = edited.id.parse().unwrap();
    for sql in [
        "UPDATE audit_logs SET outcome = 'success' WHERE clinic_id = $1",
        "DELETE FROM audit_logs WHERE clinic_id = $1",
    ] {
        let err = db.execute(sql, &[&id]).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only") || format!("{err:?}").contains("append-only"),
            "{err:?}"
        );
    }
    assert!(db.batch_execute("TRUNCATE audit_logs").await.is_err());

    // An edited row and a removed row break their clinic's chain, and only theirs.
    tamper(
        "UPDATE audit_logs SET action = 'list' WHERE clinic_id = $1 AND chain_seq = 3",
        &edited,
    )
    .await;
    tamper(
        "DELETE FROM audit_logs WHERE clinic_id = $1 AND chain_seq = 2",
        &removed,
    )
    .await;
    let report = verify(None, None).await;
    let broken: Vec<(String, i64)> = report
        .breaks
        .iter()
        .map(|b| (b.clinic.to_string(), b.chain_seq))
        .collect();
    assert!(
        broken.contains(&(edited.id.clone(), 3)),
        "{:?}",
        report.breaks
    );
    assert!(
        broken.contains(&(removed.id.clone(), 2)) || broken.contains(&(removed.id.clone(), 3)),
        "{:?}",
        report.breaks
    );
    assert!(
        !broken.iter().any(|(c, _)| *c == untouched.id),
        "{:?}",
        report.breaks
    );
    let one: ClinicId = untouched.id.parse().unwrap();
    assert!(verify(Some(one), None).await.is_intact());

    // New accesses keep chaining after the break; the break stays visible.
    activity(&untouched).await;
    let again = verify(Some(one), None).await;
    assert!(again.is_intact());
    let edited_id: ClinicId = edited.id.parse().unwrap();
    assert!(!verify(Some(edited_id), None).await.is_intact());
}

#[tokio::test]
async fn clinic_admins_read_their_own_audit_trail_with_filters() {
    let http = http();
    let a = register(&http, None).await;
    let b = register(&http, None).await;
    activity(&a).await;
    activity(&b).await;
    let page = http
        .get("/api/v1/audit-logs?limit=100", Some(&a.token))
        .await
        .unwrap();
    assert_eq!(page.status, 200, "{}", page.text());
    let page = page.json();
    let data = page["data"].as_array().unwrap();
    assert!(data.len() >= 6);
    let seqs: Vec<i64> = data
        .iter()
        .map(|e| e["chain_seq"].as_i64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    assert!(data
        .iter()
        .all(|e| e["user_id"] == a.user_id.as_str() || e["user_id"].is_null()));
    let reads = http
        .get(
            "/api/v1/audit-logs?action=read&resource=patients&limit=2",
            Some(&a.token),
        )
        .await
        .unwrap()
        .json();
    let reads_data = reads["data"].as_array().unwrap();
    assert_eq!(reads_data.len(), 2);
    assert!(reads_data
        .iter()
        .all(|e| e["action"] == "read" && e["client_ip"] == "127.0.0.1"));
    let cursor = reads["next_cursor"].as_str().unwrap();
    let rest = http
        .get(
            &format!("/api/v1/audit-logs?action=read&resource=patients&cursor={cursor}"),
            Some(&a.token),
        )
        .await
        .unwrap()
        .json();
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    // Never another clinic's rows, whatever the query says.
    let smuggled = http
        .get(
            &format!("/api/v1/audit-logs?clinic_id={}&limit=200", b.id),
            Some(&a.token),
        )
        .await
        .unwrap()
        .json();
    assert!(smuggled["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["user_id"] != b.user_id.as_str()));
    for bad in ["from=yesterday", "limit=0", "user_id=x", "cursor=abc"] {
        assert_eq!(
            http.get(&format!("/api/v1/audit-logs?{bad}"), Some(&a.token))
                .await
                .unwrap()
                .status,
            400,
            "{bad}"
        );
    }
    assert_eq!(
        http.get("/api/v1/audit-logs", None).await.unwrap().status,
        401
    );
    // Only admins: a staff token of the same clinic is refused.
    let tokens = stack().tokens().unwrap();
    let (staff, _) = tokens
        .issue(
            a.user_id.parse().unwrap(),
            a.id.parse().unwrap(),
            common::token::Role::Staff,
            1,
        )
        .unwrap();
    let refused = http.get("/api/v1/audit-logs", Some(&staff)).await.unwrap();
    assert_eq!(refused.status, 403);
    // Reading the trail is itself on the trail.
    wait_audit(&a, "resource = 'audit-logs' AND action = 'list'").await;
}
