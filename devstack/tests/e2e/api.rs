//! End-to-end tests of the contract through the gateway, against a real stack:
//! PostgreSQL servers, a worker per region and the gateway, as separate processes.

use crate::support::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn patient_lifecycle_with_search_pagination_and_soft_delete() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let created = create_patient(&http, &c, patient_body("Éloïse", "Dupont")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(created["created_at"].is_string() && created["updated_at"].is_string());
    assert_eq!(created["ssn"], "1 80 02 75 123 456 78");
    assert_eq!(created["birth_date"], "1980-02-29");

    let got = http
        .get(&format!("/api/v1/patients/{id}"), Some(&c.token))
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), created);

    let mut changed = patient_body("Éloïse", "Martin");
    changed["phone"] = Value::Null;
    let put = http
        .json(
            Method::PUT,
            &format!("/api/v1/patients/{id}"),
            Some(&c.token),
            Some(&changed),
        )
        .await
        .unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(put.json()["last_name"], "Martin");
    assert_eq!(put.json()["phone"], Value::Null);

    for i in 0..4 {
        create_patient(
            &http,
            &c,
            json!({"first_name": format!("Other{i}"), "last_name": "Person"}),
        )
        .await;
    }
    // Case-insensitive search on first and last name.
    for q in ["martin", "MART", "éloïse"] {
        let r = http
            .get(
                &format!("/api/v1/patients?q={}", url_encode(q)),
                Some(&c.token),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let data = r.json()["data"].as_array().unwrap().clone();
        assert_eq!(data.len(), 1, "q={q}: {data:?}");
        assert_eq!(data[0]["id"], id.as_str());
    }
    // LIKE metacharacters match themselves only.
    let r = http
        .get("/api/v1/patients?q=%25", Some(&c.token))
        .await
        .unwrap();
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 0);

    // Keyset pagination visits every row once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cur) => format!("/api/v1/patients?limit=2&cursor={cur}"),
            None => "/api/v1/patients?limit=2".to_owned(),
        };
        let page = http.get(&path, Some(&c.token)).await.unwrap().json();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 5);

    // Soft delete: hidden everywhere, kept in the database.
    let del = http
        .json(
            Method::DELETE,
            &format!("/api/v1/patients/{id}"),
            Some(&c.token),
            None,
        )
        .await
        .unwrap();
    assert_eq!(del.status, 204);
    problem(
        &http
            .get(&format!("/api/v1/patients/{id}"), Some(&c.token))
            .await
            .unwrap(),
        404,
    );
    let again = http
        .json(
            Method::DELETE,
            &format!("/api/v1/patients/{id}"),
            Some(&c.token),
            None,
        )
        .await
        .unwrap();
    problem(&again, 404);
    let put = http
        .json(
            Method::PUT,
            &format!("/api/v1/patients/{id}"),
            Some(&c.token),
            Some(&changed),
        )
        .await
        .unwrap();
    problem(&put, 404);
    let list = http
        .get("/api/v1/patients?limit=100", Some(&c.token))
        .await
        .unwrap()
        .json();
    assert!(!list["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == id.as_str()));
    let db = clinic_db(&c).await;
    let row = db
        .query_one(
            "SELECT deleted_at IS NOT NULL FROM patients WHERE id = $1",
            &[&id.parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "soft-deleted row must remain");
}

/// Writes `head` on a fresh connection and returns what the server answers.
fn raw_request(addr: std::net::SocketAddr, head: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn isolation_matrix_another_clinics_rows_are_not_found() {
    let _turn = turn();
    let http = http();
    let a = register(&http, Some("eu-west")).await;
    let b = register(&http, Some("eu-central")).await;
    let b_same_region = register(&http, Some("eu-west")).await;
    for victim in [&b, &b_same_region] {
        let theirs = create_patient(&http, victim, patient_body("Secret", "Person")).await;
        let their_id = theirs["id"].as_str().unwrap();
        let missing = uuid::Uuid::now_v7().to_string();
        for id in [their_id, missing.as_str()] {
            let path = format!("/api/v1/patients/{id}");
            let get = http.get(&path, Some(&a.token)).await.unwrap();
            let put = http
                .json(
                    Method::PUT,
                    &path,
                    Some(&a.token),
                    Some(&patient_body("Hacked", "Row")),
                )
                .await
                .unwrap();
            let del = http
                .json(Method::DELETE, &path, Some(&a.token), None)
                .await
                .unwrap();
            // Exactly the same answer as for an id that never existed.
            let expected = problem(&get, 404);
            assert_eq!(problem(&put, 404), expected);
            assert_eq!(problem(&del, 404), expected);
        }
        // The victim's row is untouched.
        let still = http
            .get(&format!("/api/v1/patients/{their_id}"), Some(&victim.token))
            .await
            .unwrap();
        assert_eq!(still.status, 200);
        assert_eq!(still.json(), theirs);
    }

    // Clinic ids smuggled through the query, headers and the body are never used.
    let smuggle_headers = [
        ("x-clinic-id", b.id.as_str()),
        ("x-company-id", b.id.as_str()),
        ("x-medicalpro-clinic", b.id.as_str()),
    ];
    let auth = format!("Bearer {}", a.token);
    let mut headers: Vec<(&str, &str)> = smuggle_headers.to_vec();
    headers.push(("authorization", auth.as_str()));
    let listed = http
        .send(
            Method::GET,
            &format!("/api/v1/patients?company_id={}&clinic_id={}", b.id, b.id),
            &headers,
            None,
        )
        .await
        .unwrap();
    assert_eq!(listed.status, 200);
    assert!(
        listed.json()["data"].as_array().unwrap().is_empty(),
        "{}",
        listed.text()
    );

    let mut body = patient_body("Mass", "Assignment");
    body["company_id"] = b.id.clone().into();
    let refused = http
        .post("/api/v1/patients", Some(&a.token), &body)
        .await
        .unwrap();
    problem(&refused, 400);
    let b_list = http
        .get("/api/v1/patients?q=Assignment", Some(&b.token))
        .await
        .unwrap();
    assert!(b_list.json()["data"].as_array().unwrap().is_empty());

    // Server-set fields in a body are ignored, not applied.
    let mut body = patient_body("Mass", "Ignored");
    let chosen = uuid::Uuid::now_v7().to_string();
    body["id"] = chosen.clone().into();
    body["created_at"] = "2000-01-01T00:00:00Z".into();
    let made = create_patient(&http, &a, body).await;
    assert_ne!(made["id"], chosen.as_str());
    assert_ne!(made["created_at"], "2000-01-01T00:00:00Z");
}

/// Signs `claims` with the gateways' own key (what only a gateway can do).
fn forge(claims: &Value) -> String {
    stack().tokens().unwrap().sign(claims).unwrap()
}

#[tokio::test]
async fn token_attacks_are_refused() {
    let _turn = turn();
    let http = http();
    let a = register(&http, None).await;
    let b = register(&http, None).await;
    let now = common::token::now_secs();
    let claims = json!({"sub": a.user_id, "clinic": a.id, "role": "admin", "typ": "access",
        "iss": "medicalpro", "aud": "medicalpro-api", "iat": now, "exp": now + 300, "jti": "x", "ver": 1});
    // The control: a correctly forged token works, so the refusals below mean something.
    let ok = http
        .get("/api/v1/patients", Some(&forge(&claims)))
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());

    let parts: Vec<&str> = a.token.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["clinic"] = b.id.clone().into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let hs = |alg: jsonwebtoken::Algorithm, key: &[u8]| {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some(devstack::stack::JWT_KID.into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(key),
        )
        .unwrap()
    };
    // The classic confusion: HS256 keyed with the gateway's public key, which the
    // JWKS publishes to everyone.
    let jwks = http
        .get("/.well-known/jwks.json", None)
        .await
        .unwrap()
        .json();
    let public = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let (other_key, _) = common::token::generate_key_pair().unwrap();
    let other = common::token::TokenSigner::from_pem(
        devstack::stack::JWT_KID,
        &other_key,
        "medicalpro",
        "medicalpro-api",
        900,
    )
    .unwrap();
    let mut cases: Vec<(&str, String)> = vec![
        ("tampered payload", tampered),
        ("alg none", none),
        (
            "HS512 with a guessed key",
            hs(jsonwebtoken::Algorithm::HS512, &[7u8; 48]),
        ),
        (
            "HS256 keyed with the public key",
            hs(jsonwebtoken::Algorithm::HS256, &public),
        ),
        (
            "another Ed25519 key under the same kid",
            other.sign(&claims).unwrap(),
        ),
        ("garbage", "not.a.token".into()),
    ];
    type Mutation = fn(&mut Value);
    let variants: [(&str, Mutation); 8] = [
        ("expired", |c| {
            c["exp"] = (common::token::now_secs() - 120).into()
        }),
        ("no aud", |c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
        ("no iss", |c| {
            c.as_object_mut().unwrap().remove("iss");
        }),
        ("wrong aud", |c| c["aud"] = "other".into()),
        ("wrong iss", |c| c["iss"] = "other".into()),
        ("refresh typ", |c| c["typ"] = "refresh".into()),
        ("string exp", |c| c["exp"] = "9999999999".into()),
        ("no clinic", |c| {
            c.as_object_mut().unwrap().remove("clinic");
        }),
    ];
    for (name, mutate) in variants {
        let mut c = claims.clone();
        mutate(&mut c);
        cases.push((name, forge(&c)));
    }
    for (name, token) in cases {
        let r = http.get("/api/v1/patients", Some(&token)).await.unwrap();
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        problem(&r, 401);
    }
    problem(&http.get("/api/v1/patients", None).await.unwrap(), 401);
    let basic = http
        .send(
            Method::GET,
            "/api/v1/patients",
            &[("authorization", "Basic YTpi")],
            None,
        )
        .await
        .unwrap();
    problem(&basic, 401);

    // A valid token for a clinic that does not exist: 403.
    let mut ghost = claims.clone();
    ghost["clinic"] = uuid::Uuid::now_v7().to_string().into();
    problem(
        &http
            .get("/api/v1/patients", Some(&forge(&ghost)))
            .await
            .unwrap(),
        403,
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let auth = format!("Bearer {}", c.token);
    let headers = [("authorization", auth.as_str())];
    let send = |body: &'static [u8]| {
        let http = http.clone();
        let headers = headers.to_vec();
        async move {
            http.send(
                Method::POST,
                "/api/v1/patients",
                &headers,
                Some(bytes::Bytes::from_static(body)),
            )
            .await
            .unwrap()
        }
    };
    for body in [
        &b"{not json"[..],
        b"[]",
        b"{\"first_name\": 42, \"last_name\": \"x\"}",
        b"{\"first_name\": \"x\"}",
        b"{\"first_name\": \"x\", \"last_name\": \"y\", \"birth_date\": \"31/12/1999\"}",
        b"{\"first_name\": \"x\", \"last_name\": \"y\", \"email\": \"nope\"}",
        b"{\"first_name\": \"x\\u0000\", \"last_name\": \"y\"}",
        b"{\"first_name\": \"x\", \"last_name\": \"y\", \"unknown\": 1}",
    ] {
        let r = send(body).await;
        let p = problem(&r, 400);
        assert!(!p.to_string().to_lowercase().contains("sql"), "{p}");
    }
    // Over the limit: refused before the body is read (a raw socket, since the
    // server answers 413 and closes without reading the rest).
    let reply = raw_request(
        stack().gateway.addr,
        &format!(
            "POST /api/v1/patients HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{\"first_name\": \"",
            2 << 20
        ),
    );
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("application/problem+json"), "{reply}");
    let long_name = json!({"first_name": "a".repeat(101), "last_name": "x"});
    problem(
        &http
            .post("/api/v1/patients", Some(&c.token), &long_name)
            .await
            .unwrap(),
        400,
    );
    problem(
        &http
            .get("/api/v1/patients/not-a-uuid", Some(&c.token))
            .await
            .unwrap(),
        400,
    );
    problem(
        &http
            .get("/api/v1/patients?limit=0", Some(&c.token))
            .await
            .unwrap(),
        400,
    );
    problem(
        &http
            .get("/api/v1/patients?limit=abc", Some(&c.token))
            .await
            .unwrap(),
        400,
    );
    problem(
        &http
            .get("/api/v1/patients?cursor=zzz", Some(&c.token))
            .await
            .unwrap(),
        400,
    );
    problem(
        &http
            .get("/api/v1/nothing-here", Some(&c.token))
            .await
            .unwrap(),
        404,
    );
    problem(&http.get("/nowhere", None).await.unwrap(), 404);
    // Deeply nested JSON is refused, not recursed into.
    let nested = bytes::Bytes::from(format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)));
    let r = http
        .send(
            Method::POST,
            "/api/v1/patients",
            &headers,
            Some(nested.clone()),
        )
        .await
        .unwrap();
    problem(&r, 400);
    let r = http
        .send(Method::POST, "/api/v1/auth/login", &[], Some(nested))
        .await
        .unwrap();
    problem(&r, 400);
    // SQL metacharacters are data.
    let p = create_patient(
        &http,
        &c,
        json!({"first_name": "Robert'); DROP TABLE patients;--", "last_name": "Tables"}),
    )
    .await;
    assert_eq!(p["first_name"], "Robert'); DROP TABLE patients;--");
    let listed = http
        .get("/api/v1/patients?limit=100", Some(&c.token))
        .await
        .unwrap()
        .json();
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "only the valid patient exists"
    );
}

#[tokio::test]
async fn ssn_is_encrypted_bound_to_its_row_and_looked_up_by_blind_index() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let p1 = create_patient(&http, &c, patient_body("Jean", "Valjean")).await;
    let mut second = patient_body("Fantine", "Thenardier");
    second["ssn"] = "2 75 11 13 055 002 91".into();
    let p2 = create_patient(&http, &c, second).await;

    let db = clinic_db(&c).await;
    let dump: Vec<String> = db
        .query("SELECT row_to_json(p)::text FROM patients p", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for row in &dump {
        assert!(
            !row.contains("123 456") && !row.contains("12345678"),
            "plaintext ssn stored: {row}"
        );
    }
    let outbox: i64 = db
        .query_one("SELECT count(*) FROM audit_outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert!(outbox >= 0);
    let raw: Vec<u8> = db
        .query_one(
            "SELECT ssn_enc FROM patients WHERE id = $1",
            &[&p1["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!raw.windows(7).any(|w| w == b"123 456"));

    // Exact-match lookup through the blind index, tolerant of spacing.
    let found = http
        .get("/api/v1/patients?ssn=180027512345678", Some(&c.token))
        .await
        .unwrap()
        .json();
    let ids: Vec<&str> = found["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![p1["id"].as_str().unwrap()]);

    // A ciphertext copied onto another row does not decrypt there.
    db.execute(
        "UPDATE patients SET ssn_enc = (SELECT ssn_enc FROM patients WHERE id = $1) WHERE id = $2",
        &[
            &p1["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap(),
            &p2["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap(),
        ],
    )
    .await
    .unwrap();
    let r = http
        .get(
            &format!("/api/v1/patients/{}", p2["id"].as_str().unwrap()),
            Some(&c.token),
        )
        .await
        .unwrap();
    let p = problem(&r, 500);
    assert!(!r.text().contains("123 456"), "{p}");
    // The untouched row still reads.
    let ok = http
        .get(
            &format!("/api/v1/patients/{}", p1["id"].as_str().unwrap()),
            Some(&c.token),
        )
        .await
        .unwrap();
    assert_eq!(ok.json()["ssn"], "1 80 02 75 123 456 78");

    // Nothing of the ssn reaches the central database either.
    let central = central_db().await;
    let leaked: i64 = central
        .query_one(
            "SELECT count(*) FROM audit_logs a WHERE row_to_json(a)::text LIKE '%123 456%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, 0);
}

#[tokio::test]
async fn every_access_is_audited_with_user_and_client_ip() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let p = create_patient(&http, &c, patient_body("Audit", "Me")).await;
    let id = p["id"].as_str().unwrap();
    let auth = format!("Bearer {}", c.token);
    let headers = [
        ("authorization", auth.as_str()),
        ("x-request-id", "audit-test-1"),
        // A client cannot choose the IP that gets recorded.
        ("x-medicalpro-client-ip", "6.6.6.6"),
        ("x-forwarded-for", "7.7.7.7"),
    ];
    let r = http
        .send(
            Method::GET,
            &format!("/api/v1/patients/{id}"),
            &headers,
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("audit-test-1"));
    let rows = wait_audit(&c, "request_id = 'audit-test-1'").await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get::<_, String>(0), "read");
    assert_eq!(row.get::<_, String>(1), "patients");
    assert_eq!(row.get::<_, Option<uuid::Uuid>>(2).unwrap().to_string(), id);
    assert_eq!(row.get::<_, String>(3), "127.0.0.1");
    assert_eq!(row.get::<_, String>(5), "success");
    assert_eq!(
        row.get::<_, Option<uuid::Uuid>>(6).unwrap().to_string(),
        c.user_id
    );

    wait_audit(&c, "action = 'create' AND outcome = 'success'").await;
    // A miss and a refused write are recorded too.
    let missing = uuid::Uuid::now_v7();
    http.get(&format!("/api/v1/patients/{missing}"), Some(&c.token))
        .await
        .unwrap();
    let rows = wait_audit(&c, &format!("resource_id = '{missing}'")).await;
    assert_eq!(rows[0].get::<_, String>(5), "not_found");
    http.post(
        "/api/v1/patients",
        Some(&c.token),
        &json!({"first_name": 1}),
    )
    .await
    .unwrap();
    wait_audit(&c, "action = 'create' AND outcome = 'rejected'").await;
    http.get("/api/v1/patients", Some(&c.token)).await.unwrap();
    wait_audit(&c, "action = 'list'").await;
    // The registration's session.
    wait_audit(&c, "action = 'login' AND outcome = 'success'").await;
    // Shipped rows leave the clinic's outbox.
    let db = clinic_db(&c).await;
    for _ in 0..100 {
        let left: i64 = db
            .query_one("SELECT count(*) FROM audit_outbox", &[])
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("audit outbox was not drained");
}

#[tokio::test]
async fn clinic_roles_reach_only_their_own_database() {
    let _turn = turn();
    let http = http();
    let a = register(&http, Some("eu-west")).await;
    let b = register(&http, Some("eu-west")).await;
    let central = central_db().await;
    let keys = stack().keys().unwrap();
    let server = &stack().region("eu-west").unwrap().server;
    let creds = |clinic: &Clinic| {
        let central = &central;
        let keys = &keys;
        let id: uuid::Uuid = clinic.id.parse().unwrap();
        async move {
            let row = central
                .query_one(
                    "SELECT db_role, db_role_password, db_name FROM companies WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            let sealed: Vec<u8> = row.get(1);
            let password = keys
                .open_secret(&format!("db-role-password:{id}"), &sealed)
                .unwrap();
            (
                row.get::<_, String>(0),
                String::from_utf8(password).unwrap(),
                row.get::<_, String>(2),
            )
        }
    };
    let (role_a, pw_a, db_a) = creds(&a).await;
    let (_, _, db_b) = creds(&b).await;
    assert!(role_a.contains(&a.id.replace('-', "")));
    assert_eq!(db_a, format!("medicalpro_clinic_{}", a.id));
    let connect = |db: String| {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(server.port)
            .user(&role_a)
            .password(pw_a.clone())
            .dbname(&db)
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        let tls = server.tls();
        async move { cfg.connect(tls).await }
    };
    let (own, conn) = connect(db_a).await.expect("own database");
    tokio::spawn(conn);
    own.simple_query("SELECT count(*) FROM patients")
        .await
        .unwrap();
    // No hard delete of clinic data, even through the clinic's own role.
    assert!(own.simple_query("DELETE FROM patients").await.is_err());
    for other in [
        db_b,
        "medicalpro_central".to_owned(),
        "postgres".to_owned(),
        "medicalpro_clinic_template".to_owned(),
    ] {
        let err = connect(other.clone())
            .await
            .err()
            .unwrap_or_else(|| panic!("{other} reachable"));
        let code = err.code().map(|c| c.code().to_owned());
        assert!(
            matches!(code.as_deref(), Some("42501") | Some("3D000")),
            "{other}: {err}"
        );
    }
}

#[tokio::test]
async fn clinics_live_in_the_region_they_chose() {
    let _turn = turn();
    let http = http();
    for region in ["eu-west", "eu-central"] {
        let c = register(&http, Some(region)).await;
        assert_eq!(c.region, region);
        create_patient(&http, &c, patient_body("Region", region)).await;
        for r in &stack().regions {
            let db = r.server.connect("postgres").await.unwrap();
            let here = db
                .query_opt(
                    "SELECT 1 FROM pg_database WHERE datname = $1",
                    &[&format!("medicalpro_clinic_{}", c.id)],
                )
                .await
                .unwrap()
                .is_some();
            assert_eq!(here, r.name == region, "{} on {}", c.id, r.name);
        }
    }
    let unknown = http
        .post(
            "/api/v1/auth/register",
            None,
            &json!({"clinic_name": "x", "email": format!("{}@x.org", unique("u")), "password": "long enough password", "region": "mars-1"}),
        )
        .await
        .unwrap();
    problem(&unknown, 400);
}

#[tokio::test]
async fn registration_validates_and_an_interrupted_one_converges_on_retry() {
    let _turn = turn();
    let http = http();
    let c = register(&http, Some("eu-central")).await;
    let dup = http
        .post("/api/v1/auth/register", None, &json!({"clinic_name": "Again", "email": c.email.to_uppercase(), "password": "another long password"}))
        .await
        .unwrap();
    problem(&dup, 409);
    // The same registration sent again once it is done (an answer lost on the way)
    // gets the same answer.
    let again = http
        .post(
            "/api/v1/auth/register",
            None,
            &json!({"clinic_name": "Again", "email": c.email, "password": c.password}),
        )
        .await
        .unwrap();
    assert_eq!(again.status, 201, "{}", again.text());
    assert_eq!(again.json()["clinic_id"], c.id.as_str());
    assert_eq!(again.json()["user_id"], c.user_id.as_str());
    for body in [
        json!({"clinic_name": "x", "email": "a@b.org", "password": "short"}),
        json!({"clinic_name": "", "email": "a@b.org", "password": "long enough password"}),
        json!({"clinic_name": "x", "email": "not-an-email", "password": "long enough password"}),
        json!({"clinic_name": "x", "email": "a@b.org", "password": "x".repeat(129)}),
        json!({"email": "a@b.org"}),
    ] {
        problem(
            &http
                .post("/api/v1/auth/register", None, &body)
                .await
                .unwrap(),
            400,
        );
    }

    // Simulate a registration cut short after the central commit: the clinic is back
    // to `provisioning` and its role and database are gone.
    let central = central_db().await;
    let id: uuid::Uuid = c.id.parse().unwrap();
    central
        .execute(
            "UPDATE companies SET status = 'provisioning' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let server = &stack().region("eu-central").unwrap().server;
    let admin = server.connect("postgres").await.unwrap();
    admin
        .batch_execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'medicalpro_clinic_{id}'"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "DROP DATABASE \"medicalpro_clinic_{id}\" WITH (FORCE)"
        ))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("DROP ROLE \"medicalpro_clinic_{}\"", id.simple()))
        .await
        .unwrap();
    // While provisioning, the clinic is not served.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Someone else cannot take over the half-made account.
    let thief = http
        .post("/api/v1/auth/register", None, &json!({"clinic_name": "Thief", "email": c.email, "password": "not the right password"}))
        .await
        .unwrap();
    problem(&thief, 409);
    let retry = http
        .post(
            "/api/v1/auth/register",
            None,
            &json!({"clinic_name": "Again", "email": c.email, "password": c.password}),
        )
        .await
        .unwrap();
    assert_eq!(retry.status, 201, "{}", retry.text());
    assert_eq!(retry.json()["clinic_id"], c.id.as_str());
    let login = http
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"email": c.email, "password": c.password}),
        )
        .await
        .unwrap();
    let token = login.json()["access_token"].as_str().unwrap().to_owned();
    let c2 = Clinic { token, ..c.clone() };
    create_patient(&http, &c2, patient_body("After", "Retry")).await;
    let count: i64 = central
        .query_one(
            "SELECT count(*) FROM companies WHERE id = $1 AND status = 'active'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test]
async fn login_refresh_logout_and_throttling() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let wrong = http
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"email": c.email, "password": "wrong password!!"}),
        )
        .await
        .unwrap();
    let unknown = http
        .post("/api/v1/auth/login", None, &json!({"email": format!("{}@nowhere.org", unique("x")), "password": "wrong password!!"}))
        .await
        .unwrap();
    assert_eq!(
        problem(&wrong, 401),
        problem(&unknown, 401),
        "same body for both"
    );
    wait_audit(&c, "action = 'login' AND outcome = 'failure'").await;

    // The registration signed the admin in; a login starts another session.
    let login = http
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"email": c.email, "password": c.password}),
        )
        .await
        .unwrap();
    assert_eq!(login.status, 200, "{}", login.text());
    let login = login.json();
    assert_ne!(
        login["refresh_token"].as_str(),
        Some(c.refresh_token.as_str())
    );
    for token in [login["access_token"].as_str().unwrap(), c.token.as_str()] {
        let r = http.get("/api/v1/patients", Some(token)).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    wait_audit(&c, "action = 'register' AND outcome = 'success'").await;
    // Both sessions are in the trail (they are written as they start).
    let sessions = wait_audit(&c, "action = 'login' AND outcome = 'success'").await;
    assert_eq!(
        sessions.len(),
        2,
        "the registration's session and the login's"
    );

    // Rotation: the new refresh token works once; reusing the old one revokes the family.
    let r1 = http
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refresh_token": c.refresh_token}),
        )
        .await
        .unwrap();
    assert_eq!(r1.status, 200, "{}", r1.text());
    let r1 = r1.json();
    assert_eq!(r1["token_type"], "Bearer");
    assert!(r1["expires_in"].as_i64().unwrap() > 0);
    let fresh = r1["access_token"].as_str().unwrap();
    assert_eq!(
        http.get("/api/v1/patients", Some(fresh))
            .await
            .unwrap()
            .status,
        200
    );
    let reuse = http
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refresh_token": c.refresh_token}),
        )
        .await
        .unwrap();
    problem(&reuse, 401);
    let after = http
        .post(
            "/api/v1/auth/refresh",
            None,
            &json!({"refresh_token": r1["refresh_token"]}),
        )
        .await
        .unwrap();
    problem(&after, 401);
    // A refresh token is not an access token.
    problem(
        &http
            .get(
                "/api/v1/patients",
                Some(r1["refresh_token"].as_str().unwrap()),
            )
            .await
            .unwrap(),
        401,
    );

    // Logout revokes.
    let login = http
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"email": c.email, "password": c.password}),
        )
        .await
        .unwrap()
        .json();
    let out = http
        .post(
            "/api/v1/auth/logout",
            None,
            &json!({"refresh_token": login["refresh_token"]}),
        )
        .await
        .unwrap();
    assert_eq!(out.status, 204);
    problem(
        &http
            .post(
                "/api/v1/auth/refresh",
                None,
                &json!({"refresh_token": login["refresh_token"]}),
            )
            .await
            .unwrap(),
        401,
    );

    // Repeated failures: 429 with retry-after, even for the right password.
    let mut throttled = None;
    for _ in 0..8 {
        let r = http
            .post(
                "/api/v1/auth/login",
                None,
                &json!({"email": c.email, "password": "still wrong!!"}),
            )
            .await
            .unwrap();
        if r.status == 429 {
            throttled = Some(r);
            break;
        }
    }
    let t = throttled.expect("throttled after repeated failures");
    problem(&t, 429);
    assert!(t.header("retry-after").unwrap().parse::<u32>().unwrap() > 0);
    let right = http
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"email": c.email, "password": c.password}),
        )
        .await
        .unwrap();
    problem(&right, 429);
}

#[tokio::test]
async fn workers_refuse_requests_that_did_not_come_through_a_gateway() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    // Connected as a gateway is (its client certificate under mutual TLS), but
    // without a gateway's signature on the request.
    let worker = stack().worker_client(&c.region).unwrap();
    let direct = worker
        .get("/api/v1/patients", Some(&c.token))
        .await
        .unwrap();
    problem(&direct, 403);
    let now = common::token::now_secs().to_string();
    let auth = format!("Bearer {}", c.token);
    let forged = worker
        .send(
            Method::GET,
            "/api/v1/patients",
            &[
                ("authorization", auth.as_str()),
                ("x-medicalpro-timestamp", now.as_str()),
                ("x-medicalpro-client-ip", "1.2.3.4"),
                ("x-request-id", "forged"),
                ("x-medicalpro-signature", "00ff"),
            ],
            None,
        )
        .await
        .unwrap();
    problem(&forged, 403);
    let provision = worker
        .post(
            &format!("/internal/v1/clinics/{}/provision", c.id),
            None,
            &json!({}),
        )
        .await
        .unwrap();
    problem(&provision, 403);
}

#[tokio::test]
async fn operations_endpoints_request_ids_and_openapi() {
    let _turn = turn();
    let http = http();
    let doc = http.get("/api/v1/openapi.json", None).await.unwrap();
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/patients",
        "/api/v1/patients/{id}",
        "/api/v1/auth/register",
        "/api/v1/auth/login",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let sane = http
        .send(
            Method::GET,
            "/api/v1/openapi.json",
            &[("x-request-id", "abc-123")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(sane.header("x-request-id"), Some("abc-123"));
    let insane = http
        .send(
            Method::GET,
            "/nowhere",
            &[("x-request-id", "bad id with spaces")],
            None,
        )
        .await
        .unwrap();
    let generated = insane.header("x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok());
    assert_eq!(
        insane.header("content-type"),
        Some("application/problem+json")
    );

    let s = stack();
    for addr in [s.gateway.admin_addr, s.regions[0].worker.admin_addr] {
        assert_eq!(devstack::stack::http_status(addr, "/healthz"), Some(200));
        assert_eq!(devstack::stack::http_status(addr, "/readyz"), Some(200));
    }
    let metrics = devstack::Http::new(&format!("http://{}", s.gateway.admin_addr))
        .get("/metrics", None)
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("medicalpro_http_request_duration_seconds"),
        "{metrics}"
    );
    let worker_metrics = devstack::Http::new(&format!("http://{}", s.regions[0].worker.admin_addr))
        .get("/metrics", None)
        .await
        .unwrap()
        .text();
    assert!(
        worker_metrics.contains("medicalpro_clinic_pools_open"),
        "{worker_metrics}"
    );
}

#[tokio::test]
async fn clinic_pools_grow_under_load_then_shrink_to_warm_then_close() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let p = create_patient(&http, &c, patient_body("Pool", "Load")).await;
    let path = format!("/api/v1/patients/{}", p["id"].as_str().unwrap());
    let server = &stack().region(&c.region).unwrap().server;
    let admin = server.connect("postgres").await.unwrap();
    let role = format!("medicalpro_clinic_{}", c.id.replace('-', ""));
    let count = || {
        let admin = &admin;
        let role = role.clone();
        async move {
            admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
                    &[&role],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    let mut peak = 0;
    for _ in 0..5 {
        let burst: Vec<_> = (0..24)
            .map(|_| {
                let http = http.clone();
                let path = path.clone();
                let token = c.token.clone();
                tokio::spawn(async move { http.get(&path, Some(&token)).await.unwrap().status })
            })
            .collect();
        for b in burst {
            assert_eq!(b.await.unwrap(), 200);
        }
        peak = peak.max(count().await);
    }
    assert!(peak > 2 && peak <= 10, "peak {peak}");
    // Idle connections above the two warm ones go after the idle timeout (1 s here)…
    let mut trimmed = false;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if count().await <= 2 {
            trimmed = true;
            break;
        }
    }
    assert!(trimmed, "pool not trimmed to its warm minimum");
    // …and a quiet clinic's pool closes entirely (4 s here).
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if count().await == 0 {
            // It reopens on the next request.
            assert_eq!(http.get(&path, Some(&c.token)).await.unwrap().status, 200);
            return;
        }
    }
    panic!("quiet clinic pool was not closed");
}

#[tokio::test]
async fn staff_neither_see_nor_set_restricted_fields() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let p = create_patient(&http, &c, patient_body("Minimum", "Necessary")).await;
    let path = format!("/api/v1/patients/{}", p["id"].as_str().unwrap());
    let tokens = stack().tokens().unwrap();
    let token_for = |role| {
        tokens
            .issue(c.user_id.parse().unwrap(), c.id.parse().unwrap(), role, 1)
            .unwrap()
            .0
    };
    let staff = token_for(common::token::Role::Staff);
    let practitioner = token_for(common::token::Role::Practitioner);

    let seen = http.get(&path, Some(&staff)).await.unwrap().json();
    assert_eq!(seen["last_name"], "Necessary");
    assert!(seen.get("ssn").is_none(), "{seen}");
    let listed = http
        .get("/api/v1/patients", Some(&staff))
        .await
        .unwrap()
        .json();
    assert!(listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p.get("ssn").is_none()));
    problem(
        &http
            .get("/api/v1/patients?ssn=180027512345678", Some(&staff))
            .await
            .unwrap(),
        403,
    );
    let mut with_ssn = patient_body("Staff", "Made");
    with_ssn["ssn"] = "2 99 99".into();
    problem(
        &http
            .post("/api/v1/patients", Some(&staff), &with_ssn)
            .await
            .unwrap(),
        403,
    );
    // Staff replacing a patient leaves the ssn as it was.
    let body = json!({"first_name": "Minimum", "last_name": "Renamed"});
    let put = http
        .json(Method::PUT, &path, Some(&staff), Some(&body))
        .await
        .unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
    let full = http.get(&path, Some(&practitioner)).await.unwrap().json();
    assert_eq!(full["last_name"], "Renamed");
    assert_eq!(full["ssn"], "1 80 02 75 123 456 78");
    wait_audit(&c, "action = 'create' AND outcome = 'rejected'").await;
}

#[tokio::test]
async fn clinic_admins_manage_their_users_and_disabled_users_are_locked_out() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let other = register(&http, None).await;
    let email = format!("{}@clinic.example", unique("staff"));
    let password = "staff member password";
    let body = json!({"email": email, "password": password, "role": "staff"});
    let made = http
        .post("/api/v1/users", Some(&c.token), &body)
        .await
        .unwrap();
    assert_eq!(made.status, 201, "{}", made.text());
    let staff_id = made.json()["id"].as_str().unwrap().to_owned();
    problem(
        &http
            .post("/api/v1/users", Some(&c.token), &body)
            .await
            .unwrap(),
        409,
    );
    for bad in [
        json!({"email": "x", "password": password, "role": "staff"}),
        json!({"email": "a@b.org", "password": "short", "role": "staff"}),
        json!({"email": "a@b.org", "password": password, "role": "owner"}),
        json!({"email": "a@b.org", "password": password, "role": "staff", "company_id": other.id}),
    ] {
        problem(
            &http
                .post("/api/v1/users", Some(&c.token), &bad)
                .await
                .unwrap(),
            400,
        );
    }
    let users = http
        .get("/api/v1/users", Some(&c.token))
        .await
        .unwrap()
        .json();
    assert_eq!(users["data"].as_array().unwrap().len(), 2);
    let theirs = http
        .get("/api/v1/users", Some(&other.token))
        .await
        .unwrap()
        .json();
    assert_eq!(
        theirs["data"].as_array().unwrap().len(),
        1,
        "never another clinic's users"
    );

    // The staff member logs in with their role, and cannot manage users.
    let login = http
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"email": email, "password": password}),
        )
        .await
        .unwrap();
    assert_eq!(login.status, 200);
    let login = login.json();
    let staff_token = login["access_token"].as_str().unwrap().to_owned();
    problem(
        &http.get("/api/v1/users", Some(&staff_token)).await.unwrap(),
        403,
    );
    problem(
        &http
            .get("/api/v1/audit-logs", Some(&staff_token))
            .await
            .unwrap(),
        403,
    );
    assert_eq!(
        http.get("/api/v1/patients", Some(&staff_token))
            .await
            .unwrap()
            .status,
        200
    );

    // Another clinic's admin cannot touch them; nobody disables themselves.
    problem(
        &http
            .post(
                &format!("/api/v1/users/{staff_id}/disable"),
                Some(&other.token),
                &json!({}),
            )
            .await
            .unwrap(),
        404,
    );
    problem(
        &http
            .post(
                &format!("/api/v1/users/{}/disable", c.user_id),
                Some(&c.token),
                &json!({}),
            )
            .await
            .unwrap(),
        403,
    );

    // Disabled: no login, no refresh.
    let disabled = http
        .post(
            &format!("/api/v1/users/{staff_id}/disable"),
            Some(&c.token),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(disabled.json()["disabled"], true);
    problem(
        &http
            .post(
                "/api/v1/auth/login",
                None,
                &json!({"email": email, "password": password}),
            )
            .await
            .unwrap(),
        401,
    );
    problem(
        &http
            .post(
                "/api/v1/auth/refresh",
                None,
                &json!({"refresh_token": login["refresh_token"]}),
            )
            .await
            .unwrap(),
        401,
    );
    let enabled = http
        .post(
            &format!("/api/v1/users/{staff_id}/enable"),
            Some(&c.token),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(enabled.json()["disabled"], false);
    assert_eq!(
        http.post(
            "/api/v1/auth/login",
            None,
            &json!({"email": email, "password": password})
        )
        .await
        .unwrap()
        .status,
        200
    );
    wait_audit(
        &c,
        &format!("resource = 'users' AND action = 'disable' AND resource_id = '{staff_id}'"),
    )
    .await;
}
