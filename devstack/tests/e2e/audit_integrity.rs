//! The central audit trail is append-only and hash-chained per clinic: edits and
//! removals are refused, and any tampering that bypasses that is found by
//! `medicalpro-admin verify-audit`.

use crate::support::*;
use common::config::DbSettings;
use common::ClinicId;

fn central_settings() -> DbSettings {
    stack().central.superuser(devstack::stack::CENTRAL_DB)
}

async fn verify(
    clinic: Option<ClinicId>,
    anchors: Option<&std::path::Path>,
) -> admin::audit::AuditReport {
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
    let _turn = turn();
    let http = http();
    let edited = register(&http, None).await;
    let removed = register(&http, None).await;
    let untouched = register(&http, None).await;
    for c in [&edited, &removed, &untouched] {
        activity(c).await;
    }
    // (Other tests of this binary tamper with clinics of their own: each check here
    // looks at this test's clinics only.)
    let mut rows = 0;
    for c in [&edited, &removed, &untouched] {
        let report = verify(Some(c.id.parse().unwrap()), None).await;
        assert!(report.is_intact(), "{:?}", report.breaks);
        rows += report.rows;
    }
    assert!(rows >= 18, "{rows}");

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
    let mut report = admin::audit::AuditReport::default();
    for c in [&edited, &removed, &untouched] {
        report
            .breaks
            .extend(verify(Some(c.id.parse().unwrap()), None).await.breaks);
    }
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
    let _turn = turn();
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

/// Connects to the central database as one of the services' login roles.
async fn as_service(role: &(String, String)) -> tokio_postgres::Client {
    let stack = stack();
    let (client, conn) = stack
        .central
        .config(devstack::stack::CENTRAL_DB)
        .user(&role.0)
        .password(role.1.as_bytes())
        .connect(stack.central.tls())
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn the_services_credentials_cannot_rewrite_the_trail() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    activity(&c).await;
    let id: uuid::Uuid = c.id.parse().unwrap();
    let stack = stack();
    for role in [&stack.secrets.gateway_role, &stack.secrets.worker_role] {
        let db = as_service(role).await;
        // Reading and appending is theirs; rewriting, disabling the guards, taking
        // ownership or moving the chain head is not.
        for sql in [
            "UPDATE audit_logs SET outcome = 'success' WHERE clinic_id = $1",
            "DELETE FROM audit_logs WHERE clinic_id = $1",
            "UPDATE audit_chain_heads SET last_seq = 0 WHERE clinic_id = $1",
            "DELETE FROM audit_chain_heads WHERE clinic_id = $1",
        ] {
            let err = db.execute(sql, &[&id]).await.unwrap_err();
            assert!(
                format!("{err:?}").contains("permission denied"),
                "{} may: {sql}: {err:?}",
                role.0
            );
        }
        for sql in [
            "TRUNCATE audit_logs",
            "ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only",
            "ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_chain",
            "DROP TRIGGER audit_logs_chain ON audit_logs",
            "CREATE OR REPLACE FUNCTION audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
            "ALTER TABLE audit_logs OWNER TO CURRENT_USER",
            "DROP TABLE audit_logs",
            "CREATE TABLE forged (x int)",
            "ALTER ROLE CURRENT_USER SUPERUSER",
        ] {
            let err = db.batch_execute(sql).await.unwrap_err();
            let text = format!("{err:?}");
            assert!(
                text.contains("permission denied")
                    || text.contains("must be owner")
                    || text.contains("must be superuser"),
                "{} may: {sql}: {text}",
                role.0
            );
        }
        // A row that does not extend the chain (no key, a position taken, or the
        // next position with a made-up predecessor) is refused by the table itself.
        let forge = |seq: &'static str| {
            format!(
                "INSERT INTO audit_logs (clinic_id, action, resource, outcome, occurred_at, chain_seq, prev_hash, hash, mac_key) \
                 SELECT $1, 'read', 'patients', 'success', now(), {seq}, '\\x01'::bytea, '\\x00'::bytea, 'a1' \
                 FROM audit_chain_heads WHERE clinic_id = $1"
            )
        };
        let taken = db.execute(&forge("1"), &[&id]).await.unwrap_err();
        assert!(
            format!("{taken:?}").contains("audit_logs_chain_key"),
            "{taken:?}"
        );
        let forged = db
            .execute(&forge("last_seq + 1"), &[&id])
            .await
            .unwrap_err();
        assert!(
            format!("{forged:?}").contains("extend its chain"),
            "{forged:?}"
        );
        let unkeyed = db
            .execute(
                "INSERT INTO audit_logs (clinic_id, action, resource, outcome, occurred_at) VALUES ($1, 'read', 'patients', 'success', now())",
                &[&id],
            )
            .await
            .unwrap_err();
        assert!(
            format!("{unkeyed:?}").contains("keyed chain fields"),
            "{unkeyed:?}"
        );
    }
    assert!(verify(Some(id.into()), None).await.is_intact());
}

#[tokio::test]
async fn the_owner_cannot_rewrite_cut_short_or_drop_a_chain_unnoticed() {
    let _turn = turn();
    let http = http();
    let rewritten = register(&http, None).await;
    let cut = register(&http, None).await;
    let dropped = register(&http, None).await;
    for c in [&rewritten, &cut, &dropped] {
        activity(c).await;
    }
    let dir = std::env::temp_dir().join(format!("medicalpro-test-{}-anchors", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let anchors = dir.join("anchors.json");
    let ours = [&rewritten, &cut, &dropped];
    let each = |anchors: Option<std::path::PathBuf>| async move {
        let mut report = admin::audit::AuditReport::default();
        for c in ours {
            report.breaks.extend(
                verify(Some(c.id.parse().unwrap()), anchors.as_deref())
                    .await
                    .breaks,
            );
        }
        report
    };
    let first = each(Some(anchors.clone())).await;
    assert!(first.is_intact(), "{:?}", first.breaks);
    assert!(anchors.exists(), "the anchors were written");

    let db = central_db().await;
    db.batch_execute("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only")
        .await
        .unwrap();
    // Rewritten, with the unkeyed digest recomputed as the owner could: still seen.
    let id: uuid::Uuid = rewritten.id.parse().unwrap();
    db.execute(
        "UPDATE audit_logs a SET outcome = 'denied', hash = audit_row_digest(a.prev_hash, a) \
         WHERE clinic_id = $1 AND chain_seq = 2",
        &[&id],
    )
    .await
    .unwrap();
    // Cut short: the last rows gone and the head moved back consistently.
    let id_cut: uuid::Uuid = cut.id.parse().unwrap();
    db.execute(
        "DELETE FROM audit_logs WHERE clinic_id = $1 AND chain_seq > 2",
        &[&id_cut],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE audit_chain_heads h SET last_seq = 2, last_hash = (SELECT hash FROM audit_logs WHERE clinic_id = $1 AND chain_seq = 2) WHERE h.clinic_id = $1",
        &[&id_cut],
    )
    .await
    .unwrap();
    // Dropped whole: every row and the head.
    let id_dropped: uuid::Uuid = dropped.id.parse().unwrap();
    db.execute(
        "DELETE FROM audit_logs WHERE clinic_id = $1",
        &[&id_dropped],
    )
    .await
    .unwrap();
    db.execute(
        "DELETE FROM audit_chain_heads WHERE clinic_id = $1",
        &[&id_dropped],
    )
    .await
    .unwrap();
    db.batch_execute("ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_append_only")
        .await
        .unwrap();

    let without = each(None).await;
    let broken = |report: &admin::audit::AuditReport, who: &Clinic| {
        report.breaks.iter().any(|b| b.clinic.to_string() == who.id)
    };
    assert!(broken(&without, &rewritten), "{:?}", without.breaks);
    // A consistent cut or drop leaves a valid chain: only the anchors tell.
    assert!(!broken(&without, &cut) && !broken(&without, &dropped));
    let with = each(Some(anchors.clone())).await;
    for who in [&rewritten, &cut, &dropped] {
        assert!(
            broken(&with, who),
            "{} not caught: {:?}",
            who.id,
            with.breaks
        );
    }
    // The anchors are not moved past a broken verification.
    let again = each(Some(anchors.clone())).await;
    assert!(broken(&again, &cut));
    let _ = std::fs::remove_dir_all(dir);
}
