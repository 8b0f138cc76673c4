//! The `devstack` command: start, hand the admin tool its settings, announce,
//! optionally seed a demo clinic, watch the children until Ctrl-C or SIGTERM (or
//! until one the stack cannot do without ends: [`crate::supervise`]), stop cleanly.

use crate::stack::{Stack, StackOptions, CENTRAL_DB};
use crate::supervise::{self, Ended, Policy};
use crate::Http;
use anyhow::{bail, Context};
use serde_json::json;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Runs the command; an error when the stack could not start, or stopped because
/// one of its children ended for good (the process then exits non-zero).
pub fn run(
    listen: SocketAddr,
    data_dir: PathBuf,
    demo: bool,
    regions: Vec<String>,
) -> anyhow::Result<()> {
    if regions.is_empty() {
        bail!("at least one region is needed");
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut options = StackOptions::new(exe, data_dir);
    options.listen = listen;
    options.regions = regions;
    options.log_level = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    eprintln!("devstack: starting PostgreSQL servers, workers and the gateway…");
    let mut stack = Stack::start(options)?;
    let admin_env = stack
        .write_admin_env()
        .context("writing the admin tool's settings")?;

    let mut out = std::io::stdout();
    writeln!(out, "central: {}", stack.central.url(CENTRAL_DB))?;
    for r in &stack.regions {
        writeln!(out, "region {}: {}", r.name, r.server.url("postgres"))?;
    }
    let others: Vec<String> = admin_env
        .regions
        .iter()
        .map(|(region, path)| format!("{region}: {}", path.display()))
        .collect();
    writeln!(
        out,
        "admin: MEDICALPRO_CONFIG={} (medicalpro-admin's settings; per region, {})",
        admin_env.default.display(),
        others.join(", ")
    )?;
    if let Some(dir) = stack.mail_dir() {
        writeln!(
            out,
            "mail: {} (no SMTP_URL: each message as a .eml file)",
            dir.display()
        )?;
    }
    writeln!(out, "metrics: {}", stack.metrics_url())?;
    out.flush()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if demo {
        let text = runtime.block_on(seed_demo(&stack.gateway_url()))?;
        writeln!(out, "{text}")?;
    }
    writeln!(out, "ready: http://{}", stack.gateway.addr)?;
    out.flush()?;

    let ended = runtime.block_on(supervise::watch(
        &mut stack,
        Policy::default(),
        common::service::shutdown_signal(),
        |event| eprintln!("devstack: {event}"),
    ));
    eprintln!("devstack: stopping…");
    stack.stop();
    eprintln!("devstack: stopped");
    match ended {
        Ended::Signal => Ok(()),
        Ended::Failed(event) => bail!(
            "stopped because {} could not go on; see its log, then start again",
            event.who()
        ),
    }
}

/// Registers a demo clinic, adds a few patients and returns how to log in.
pub async fn seed_demo(base: &str) -> anyhow::Result<String> {
    let http = Http::new(base);
    let email = format!("demo-{}@medicalpro.example", &uuid_suffix());
    let password = format!("demo-{}", uuid_suffix());
    let reg = http
        .post(
            "/api/v1/auth/register",
            None,
            &json!({"clinic_name": "Demo Clinic", "email": email, "password": password}),
        )
        .await?;
    if reg.status.as_u16() != 201 {
        bail!("demo registration failed: {} {}", reg.status, reg.text());
    }
    let login = http
        .post(
            "/api/v1/auth/login",
            None,
            &json!({"email": email, "password": password}),
        )
        .await?;
    let token = login.json()["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("demo login returned no token")?;
    let patients = [
        ("Ada", "Lovelace", "1985-12-10"),
        ("Louis", "Pasteur", "1972-12-27"),
        ("Marie", "Curie", "1967-11-07"),
    ];
    for (first, last, born) in patients {
        let r = http
            .post(
                "/api/v1/patients",
                Some(&token),
                &json!({"first_name": first, "last_name": last, "birth_date": born, "email": format!("{}@example.org", first.to_lowercase())}),
            )
            .await?;
        if r.status.as_u16() != 201 {
            bail!("demo patient failed: {} {}", r.status, r.text());
        }
    }
    Ok(format!(
        "demo: clinic {} — login with email {email} password {password}\ndemo token: {token}",
        reg.json()["clinic_id"].as_str().unwrap_or("?")
    ))
}

fn uuid_suffix() -> String {
    use rand::RngCore;
    let mut b = [0u8; 6];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
