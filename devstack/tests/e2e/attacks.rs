//! Attacks on the running stack, as a holder of a free account, a stolen or
//! revoked token, a script or a slow socket would try them: each test sends the
//! attack, checks the refusal, and checks that nothing changed or was lost.
//!
//! The module's stack ([`SETUP`]) trusts `X-Forwarded-For` from loopback (as behind a load
//! balancer), so each test speaks from client addresses of its own; sign-up and
//! sign-in limits are low, as an operator would set them.

use crate::support::*;
use devstack::Stack;
use devstack::{Http, Reply};
use http::Method;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const SIGNUPS_PER_ADDRESS: usize = 5;

/// Trusts `X-Forwarded-For` from loopback; sign-up and sign-in limits as an
/// operator would set them; exports cut off after 2 s without reading. Role
/// statements are logged, so a test can look for secrets in them.
static SETUP: Setup = Setup {
    name: "attacks",
    env: &[
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("SIGNUPS_PER_ADDRESS_PER_HOUR", "5"),
        ("LOGIN_ATTEMPTS_PER_ACCOUNT_ADDRESS", "5"),
        ("LOGIN_ATTEMPTS_PER_ADDRESS", "30"),
        ("EXPORT_IDLE_SECS", "2"),
    ],
    server_conf: &[("log_statement", "ddl")],
};

fn stack() -> Arc<Stack> {
    stack_of(&SETUP)
}

/// A client address no other test uses (IPv4 from TEST-NET-2).
fn address() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("198.51.{}.{}", 100 + n / 250, 1 + n % 250)
}

fn gateway() -> Http {
    Http::new(&stack().gateway_url())
}

/// Sends JSON as from `from` (through the trusted proxy header).
async fn send(
    http: &Http,
    from: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("x-forwarded-for", from)];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let body = body.map(|b| bytes::Bytes::from(serde_json::to_vec(b).unwrap()));
    http.send(method, path, &headers, body).await.unwrap()
}

async fn post(http: &Http, from: &str, path: &str, token: Option<&str>, body: Value) -> Reply {
    send(http, from, Method::POST, path, token, Some(&body)).await
}

async fn get(http: &Http, from: &str, path: &str, token: Option<&str>) -> Reply {
    send(http, from, Method::GET, path, token, None).await
}

fn retry_after(r: &Reply) -> u64 {
    r.header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no retry-after on {} {}", r.status, r.text()))
}

/// Registers a clinic from a fresh address and signs its admin in.
async fn clinic() -> Clinic {
    let http = gateway();
    let from = address();
    let email = format!("{}@clinic.example", unique("admin"));
    let password = "correct horse battery staple".to_owned();
    let body = json!({"clinic_name": unique("Clinic"), "email": email, "password": password});
    let reg = post(&http, &from, "/api/v1/auth/register", None, body).await;
    assert_eq!(reg.status, 201, "register: {}", reg.text());
    // Registration answers signed in (a session recorded as a `login`).
    let reg = reg.json();
    let tokens = reg.clone();
    Clinic {
        id: reg["clinic_id"].as_str().unwrap().to_owned(),
        user_id: reg["user_id"].as_str().unwrap().to_owned(),
        region: reg["region"].as_str().unwrap().to_owned(),
        email,
        password,
        token: tokens["access_token"].as_str().unwrap().to_owned(),
        refresh_token: tokens["refresh_token"].as_str().unwrap().to_owned(),
    }
}

async fn sign_in(http: &Http, from: &str, email: &str, password: &str) -> Value {
    let r = post(
        http,
        from,
        "/api/v1/auth/login",
        None,
        json!({"email": email, "password": password}),
    )
    .await;
    assert_eq!(r.status, 200, "login: {}", r.text());
    r.json()
}

/// A user of the clinic with `role`, signed in: (id, email, access token, refresh).
async fn user(c: &Clinic, role: &str) -> (String, String, String, String) {
    let http = gateway();
    let from = address();
    let email = format!("{}@clinic.example", unique(role));
    let password = "another long password";
    let made = post(
        &http,
        &from,
        "/api/v1/users",
        Some(&c.token),
        json!({"email": email, "password": password, "role": role}),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    let tokens = sign_in(&http, &from, &email, password).await;
    (
        made.json()["id"].as_str().unwrap().to_owned(),
        email,
        tokens["access_token"].as_str().unwrap().to_owned(),
        tokens["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// Polls `probe` until it answers `want`; the time it took (at most `within`).
async fn answers_within<F, Fut>(want: u16, within: Duration, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    let started = Instant::now();
    loop {
        let got = probe().await;
        if got == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still {got} after {:?}, not {want}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn central_count(sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
    stack()
        .central_db()
        .await
        .query_one(sql, params)
        .await
        .unwrap()
        .get(0)
}

// ---------------------------------------------------------------------------
// 1. Revocation at once
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_admin_loses_every_power_within_a_second_everywhere() {
    let _stack = hold(&SETUP);
    let stack = stack();
    let owner = clinic().await;
    let (b_id, _, b_token, b_refresh) = user(&owner, "admin").await;
    let second = stack.add_gateway("gateway-revocation").unwrap();
    let g2 = Http::new(&second.url());
    let from = address();
    assert_eq!(
        get(&g2, &from, "/api/v1/patients", Some(&b_token))
            .await
            .status,
        200
    );

    let disabled = post(
        &gateway(),
        &from,
        &format!("/api/v1/users/{b_id}/disable"),
        Some(&owner.token),
        json!({}),
    )
    .await;
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    // The change and its audit record committed together: the record is there now.
    let b_uuid: Uuid = b_id.parse().unwrap();
    let clinic_uuid: Uuid = owner.id.parse().unwrap();
    assert_eq!(
        central_count(
            "SELECT count(*) FROM audit_logs WHERE clinic_id = $1 AND action = 'disable' AND resource_id = $2",
            &[&clinic_uuid, &b_uuid],
        )
        .await,
        1
    );
    let g1 = gateway();
    let on_first = answers_within(401, Duration::from_secs(1), || async {
        get(&g1, &from, "/api/v1/patients", Some(&b_token))
            .await
            .status
            .as_u16()
    })
    .await;
    let on_second = answers_within(401, Duration::from_secs(1), || async {
        get(&g2, &from, "/api/v1/patients", Some(&b_token))
            .await
            .status
            .as_u16()
    })
    .await;
    let on_worker = answers_within(401, Duration::from_secs(1), || async {
        stack
            .signed_worker_get(&owner, &b_token, "/api/v1/patients")
            .await
            .status
            .as_u16()
    })
    .await;
    eprintln!(
        "revoked after: gateway {on_first:?}, second gateway {on_second:?}, worker {on_worker:?}"
    );

    // What the stolen admin token tried on 2026-12-03, now refused with nothing changed.
    let users_before = central_count(
        "SELECT count(*) FROM users WHERE company_id = $1",
        &[&clinic_uuid],
    )
    .await;
    problem(
        &post(
            &g1,
            &from,
            &format!("/api/v1/users/{b_id}/enable"),
            Some(&b_token),
            json!({}),
        )
        .await,
        401,
    );
    problem(
        &post(
            &g2,
            &from,
            "/api/v1/users",
            Some(&b_token),
            json!({"email": format!("{}@x.example", unique("evil")), "password": "a new admin password", "role": "admin"}),
        )
        .await,
        401,
    );
    problem(
        &get(&g1, &from, "/api/v1/patients", Some(&b_token)).await,
        401,
    );
    problem(
        &post(
            &g1,
            &from,
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": b_refresh}),
        )
        .await,
        401,
    );
    assert_eq!(
        central_count(
            "SELECT count(*) FROM users WHERE company_id = $1",
            &[&clinic_uuid]
        )
        .await,
        users_before
    );
    assert_eq!(
        central_count(
            "SELECT count(*) FROM users WHERE id = $1 AND disabled_at IS NOT NULL",
            &[&b_uuid]
        )
        .await,
        1,
        "still disabled"
    );
    // Every refusal of the revoked token is on the clinic's trail.
    stack
        .wait_audit(&owner, "action = 'access' AND outcome = 'revoked'")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_change_and_a_sign_out_everywhere_take_effect_at_once() {
    let _stack = hold(&SETUP);
    let owner = clinic().await;
    let http = gateway();
    let from = address();
    // Demoted: the admin token in hand stops; a new sign-in carries the new role.
    let (c_id, c_email, c_token, _) = user(&owner, "admin").await;
    let demoted = send(
        &http,
        &from,
        Method::PATCH,
        &format!("/api/v1/users/{c_id}"),
        Some(&owner.token),
        Some(&json!({"role": "staff"})),
    )
    .await;
    assert_eq!(demoted.status, 200, "{}", demoted.text());
    assert_eq!(demoted.json()["role"], "staff");
    answers_within(401, Duration::from_secs(1), || async {
        get(&http, &from, "/api/v1/users", Some(&c_token))
            .await
            .status
            .as_u16()
    })
    .await;
    let again = sign_in(&http, &from, &c_email, "another long password").await;
    let staff_token = again["access_token"].as_str().unwrap();
    problem(
        &get(&http, &from, "/api/v1/users", Some(staff_token)).await,
        403,
    );
    for bad in [
        json!({"role": "owner"}),
        json!({"role": "admin", "company_id": Uuid::nil()}),
    ] {
        let r = send(
            &http,
            &from,
            Method::PATCH,
            &format!("/api/v1/users/{c_id}"),
            Some(&owner.token),
            Some(&bad),
        )
        .await;
        problem(&r, 400);
    }

    // Signed out everywhere by itself: its access and refresh tokens stop.
    let (d_id, _, d_token, d_refresh) = user(&owner, "practitioner").await;
    let out = post(
        &http,
        &from,
        &format!("/api/v1/users/{d_id}/sign-out"),
        Some(&d_token),
        json!({}),
    )
    .await;
    assert_eq!(out.status, 200, "{}", out.text());
    answers_within(401, Duration::from_secs(1), || async {
        get(&http, &from, "/api/v1/patients", Some(&d_token))
            .await
            .status
            .as_u16()
    })
    .await;
    problem(
        &post(
            &http,
            &from,
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": d_refresh}),
        )
        .await,
        401,
    );
    // A non-admin signs out only itself.
    let (e_id, _, _, _) = user(&owner, "staff").await;
    problem(
        &post(
            &http,
            &from,
            &format!("/api/v1/users/{e_id}/sign-out"),
            Some(staff_token),
            json!({}),
        )
        .await,
        403,
    );
    let actions: Vec<String> = stack()
        .wait_audit(
            &owner,
            "resource = 'users' AND action IN ('change_role', 'sign_out')",
        )
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(actions.contains(&"change_role".to_owned()), "{actions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_changes_their_own_account_and_the_last_admin_stays() {
    let _stack = hold(&SETUP);
    let owner = clinic().await;
    let http = gateway();
    let from = address();
    let own = owner.user_id.clone();
    for (method, path, body) in [
        (
            Method::POST,
            format!("/api/v1/users/{own}/disable"),
            json!({}),
        ),
        (
            Method::POST,
            format!("/api/v1/users/{own}/enable"),
            json!({}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{own}"),
            json!({"role": "staff"}),
        ),
    ] {
        let r = send(&http, &from, method, &path, Some(&owner.token), Some(&body)).await;
        problem(&r, 403);
    }
    let uuid: Uuid = own.parse().unwrap();
    assert_eq!(
        central_count(
            "SELECT count(*) FROM users WHERE id = $1 AND role = 'admin' AND disabled_at IS NULL AND token_version = 1",
            &[&uuid]
        )
        .await,
        1,
        "nothing changed"
    );

    // Two admins disabling (or demoting) each other at the same moment: the clinic
    // always keeps an active admin, and the loser is told why.
    for round in 0..6 {
        let c = clinic().await;
        let (b_id, _, b_token, _) = user(&c, "admin").await;
        let demote = round % 2 == 1;
        let hit = |actor: String, target: String| {
            let http = gateway();
            let from = from.clone();
            async move {
                if demote {
                    send(
                        &http,
                        &from,
                        Method::PATCH,
                        &format!("/api/v1/users/{target}"),
                        Some(&actor),
                        Some(&json!({"role": "staff"})),
                    )
                    .await
                } else {
                    post(
                        &http,
                        &from,
                        &format!("/api/v1/users/{target}/disable"),
                        Some(&actor),
                        json!({}),
                    )
                    .await
                }
            }
        };
        let (x, y) = tokio::join!(
            hit(c.token.clone(), b_id.clone()),
            hit(b_token.clone(), c.user_id.clone())
        );
        let statuses = [x.status.as_u16(), y.status.as_u16()];
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{statuses:?}: {} / {}",
            x.text(),
            y.text()
        );
        assert!(
            statuses.iter().all(|s| [200, 401, 409].contains(s)),
            "{statuses:?}"
        );
        let clinic_uuid: Uuid = c.id.parse().unwrap();
        assert_eq!(
            central_count(
                "SELECT count(*) FROM users WHERE company_id = $1 AND role = 'admin' AND disabled_at IS NULL",
                &[&clinic_uuid]
            )
            .await,
            1
        );
    }
}

// ---------------------------------------------------------------------------
// 2. Sign-up that cannot be abused
// ---------------------------------------------------------------------------

fn signup_body() -> Value {
    json!({"clinic_name": unique("Flood"), "email": format!("{}@flood.example", unique("f")), "password": "correct horse battery staple"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_up_flood_from_one_address_is_refused_and_creates_nothing() {
    let _stack = hold(&SETUP);
    let stack = stack();
    let http = gateway();
    let from = address();
    let databases = || async {
        let mut n = 0;
        for r in &stack.regions {
            let db = r.server.connect("postgres").await.unwrap();
            let row = db
                .query_one("SELECT count(*) FROM pg_database WHERE datname LIKE 'medicalpro_clinic_%' AND datname <> 'medicalpro_clinic_template'", &[])
                .await
                .unwrap();
            n += row.get::<_, i64>(0);
        }
        n
    };
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..(SIGNUPS_PER_ADDRESS + 5) {
        let r = post(&http, &from, "/api/v1/auth/register", None, signup_body()).await;
        statuses.push(r.status.as_u16());
        if r.status == 429 && refused.is_none() {
            assert!(retry_after(&r) > 0);
            problem(&r, 429);
            refused = Some(databases().await);
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        SIGNUPS_PER_ADDRESS,
        "{statuses:?}"
    );
    assert!(
        statuses[SIGNUPS_PER_ADDRESS..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    // Refused sign-ups made no database (other tests may add theirs meanwhile,
    // so compare against a count taken at the first refusal).
    let at_first_refusal = refused.unwrap();
    assert!(databases().await - at_first_refusal <= 3);
    // Another address, and another /64 of IPv6, still sign up; one /64 is one address.
    let r = post(
        &http,
        &address(),
        "/api/v1/auth/register",
        None,
        signup_body(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let block = format!("2001:db8:{:x}:1", rand_suffix());
    let mut v6 = Vec::new();
    for host in 1..=(SIGNUPS_PER_ADDRESS + 1) {
        let r = post(
            &http,
            &format!("{block}::{host:x}"),
            "/api/v1/auth/register",
            None,
            signup_body(),
        )
        .await;
        v6.push(r.status.as_u16());
    }
    assert_eq!(
        v6.iter().filter(|s| **s == 201).count(),
        SIGNUPS_PER_ADDRESS,
        "{v6:?}"
    );
    assert_eq!(v6.last(), Some(&429));
}

fn rand_suffix() -> u16 {
    (Uuid::new_v4().as_u128() & 0xffff) as u16
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ups_are_bounded_fleet_wide_and_by_clinics_being_set_up() {
    let _stack = hold(&SETUP);
    let stack = stack();
    // A gateway whose fleet-wide hourly limit is 2: the counter is shared by every
    // gateway, so once it is past 2 this one refuses whatever the address.
    let small = stack
        .add_gateway_with("gateway-fleet", &[("SIGNUPS_PER_HOUR", "2")])
        .unwrap();
    let http = Http::new(&small.url());
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = post(
            &http,
            &address(),
            "/api/v1/auth/register",
            None,
            signup_body(),
        )
        .await;
        statuses.push(r.status.as_u16());
    }
    assert!(
        statuses.iter().filter(|s| **s == 201).count() <= 2,
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");

    // Clinics stuck in provisioning pause sign-ups (503 + retry-after).
    let paused = stack
        .add_gateway_with("gateway-provisioning", &[("SIGNUPS_PROVISIONING_MAX", "1")])
        .unwrap();
    let central = stack.central_db().await;
    let stuck = Uuid::now_v7();
    central
        .execute(
            "INSERT INTO companies (id, name, region, db_name, db_role, status) VALUES ($1, 'Stuck', 'eu-west', $2, $3, 'provisioning')",
            &[&stuck, &format!("medicalpro_clinic_{stuck}"), &format!("medicalpro_clinic_{}", stuck.simple())],
        )
        .await
        .unwrap();
    let r = post(
        &Http::new(&paused.url()),
        &address(),
        "/api/v1/auth/register",
        None,
        signup_body(),
    )
    .await;
    let body = problem(&r, 503);
    assert!(retry_after(&r) > 0, "{body}");
    central
        .execute("DELETE FROM companies WHERE id = $1", &[&stuck])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_an_existing_email_is_throttled_like_a_sign_in() {
    let _stack = hold(&SETUP);
    let owner = clinic().await;
    let http = gateway();
    let from = address();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let body = json!({"clinic_name": "Guess", "email": owner.email, "password": format!("wrong password {i}")});
        statuses.push(
            post(&http, &from, "/api/v1/auth/register", None, body)
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(&statuses[..5], &[409; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // The same counters as sign-in: the right password from that address waits too…
    let r = post(
        &http,
        &from,
        "/api/v1/auth/login",
        None,
        json!({"email": owner.email, "password": owner.password}),
    )
    .await;
    problem(&r, 429);
    // …while the owner signs in from elsewhere.
    sign_in(&http, &address(), &owner.email, &owner.password).await;
}

/// Guessing a client secret, the current password behind a stolen session, or
/// flooding an address with reset links: each counted like a sign-in, five tries
/// per account and address, then `429`, the right answer included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_guesses_and_reset_floods_are_throttled_like_sign_ins() {
    let _stack = hold(&SETUP);
    let owner = clinic().await;
    let http = gateway();

    // An API client's secret.
    let made = post(
        &http,
        &address(),
        "/api/v1/api-clients",
        Some(&owner.token),
        json!({"name": "Integration", "role": "staff"}),
    )
    .await;
    let made = status(&made, 201);
    let client_id = made["client_id"].as_str().unwrap();
    let form = |secret: &str| {
        format!("grant_type=client_credentials&client_id={client_id}&client_secret={secret}")
    };
    let from = address();
    let token = |body: String| {
        let http = http.clone();
        let from = from.clone();
        async move {
            let headers = [
                ("x-forwarded-for", from.as_str()),
                ("content-type", "application/x-www-form-urlencoded"),
            ];
            http.send(
                Method::POST,
                "/api/v1/oauth/token",
                &headers,
                Some(body.into()),
            )
            .await
            .unwrap()
        }
    };
    let mut statuses = Vec::new();
    for i in 0..7 {
        statuses.push(token(form(&format!("mps_guess{i}"))).await.status.as_u16());
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let right = made["client_secret"].as_str().unwrap().to_owned();
    problem(&token(form(&right)).await, 429);

    // The current password, with a session the attacker holds.
    let from = address();
    let mut statuses = Vec::new();
    for i in 0..7 {
        let body = json!({"current_password": format!("guess number {i}"), "new_password": "an attacker's new password"});
        let r = post(
            &http,
            &from,
            "/api/v1/auth/password",
            Some(&owner.token),
            body,
        )
        .await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    // The password is unchanged: the owner signs in with it from elsewhere.
    sign_in(&http, &address(), &owner.email, &owner.password).await;

    // Reset links for one address from one client: five, then 429.
    let from = address();
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let body = json!({"email": owner.email});
        let r = post(&http, &from, "/api/v1/auth/password-reset", None, body).await;
        statuses.push(r.status.as_u16());
    }
    assert_eq!(&statuses[..5], &[202; 5], "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == 429), "{statuses:?}");
    let owner_id: Uuid = owner.user_id.parse().unwrap();
    let mut links = 0;
    for _ in 0..50 {
        links = central_count(
            "SELECT count(*) FROM password_resets WHERE user_id = $1",
            &[&owner_id],
        )
        .await;
        if links == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(links, 5, "one link per accepted request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_and_closed_registration() {
    let _stack = hold(&SETUP);
    let stack = stack();
    let settings = stack.admin_settings_of("eu-west");
    let invite_gw = stack
        .add_gateway_with("gateway-invite", &[("REGISTRATION", "invite")])
        .unwrap();
    let http = Http::new(&invite_gw.url());
    let from = address();
    let email = format!("{}@invited.example", unique("i"));
    let body = |code: Option<&str>, email: &str| {
        let mut b = json!({"clinic_name": "Invited", "email": email, "password": "correct horse battery staple"});
        if let Some(code) = code {
            b["invite_code"] = code.into();
        }
        b
    };
    let r = post(
        &http,
        &from,
        "/api/v1/auth/register",
        None,
        body(None, &email),
    )
    .await;
    assert_eq!(
        problem(&r, 403)["type"],
        "urn:medicalpro:problem:invite-required"
    );
    problem(
        &post(
            &http,
            &from,
            "/api/v1/auth/register",
            None,
            body(Some("guessed-code"), &email),
        )
        .await,
        403,
    );
    let invitation = admin::signup::invite(
        &settings,
        Some(&email),
        Some("eu-central"),
        Some("test"),
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let code = invitation.code.as_str();
    problem(
        &post(
            &http,
            &from,
            "/api/v1/auth/register",
            None,
            body(Some(code), "someone-else@invited.example"),
        )
        .await,
        403,
    );
    let made = post(
        &http,
        &from,
        "/api/v1/auth/register",
        None,
        body(Some(code), &email),
    )
    .await;
    assert_eq!(made.status, 201, "{}", made.text());
    assert_eq!(
        made.json()["region"],
        "eu-central",
        "the invitation's region"
    );
    let other = format!("{}@invited.example", unique("j"));
    problem(
        &post(
            &http,
            &from,
            "/api/v1/auth/register",
            None,
            body(Some(code), &other),
        )
        .await,
        403,
    );

    let closed_gw = stack
        .add_gateway_with("gateway-closed", &[("REGISTRATION", "closed")])
        .unwrap();
    let r = post(
        &Http::new(&closed_gw.url()),
        &from,
        "/api/v1/auth/register",
        None,
        body(None, &other),
    )
    .await;
    assert_eq!(
        problem(&r, 403)["type"],
        "urn:medicalpro:problem:registration-closed"
    );
    let created = admin::signup::create_clinic(
        &settings,
        &stack.keys().unwrap(),
        "Created By The Operator",
        &other,
        "operator chosen password",
        "eu-west",
    )
    .await
    .unwrap();
    let tokens = sign_in(&gateway(), &address(), &other, "operator chosen password").await;
    let token = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        get(&gateway(), &from, "/api/v1/patients", Some(token))
            .await
            .status,
        200
    );
    let c = Clinic {
        id: created.clinic.to_string(),
        user_id: created.user.to_string(),
        region: created.region,
        email: other,
        password: String::new(),
        token: token.to_owned(),
        refresh_token: String::new(),
    };
    stack.wait_audit(&c, "action = 'create_clinic'").await;
}

// ---------------------------------------------------------------------------
// 3. A throttle that holds under bursts, across gateways, for IPv6
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_wrong_passwords_gets_no_more_guesses_than_the_limit() {
    let _stack = hold(&SETUP);
    let stack = stack();
    let owner = clinic().await;
    let second = stack.add_gateway("gateway-burst").unwrap();
    let gateways = [gateway(), Http::new(&second.url())];
    let from = address();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..128 {
        let http = gateways[i % 2].clone();
        let (from, email) = (from.clone(), owner.email.clone());
        tasks.spawn(async move {
            let body = json!({"email": email, "password": format!("guess number {i}")});
            let r = post(&http, &from, "/api/v1/auth/login", None, body).await;
            r.status.as_u16()
        });
    }
    let mut counts = std::collections::BTreeMap::new();
    while let Some(s) = tasks.join_next().await {
        *counts.entry(s.unwrap()).or_insert(0) += 1;
    }
    eprintln!("128 concurrent wrong logins over two gateways: {counts:?}");
    assert!(counts.get(&401).copied().unwrap_or(0) <= 5, "{counts:?}");
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        vec![401, 429],
        "{counts:?}"
    );
    // The owner, elsewhere, is not locked out.
    sign_in(&gateways[1], &address(), &owner.email, &owner.password).await;

    // IPv6 addresses of one /64 are one client.
    let block = format!("2001:db8:{:x}:2", rand_suffix());
    let mut v6 = Vec::new();
    for host in 1..=7u32 {
        let body = json!({"email": owner.email, "password": "wrong again and again"});
        v6.push(
            post(
                &gateways[0],
                &format!("{block}::{host:x}"),
                "/api/v1/auth/login",
                None,
                body,
            )
            .await
            .status
            .as_u16(),
        );
    }
    assert_eq!(&v6[..5], &[401; 5], "{v6:?}");
    assert_eq!(&v6[5..], &[429; 2], "{v6:?}");
}

/// Large uploads are held whole by the gateway: a free account that opens many
/// of them and trickles their bytes gets no more memory than the gateway's
/// upload budget; past it, uploads are refused at once (`503` + `retry-after`)
/// before a byte is read, and the budget comes back when a client gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_uploads_get_no_more_memory_than_the_upload_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _stack = hold(&SETUP);
    let stack = stack();
    let owner = clinic().await;
    let patient = status(
        &post(
            &gateway(),
            &address(),
            "/api/v1/patients",
            Some(&owner.token),
            json!({"first_name": "Budget", "last_name": "Upload"}),
        )
        .await,
        201,
    );
    let patient = patient["id"].as_str().unwrap().to_owned();
    // Room for one 25 MiB upload at a time.
    let budgeted = stack
        .add_gateway_with("gateway-uploads", &[("UPLOAD_BUFFER_BYTES", "27000000")])
        .unwrap();
    let head = format!(
        "POST /api/v1/patients/{patient}/attachments?filename=scan.pdf HTTP/1.1\r\nhost: x\r\n\
         authorization: Bearer {}\r\ncontent-type: application/pdf\r\ncontent-length: 26214400\r\n\r\n%PDF-1.7\n",
        owner.token
    );
    let open = || async {
        let mut s = tokio::net::TcpStream::connect(budgeted.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s
    };
    let answer = |mut s: tokio::net::TcpStream| async move {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("an answer at once")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // The first holds the budget while it trickles.
    let first = open().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let refused = answer(open().await).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(
            refused.to_ascii_lowercase().contains("retry-after"),
            "{refused}"
        );
    }
    // The first gives up: its reservation returns, the next one is read.
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut next = open().await;
    let mut buf = [0u8; 64];
    let waited = tokio::time::timeout(Duration::from_millis(700), next.read(&mut buf)).await;
    assert!(waited.is_err(), "being read, not refused: {:?}", waited);
    drop(next);
    // Nothing of the refused or abandoned uploads was stored.
    let stored: i64 = stack
        .clinic_db(&owner)
        .await
        .query_one("SELECT count(*) FROM attachments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_past_the_queue_are_shed_with_503() {
    let _stack = hold(&SETUP);
    let stack = stack();
    let shedding = stack
        .add_gateway_with("gateway-shed", &[("PASSWORD_HASH_QUEUE", "0")])
        .unwrap();
    let http = Http::new(&shedding.url());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let http = http.clone();
        tasks.spawn(async move {
            let body = json!({"email": format!("nobody-{i}@nowhere.example"), "password": "some password here"});
            let r = post(&http, &address(), "/api/v1/auth/login", None, body).await;
            let retry = r.header("retry-after").map(str::to_owned);
            (r.status.as_u16(), retry)
        });
    }
    let mut shed = 0;
    while let Some(done) = tasks.join_next().await {
        let (status, retry) = done.unwrap();
        assert!([401, 503].contains(&status), "{status}");
        if status == 503 {
            shed += 1;
            assert!(retry.is_some());
        }
    }
    assert!(shed > 0, "no check was shed");
    let metrics = Http::new(&format!("http://{}", shedding.admin_addr))
        .get("/metrics", None)
        .await
        .unwrap()
        .text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("medicalpro_password_hash_shed_total"))
        .unwrap();
    let counted: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(counted as usize, shed, "{line}");
}

// ---------------------------------------------------------------------------
// 4. Slow and greedy clients
// ---------------------------------------------------------------------------

/// Reads until the peer closes or `within` passes; what was read and whether the
/// connection was closed by the server.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let mut chunk = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&buf).into_owned(), true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (String::from_utf8_lossy(&buf).into_owned(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_greedy_clients_are_cut_off() {
    let _stack = hold(&SETUP);
    use tokio::io::AsyncWriteExt;
    let stack = stack();
    let strict = stack
        .add_gateway_with(
            "gateway-strict",
            &[
                ("HEADER_READ_TIMEOUT_SECS", "1"),
                ("BODY_READ_TIMEOUT_SECS", "1"),
                ("MAX_CONNECTIONS", "6"),
            ],
        )
        .unwrap();
    let addr = strict.addr;

    // A head sent a byte at a time, never finished: closed after the timeout.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(4)).await;
    assert!(
        closed,
        "a request head that never ends keeps its connection"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A body that stops halfway: 408 problem+json.
    let mut body = tokio::net::TcpStream::connect(addr).await.unwrap();
    body.write_all(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 60\r\n\r\n{\"email\":",
    )
    .await
    .unwrap();
    let (answer, _) = read_until_closed(&mut body, Duration::from_secs(4)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // Past the connection cap, new connections are closed at once; room comes back.
    let mut held = Vec::new();
    for _ in 0..6 {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        held.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = extra
        .write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (answer, closed) = read_until_closed(&mut extra, Duration::from_millis(800)).await;
    assert!(closed && answer.is_empty(), "over the cap: {answer:?}");
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ok = Http::new(&strict.url())
        .get("/api/v1/openapi.json", None)
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_export_is_cut_off_and_exports_are_bounded_per_clinic() {
    let _stack = hold(&SETUP);
    use tokio::io::AsyncWriteExt;
    let stack = stack();
    let c = clinic().await;
    // Enough rows that the export outgrows every socket buffer on its way.
    let db = stack.clinic_db(&c).await;
    let company: Uuid = c.id.parse().unwrap();
    db.execute(
        "INSERT INTO patients (id, company_id, first_name, last_name, email, phone) \
         SELECT gen_random_uuid(), $1, 'Bulk ' || g, repeat('x', 200), 'bulk' || g || '@example.org', '+33 1 00 00 00 00' \
         FROM generate_series(1, 60000) g",
        &[&company],
    )
    .await
    .unwrap();
    let mut stalled = tokio::net::TcpStream::connect(stack.gateway.addr)
        .await
        .unwrap();
    let from = address();
    stalled
        .write_all(
            format!(
                "GET /api/v1/export HTTP/1.1\r\nHost: x\r\nx-forwarded-for: {from}\r\nauthorization: Bearer {}\r\n\r\n",
                c.token
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // While it runs, a second export of the clinic waits its turn.
    let second = get(&gateway(), &from, "/api/v1/export", Some(&c.token)).await;
    let p = problem(&second, 429);
    assert!(retry_after(&second) > 0, "{p}");
    // The reader that reads nothing is cut off: no transaction stays open, and the
    // trail says so.
    let dbname = format!("medicalpro_clinic_{}", c.id);
    let started = Instant::now();
    loop {
        let open: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'",
                &[&dbname],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 && started.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the stalled export still holds a transaction"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack
        .wait_audit(&c, "action = 'export' AND outcome = 'abandoned'")
        .await;
    drop(stalled);
    // A reader that reads gets everything again.
    let full = get(&gateway(), &from, "/api/v1/export", Some(&c.token)).await;
    assert_eq!(full.status, 200);
    assert!(full.text().lines().count() >= 60_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clinic_roles_run_under_statement_limits_and_are_set_with_scram_verifiers() {
    let _stack = hold(&SETUP);
    let stack = stack();
    let c = clinic().await;
    let central = stack.central_db().await;
    let clinic_id: Uuid = c.id.parse().unwrap();
    let row = central
        .query_one(
            "SELECT db_role, db_role_password, db_name FROM companies WHERE id = $1",
            &[&clinic_id],
        )
        .await
        .unwrap();
    let (role, sealed, dbname): (String, Vec<u8>, String) = (row.get(0), row.get(1), row.get(2));
    let password = String::from_utf8(
        stack
            .keys()
            .unwrap()
            .open_secret(
                &common::crypto::role_password_purpose(c.id.parse().unwrap()),
                &sealed,
            )
            .unwrap(),
    )
    .unwrap();
    assert_eq!(password.len(), 64, "256 random bits");
    let region = stack.region(&c.region).unwrap();
    let (client, conn) = region
        .server
        .config(&dbname)
        .user(&role)
        .password(password.as_bytes())
        .connect(region.server.tls())
        .await
        .unwrap();
    tokio::spawn(conn);
    for (setting, want) in [
        ("statement_timeout", "30s"),
        ("idle_in_transaction_session_timeout", "1min"),
    ] {
        let got: String = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(got, want, "{setting}");
    }
    // The server stores a SCRAM verifier; the password never appeared in SQL text
    // (role statements are logged on this stack).
    let server = region.server.connect("postgres").await.unwrap();
    let stored: String = server
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");
    let log = std::fs::read_to_string(region.server.data_dir.with_extension("log")).unwrap();
    assert!(log.contains("CREATE ROLE"), "role statements are logged");
    assert!(
        !log.contains(&password),
        "the role password is in the server log"
    );
}

// ---------------------------------------------------------------------------
// 5. Encrypted transit to PostgreSQL
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_connection_to_postgresql_is_tls_and_plain_ones_are_refused() {
    let _stack = hold(&SETUP);
    let stack = stack();
    let c = clinic().await;
    assert_eq!(
        get(&gateway(), &address(), "/api/v1/patients", Some(&c.token))
            .await
            .status,
        200
    );
    let mut servers = vec![("central", &stack.central)];
    servers.extend(stack.regions.iter().map(|r| (r.name.as_str(), &r.server)));
    for (name, server) in servers {
        let db = server.connect("postgres").await.unwrap();
        let rows = db
            .query(
                "SELECT a.application_name, a.usename::text, coalesce(s.ssl, false), coalesce(s.version, '') \
                 FROM pg_stat_activity a LEFT JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        let services: Vec<_> = rows
            .iter()
            .filter(|r| r.get::<_, String>(0).starts_with("medicalpro"))
            .collect();
        assert!(
            !services.is_empty() || name != "central",
            "no service connection on {name}"
        );
        for r in &services {
            assert!(
                r.get::<_, bool>(2),
                "{name}: {} as {} without TLS",
                r.get::<_, String>(0),
                r.get::<_, String>(1)
            );
            assert!(r.get::<_, String>(3).starts_with("TLSv1."), "{name}");
        }
        // Plain TCP is rejected by the server.
        let plain = server
            .config("postgres")
            .ssl_mode(tokio_postgres::config::SslMode::Disable)
            .connect(tokio_postgres::NoTls)
            .await;
        assert!(plain.is_err(), "{name} accepted a plain connection");
    }
    // A server certificate from another CA is refused: a worker configured to
    // trust another CA does not start, and says why.
    let other_ca = std::env::temp_dir().join(format!(
        "medicalpro-test-{}-other-ca.pem",
        std::process::id()
    ));
    devstack::certs::Authority::new("Someone else's CA")
        .unwrap()
        .write_cert(&other_ca)
        .unwrap();
    let worker = &stack.regions[0].worker;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_devstack"))
        .args([devstack::process::COMPONENT_ARG, "worker"])
        .env_clear()
        .envs(worker.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("DB_SSLROOTCERT", &other_ca)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("ADMIN_ADDR", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success());
    assert!(
        stderr.contains("certificate") && stderr.contains("db_sslrootcert"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// 6. Audit: lists name what they showed; sign-ins are recorded before answering
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_record_the_rows_they_showed_and_sessions_are_recorded_at_once() {
    let _stack = hold(&SETUP);
    let c = clinic().await;
    let http = gateway();
    let from = address();
    let mut ids = Vec::new();
    for name in ["Ada", "Bob", "Cyd"] {
        let r = post(
            &http,
            &from,
            "/api/v1/patients",
            Some(&c.token),
            patient_body(name, "Shown"),
        )
        .await;
        assert_eq!(r.status, 201);
        ids.push(r.json()["id"].as_str().unwrap().parse::<Uuid>().unwrap());
    }
    let listed = get(&http, &from, "/api/v1/patients?limit=2", Some(&c.token)).await;
    assert_eq!(listed.status, 200);
    let request_id = listed.header("x-request-id").unwrap().to_owned();
    let rows = stack()
        .wait_audit(
            &c,
            &format!("action = 'list' AND request_id = '{request_id}'"),
        )
        .await;
    assert_eq!(rows.len(), 1);
    let central = stack().central_db().await;
    let shown: Vec<Uuid> = central
        .query_one(
            "SELECT resource_ids FROM audit_logs WHERE request_id = $1",
            &[&request_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shown, ids[..2].to_vec());

    // Sign-in and refresh are on the trail when they answer: the session
    // registration opened, then this sign-in.
    let tokens = sign_in(&http, &from, &c.email, &c.password).await;
    let clinic_id: Uuid = c.id.parse().unwrap();
    let count = |action: &'static str| {
        let central = &central;
        async move {
            let n: i64 = central
                .query_one(
                    "SELECT count(*) FROM audit_logs WHERE clinic_id = $1 AND action = $2",
                    &[&clinic_id, &action],
                )
                .await
                .unwrap()
                .get(0);
            n
        }
    };
    assert_eq!(count("login").await, 2);
    let r = post(
        &http,
        &from,
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": tokens["refresh_token"]}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(count("refresh").await, 1);
    // A failed sign-in against the account, too.
    let r = post(
        &http,
        &from,
        "/api/v1/auth/login",
        None,
        json!({"email": c.email, "password": "not the password"}),
    )
    .await;
    problem(&r, 401);
    let failures: i64 = central
        .query_one(
            "SELECT count(*) FROM audit_logs WHERE clinic_id = $1 AND action = 'login' AND outcome = 'failure'",
            &[&clinic_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 1);
}

// ---------------------------------------------------------------------------
// 7. Relocation frozen at the source
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_source_refuses_writes_from_a_stale_route_and_keeps_reading() {
    let _stack = hold(&SETUP);
    let c = clinic().await;
    let http = gateway();
    let from = address();
    let p = post(
        &http,
        &from,
        "/api/v1/patients",
        Some(&c.token),
        patient_body("Frozen", "Source"),
    )
    .await;
    assert_eq!(p.status, 201);
    let path = format!("/api/v1/patients/{}", p.json()["id"].as_str().unwrap());
    let db = stack().clinic_db(&c).await;
    let grants = admin::relocate::app_grants(&db).await.unwrap();
    admin::relocate::freeze_writes(&db).await.unwrap();
    // A gateway that never heard of the switch forwards a write: the source itself
    // refuses it.
    let write = stack()
        .signed_worker_send(
            &c.region,
            Method::POST,
            &c.token,
            "/api/v1/patients",
            Some(patient_body("Stale", "Route")),
        )
        .await;
    let body = problem(&write, 503);
    assert!(retry_after(&write) > 0, "{body}");
    let update = stack()
        .signed_worker_send(
            &c.region,
            Method::PATCH,
            &c.token,
            &path,
            Some(json!({"last_name": "Changed"})),
        )
        .await;
    problem(&update, 503);
    let read = stack().signed_worker_get(&c, &c.token, &path).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["last_name"], "Source", "nothing changed");
    let stale: i64 = db
        .query_one(
            "SELECT count(*) FROM patients WHERE last_name = 'Route'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stale, 0);
    admin::relocate::thaw_writes(&db, &grants).await.unwrap();
    let after = post(
        &http,
        &from,
        "/api/v1/patients",
        Some(&c.token),
        patient_body("After", "Thaw"),
    )
    .await;
    assert_eq!(after.status, 201, "{}", after.text());
}

// ---------------------------------------------------------------------------
// 8. Least authority for workers
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_hold_no_signing_key_and_gateways_publish_their_public_keys() {
    let _stack = hold(&SETUP);
    let stack = stack();
    let private = std::fs::read_to_string(&stack.secrets.jwt_key).unwrap();
    let key_line = private.lines().nth(1).unwrap().to_owned();
    for region in &stack.regions {
        let pid = region.worker.pid().unwrap();
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        assert!(
            !environ.contains("JWT_SIGNING_KEY_FILE"),
            "worker {} may sign",
            region.name
        );
        assert!(!environ.contains("JWT_SECRET"));
        assert!(!environ.contains(&key_line));
        for (k, v) in region.worker.env() {
            if k == "JWT_PUBLIC_KEYS" {
                let path = v.split_once(':').unwrap().1;
                let text = std::fs::read_to_string(path).unwrap();
                assert!(
                    text.contains("PUBLIC KEY") && !text.contains("PRIVATE"),
                    "{text}"
                );
            }
        }
    }
    let jwks = gateway().get("/.well-known/jwks.json", None).await.unwrap();
    assert_eq!(jwks.status, 200);
    assert_eq!(
        jwks.header("content-type"),
        Some("application/jwk-set+json")
    );
    let keys = jwks.json()["keys"].clone();
    assert_eq!(keys[0]["kid"], devstack::stack::JWT_KID);
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(keys[0].get("d").is_none(), "no private part");
}

// ---------------------------------------------------------------------------
// 10. Erasure that finishes the job
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_reaches_a_deleted_patient_and_every_free_text_about_them() {
    let _stack = hold(&SETUP);
    let c = clinic().await;
    let http = gateway();
    let from = address();
    let made = |r: Reply| {
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let patient = made(
        post(
            &http,
            &from,
            "/api/v1/patients",
            Some(&c.token),
            patient_body("Forgotten", "Person"),
        )
        .await,
    );
    let doctor = made(
        post(
            &http,
            &from,
            "/api/v1/practitioners",
            Some(&c.token),
            json!({"first_name": "Doc", "last_name": "Tor"}),
        )
        .await,
    );
    let secret = "Forgotten Person's depression and HIV status";
    made(
        post(
            &http,
            &from,
            "/api/v1/appointments",
            Some(&c.token),
            json!({"patient_id": patient, "practitioner_id": doctor, "starts_at": "2031-03-01T09:00:00Z", "ends_at": "2031-03-01T09:30:00Z", "notes": secret}),
        )
        .await,
    );
    let quote = made(
        post(
            &http,
            &from,
            "/api/v1/documents",
            Some(&c.token),
            json!({"kind": "quote", "patient_id": patient, "notes": secret,
                   "lines": [{"description": secret, "quantity": 1, "unit_price_cents": 5000, "vat_rate_bp": 0}]}),
        )
        .await,
    );
    // The notes are sealed: the clinic database never holds them in plaintext.
    let db = stack().clinic_db(&c).await;
    let dump = || async {
        let rows = db
            .query(
                "SELECT coalesce(string_agg(t::text, ' '), '') FROM (
                    SELECT p::text AS t FROM patients p UNION ALL SELECT a::text FROM appointments a
                    UNION ALL SELECT d::text FROM documents d UNION ALL SELECT l::text FROM document_lines l) x",
                &[],
            )
            .await
            .unwrap();
        rows[0].get::<_, String>(0)
    };
    let before = dump().await;
    let notes_plain: i64 = db
        .query_one(
            "SELECT count(*) FROM appointments WHERE notes IS NOT NULL OR notes_enc IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(notes_plain, 0, "appointment notes are stored sealed");
    assert_eq!(
        before.matches("HIV").count(),
        1,
        "only the line description is plaintext: {before}"
    );
    // Converting the quote carries its notes, sealed again for the invoice.
    let invoice = post(
        &http,
        &from,
        &format!("/api/v1/documents/{quote}/convert"),
        Some(&c.token),
        json!({}),
    )
    .await;
    assert_eq!(invoice.status, 201, "{}", invoice.text());
    assert_eq!(invoice.json()["notes"], secret);

    // Deleted first, then erased: the erasure still reaches it.
    let deleted = send(
        &http,
        &from,
        Method::DELETE,
        &format!("/api/v1/patients/{patient}"),
        Some(&c.token),
        None,
    )
    .await;
    assert_eq!(deleted.status, 204);
    let erased = post(
        &http,
        &from,
        &format!("/api/v1/patients/{patient}/erase"),
        Some(&c.token),
        json!({}),
    )
    .await;
    assert_eq!(erased.status, 200, "{}", erased.text());
    assert_eq!(erased.json()["first_name"], "Erased");
    let after = dump().await;
    for word in ["Forgotten", "HIV", "depression"] {
        assert!(
            !after.contains(word),
            "{word} is still in the clinic database: {after}"
        );
    }
    let sealed_left: i64 = db
        .query_one(
            "SELECT (SELECT count(*) FROM appointments WHERE notes_enc IS NOT NULL) + (SELECT count(*) FROM documents WHERE notes_enc IS NOT NULL)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        sealed_left, 0,
        "sealed notes about the patient are gone too"
    );
    stack()
        .wait_audit(
            &c,
            &format!("action = 'erase' AND resource_id = '{patient}' AND outcome = 'success'"),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_written_before_they_were_sealed_are_shown_then_sealed_by_rotation() {
    let _stack = hold(&SETUP);
    let stack = stack();
    let c = clinic().await;
    let http = gateway();
    let from = address();
    let patient = post(
        &http,
        &from,
        "/api/v1/patients",
        Some(&c.token),
        patient_body("Legacy", "Notes"),
    )
    .await;
    let doctor = post(
        &http,
        &from,
        "/api/v1/practitioners",
        Some(&c.token),
        json!({"first_name": "L", "last_name": "N"}),
    )
    .await;
    let appt = post(
        &http,
        &from,
        "/api/v1/appointments",
        Some(&c.token),
        json!({"patient_id": patient.json()["id"], "practitioner_id": doctor.json()["id"],
               "starts_at": "2032-01-05T10:00:00Z", "ends_at": "2032-01-05T10:30:00Z"}),
    )
    .await;
    assert_eq!(appt.status, 201, "{}", appt.text());
    let id: Uuid = appt.json()["id"].as_str().unwrap().parse().unwrap();
    let path = format!("/api/v1/appointments/{id}");
    // As a database from before sealing holds it.
    let db = stack.clinic_db(&c).await;
    db.execute(
        "UPDATE appointments SET notes = 'written in plaintext before' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
    assert_eq!(
        get(&http, &from, &path, Some(&c.token)).await.json()["notes"],
        "written in plaintext before"
    );
    let report = admin::keys::rotate_data_keys(
        &stack.admin_settings_of(&c.region),
        &stack.keys().unwrap(),
        &admin::keys::Scope::Clinic(c.id.parse().unwrap()),
        None,
        false,
    )
    .await
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let row = db
        .query_one(
            "SELECT notes, notes_enc IS NOT NULL FROM appointments WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None, "no plaintext left");
    assert!(row.get::<_, bool>(1), "sealed");
    let shown = answers_within(200, Duration::from_secs(5), || async {
        let r = get(&http, &from, &path, Some(&c.token)).await;
        if r.json()["notes"] == "written in plaintext before" {
            200
        } else {
            r.status.as_u16() + 1000
        }
    })
    .await;
    eprintln!("sealed notes shown again after {shown:?}");
}
