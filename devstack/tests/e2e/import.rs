//! End-to-end tests of a patient import (`POST /api/v1/patients/import`): CSV and
//! NDJSON, all-or-nothing or the valid rows only, idempotent on `external_id`,
//! bounded, admins only, sealed like any other write, never seen by another clinic.

use crate::support::*;
use common::token::Role;
use devstack::{Http, Reply};
use http::Method;
use serde_json::Value;

const CSV: &str = "text/csv";
const NDJSON: &str = "application/x-ndjson";

/// `POST /api/v1/patients/import{query}` with `body` of `media` as `token`.
async fn import_as(http: &Http, token: &str, query: &str, media: &str, body: &str) -> Reply {
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str()), ("content-type", media)];
    http.send(
        Method::POST,
        &format!("/api/v1/patients/import{query}"),
        &headers,
        Some(body.to_owned().into()),
    )
    .await
    .unwrap()
}

async fn import(http: &Http, c: &Clinic, query: &str, media: &str, body: &str) -> Reply {
    import_as(http, &c.token, query, media, body).await
}

/// The clinic's patients with `external_id` (admin's view).
async fn by_external(http: &Http, c: &Clinic, external: &str) -> Vec<Value> {
    let path = format!("/api/v1/patients?external_id={}", url_encode(external));
    let page = status(&http.get(&path, Some(&c.token)).await.unwrap(), 200);
    page["data"].as_array().unwrap().clone()
}

async fn patient_count(c: &Clinic) -> i64 {
    clinic_db(c)
        .await
        .query_one("SELECT count(*) FROM patients", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_csv_import_stores_every_row_sealed_and_a_second_one_changes_nothing() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let csv = "external_id,first_name,last_name,email,birth_date,ssn\n\
               A-1,Zoë,\"Dupont, Jr\",zoe@example.org,1980-02-29,1800275123456\n\
               A-2,Émile,Ørsted,,,\n";
    let report = status(&import(&http, &c, "", CSV, csv).await, 201);
    assert_eq!(report["imported"], 2, "{report}");
    assert_eq!(report["existing"], 0);
    assert_eq!(report["refused"], 0);
    assert_eq!(report["rows"][0]["line"], 2);
    assert_eq!(report["rows"][1]["line"], 3);

    let zoe = by_external(&http, &c, "A-1").await;
    assert_eq!(zoe.len(), 1);
    assert_eq!(zoe[0]["first_name"], "Zoë");
    assert_eq!(zoe[0]["last_name"], "Dupont, Jr");
    assert_eq!(zoe[0]["ssn"], "1800275123456");
    assert_eq!(zoe[0]["birth_date"], "1980-02-29");
    let emile = by_external(&http, &c, "A-2").await;
    assert_eq!(emile[0]["last_name"], "Ørsted");
    assert!(emile[0]["email"].is_null());

    // The ssn is ciphertext in the clinic's database.
    let raw: Vec<u8> = clinic_db(&c)
        .await
        .query_one(
            "SELECT ssn_enc FROM patients WHERE external_id = 'A-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!raw.is_empty());
    assert!(!raw.windows(13).any(|w| w == b"1800275123456"));

    // Again: every row is there already, nothing changes.
    let again = status(&import(&http, &c, "", CSV, csv).await, 200);
    assert_eq!(again["imported"], 0, "{again}");
    assert_eq!(again["existing"], 2);
    assert_eq!(again["rows"][0]["status"], "existing");
    assert_eq!(again["rows"][0]["id"], zoe[0]["id"]);
    assert_eq!(patient_count(&c).await, 2);

    // Recorded: the import and a create per patient.
    let records = wait_audit(&c, "action = 'import' AND resource = 'patients'").await;
    assert!(!records.is_empty());

    // Another clinic sees none of them.
    let other = register(&http, None).await;
    assert!(by_external(&http, &other, "A-1").await.is_empty());
    let page = status(
        &http
            .get("/api/v1/patients", Some(&other.token))
            .await
            .unwrap(),
        200,
    );
    assert_eq!(page["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn an_ndjson_import_is_all_or_nothing_unless_asked_for_the_valid_rows() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let body = "{\"external_id\": \"N-1\", \"first_name\": \"Ada\", \"last_name\": \"Lovelace\"}\n\
                {\"external_id\": \"N-2\", \"first_name\": \"Bad\", \"last_name\": \"Date\", \"birth_date\": \"31/12/1999\"}\n\
                \n\
                {\"external_id\": \"N-3\", \"first_name\": \"Cy\", \"last_name\": \"Clark\", \"ssn\": \"999 88 7777\"}\n";
    let refused = problem(&import(&http, &c, "", NDJSON, body).await, 422);
    let rows = refused["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{refused}");
    assert_eq!(rows[0]["line"], 2);
    assert!(rows[0]["errors"][0]
        .as_str()
        .unwrap()
        .contains("birth_date"));
    assert_eq!(patient_count(&c).await, 0, "nothing imported");
    let explicit = problem(&import(&http, &c, "?mode=all", NDJSON, body).await, 422);
    assert_eq!(explicit["rows"][0]["line"], 2);

    let report = status(&import(&http, &c, "?mode=valid", NDJSON, body).await, 201);
    assert_eq!(report["imported"], 2, "{report}");
    assert_eq!(report["refused"], 1);
    assert_eq!(patient_count(&c).await, 2);
    assert_eq!(by_external(&http, &c, "N-3").await[0]["ssn"], "999 88 7777");
    assert!(by_external(&http, &c, "N-2").await.is_empty());

    // The fixed row comes in later; the others are existing.
    let fixed = body.replace("31/12/1999", "1999-12-31");
    let report = status(&import(&http, &c, "", NDJSON, &fixed).await, 201);
    assert_eq!(report["imported"], 1, "{report}");
    assert_eq!(report["existing"], 2);
    assert_eq!(patient_count(&c).await, 3);

    // A CSV row with a wrong value and one of the wrong shape are refused by line.
    let csv = "external_id,first_name,last_name,email\nC-1,Ok,Row,\nC-2,No,Mail,not-an-address\nC-3,Short\n";
    let refused = problem(&import(&http, &c, "", CSV, csv).await, 422);
    let lines: Vec<&Value> = refused["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["line"])
        .collect();
    assert_eq!(lines, [&Value::from(3), &Value::from(4)], "{refused}");
    assert_eq!(patient_count(&c).await, 3);

    // Unknown columns, a duplicate external id in one file, a bad mode.
    let unknown = "first_name,last_name,company_id\nA,B,x\n";
    let refused = problem(&import(&http, &c, "", CSV, unknown).await, 422);
    assert_eq!(refused["rows"][0]["line"], 2);
    let twice = "external_id,first_name,last_name\nD-1,A,B\nD-1,C,D\n";
    let report = status(&import(&http, &c, "?mode=valid", CSV, twice).await, 201);
    assert_eq!(report["imported"], 1, "{report}");
    assert_eq!(report["refused"], 1);
    problem(&import(&http, &c, "?mode=some", CSV, twice).await, 400);
    problem(&import(&http, &c, "", "application/json", "{}").await, 415);
}

#[tokio::test]
async fn an_import_is_bounded_and_for_admins_only() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let mut csv = String::from("first_name,last_name\n");
    for i in 0..10_001 {
        csv.push_str(&format!("P{i},Many\n"));
    }
    problem(&import(&http, &c, "?mode=valid", CSV, &csv).await, 413);
    assert_eq!(patient_count(&c).await, 0);

    let one = "external_id,first_name,last_name\nR-1,Role,Check\n";
    for role in [Role::Practitioner, Role::Staff] {
        let token = token_as(stack(), &c, role);
        problem(&import_as(&http, &token, "", CSV, one).await, 403);
    }
    assert_eq!(patient_count(&c).await, 0);
    status(&import(&http, &c, "", CSV, one).await, 201);
    assert_eq!(patient_count(&c).await, 1);
}
