//! The systemd units (`deploy/systemd`): each runs a binary with environment files
//! whose examples sit beside it; those examples (secrets files: placeholders only),
//! with and without their commented optional settings, are accepted by the binary
//! and every name is read; files handed over as credentials (`/run/credentials/…`,
//! the gateway's signing key) are loaded by the unit itself; the units are
//! hardened, give the gateway time to drain, and do not restart a process that
//! refused its configuration. Where `systemd-analyze` is installed, it verifies the
//! units too. `admin.env.example`, the admin tool's settings on a server, is
//! accepted by its configuration code as well.

use super::config::{configure, configure_admin, Binary, Env, Loaded, Val};
use super::formats::{deploy_dir, read, systemd_seconds, walk, EnvFile, Unit};
use common::config::EXIT_BAD_CONFIG;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn dir() -> PathBuf {
    deploy_dir().join("systemd")
}

/// Hardening every unit must have, with its value.
const HARDENING: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictNamespaces", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("CapabilityBoundingSet", ""),
    ("SystemCallArchitectures", "native"),
];

/// The units, and for a template the instances that have example files.
fn units() -> Vec<(String, Unit, Vec<String>)> {
    let files = walk(&dir());
    files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "service"))
        .map(|f| {
            let name = f.file_name().unwrap().to_str().unwrap().to_owned();
            let unit = Unit::parse(&read(f), &name);
            let instances = if name.contains("@.") {
                // Instances are the regions with a worker-<region>.env.example.
                files
                    .iter()
                    .filter_map(|f| {
                        let n = f.file_name()?.to_str()?;
                        n.strip_prefix("worker-")?
                            .strip_suffix(".env.example")
                            .filter(|r| !r.ends_with(".secrets"))
                            .map(str::to_owned)
                    })
                    .collect()
            } else {
                vec![String::new()]
            };
            assert!(!instances.is_empty(), "{name}: no example instance");
            (name, unit, instances)
        })
        .collect()
}

/// The environment a unit instance gets from its EnvironmentFiles' examples.
fn unit_env(name: &str, unit: &Unit, instance: &str, optional: bool) -> Env {
    let mut env = Env::new();
    for path in unit.all("Service", "EnvironmentFile") {
        let required = !path.starts_with('-');
        assert!(
            required,
            "{name}: optional EnvironmentFile {path}: a missing file must stop it"
        );
        let path = path.replace("%i", instance);
        let file = path
            .strip_prefix("/etc/medicalpro/")
            .unwrap_or_else(|| panic!("{name}: EnvironmentFile {path} outside /etc/medicalpro"));
        let example = dir().join(format!("{file}.example"));
        assert!(
            example.exists(),
            "{name}: no example {} for {path}",
            example.display()
        );
        let secret = file.contains("secrets");
        let parsed = EnvFile::load(&example);
        for (k, v) in parsed.settings(optional) {
            let val = if secret {
                assert!(
                    v.is_empty(),
                    "{}: {k} has a value; examples hold no secrets",
                    example.display()
                );
                Val::Secret(format!("{path}: {k}"))
            } else {
                Val::Literal(v)
            };
            assert!(
                !env.contains_key(&k),
                "{name}: {k} set in two EnvironmentFiles (the later silently wins)"
            );
            env.insert(k, val);
        }
    }
    env
}

#[test]
fn systemd_units_are_hardened_and_their_examples_configure_the_binary() {
    let mut ports: BTreeMap<u16, String> = BTreeMap::new();
    let mut seen = Vec::new();
    for (name, unit, instances) in units() {
        let exec = unit
            .get("Service", "ExecStart")
            .unwrap_or_else(|| panic!("{name}: ExecStart"));
        let program = exec.split_whitespace().next().unwrap();
        let binary = Binary::named(program).unwrap_or_else(|| panic!("{name}: runs {program}"));
        seen.push(binary);
        for (key, value) in HARDENING {
            assert_eq!(
                unit.get("Service", key),
                Some(*value),
                "{name}: {key}={value}"
            );
        }
        let user = unit
            .get("Service", "User")
            .unwrap_or_else(|| panic!("{name}: User"));
        assert!(user != "root" && user != "0", "{name}: runs as root");
        assert!(
            unit.get("Service", "RestartPreventExitStatus")
                .is_some_and(|s| s
                    .split_whitespace()
                    .any(|c| c == EXIT_BAD_CONFIG.to_string())),
            "{name}: a refused configuration (exit {EXIT_BAD_CONFIG}) must not restart in a loop"
        );
        assert_eq!(
            unit.get("Service", "KillSignal").unwrap_or("SIGTERM"),
            "SIGTERM",
            "{name}"
        );
        let stop = unit
            .get("Service", "TimeoutStopSec")
            .map_or(90, systemd_seconds);
        for instance in instances {
            let what = format!("systemd {}", name.replace("@.", &format!("@{instance}.")));
            let mut loaded: Option<Loaded> = None;
            for optional in [false, true] {
                let env = unit_env(&name, &unit, &instance, optional);
                let w = format!(
                    "{what}{}",
                    if optional {
                        " (optional settings on)"
                    } else {
                        ""
                    }
                );
                let l = configure(binary, &env, &w);
                assert_eq!(
                    l.mutual_tls, optional,
                    "{w}: mutual TLS is the optional part"
                );
                let unit_name = name.replace("@.", &format!("@{instance}."));
                for (setting, path) in &l.files {
                    let Some(rest) = path.strip_prefix("/run/credentials/") else {
                        continue;
                    };
                    let (owner, id) = rest
                        .split_once('/')
                        .unwrap_or_else(|| panic!("{w}: {setting}={path}"));
                    assert_eq!(
                        owner, unit_name,
                        "{w}: {setting}={path} names another unit's credentials"
                    );
                    assert!(
                        unit.all("Service", "LoadCredential")
                            .iter()
                            .any(|c| c.split_once(':').is_some_and(|(i, _)| i == id)),
                        "{w}: {setting}={path}, but the unit has no LoadCredential={id}:…"
                    );
                }
                if let Some(region) = &l.region {
                    assert_eq!(*region, instance, "{w}: REGION is the instance name");
                    let url = l.worker_url.as_deref().unwrap();
                    assert!(
                        url.ends_with(&format!(":{}", l.listen.port())),
                        "{w}: WORKER_URL {url} port"
                    );
                }
                loaded.get_or_insert(l);
            }
            let l = loaded.unwrap();
            if binary == Binary::Gateway {
                let needed = (l.shutdown_delay + l.shutdown_grace).as_secs();
                assert!(
                    stop > needed,
                    "{what}: TimeoutStopSec {stop}s must exceed the drain ({needed}s)"
                );
            }
            // Services of one host must not share ports.
            for port in [l.listen.port(), l.admin.port()] {
                if let Some(other) = ports.insert(port, what.clone()) {
                    panic!("{what} and {other} both listen on {port}");
                }
            }
        }
    }
    seen.sort();
    assert_eq!(seen, [Binary::Gateway, Binary::Worker], "a unit per binary");
    verify_with_systemd_analyze();
}

/// `systemd-analyze verify` on copies of the units whose ExecStart is /bin/true (it
/// wants an executable that exists): no unknown or malformed directive.
fn verify_with_systemd_analyze() {
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: units not verified by systemd");
        return;
    }
    let tmp = super::config::scratch("deploy-systemd");
    std::fs::create_dir_all(&tmp).unwrap();
    for (name, _, instances) in units() {
        let text = read(&dir().join(&name));
        let exec = text
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .unwrap()
            .to_owned();
        let text = text.replace(&exec, "ExecStart=/bin/true");
        let file = tmp.join(name.replace("@.", &format!("@{}.", instances[0])));
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let about_it: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(file.file_name().unwrap().to_str().unwrap()))
            .collect();
        assert!(
            out.status.success() && about_it.is_empty(),
            "systemd-analyze verify {name}:\n{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn every_systemd_file_belongs_to_a_unit() {
    let units = units();
    let mut used: Vec<String> = vec!["medicalpro.sysusers.conf".into(), ADMIN_ENV.into()];
    for (name, unit, instances) in &units {
        used.push(name.clone());
        for i in instances {
            for f in unit.all("Service", "EnvironmentFile") {
                let f = f.replace("%i", i);
                used.push(format!(
                    "{}.example",
                    f.trim_start_matches("/etc/medicalpro/")
                ));
            }
        }
        // The user the unit runs as is the one sysusers makes.
        let user = unit.get("Service", "User").unwrap();
        let sysusers = read(&dir().join("medicalpro.sysusers.conf"));
        assert!(
            sysusers
                .lines()
                .any(|l| l.split_whitespace().take(2).eq(["u", user])),
            "{name}: medicalpro.sysusers.conf does not make user {user}"
        );
    }
    for f in walk(&dir()) {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            used.iter().any(|u| u == name),
            "deploy/systemd/{name} is used by no unit"
        );
    }
}

/// The admin tool's settings on a server, read through
/// `MEDICALPRO_CONFIG=/etc/medicalpro/admin.env medicalpro-admin …`.
const ADMIN_ENV: &str = "admin.env.example";

/// Secrets the admin tool's settings hold (empty in the example).
fn admin_secret(name: &str) -> bool {
    name.ends_with("_PASSWORD")
        || [
            "MASTER_KEY",
            "MASTER_KEYS_RETIRED",
            "AUDIT_KEY",
            "AUDIT_KEYS_RETIRED",
        ]
        .contains(&name)
}

#[test]
fn the_admin_environment_example_configures_the_admin_tool() {
    let path = dir().join(ADMIN_ENV);
    let file = EnvFile::load(&path);
    for (k, v) in file.active.iter().chain(&file.optional) {
        assert!(
            !admin_secret(k) || v.is_empty(),
            "{}: {k} has a value; examples hold no secrets",
            path.display()
        );
    }
    for optional in [false, true] {
        let what = format!(
            "systemd {ADMIN_ENV}{}",
            if optional {
                " (optional settings on)"
            } else {
                ""
            }
        );
        let env: Env = file
            .settings(optional)
            .into_iter()
            .map(|(k, v)| {
                let val = if admin_secret(&k) {
                    Val::Secret(format!("{ADMIN_ENV}: {k}"))
                } else {
                    Val::Literal(v)
                };
                (k, val)
            })
            .collect();
        assert!(
            env.contains_key("MASTER_KEY"),
            "{what}: the key commands need MASTER_KEY"
        );
        let (settings, _) = configure_admin(&env, &[], &what);
        assert!(
            settings.central.tls.is_enabled() && settings.regional.tls.is_enabled(),
            "{what}: every connection over TLS"
        );
        assert!(
            settings.audit_keys.is_some(),
            "{what}: AUDIT_KEY, for the commands that write or verify the audit trail"
        );
        if optional {
            assert!(
                settings.target.as_ref().is_some_and(|t| t.tls.is_enabled()),
                "{what}: the relocation target, over TLS"
            );
        }
    }
}
