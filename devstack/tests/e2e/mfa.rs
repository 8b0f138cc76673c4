//! Multi-factor sign-in for staff, end to end on the shared stack: codes computed
//! with `totp-rs` from the secret an enrolment shows, as an authenticator app
//! would. Enrolment and confirmation, the sign-in challenge and its second step,
//! replayed codes and recovery codes refused the second time, wrong codes
//! throttled with the password's attempts, switching it off, an admin's reset and
//! a clinic that requires a second factor (users without one enrol at sign-in).

use crate::support::*;
use devstack::{Http, Reply};
use http::Method;
use serde_json::{json, Value};
use totp_rs::{Algorithm, Secret, TOTP};

/// The code of `secret` (base32) `steps` time steps from now.
fn code(secret: &str, steps: i64) -> String {
    let totp = TOTP::new(
        Algorithm::SHA1,
        6,
        1,
        30,
        Secret::Encoded(secret.to_owned()).to_bytes().unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    totp.generate((now + steps * 30) as u64)
}

async fn call(http: &Http, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
    http.json(Method::POST, path, token, body.as_ref())
        .await
        .unwrap()
}

/// Enrols and confirms `token`'s user; the secret, the code used, and the
/// recovery codes.
async fn enrol(http: &Http, token: &str) -> (String, String, Vec<String>) {
    let enrolment = status(
        &call(http, "/api/v1/auth/mfa/enroll", Some(token), None).await,
        200,
    );
    let secret = enrolment["secret"].as_str().unwrap().to_owned();
    let uri = enrolment["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/MedicalPro:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    // A wrong code does not confirm.
    problem(
        &call(
            http,
            "/api/v1/auth/mfa/confirm",
            Some(token),
            Some(json!({"code": wrong(&secret)})),
        )
        .await,
        401,
    );
    let used = code(&secret, 0);
    let confirmed = status(
        &call(
            http,
            "/api/v1/auth/mfa/confirm",
            Some(token),
            Some(json!({"code": used})),
        )
        .await,
        200,
    );
    assert_eq!(confirmed["mfa_enabled"], true);
    assert!(confirmed.get("access_token").is_none(), "{confirmed}");
    let recovery: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);
    // Enrolling again while it is on is refused.
    problem(
        &call(http, "/api/v1/auth/mfa/enroll", Some(token), None).await,
        409,
    );
    (secret, used, recovery)
}

/// A 6-digit code that is none of `secret`'s current ones.
fn wrong(secret: &str) -> String {
    let valid = [code(secret, -1), code(secret, 0), code(secret, 1)];
    (0..)
        .map(|n: u32| format!("{:06}", (n * 7919 + 123_456) % 1_000_000))
        .find(|c| !valid.contains(c))
        .unwrap()
}

async fn login(http: &Http, email: &str, password: &str) -> Reply {
    call(
        http,
        "/api/v1/auth/login",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
}

/// Signs in with the password: the challenge's `mfa_token`.
async fn challenge(http: &Http, email: &str, password: &str, enrol: bool) -> String {
    let answer = status(&login(http, email, password).await, 200);
    assert_eq!(answer["mfa_required"], true, "{answer}");
    assert_eq!(answer["mfa_enrollment_required"], enrol, "{answer}");
    assert!(answer.get("access_token").is_none(), "{answer}");
    answer["mfa_token"].as_str().unwrap().to_owned()
}

async fn verify(http: &Http, body: Value) -> Reply {
    call(http, "/api/v1/auth/mfa/verify", None, Some(body)).await
}

/// Takes back the sign-in attempts this test's failures left on the shared
/// stack's loopback address, so other tests' sign-ins are not throttled by them.
async fn forget_attempts(email: &str, failures: i32) {
    let central = central_db().await;
    central
        .execute(
            "DELETE FROM auth_throttle WHERE key LIKE 'login:acct%' AND key LIKE '%' || $1 || '%'",
            &[&email.to_lowercase()],
        )
        .await
        .unwrap();
    central
        .execute(
            "UPDATE auth_throttle SET hits = greatest(hits - $1, 0) WHERE key LIKE 'login:addr:%'",
            &[&failures],
        )
        .await
        .unwrap();
}

async fn disable(http: &Http, token: &str, code: String) -> Reply {
    call(
        http,
        "/api/v1/auth/mfa/disable",
        Some(token),
        Some(json!({"code": code})),
    )
    .await
}

async fn reset(http: &Http, user: &str, token: &str) -> Reply {
    call(
        http,
        &format!("/api/v1/users/{user}/mfa/reset"),
        Some(token),
        None,
    )
    .await
}

#[tokio::test]
async fn sign_in_with_a_code_once_recovery_once_and_guessing_throttled() {
    let _turn = turn();
    let http = http();
    let clinic = register(&http, None).await;
    // Without a token (or a sign-in's `mfa_token`) nothing enrols.
    for path in [
        "/api/v1/auth/mfa/enroll",
        "/api/v1/auth/mfa/confirm",
        "/api/v1/auth/mfa/disable",
    ] {
        problem(&call(&http, path, None, None).await, 401);
    }
    problem(
        &call(
            &http,
            "/api/v1/auth/mfa/confirm",
            None,
            Some(json!({"code": "123456"})),
        )
        .await,
        401,
    );
    let (secret, used, recovery) = enrol(&http, &clinic.token).await;
    let mut failures = 1; // the wrong code at confirmation

    // The password alone no longer signs in: a challenge instead of tokens.
    let token = challenge(&http, &clinic.email, &clinic.password, false).await;
    // Registering the account again signs in no further than a login does.
    let again = status(
        &call(
            &http,
            "/api/v1/auth/register",
            None,
            Some(
                json!({"clinic_name": "Again", "email": clinic.email, "password": clinic.password}),
            ),
        )
        .await,
        201,
    );
    assert_eq!(again["mfa_required"], true, "{again}");
    assert!(again.get("access_token").is_none(), "{again}");
    // The code that confirmed the enrolment is used up.
    problem(
        &verify(&http, json!({"mfa_token": token, "code": used})).await,
        401,
    );
    failures += 1;
    // Neither a code nor a recovery code, or both: 400.
    problem(&verify(&http, json!({"mfa_token": token})).await, 400);
    // The next step's code (one step of skew) signs in, once.
    let next = code(&secret, 1);
    let tokens = status(
        &verify(&http, json!({"mfa_token": token, "code": next})).await,
        200,
    );
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap();
    status(
        &http.get("/api/v1/patients", Some(access)).await.unwrap(),
        200,
    );
    // The challenge is used up, and the code too.
    problem(
        &verify(&http, json!({"mfa_token": token, "code": next})).await,
        401,
    );
    let token = challenge(&http, &clinic.email, &clinic.password, false).await;
    problem(
        &verify(&http, json!({"mfa_token": token, "code": next})).await,
        401,
    );
    failures += 1;

    // A recovery code works once (typed in capitals without its dash, too).
    let typed = recovery[3].to_uppercase().replace('-', "");
    status(
        &verify(&http, json!({"mfa_token": token, "recovery_code": typed})).await,
        200,
    );
    let token = challenge(&http, &clinic.email, &clinic.password, false).await;
    problem(
        &verify(
            &http,
            json!({"mfa_token": token, "recovery_code": recovery[3]}),
        )
        .await,
        401,
    );
    failures += 1;

    // Every event is in the clinic's audit trail.
    for (action, outcome) in [
        ("mfa_enroll", "success"),
        ("mfa_confirm", "failure"),
        ("mfa_confirm", "success"),
        ("login", "mfa_required"),
        ("mfa_verify", "success"),
        ("mfa_verify", "recovery_code"),
        ("mfa_verify", "failure"),
    ] {
        let rows = wait_audit(
            &clinic,
            &format!("action = '{action}' AND outcome = '{outcome}'"),
        )
        .await;
        assert_eq!(
            rows[0]
                .get::<_, Option<uuid::Uuid>>(6)
                .map(|u| u.to_string()),
            Some(clinic.user_id.clone())
        );
    }

    // Guessing codes counts with the password's attempts: 429 with retry-after
    // (5 per account and address by default), and then even the right code waits.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let r = verify(&http, json!({"mfa_token": token, "code": wrong(&secret)})).await;
        failures += 1;
        statuses.push(r.status.as_u16());
        if r.status == 429 {
            problem(&r, 429);
            assert!(r.header("retry-after").is_some());
            break;
        }
        problem(&r, 401);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let right = verify(&http, json!({"mfa_token": token, "code": code(&secret, 0)})).await;
    problem(&right, 429);
    failures += 1;
    forget_attempts(&clinic.email, failures).await;
}

#[tokio::test]
async fn switch_off_admin_reset_and_a_clinic_that_requires_mfa() {
    let _turn = turn();
    let http = http();
    let clinic = register(&http, None).await;
    let admin = &clinic.token;

    // Switching it off takes a fresh code.
    let (secret, used, _) = enrol(&http, admin).await;
    problem(&disable(&http, admin, wrong(&secret)).await, 401);
    problem(&disable(&http, admin, used).await, 401);
    // Three failures so far: the wrong code at confirmation, two at switching off.
    let failures = 3;
    assert_eq!(disable(&http, admin, code(&secret, 1)).await.status, 204);
    status(&login(&http, &clinic.email, &clinic.password).await, 200);
    wait_audit(&clinic, "action = 'mfa_disable' AND outcome = 'success'").await;

    // A practitioner of the clinic.
    let email = format!("{}@clinic.example", unique("doctor"));
    let password = "another horse battery staple";
    let user = create(
        &http,
        &clinic,
        "users",
        json!({"email": email, "password": password, "role": "practitioner"}),
    )
    .await;
    let user_id = id(&user);
    let signed_in = status(&login(&http, &email, password).await, 200);
    let doctor = signed_in["access_token"].as_str().unwrap().to_owned();

    // The policy: anyone reads it, only an admin changes it.
    let policy = status(
        &http
            .get("/api/v1/clinic-security", Some(&doctor))
            .await
            .unwrap(),
        200,
    );
    assert_eq!(policy, json!({"mfa_required": false}));
    let require = json!({"mfa_required": true});
    problem(
        &http
            .json(
                Method::PATCH,
                "/api/v1/clinic-security",
                Some(&doctor),
                Some(&require),
            )
            .await
            .unwrap(),
        403,
    );
    let changed = status(
        &send(
            &http,
            &clinic,
            Method::PATCH,
            "/api/v1/clinic-security",
            Some(require.clone()),
        )
        .await,
        200,
    );
    assert_eq!(changed, require);
    wait_audit(
        &clinic,
        "action = 'require_mfa' AND resource = 'clinic_security'",
    )
    .await;

    // Without a factor, the sign-in must enrol first: its token enrols, and
    // confirming signs in. The token is no second factor by itself.
    let token = challenge(&http, &email, password, true).await;
    problem(
        &verify(&http, json!({"mfa_token": token, "code": "123456"})).await,
        401,
    );
    let enrolment = status(
        &call(
            &http,
            "/api/v1/auth/mfa/enroll",
            None,
            Some(json!({"mfa_token": token})),
        )
        .await,
        200,
    );
    let doctor_secret = enrolment["secret"].as_str().unwrap().to_owned();
    let confirmed = status(
        &call(
            &http,
            "/api/v1/auth/mfa/confirm",
            None,
            Some(json!({"mfa_token": token, "code": code(&doctor_secret, 0)})),
        )
        .await,
        200,
    );
    assert_eq!(confirmed["recovery_codes"].as_array().unwrap().len(), 10);
    let doctor = confirmed["access_token"].as_str().unwrap().to_owned();
    status(
        &http.get("/api/v1/patients", Some(&doctor)).await.unwrap(),
        200,
    );
    // The enrolment token is used up.
    problem(
        &call(
            &http,
            "/api/v1/auth/mfa/enroll",
            None,
            Some(json!({"mfa_token": token})),
        )
        .await,
        401,
    );
    // While the clinic requires it, it cannot be switched off.
    problem(
        &call(
            &http,
            "/api/v1/auth/mfa/disable",
            Some(&doctor),
            Some(json!({"code": code(&doctor_secret, 1)})),
        )
        .await,
        409,
    );
    challenge(&http, &email, password, false).await;
    // The admin, without a factor, enrols at its next sign-in too.
    challenge(&http, &clinic.email, &clinic.password, true).await;

    // An admin resets another user's factor, never its own; others may not.
    problem(&reset(&http, &clinic.user_id, &doctor).await, 403);
    problem(&reset(&http, &clinic.user_id, admin).await, 403);
    problem(
        &reset(&http, &uuid::Uuid::new_v4().to_string(), admin).await,
        404,
    );
    assert_eq!(reset(&http, &user_id, admin).await.status, 204);
    let rows = wait_audit(&clinic, "action = 'mfa_reset' AND resource = 'users'").await;
    assert_eq!(
        rows[0].get::<_, Option<uuid::Uuid>>(2).unwrap().to_string(),
        user_id
    );
    // Reset: the clinic still requires a factor, so the user enrols again.
    challenge(&http, &email, password, true).await;

    // Not required any more: the password alone signs in again.
    status(
        &send(
            &http,
            &clinic,
            Method::PATCH,
            "/api/v1/clinic-security",
            Some(json!({"mfa_required": false})),
        )
        .await,
        200,
    );
    let tokens = status(&login(&http, &email, password).await, 200);
    assert_eq!(tokens["token_type"], "Bearer", "{tokens}");
    forget_attempts(&clinic.email, failures).await;
    forget_attempts(&email, 0).await;
}
