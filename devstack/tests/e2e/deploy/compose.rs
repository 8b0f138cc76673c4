//! The compose topology (`deploy/compose`): every gateway and worker service, with
//! its image's environment, its env files and its `${SECRET}` references, is
//! accepted by the binary's configuration; database settings name the PostgreSQL
//! services they mean, over TLS, and those servers admit TLS connections only; the
//! one-shot migration service migrates the central database as its owner and makes
//! the login roles gateways and workers use, before they start; only gateways see
//! the token signing key; HAProxy sends traffic to the gateways' public port and
//! checks `/readyz` on their admin port, fast enough for the shutdown delay;
//! Prometheus scrapes every admin listener.

use super::config::{
    configure, configure_admin, job_script, literals, Binary, Env, JobScript, Loaded, Val,
};
use super::formats::{deploy_dir, haproxy, read, text, yaml_docs, yaml_file, EnvFile};
use super::image::{image_env, stage_named, ADMIN_JOB};
use common::config::DbSettings;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Connections a worker holds on its regional server besides the clinic pools: its
/// admin pool (`worker/src/server.rs`, 4) and the one-off connections of start-up.
const WORKER_REGIONAL_OVERHEAD: usize = 6;
/// PostgreSQL's `superuser_reserved_connections` default.
const SUPERUSER_RESERVED: usize = 3;

fn dir() -> PathBuf {
    deploy_dir().join("compose")
}

/// Compose's merge of one file over another: mappings merge, the lists of
/// `volumes`, `env_file` and `ports` add up, anything else is replaced.
fn merge(base: &mut Value, over: &Value, key: &str) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v, k),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if ["volumes", "env_file", "ports"].contains(&key) => {
            b.extend(o.iter().cloned());
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// The names `.env` must define (from `secrets.env.example`, whose values are empty).
fn secret_names() -> BTreeSet<String> {
    let example = EnvFile::load(&dir().join("secrets.env.example"));
    for (k, v) in &example.active {
        assert!(
            v.is_empty(),
            "compose/secrets.env.example: {k} has a value; leave it empty"
        );
    }
    example.active.into_iter().map(|(k, _)| k).collect()
}

/// A compose value: `${NAME:?…}` / `${NAME}` of a secret is a reference, `${NAME:-x}`
/// is `x`; `$$` is a dollar sign.
fn interpolate(raw: &str, secrets: &BTreeSet<String>, what: &str) -> Val {
    if let Some(inner) = raw.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        let name: String = inner
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let rest = &inner[name.len()..];
        if secrets.contains(&name) {
            assert!(
                rest.starts_with(":?"),
                "{what}: ${{{name}}} should be ${{{name}:?…}} so compose refuses an empty secret"
            );
            return Val::Secret(name);
        }
        if let Some(default) = rest.strip_prefix(":-") {
            return Val::Literal(default.to_owned());
        }
        panic!("{what}: ${{{name}}} is neither in secrets.env.example nor defaulted");
    }
    assert!(
        !raw.replace("$$", "").contains('$'),
        "{what}: interpolation inside {raw:?}"
    );
    Val::Literal(raw.replace("$$", "$"))
}

/// A service's `environment`, in either of compose's forms.
fn environment(svc: &Value, secrets: &BTreeSet<String>, what: &str) -> Env {
    let pairs: Vec<(String, String)> = match &svc["environment"] {
        Value::Null => Vec::new(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), text(v).unwrap_or_default()))
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|e| {
                let s = e.as_str().unwrap();
                let (k, v) = s.split_once('=').unwrap_or((s, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        other => panic!("{what}: environment {other}"),
    };
    pairs
        .into_iter()
        .map(|(k, v)| {
            let val = interpolate(&v, secrets, &format!("{what} {k}"));
            (k, val)
        })
        .collect()
}

/// The compose model: files merged in order, and what the checks need of it.
pub struct Compose {
    pub doc: Value,
    pub secrets: BTreeSet<String>,
    /// Whether the env files' commented-out optional settings are switched on.
    pub optional: bool,
}

/// One of our services, configured.
pub struct Ours {
    pub name: String,
    pub loaded: Loaded,
    pub env: Env,
}

impl Compose {
    pub fn load(files: &[&str], optional: bool) -> Self {
        let mut doc = Value::Null;
        for f in files {
            let layer = yaml_file(&dir().join(f));
            if doc.is_null() {
                doc = layer;
            } else {
                merge(&mut doc, &layer, "");
            }
        }
        Self {
            doc,
            secrets: secret_names(),
            optional,
        }
    }

    pub fn services(&self) -> &serde_json::Map<String, Value> {
        self.doc["services"].as_object().expect("services")
    }

    pub fn binary(svc: &Value) -> Option<Binary> {
        svc["build"]["target"]
            .as_str()
            .and_then(Binary::named)
            .or_else(|| svc["image"].as_str().and_then(Binary::named))
    }

    /// What a service's container starts with: the image's environment, then its env
    /// files in order (with their optional settings if asked), then its `environment`.
    pub fn env(&self, name: &str, binary: Binary) -> Env {
        self.env_over(name, image_env(binary))
    }

    /// Like [`Compose::env`], over the environment `image` sets.
    pub fn env_over(&self, name: &str, image: Env) -> Env {
        let svc = &self.services()[name];
        let mut env = image;
        for f in svc["env_file"].as_array().into_iter().flatten() {
            let path = f.as_str().or_else(|| f["path"].as_str()).unwrap();
            let file = EnvFile::load(&dir().join(path));
            for (k, v) in file.settings(self.optional) {
                env.insert(k, Val::Literal(v));
            }
        }
        env.extend(environment(svc, &self.secrets, &format!("compose {name}")));
        env
    }

    /// Every gateway and worker service, configured through the real code.
    pub fn ours(&self, what: &str) -> Vec<Ours> {
        self.services()
            .iter()
            .filter_map(|(name, svc)| Some((name, Self::binary(svc)?)))
            .map(|(name, binary)| {
                let env = self.env(name, binary);
                let loaded = configure(binary, &env, &format!("{what}: service {name}"));
                Ours {
                    name: name.clone(),
                    loaded,
                    env,
                }
            })
            .collect()
    }

    fn networks(&self, name: &str) -> BTreeSet<String> {
        match &self.services()[name]["networks"] {
            Value::Null => ["default".to_owned()].into(),
            Value::Array(a) => a.iter().map(|n| n.as_str().unwrap().to_owned()).collect(),
            Value::Object(m) => m.keys().cloned().collect(),
            other => panic!("networks {other}"),
        }
    }

    pub fn share_network(&self, a: &str, b: &str) -> bool {
        !self.networks(a).is_disjoint(&self.networks(b))
    }

    /// `(source, target)` of a service's volumes (short syntax).
    pub fn volumes(&self, name: &str) -> Vec<(String, String)> {
        self.services()[name]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                let s = v.as_str().expect("short volume syntax");
                let mut parts = s.split(':');
                let source = parts.next().unwrap().to_owned();
                let target = parts
                    .next()
                    .unwrap_or_else(|| panic!("volume {s}"))
                    .to_owned();
                (source, target)
            })
            .collect()
    }

    /// The host path a container path of a service comes from (a bind mount).
    pub fn host_path(&self, name: &str, container_path: &str) -> Option<PathBuf> {
        self.volumes(name).into_iter().find_map(|(source, target)| {
            // Whole path components: /etc/medicalpro/jwt is not under /etc/medicalpro/j.
            let rest = Path::new(container_path).strip_prefix(&target).ok()?;
            let host = dir().join(&source);
            (source.starts_with('.') || source.starts_with('/')).then(|| {
                if rest.as_os_str().is_empty() {
                    host
                } else {
                    host.join(rest)
                }
            })
        })
    }

    /// Whether a service waits for `other` to reach `condition`.
    pub fn waits_for(&self, name: &str, other: &str, condition: &str) -> bool {
        self.services()[name]["depends_on"][other]["condition"] == condition
    }

    /// The container ports a service publishes.
    pub fn published(&self, name: &str) -> Vec<u16> {
        self.services()[name]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let s = text(p).unwrap();
                s.rsplit(':').next().unwrap().parse().unwrap()
            })
            .collect()
    }
}

fn postgres_env(c: &Compose, name: &str) -> Env {
    environment(&c.services()[name], &c.secrets, &format!("compose {name}"))
}

fn max_connections(svc: &Value) -> usize {
    postgres_settings(svc)
        .get("max_connections")
        .map_or(100, |n| n.parse().unwrap())
}

/// The `-c name=value` settings of a PostgreSQL service's `command`.
fn postgres_settings(svc: &Value) -> BTreeMap<String, String> {
    let cmd: Vec<String> = svc["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(text)
        .collect();
    cmd.windows(2)
        .filter(|w| w[0] == "-c")
        .filter_map(|w| w[1].split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A PostgreSQL service runs with TLS on, its certificate and key mounted, and a
/// `pg_hba.conf` (a file of this folder) that admits TCP connections over TLS with
/// SCRAM only and rejects the rest.
fn check_postgres_tls(c: &Compose, host: &str, what: &str) {
    let settings = postgres_settings(&c.services()[host]);
    assert_eq!(
        settings.get("ssl").map(String::as_str),
        Some("on"),
        "{what}: {host} must run with -c ssl=on"
    );
    for file in ["ssl_cert_file", "ssl_key_file", "hba_file"] {
        let path = settings
            .get(file)
            .unwrap_or_else(|| panic!("{what}: {host} sets no -c {file}=…"));
        assert!(
            c.host_path(host, path).is_some(),
            "{what}: {host}'s {file} {path} is on no volume mounted into it"
        );
    }
    let hba = c.host_path(host, &settings["hba_file"]).unwrap();
    let mut over_tls = false;
    for line in read(&hba).lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first() {
            None | Some(&"local") => {}
            Some(&"hostssl") => {
                assert_eq!(
                    words.last(),
                    Some(&"scram-sha-256"),
                    "{}: `{line}`: authenticate with scram-sha-256",
                    hba.display()
                );
                over_tls = true;
            }
            Some(&"hostnossl") => assert_eq!(
                words.last(),
                Some(&"reject"),
                "{}: `{line}`: connections without TLS must be rejected",
                hba.display()
            ),
            Some(other) => panic!(
                "{}: `{line}`: a `{other}` line admits connections without TLS; use hostssl",
                hba.display()
            ),
        }
    }
    assert!(over_tls, "{}: no hostssl line", hba.display());
}

/// A database setting names a PostgreSQL service that the process can reach and
/// waits for, over TLS verified against a CA (not `…SSLMODE=disable`).
fn check_server(c: &Compose, service: &str, db: &DbSettings, what: &str) {
    let svc = c
        .services()
        .get(&db.host)
        .unwrap_or_else(|| panic!("{what}: host {} is no compose service", db.host));
    assert!(
        svc["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("postgres")),
        "{what}: {} is not a PostgreSQL service",
        db.host
    );
    assert_eq!(
        db.port, 5432,
        "{what}: PostgreSQL listens on 5432 in its container"
    );
    assert!(
        c.share_network(service, &db.host),
        "{what}: no shared network"
    );
    assert!(
        c.waits_for(service, &db.host, "service_healthy"),
        "{what}: wait for {} to be healthy",
        db.host
    );
    assert!(
        db.tls.is_enabled(),
        "{what}: connect over TLS verified against the server's CA (…SSLMODE verify-full \
         with …SSLROOTCERT), not in plain TCP"
    );
    check_postgres_tls(c, &db.host, what);
}

/// A database setting of one of our services names a PostgreSQL service it can
/// reach over TLS and waits for. Regional servers: it logs in with that server's own
/// user and password (a role that may create roles and databases). The central
/// database: as a login role of its kind that the migration service makes, with the
/// same password secret, never as the database's owner; and only once that
/// service has completed.
fn check_database(c: &Compose, ours: &Ours, which: &str, migration: &Migration) {
    let what = format!("compose {}: {which} database", ours.name);
    let (db, password_name) = match which {
        "central" => (&ours.loaded.central, "DB_PASSWORD"),
        _ => (ours.loaded.regional.as_ref().unwrap(), "REGION_DB_PASSWORD"),
    };
    check_server(c, &ours.name, db, &what);
    let pg = postgres_env(c, &db.host);
    if which != "central" {
        assert_eq!(
            pg.get("POSTGRES_USER").and_then(Val::literal),
            Some(db.user.as_str()),
            "{what}: user"
        );
        assert_eq!(
            ours.env.get(password_name),
            pg.get("POSTGRES_PASSWORD"),
            "{what}: {password_name} and the server's POSTGRES_PASSWORD must be the same secret"
        );
        return;
    }
    assert_eq!(
        pg.get("POSTGRES_DB").and_then(Val::literal),
        Some(db.dbname.as_str()),
        "{what}: the central database must exist (POSTGRES_DB)"
    );
    assert_ne!(
        pg.get("POSTGRES_USER").and_then(Val::literal),
        Some(db.user.as_str()),
        "{what}: {} owns the database; log in as a service role (create-service-role)",
        db.user
    );
    let m = &migration.settings.central;
    assert_eq!(
        (&m.host, m.port, &m.dbname),
        (&db.host, db.port, &db.dbname),
        "{what}: {} migrates another database",
        migration.name
    );
    let role = migration
        .script
        .roles
        .iter()
        .find(|r| r.name == db.user)
        .unwrap_or_else(|| {
            panic!(
                "{what}: DB_USER {} is made by no `create-service-role` of {}",
                db.user, migration.name
            )
        });
    assert_eq!(
        role.kind,
        ours.loaded.binary.name(),
        "{what}: role {} is made for another kind of service",
        role.name
    );
    assert_eq!(
        migration.env.get(&role.password_var),
        ours.env.get(password_name),
        "{what}: the password role {} is given and {password_name} must be the same secret",
        role.name
    );
    assert!(
        c.waits_for(
            &ours.name,
            &migration.name,
            "service_completed_successfully"
        ),
        "{what}: start only once {} has completed (depends_on … \
         condition: service_completed_successfully)",
        migration.name
    );
}

/// The one-shot service that migrates the central database as its owner and makes
/// the services' login roles (`medicalpro-admin` from the job image, in a script).
struct Migration {
    name: String,
    env: Env,
    settings: admin::config::AdminSettings,
    script: JobScript,
}

fn is_admin_job(svc: &Value) -> bool {
    svc["build"]["target"] == ADMIN_JOB
        || svc["image"]
            .as_str()
            .is_some_and(|i| i.starts_with(&format!("medicalpro/{ADMIN_JOB}")))
}

fn check_migration(c: &Compose, what: &str) -> Migration {
    let jobs: Vec<&String> = c
        .services()
        .iter()
        .filter(|(_, s)| is_admin_job(s))
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        jobs.len(),
        1,
        "{what}: one service runs the {ADMIN_JOB} image (the central migration)"
    );
    let name = jobs[0].clone();
    let w = format!("{what}: {name}");
    let svc = &c.services()[&name];
    let argv: Vec<String> = [&svc["entrypoint"], &svc["command"]]
        .into_iter()
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
        .filter_map(|v| text(&v))
        .collect();
    assert!(
        argv.len() == 3 && argv[0].ends_with("/sh") && argv[1] == "-c",
        "{w}: run a script with the image's shell: entrypoint [/busybox/sh, -c], command [script]; \
         got {argv:?}"
    );
    let script = job_script(&argv[2].replace("$$", "$"), &w);
    assert!(
        script.migrates,
        "{w}: must run medicalpro-admin migrate-central"
    );
    assert!(
        !["always", "unless-stopped"].contains(&svc["restart"].as_str().unwrap_or("no")),
        "{w}: a one-shot service must not be restarted once it completed"
    );
    let env = c.env_over(&name, literals(&stage_named(ADMIN_JOB).env));
    let own: Vec<String> = script
        .roles
        .iter()
        .map(|r| r.password_var.clone())
        .collect();
    for var in &own {
        assert!(
            matches!(env.get(var), Some(Val::Secret(_))),
            "{w}: ${var} must be a secret from .env"
        );
    }
    let (settings, files) = configure_admin(&env, &own, &w);
    for (setting, path) in &files {
        assert!(
            c.host_path(&name, path).is_some(),
            "{w}: {setting}={path} is on no volume mounted into the container"
        );
    }
    let db = &settings.central;
    check_server(c, &name, db, &format!("{w}: central database"));
    let pg = postgres_env(c, &db.host);
    assert_eq!(
        pg.get("POSTGRES_USER").and_then(Val::literal),
        Some(db.user.as_str()),
        "{w}: migrate as the central database's owner"
    );
    assert_eq!(
        env.get("DB_PASSWORD"),
        pg.get("POSTGRES_PASSWORD"),
        "{w}: DB_PASSWORD and the server's POSTGRES_PASSWORD must be the same secret"
    );
    assert_eq!(
        pg.get("POSTGRES_DB").and_then(Val::literal),
        Some(db.dbname.as_str()),
        "{w}: the central database must exist (POSTGRES_DB)"
    );
    Migration {
        name,
        env,
        settings,
        script,
    }
}

/// Checks the compose files merged in order; `mutual_tls` is what they should
/// configure, and also switches on the env files' optional settings.
fn check_compose(files: &[&str], mutual_tls: bool) {
    let what = format!("compose {}", files.join(" + "));
    let c = Compose::load(files, mutual_tls);
    let ours = c.ours(&what);
    let migration = check_migration(&c, &what);

    // Every secret reference is defined in secrets.env.example, and every one there used.
    let mut used = BTreeSet::new();
    for (name, svc) in c.services() {
        for v in environment(svc, &c.secrets, &format!("{what}: {name}")).values() {
            if let Val::Secret(s) = v {
                used.insert(s.clone());
            }
        }
    }
    assert_eq!(
        used, c.secrets,
        "{what}: secrets used vs secrets.env.example"
    );

    let gateways: Vec<&Ours> = ours
        .iter()
        .filter(|o| o.loaded.binary == Binary::Gateway)
        .collect();
    let workers: Vec<&Ours> = ours
        .iter()
        .filter(|o| o.loaded.binary == Binary::Worker)
        .collect();
    assert!(
        gateways.len() >= 2,
        "{what}: two gateways behind the load balancer"
    );
    let regions: BTreeSet<&str> = workers
        .iter()
        .map(|w| w.loaded.region.as_deref().unwrap())
        .collect();
    assert_eq!(
        regions.len(),
        workers.len(),
        "{what}: one worker per region"
    );
    assert!(regions.len() >= 2, "{what}: two regions");

    // Load balancer addresses the gateways may trust.
    let lb_addresses: BTreeSet<IpAddr> = c
        .services()
        .values()
        .filter(|s| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("haproxy"))
        })
        .flat_map(|s| {
            s["networks"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, n)| n["ipv4_address"].as_str())
                .map(|a| a.parse().unwrap())
                .collect::<Vec<_>>()
        })
        .collect();

    for o in &ours {
        let w = format!("{what}: {}", o.name);
        assert!(
            o.loaded.listen.ip().is_unspecified() && o.loaded.admin.ip().is_unspecified(),
            "{w}: listeners must bind every address"
        );
        assert_eq!(o.loaded.mutual_tls, mutual_tls, "{w}: mutual TLS");
        check_database(&c, o, "central", &migration);
        for (setting, path) in &o.loaded.files {
            assert!(
                c.host_path(&o.name, path).is_some(),
                "{w}: {setting}={path} is on no volume mounted into the container"
            );
        }
        let svc = &c.services()[&o.name];
        match o.loaded.binary {
            Binary::Worker => {
                check_database(&c, o, "regional", &migration);
                let url = o.loaded.worker_url.as_deref().unwrap();
                let scheme = if mutual_tls { "https" } else { "http" };
                assert_eq!(
                    url,
                    format!("{scheme}://{}:{}", o.name, o.loaded.listen.port()),
                    "{w}: WORKER_URL must reach this service's public listener"
                );
            }
            Binary::Gateway => {
                let default = o.loaded.default_region.as_deref().unwrap_or_default();
                assert!(
                    regions.contains(default),
                    "{w}: DEFAULT_REGION {default} has no worker"
                );
                assert!(
                    !o.loaded.trusted_proxies.is_empty()
                        && o.loaded
                            .trusted_proxies
                            .iter()
                            .all(|p| lb_addresses.contains(p)),
                    "{w}: TRUSTED_PROXIES {:?} must be the load balancer's {lb_addresses:?}",
                    o.loaded.trusted_proxies
                );
                let stop = svc["stop_grace_period"]
                    .as_str()
                    .map_or(10, super::formats::systemd_seconds);
                let needed = (o.loaded.shutdown_delay + o.loaded.shutdown_grace).as_secs();
                assert!(
                    stop > needed,
                    "{w}: stop_grace_period {stop}s must exceed SHUTDOWN_DELAY_SECS + \
                     SHUTDOWN_GRACE_SECS ({needed}s)"
                );
            }
        }
    }

    // Only gateways see the token signing key: no worker mounts it, or a folder
    // holding it.
    let signing_keys: Vec<PathBuf> = gateways
        .iter()
        .filter_map(|g| {
            let (_, path) = g
                .loaded
                .files
                .iter()
                .find(|(k, _)| k == "JWT_SIGNING_KEY_FILE")?;
            c.host_path(&g.name, path)
        })
        .collect();
    assert_eq!(
        signing_keys.len(),
        gateways.len(),
        "{what}: every gateway's JWT_SIGNING_KEY_FILE is a file mounted from the host"
    );
    for w in &workers {
        for (source, _) in c.volumes(&w.name) {
            let host = dir().join(&source);
            assert!(
                !signing_keys.iter().any(|k| k.starts_with(&host)),
                "{what}: {} mounts {source}, which holds the gateways' signing key",
                w.name
            );
        }
    }

    // The connection budget of each regional server.
    let mut per_server: BTreeMap<String, usize> = BTreeMap::new();
    for w in &workers {
        let host = w.loaded.regional.as_ref().unwrap().host.clone();
        *per_server.entry(host).or_default() +=
            w.loaded.pool_budget.unwrap() + WORKER_REGIONAL_OVERHEAD;
    }
    for (host, needed) in per_server {
        let max = max_connections(&c.services()[&host]);
        assert!(
            needed + SUPERUSER_RESERVED <= max,
            "{what}: {host} allows {max} connections; its workers may use {needed}"
        );
    }

    // Bind mounts point at files that exist (those the operator makes are ignored by
    // the folder's .gitignore: ./tls, ./pg-tls, ./jwt and what is in them).
    let ignored = read(&dir().join(".gitignore"));
    for name in c.services().keys() {
        for (source, _) in c.volumes(name) {
            if !(source.starts_with('.') || source.starts_with('/')) {
                continue;
            }
            let source_rel = source.trim_start_matches("./");
            let operator_made = ignored
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| l.trim_end_matches('/'))
                .any(|l| source_rel == l || source_rel.starts_with(&format!("{l}/")));
            let path = dir().join(&source);
            assert!(
                operator_made || path.exists(),
                "{what}: {name} mounts {source}, which does not exist"
            );
        }
    }
}

#[test]
fn compose_services_match_the_configuration() {
    check_compose(&["compose.yaml"], false);
}

#[test]
fn compose_with_mutual_tls_matches_the_configuration() {
    check_compose(&["compose.yaml", "compose.mtls.yaml"], true);
}

#[test]
fn load_balancer_checks_gateway_readiness_on_the_admin_port() {
    let c = Compose::load(&["compose.yaml"], false);
    let ours = c.ours("compose");
    let (lb, _) = c
        .services()
        .iter()
        .find(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.starts_with("haproxy"))
        })
        .expect("a load balancer service");
    let cfg = c
        .host_path(lb, "/usr/local/etc/haproxy/haproxy.cfg")
        .expect("haproxy.cfg mounted where the image reads it");
    let (binds, backends) = haproxy(&read(&cfg));
    assert_eq!(
        binds,
        c.published(lb),
        "the frontend binds the published port"
    );
    assert_eq!(backends.len(), 1);
    let backend = &backends[0];
    assert_eq!(
        backend.check_path.as_deref(),
        Some("/readyz"),
        "backend {} must check readiness",
        backend.name
    );
    let gateways: BTreeSet<&str> = ours
        .iter()
        .filter(|o| o.loaded.binary == Binary::Gateway)
        .map(|o| o.name.as_str())
        .collect();
    let servers: BTreeSet<&str> = backend.servers.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(
        servers, gateways,
        "every gateway, and only gateways, behind the load balancer"
    );
    for s in &backend.servers {
        let g = &ours.iter().find(|o| o.name == s.host).unwrap().loaded;
        assert!(c.share_network(lb, &s.host));
        assert_eq!(
            s.port,
            g.listen.port(),
            "{}: traffic to the public listener",
            s.name
        );
        assert!(s.check, "{}: health-checked", s.name);
        assert_eq!(
            s.check_port,
            Some(g.admin.port()),
            "{}: checks on the admin port",
            s.name
        );
        let out_after = s.inter_secs * f64::from(s.fall);
        assert!(
            out_after < g.shutdown_delay.as_secs_f64(),
            "{}: taken out after {out_after}s of failed checks, but the gateway stops \
             accepting after SHUTDOWN_DELAY_SECS ({:?})",
            s.name,
            g.shutdown_delay
        );
    }
    // The real HAProxy agrees, where it is installed.
    if let Some(haproxy) = crate::support::tool(
        "haproxy",
        "HAProxy's own check of haproxy.cfg (haproxy -c)",
        "apt-get install haproxy",
    ) {
        let out = std::process::Command::new(haproxy)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("running haproxy");
        assert!(
            out.status.success(),
            "haproxy -c: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `host:port` targets of a Prometheus configuration's static scrape configs, with
/// their job's metrics path.
fn static_targets(prom: &Value) -> Vec<(String, u16, String)> {
    let mut out = Vec::new();
    for job in prom["scrape_configs"].as_array().into_iter().flatten() {
        let path = job["metrics_path"]
            .as_str()
            .unwrap_or("/metrics")
            .to_owned();
        for sc in job["static_configs"].as_array().into_iter().flatten() {
            for t in sc["targets"].as_array().into_iter().flatten() {
                let (host, port) = t.as_str().unwrap().rsplit_once(':').unwrap();
                out.push((host.to_owned(), port.parse().unwrap(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn prometheus_scrapes_every_admin_listener_of_the_compose_stack() {
    let c = Compose::load(&["compose.yaml"], false);
    let ours = c.ours("compose");
    let (prom, svc) = c
        .services()
        .iter()
        .find(|(_, s)| {
            s["image"]
                .as_str()
                .is_some_and(|i| i.contains("prometheus"))
        })
        .expect("a Prometheus service");
    let config_path = svc["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("--config.file="))
        .unwrap_or("/etc/prometheus/prometheus.yml");
    let file = c
        .host_path(prom, config_path)
        .unwrap_or_else(|| panic!("{config_path} is not mounted from the repository"));
    assert!(
        file.starts_with(dir().join("../prometheus")),
        "the configuration comes from deploy/prometheus"
    );
    let config = yaml_file(&file);
    let targets = static_targets(&config);
    for o in &ours {
        let mine: Vec<_> = targets.iter().filter(|(h, _, _)| *h == o.name).collect();
        assert!(!mine.is_empty(), "{}: not scraped", o.name);
        for (_, port, path) in mine {
            assert_eq!(
                *port,
                o.loaded.admin.port(),
                "{}: scraped off its admin port",
                o.name
            );
            assert_eq!(path, "/metrics");
        }
        assert!(
            c.share_network(prom, &o.name),
            "{}: Prometheus cannot reach it",
            o.name
        );
    }
    for (host, _, _) in &targets {
        assert!(
            host == "localhost" || c.services().contains_key(host),
            "Prometheus scrapes {host}, which is no compose service"
        );
    }
    // Grafana's data sources, where provisioned, point at this Prometheus, and its
    // dashboard providers read folders that are mounted.
    let (grafana, _) = c
        .services()
        .iter()
        .find(|(_, s)| s["image"].as_str().is_some_and(|i| i.contains("grafana")))
        .expect("a Grafana service");
    let providers = deploy_dir().join("grafana/provisioning/dashboards");
    for f in std::fs::read_dir(&providers).into_iter().flatten() {
        let f = f.unwrap().path();
        for doc in yaml_docs(&read(&f), &f.display().to_string()) {
            for p in doc["providers"].as_array().into_iter().flatten() {
                let path = p["options"]["path"].as_str().unwrap_or_default();
                let host = c.host_path(grafana, path).unwrap_or_else(|| {
                    panic!("{}: {path} is not mounted into {grafana}", f.display())
                });
                assert!(
                    host.exists(),
                    "{}: {path} comes from {}, which does not exist",
                    f.display(),
                    host.display()
                );
            }
        }
    }
    let datasources = deploy_dir().join("grafana/provisioning/datasources");
    for f in std::fs::read_dir(&datasources).into_iter().flatten() {
        let f = f.unwrap().path();
        if !matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            continue;
        }
        for doc in yaml_docs(&read(&f), &f.display().to_string()) {
            for ds in doc["datasources"].as_array().into_iter().flatten() {
                if ds["type"] == "prometheus" {
                    let url = ds["url"].as_str().unwrap_or_default();
                    assert!(
                        url.starts_with(&format!("http://{prom}:9090")),
                        "{}: Prometheus data source {url}, but the service is {prom}:9090",
                        f.display()
                    );
                }
            }
        }
    }
}

#[test]
fn compose_merge_follows_compose() {
    let mut base: Value =
        serde_json::json!({"s": {"environment": {"A": "1"}, "volumes": ["a:/a"], "image": "x"}});
    let over: Value =
        serde_json::json!({"s": {"environment": {"B": "2"}, "volumes": ["b:/b"], "image": "y"}});
    merge(&mut base, &over, "");
    assert_eq!(
        base["s"]["environment"],
        serde_json::json!({"A": "1", "B": "2"})
    );
    assert_eq!(base["s"]["volumes"], serde_json::json!(["a:/a", "b:/b"]));
    assert_eq!(base["s"]["image"], "y");
    let secrets: BTreeSet<String> = ["S".to_owned()].into();
    assert_eq!(
        interpolate("${S:?set it}", &secrets, "t"),
        Val::Secret("S".into())
    );
    assert_eq!(
        interpolate("${X:-d}", &secrets, "t"),
        Val::Literal("d".into())
    );
    assert_eq!(
        interpolate("a$$b", &secrets, "t"),
        Val::Literal("a$b".into())
    );
    assert!(std::panic::catch_unwind(|| interpolate("${S}", &secrets, "t")).is_err());
}
