//! Passwords end to end: changing one's own (the current one required, every
//! other session ended at once) and a forgotten one reset by e-mail — the link's
//! token read from a message delivered through a real SMTP server (Python's
//! `aiosmtpd`) and, without one, from the `.eml` file the devstack's gateway
//! writes under its data directory. The same answer for unknown addresses, a
//! token that works once, and an expired one refused.

use crate::support::*;
use devstack::{Http, Reply};
use http::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NEW_PASSWORD: &str = "a brand new passphrase for the clinic";

async fn call(http: &Http, path: &str, token: Option<&str>, body: Value) -> Reply {
    http.json(Method::POST, path, token, Some(&body))
        .await
        .unwrap()
}

async fn sign_in(http: &Http, email: &str, password: &str) -> Reply {
    call(
        http,
        "/api/v1/auth/login",
        None,
        json!({"email": email, "password": password}),
    )
    .await
}

/// Waits until `token` is refused (`401`) on a clinic read: revocation reaches
/// every gateway and worker within a second.
async fn refused_soon(http: &Http, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = http.get("/api/v1/patients", Some(token)).await.unwrap();
        if r.status == 401 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {}: {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The files under `dir` whose text names `to`, waiting up to 15 s for one.
async fn mail_to(dir: &Path, to: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = messages(dir, to);
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The messages (files, any depth) under `dir` that mention `to`.
fn messages(dir: &Path, to: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                if text.contains(to) {
                    out.push(text);
                }
            }
        }
    }
    out
}

/// The reset token a message carries (its `token:` line; quoted-printable soft
/// line breaks undone).
fn reset_token(message: &str) -> String {
    let text = message.replace("=\r\n", "").replace("=\n", "");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap_or_else(|| panic!("no token in {message}"))
        .trim()
        .to_owned()
}

/// Asks for a reset of `email`, checking the one answer every address gets.
async fn ask_reset(http: &Http, email: &str) -> Value {
    let answer = status(
        &call(
            http,
            "/api/v1/auth/password-reset",
            None,
            json!({"email": email}),
        )
        .await,
        202,
    );
    assert_eq!(answer["status"], "accepted", "{answer}");
    answer
}

/// A running `aiosmtpd` writing what it receives to a maildir; killed on drop.
struct SmtpServer {
    child: std::process::Child,
    port: u16,
    maildir: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

async fn smtp_server() -> Option<SmtpServer> {
    if !python_module(
        "aiosmtpd",
        "password reset over SMTP",
        "python3 -m pip install aiosmtpd",
    ) {
        return None;
    }
    let port = devstack::pg::free_port().unwrap();
    let maildir = std::env::temp_dir().join(format!(
        "medicalpro-test-{}-smtp-{port}",
        std::process::id()
    ));
    let child = std::process::Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&maildir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = SmtpServer {
        child,
        port,
        maildir,
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "aiosmtpd did not listen");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(server)
}

#[tokio::test]
async fn a_forgotten_password_is_reset_by_a_link_delivered_over_smtp() {
    let _turn = turn();
    let Some(smtp) = smtp_server().await else {
        return;
    };
    let url = format!("smtp://127.0.0.1:{}", smtp.port);
    let gateway = stack()
        .add_gateway_with("gateway-smtp", &[("SMTP_URL", url.as_str())])
        .unwrap();
    let http = Http::new(&gateway.url());
    let c = register(&http, None).await;

    // An unknown address gets the same answer, and no mail.
    let nobody = format!("{}@clinic.example", unique("nobody"));
    let unknown = ask_reset(&http, &nobody).await;
    let known = ask_reset(&http, &c.email).await;
    assert_eq!(unknown, known);
    let mail = mail_to(&smtp.maildir, &c.email).await;
    assert_eq!(mail.len(), 1, "one message to {}", c.email);
    let message = &mail[0];
    assert!(
        message.contains("Subject: Reset your MedicalPro password"),
        "{message}"
    );
    assert!(message.contains("/reset-password?token="), "{message}");
    assert!(messages(&smtp.maildir, &nobody).is_empty());
    let token = reset_token(message);

    // A weak password is refused and keeps the link usable.
    let weak = json!({"token": token, "new_password": "short"});
    problem(
        &call(&http, "/api/v1/auth/password-reset/confirm", None, weak).await,
        400,
    );
    let body = json!({"token": token, "new_password": NEW_PASSWORD});
    let done = call(
        &http,
        "/api/v1/auth/password-reset/confirm",
        None,
        body.clone(),
    )
    .await;
    assert_eq!(done.status, 204, "{}", done.text());

    // Every session ended; the old password is gone, the new one signs in.
    refused_soon(&http, &c.token).await;
    let refresh = call(
        &http,
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": c.refresh_token}),
    )
    .await;
    problem(&refresh, 401);
    problem(&sign_in(&http, &c.email, &c.password).await, 401);
    status(&sign_in(&http, &c.email, NEW_PASSWORD).await, 200);

    // The link works once.
    let again = problem(
        &call(&http, "/api/v1/auth/password-reset/confirm", None, body).await,
        400,
    );
    assert!(again["detail"]
        .as_str()
        .unwrap()
        .contains("ask for a new link"));
    let records = wait_audit(
        &c,
        "action = 'password_reset' AND outcome = 'success' AND user_id IS NOT NULL",
    )
    .await;
    assert_eq!(records.len(), 1);
}

#[tokio::test]
async fn without_an_smtp_server_the_devstack_writes_each_message_as_an_eml_file() {
    let _turn = turn();
    let http = http();
    let dir = stack().mail_dir().expect("the devstack sets MAIL_DIR");
    let c = register(&http, None).await;
    ask_reset(&http, &c.email).await;
    let mail = mail_to(&dir, &c.email).await;
    assert_eq!(mail.len(), 1, "a .eml file under {}", dir.display());
    let token = reset_token(&mail[0]);

    // A token past its time is refused like an unknown one.
    central_db()
        .await
        .execute(
            "UPDATE password_resets SET expires_at = now() - interval '1 second' \
             WHERE token_hash = sha256(convert_to($1, 'UTF8'))",
            &[&token],
        )
        .await
        .unwrap();
    let body = json!({"token": token, "new_password": NEW_PASSWORD});
    problem(
        &call(&http, "/api/v1/auth/password-reset/confirm", None, body).await,
        400,
    );
    let body = json!({"token": "not-a-token", "new_password": NEW_PASSWORD});
    problem(
        &call(&http, "/api/v1/auth/password-reset/confirm", None, body).await,
        400,
    );
    // Nothing changed: the old password still signs in.
    status(&sign_in(&http, &c.email, &c.password).await, 200);
}

#[tokio::test]
async fn changing_ones_password_needs_the_current_one_and_ends_every_other_session() {
    let _turn = turn();
    let http = http();
    let c = register(&http, None).await;
    let other = status(&sign_in(&http, &c.email, &c.password).await, 200);
    let other_access = other["access_token"].as_str().unwrap();

    let wrong = json!({"current_password": "not the password", "new_password": NEW_PASSWORD});
    problem(
        &call(&http, "/api/v1/auth/password", Some(&c.token), wrong).await,
        401,
    );
    let weak = json!({"current_password": c.password, "new_password": "short"});
    problem(
        &call(&http, "/api/v1/auth/password", Some(&c.token), weak).await,
        400,
    );
    problem(
        &call(
            &http,
            "/api/v1/auth/password",
            None,
            json!({"current_password": c.password, "new_password": NEW_PASSWORD}),
        )
        .await,
        401,
    );
    // Nothing changed so far.
    status(
        &http
            .get("/api/v1/patients", Some(other_access))
            .await
            .unwrap(),
        200,
    );

    let body = json!({"current_password": c.password, "new_password": NEW_PASSWORD});
    let fresh = status(
        &call(&http, "/api/v1/auth/password", Some(&c.token), body).await,
        200,
    );
    let fresh_access = fresh["access_token"].as_str().unwrap();
    assert!(fresh["refresh_token"].is_string(), "{fresh}");

    refused_soon(&http, other_access).await;
    refused_soon(&http, &c.token).await;
    let refresh = call(
        &http,
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": other["refresh_token"]}),
    )
    .await;
    problem(&refresh, 401);
    status(
        &http
            .get("/api/v1/patients", Some(fresh_access))
            .await
            .unwrap(),
        200,
    );
    problem(&sign_in(&http, &c.email, &c.password).await, 401);
    status(&sign_in(&http, &c.email, NEW_PASSWORD).await, 200);
    let records = wait_audit(&c, "action = 'change_password'").await;
    let outcomes: Vec<String> = records.iter().map(|r| r.get("outcome")).collect();
    assert!(outcomes.contains(&"failure".to_owned()), "{outcomes:?}");
    assert!(outcomes.contains(&"success".to_owned()), "{outcomes:?}");
}
