//! Hostile input to the users and auth endpoints.

use super::*;

/// A distinct marker for values that must be found (or not) in the database.
pub(super) fn marker() -> String {
    format!("h{}", &Uuid::new_v4().simple().to_string()[..10])
}

/// How many rows of a central table hold `marker` in `column`.
pub(super) async fn central_count(
    central: &tokio_postgres::Client,
    table: &str,
    column: &str,
    marker: &str,
) -> i64 {
    central
        .query_one(
            format!("SELECT count(*) FROM {table} WHERE {column} LIKE '%' || $1 || '%'").as_str(),
            &[&marker],
        )
        .await
        .unwrap()
        .get(0)
}

/// Password rules: 12 to 128 characters; nothing else is promised about a NUL.
pub(super) fn password_verdict(probe: &Probe) -> Verdict {
    match probe.decoded() {
        Some(s) if (12..=128).contains(&s.chars().count()) => {
            if s.contains('\0') {
                Verdict::Either(s)
            } else {
                Verdict::Accept(s)
            }
        }
        _ => Verdict::Reject,
    }
}

pub(super) fn password_probes() -> Vec<Probe> {
    use Probe::{Raw, Str};
    vec![
        Str("SQL injection", "' OR '1'='1'; DROP TABLE users;--".into()),
        Str("NUL inside", "correct horse\u{0}battery".into()),
        Str("bidi and zero-width only", "\u{202E}\u{200B}".repeat(6)),
        Str("128 two-byte characters", "é".repeat(128)),
        Str("129 characters", "é".repeat(129)),
        Str("11 characters", "x".repeat(11)),
        Str("near the body limit", "x".repeat(1_000_000)),
        Raw("lone surrogate", r#""correct horse \ud800 battery""#, None),
    ]
}

/// Users and auth endpoints: e-mail, password, role, ids, login, registration,
/// refresh tokens and audit-trail filters, each with hostile values.
#[tokio::test]
pub(super) async fn hostile_users_and_auth_input() {
    let _turn = turn();
    let api = Api::new();
    let (other, _) = plant_foreign(&api, "eu-central").await;
    let owner = register(&api.http, Some("eu-west")).await;
    let token = Some(owner.token.as_str());
    let central = central_db().await;

    // New users: the e-mail address.
    for i in 0..email_probes("").len() {
        let mk = marker();
        let probe = email_probes(&mk).swap_remove(i);
        let expected = probe
            .decoded()
            .map_or(Verdict::Reject, |s| email_verdict(&s));
        let what = format!("POST users email ← {} ({expected:?})", probe.label());
        let body = json!({"email": PLACEHOLDER, "password": PASSWORD, "role": "staff"});
        let reply = api
            .send(
                token,
                Method::POST,
                "/api/v1/users",
                with_probe(&body, &probe),
            )
            .await;
        let stored = central_count(&central, "users", "email", &mk).await;
        match expected {
            Verdict::Accept(email) | Verdict::Either(email) if reply.status.is_success() => {
                api.check(
                    reply.status == 201 && reply.json()["email"] == email.as_str(),
                    || format!("{what}: {} {}", reply.status, snippet(&reply)),
                );
                api.check(stored == 1, || format!("{what}: {stored} rows"));
                login(&api, &probe.decoded().unwrap(), PASSWORD).await;
            }
            Verdict::Accept(_) => api.fail(format!("{what}: refused: {}", snippet(&reply))),
            _ => {
                api.check(reply.status == 400, || format!("{what}: {}", reply.status));
                api.check(stored == 0, || {
                    format!("{what}: refused, yet {stored} rows")
                });
            }
        }
    }
    // New users: the password, which must then open the account.
    for probe in password_probes() {
        let mk = marker();
        let email = format!("{mk}@clinic.example");
        let expected = password_verdict(&probe);
        let what = format!(
            "POST users password ← {} ({:?})",
            probe.label(),
            short(&format!("{expected:?}"))
        );
        let body = json!({"email": email, "password": PLACEHOLDER, "role": "staff"});
        let reply = api
            .send(
                token,
                Method::POST,
                "/api/v1/users",
                with_probe(&body, &probe),
            )
            .await;
        let stored = central_count(&central, "users", "email", &mk).await;
        match expected {
            Verdict::Accept(password) | Verdict::Either(password) if reply.status.is_success() => {
                api.check(reply.status == 201 && stored == 1, || {
                    format!("{what}: {}", reply.status)
                });
                login(&api, &email, &password).await;
            }
            Verdict::Accept(_) => api.fail(format!("{what}: refused: {}", snippet(&reply))),
            _ => {
                api.check(reply.status == 400, || format!("{what}: {}", reply.status));
                api.check(stored == 0, || {
                    format!("{what}: refused, yet {stored} rows")
                });
            }
        }
    }
    // New users: the role.
    for role in [
        "admin' --",
        "ADMIN",
        "admin\u{0}",
        "owner",
        "",
        "staff OR 1=1",
    ] {
        let mk = marker();
        let body =
            json!({"email": format!("{mk}@clinic.example"), "password": PASSWORD, "role": role});
        let reply = api.post(token, "/api/v1/users", body).await;
        api.check(reply.status == 400, || {
            format!("POST users role {role:?}: {}", reply.status)
        });
        let stored = central_count(&central, "users", "email", &mk).await;
        api.check(stored == 0, || {
            format!("POST users role {role:?}: {stored} rows")
        });
    }
    let listed = api.get(token, "/api/v1/users").await;
    api.check(listed.status == 200, || {
        format!("GET users: {}", listed.status)
    });

    // User ids in paths; another clinic's user is not found, and stays enabled.
    let mut ids: Vec<(&str, String, bool)> = vec![
        ("another clinic's user", other.user_id.clone(), true),
        ("missing", Uuid::now_v7().to_string(), true),
    ];
    ids.extend(
        query_probes()
            .into_iter()
            .map(|p| (p.label, p.encoded, false)),
    );
    for (label, id, exact) in &ids {
        for action in ["disable", "enable"] {
            let reply = api
                .post(token, &format!("/api/v1/users/{id}/{action}"), json!({}))
                .await;
            let status = reply.status.as_u16();
            api.check(status == 404 || (!exact && status == 400), || {
                format!("POST users/<{label}>/{action}: {status}")
            });
        }
    }
    let other_id: Uuid = other.user_id.parse().unwrap();
    let disabled: bool = central
        .query_one(
            "SELECT disabled_at IS NOT NULL FROM users WHERE id = $1",
            &[&other_id],
        )
        .await
        .unwrap()
        .get(0);
    api.check(!disabled, || "another clinic's user was disabled".into());

    // Logins: refused (400/401), never a session. Few reach the throttle (it
    // counts failures per client IP), so the rest of the binary can still log in.
    let logins: Vec<(&str, Body)> = vec![
        (
            "e-mail with an SQL comment",
            Body::Json(
                json!({"email": format!("{}' --", owner.email), "password": owner.password}),
            ),
        ),
        (
            "tautologies",
            Body::Json(json!({"email": "' OR '1'='1", "password": "' OR '1'='1"})),
        ),
        (
            "LIKE wildcards",
            Body::Json(json!({"email": "%", "password": "_"})),
        ),
        (
            "NUL in the e-mail",
            Body::Json(json!({"email": "a\u{0}@example.org", "password": PASSWORD})),
        ),
        (
            "real e-mail, then NUL",
            Body::Json(
                json!({"email": format!("{}\u{0}", owner.email), "password": owner.password}),
            ),
        ),
        (
            "very long e-mail",
            Body::Json(json!({"email": "x".repeat(300), "password": PASSWORD})),
        ),
        (
            "129-character password",
            Body::Json(json!({"email": owner.email, "password": "é".repeat(129)})),
        ),
        (
            "lone surrogate",
            Body::Raw(r#"{"email":"\ud800","password":"x"}"#.into()),
        ),
        (
            "wrong types",
            Body::Json(json!({"email": 1, "password": []})),
        ),
    ];
    for (label, body) in logins {
        let reply = api
            .send(None, Method::POST, "/api/v1/auth/login", body)
            .await;
        api.check(matches!(reply.status.as_u16(), 400 | 401), || {
            format!("login ← {label}: {} {}", reply.status, snippet(&reply))
        });
    }

    // Registration: refused values store nothing; a hostile but legal clinic name
    // and e-mail are stored as sent (trimmed; the e-mail lower-cased).
    type Refusal = (&'static str, &'static str, fn(&str) -> Probe);
    let refusals: Vec<Refusal> = vec![
        ("clinic_name", "NUL", |m| {
            Probe::Str("", format!("Clinic\u{0}{m}"))
        }),
        ("clinic_name", "201 characters", |m| {
            Probe::Str("", format!("{m}{}", "x".repeat(201)))
        }),
        ("clinic_name", "blank", |_| Probe::Str("", "   ".into())),
        ("clinic_name", "lone surrogate", |_| {
            Probe::Raw("", r#""\ud800""#, None)
        }),
        ("email", "NUL", |m| {
            Probe::Str("", format!("{m}\u{0}@example.org"))
        }),
        ("email", "tautology", |m| {
            Probe::Str("", format!("' OR '1'='1 {m}"))
        }),
        ("password", "11 characters", |_| {
            Probe::Str("", "x".repeat(11))
        }),
        ("password", "129 characters", |_| {
            Probe::Str("", "é".repeat(129))
        }),
        ("region", "tautology", |_| {
            Probe::Str("", "eu-west' OR '1'='1".into())
        }),
        ("region", "NUL", |_| Probe::Str("", "eu-west\u{0}".into())),
        ("region", "300 characters", |_| {
            Probe::Str("", "x".repeat(300))
        }),
        ("region", "lone surrogate", |_| {
            Probe::Raw("", r#""eu\ud800""#, None)
        }),
    ];
    for (field, label, make) in refusals {
        let mk = marker();
        let mut body = json!({"clinic_name": format!("Clinic {mk}"), "email": format!("{mk}@clinic.example"), "password": PASSWORD});
        body[field] = json!(PLACEHOLDER);
        let reply = api
            .send(
                None,
                Method::POST,
                "/api/v1/auth/register",
                with_probe(&body, &make(&mk)),
            )
            .await;
        let what = format!("register {field} ← {label}");
        api.check(reply.status == 400, || {
            format!("{what}: {} {}", reply.status, snippet(&reply))
        });
        let companies = central_count(&central, "companies", "name", &mk).await;
        let users = central_count(&central, "users", "email", &mk).await;
        api.check(companies + users == 0, || {
            format!("{what}: refused, yet stored")
        });
    }
    let mk = marker();
    let name = format!("  Robert'); DROP TABLE companies;-- \u{202E}{mk}\u{200B}%_  ");
    let email = format!("O'Hara+%_{mk}@Example.org");
    let password = "' OR '1'='1'; --pass";
    let body = json!({"clinic_name": name, "email": email, "password": password});
    let reply = api.post(None, "/api/v1/auth/register", body).await;
    if reply.status == 201 {
        let clinic: Uuid = reply.json()["clinic_id"].as_str().unwrap().parse().unwrap();
        let row = central
            .query_one("SELECT c.name, u.email FROM companies c JOIN users u ON u.company_id = c.id WHERE c.id = $1", &[&clinic])
            .await
            .unwrap();
        api.check(row.get::<_, String>(0) == name.trim(), || {
            "register: the name changed".into()
        });
        api.check(row.get::<_, String>(1) == email.to_lowercase(), || {
            "register: the e-mail changed".into()
        });
        login(&api, &email, password).await;
    } else {
        api.fail(format!(
            "register with a hostile but legal name: {} {}",
            reply.status,
            snippet(&reply)
        ));
    }

    // Refresh tokens: refused (400/401); logout answers 204 whatever the token.
    for probe in text_probes(200) {
        let body = with_probe(&json!({"refresh_token": PLACEHOLDER}), &probe);
        let reply = api
            .send(None, Method::POST, "/api/v1/auth/refresh", body)
            .await;
        api.check(matches!(reply.status.as_u16(), 400 | 401), || {
            format!("refresh ← {}: {}", probe.label(), reply.status)
        });
        let body = with_probe(&json!({"refresh_token": PLACEHOLDER}), &probe);
        let reply = api
            .send(None, Method::POST, "/api/v1/auth/logout", body)
            .await;
        let valid_json = probe.decoded().is_some();
        api.check(reply.status == if valid_json { 204 } else { 400 }, || {
            format!("logout ← {}: {}", probe.label(), reply.status)
        });
    }

    // Audit-trail filters.
    let keys = [
        "from",
        "to",
        "action",
        "resource",
        "outcome",
        "user_id",
        "resource_id",
        "cursor",
        "limit",
        "clinic_id",
    ];
    for key in keys {
        for p in query_probes() {
            let path = format!("/api/v1/audit-logs?{key}={}", p.encoded);
            let reply = api.get(token, &path).await;
            let status = reply.status.as_u16();
            let refused = p.decoded.contains('\0') || p.decoded.len() > 200;
            let allowed: &[u16] = match (refused, key == "clinic_id") {
                (true, _) => &[400],
                (false, true) => &[200],
                (false, false) => &[200, 400],
            };
            let what = format!("GET audit-logs?{key}= ← {}", p.label);
            api.check(allowed.contains(&status), || format!("{what}: {status}"));
            if status == 200 && ["action", "resource", "outcome"].contains(&key) {
                let entries = reply.json()["data"].as_array().cloned().unwrap_or_default();
                api.check(entries.iter().all(|e| e[key] == p.decoded.as_str()), || {
                    format!("{what}: entries that do not match")
                });
            }
        }
    }
    api.finish("hostile users and auth input");
}
