//! API clients end to end: an admin creates role-scoped client credentials (the
//! secret shown once, never listed), the integration exchanges them for short
//! access tokens with the OAuth 2.0 client credentials grant (form or HTTP Basic
//! credentials, RFC 6749 errors), reads and writes within its role, is named in
//! the audit trail, is invisible to other clinics, and stops at once when revoked.

use crate::support::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use devstack::{Http, Reply};
use http::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FORM: &str = "application/x-www-form-urlencoded";

/// `POST /api/v1/oauth/token` with `form` and extra `headers`.
async fn token_request(http: &Http, headers: &[(&str, &str)], form: &str) -> Reply {
    http.send(
        Method::POST,
        "/api/v1/oauth/token",
        headers,
        Some(form.to_owned().into()),
    )
    .await
    .unwrap()
}

/// An RFC 6749 §5.2 error answer: its status, `error` and `no-store`.
fn oauth_error(r: &Reply, status: u16, error: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    assert_eq!(r.json()["error"], error, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

fn credentials_form(client: &Value) -> String {
    format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        url_encode(client["client_id"].as_str().unwrap()),
        url_encode(client["client_secret"].as_str().unwrap()),
    )
}

#[tokio::test]
async fn an_api_client_gets_short_tokens_for_its_role_and_stops_at_once_when_revoked() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let patient = create_patient(
        &http,
        &c,
        json!({"first_name": "Ines", "last_name": "Api", "ssn": "2 84 05 75 123 456"}),
    )
    .await;
    let patient_path = format!("/api/v1/patients/{}", id(&patient));

    // Created by an admin: the secret once, in this answer.
    let made = status(
        &post(
            &http,
            &c,
            "/api/v1/api-clients",
            json!({"name": "Lab results", "role": "staff"}),
        )
        .await,
        201,
    );
    assert!(
        made["client_id"].as_str().unwrap().starts_with("mpc_"),
        "{made}"
    );
    assert!(
        made["client_secret"].as_str().unwrap().starts_with("mps_"),
        "{made}"
    );
    let listed = status(
        &http
            .get("/api/v1/api-clients", Some(&c.token))
            .await
            .unwrap(),
        200,
    );
    let listed = listed["data"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], made["id"]);
    assert!(listed[0].get("client_secret").is_none(), "{}", listed[0]);
    assert!(listed[0]["revoked_at"].is_null());
    // Stored hashed: the secret is nowhere in the central database's row.
    let stored: Vec<u8> = central_db()
        .await
        .query_one(
            "SELECT secret_hash FROM api_clients WHERE id = $1",
            &[&made["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.len(), 32);
    problem(
        &post(
            &http,
            &c,
            "/api/v1/api-clients",
            json!({"name": "x", "role": "owner"}),
        )
        .await,
        400,
    );
    problem(
        &post(
            &http,
            &c,
            "/api/v1/api-clients",
            json!({"name": "", "role": "staff"}),
        )
        .await,
        400,
    );

    // The grant, with the credentials in the form and in HTTP Basic.
    let form = credentials_form(&made);
    let granted = token_request(&http, &[("content-type", FORM)], &form).await;
    assert_eq!(granted.status, 200, "{}", granted.text());
    assert_eq!(granted.header("cache-control"), Some("no-store"));
    let granted = granted.json();
    assert_eq!(granted["token_type"], "Bearer");
    let lifetime = granted["expires_in"].as_u64().unwrap();
    assert!((1..=3600).contains(&lifetime), "{granted}");
    assert!(granted.get("refresh_token").is_none(), "{granted}");
    let access = granted["access_token"].as_str().unwrap().to_owned();
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            made["client_id"].as_str().unwrap(),
            made["client_secret"].as_str().unwrap()
        ))
    );
    let by_basic = token_request(
        &http,
        &[("content-type", FORM), ("authorization", &basic)],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(by_basic.status, 200, "{}", by_basic.text());

    // Refusals as RFC 6749 says.
    let wrong = form.replace("mps_", "mps_x");
    let r = token_request(&http, &[("content-type", FORM)], &wrong).await;
    oauth_error(&r, 401, "invalid_client");
    assert!(r.header("www-authenticate").is_some());
    let r = token_request(&http, &[("content-type", FORM)], "grant_type=password").await;
    oauth_error(&r, 400, "unsupported_grant_type");
    let r = token_request(&http, &[("content-type", "application/json")], &form).await;
    oauth_error(&r, 400, "invalid_request");
    let both = format!("{form}&client_id=again");
    let r = token_request(&http, &[("content-type", FORM)], &both).await;
    oauth_error(&r, 400, "invalid_request");
    let r = token_request(
        &http,
        &[("content-type", FORM), ("authorization", &basic)],
        &form,
    )
    .await;
    oauth_error(&r, 400, "invalid_request");

    // Within its role: a staff client reads patients without restricted fields,
    // creates, and is refused what staff may not do.
    let read = status(&http.get(&patient_path, Some(&access)).await.unwrap(), 200);
    assert_eq!(read["last_name"], "Api");
    assert!(read.get("ssn").is_none_or(Value::is_null), "{read}");
    let body = json!({"first_name": "Made", "last_name": "ByClient"});
    status(
        &http
            .post("/api/v1/patients", Some(&access), &body)
            .await
            .unwrap(),
        201,
    );
    problem(
        &http.get("/api/v1/export", Some(&access)).await.unwrap(),
        403,
    );
    problem(
        &http.get("/api/v1/audit-logs", Some(&access)).await.unwrap(),
        403,
    );
    problem(
        &http
            .get("/api/v1/api-clients", Some(&access))
            .await
            .unwrap(),
        403,
    );
    // Even as an admin, an API client reads no users, clients or trail.
    let admin_client = status(
        &post(
            &http,
            &c,
            "/api/v1/api-clients",
            json!({"name": "Admin tool", "role": "admin"}),
        )
        .await,
        201,
    );
    let admin_token = token_request(
        &http,
        &[("content-type", FORM)],
        &credentials_form(&admin_client),
    )
    .await;
    let admin_token = admin_token.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in ["/api/v1/users", "/api/v1/api-clients", "/api/v1/audit-logs"] {
        problem(&http.get(path, Some(&admin_token)).await.unwrap(), 403);
    }
    status(
        &http
            .get("/api/v1/patients", Some(&admin_token))
            .await
            .unwrap(),
        200,
    );

    // The trail names the client.
    let client_id = made["id"].as_str().unwrap();
    let records = wait_audit(
        &c,
        &format!("user_id = '{client_id}' AND action = 'read' AND resource = 'patients'"),
    )
    .await;
    assert!(!records.is_empty());
    wait_audit(
        &c,
        &format!("user_id = '{client_id}' AND action = 'client_token' AND outcome = 'bad_secret'"),
    )
    .await;

    // Another clinic neither sees nor revokes it, and its token reads nothing there.
    let other = register(&http, None).await;
    let theirs = status(
        &http
            .get("/api/v1/api-clients", Some(&other.token))
            .await
            .unwrap(),
        200,
    );
    assert!(theirs["data"].as_array().unwrap().is_empty());
    let revoke = format!("/api/v1/api-clients/{client_id}/revoke");
    problem(&post(&http, &other, &revoke, json!({})).await, 404);
    let mine = create_patient(&http, &other, patient_body("Other", "Clinic")).await;
    problem(
        &http
            .get(&format!("/api/v1/patients/{}", id(&mine)), Some(&access))
            .await
            .unwrap(),
        404,
    );

    // Revoked: its tokens stop within a second, no new one is issued.
    let revoked = status(&post(&http, &c, &revoke, json!({})).await, 200);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = http.get(&patient_path, Some(&access)).await.unwrap();
        if r.status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "still {}", r.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = token_request(&http, &[("content-type", FORM)], &form).await;
    oauth_error(&r, 401, "invalid_client");
    wait_audit(
        &c,
        &format!("user_id = '{client_id}' AND action = 'client_token' AND outcome = 'revoked'"),
    )
    .await;
}
