//! Runs a binary's real configuration code over the environment a manifest gives
//! it: `gateway::config::Config::from_source` or the worker's, over a
//! `common::config::Source` of exactly those settings. Secret references (a compose
//! `${NAME}`, a Kubernetes `secretKeyRef`, a line of a systemd secrets file) become
//! placeholders of the shape the code wants; settings naming files (`*_FILE`, the
//! PostgreSQL CA files `*_SSLROOTCERT`, the `kid:path` lists of token public keys)
//! name files made for the run instead: certificates, a CA, Ed25519 key pairs. The
//! configuration must be accepted (so every required setting is there) and must have
//! read every name it was given (so none is misspelt or obsolete). The admin tool's
//! settings (`admin::config::AdminSettings`) are checked the same way for the
//! one-shot jobs that run it, with [`configure_admin`].

use common::config::{ConfigError, DbSettings, Source, PROCESS_ENV};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The service binaries a manifest can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Binary {
    Gateway,
    Worker,
}

impl Binary {
    /// The binary named by an executable path, image or build target (`gateway`,
    /// `/usr/local/bin/worker`, `medicalpro/gateway:0.1.0`); `None` for others.
    pub fn named(s: &str) -> Option<Self> {
        let last = s.rsplit('/').next().unwrap_or(s);
        let bare = last.split(':').next().unwrap_or(last);
        let ours = !s.contains('/') || s.starts_with('/') || s.contains("medicalpro/");
        match bare {
            "gateway" if ours => Some(Self::Gateway),
            "worker" if ours => Some(Self::Worker),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Worker => "worker",
        }
    }
}

/// A setting's value as a manifest gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    Literal(String),
    /// A reference to a secret kept elsewhere, described (e.g. `medicalpro-keys/INTERNAL_SECRET`).
    Secret(String),
}

impl Val {
    pub fn literal(&self) -> Option<&str> {
        match self {
            Self::Literal(s) => Some(s),
            Self::Secret(_) => None,
        }
    }
}

/// The environment a manifest gives a process.
pub type Env = BTreeMap<String, Val>;

/// Literal settings as an [`Env`].
pub fn literals(map: &BTreeMap<String, String>) -> Env {
    map.iter()
        .map(|(k, v)| (k.clone(), Val::Literal(v.clone())))
        .collect()
}

/// What a manifest check needs to know of an accepted configuration.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub binary: Binary,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub central: DbSettings,
    /// Workers: the regional server, the region, the URL gateways use, the pool budget.
    pub regional: Option<DbSettings>,
    pub region: Option<String>,
    pub worker_url: Option<String>,
    pub pool_budget: Option<usize>,
    /// Mutual TLS configured: on the worker's listener, or to the gateway's upstreams.
    pub mutual_tls: bool,
    /// Gateways.
    pub default_region: Option<String>,
    pub trusted_proxies: Vec<IpAddr>,
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    /// Every file a setting names, with the path the manifest gave ([`file_paths`]).
    pub files: Vec<(String, String)>,
}

/// A folder of this test process under the target's temporary folder, named
/// `<prefix>-<pid>` (test runners may run tests as parallel processes); the folders
/// of processes that have ended are removed on the way.
pub fn scratch(prefix: &str) -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-'));
        if pid.is_some_and(|pid| !std::path::Path::new("/proc").join(pid).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    tmp.join(format!("{prefix}-{}", std::process::id()))
}

/// Certificates made once per test process: a CA, a server and a client certificate.
fn certs() -> &'static devstack::certs::StackCerts {
    static CERTS: OnceLock<devstack::certs::StackCerts> = OnceLock::new();
    CERTS.get_or_init(|| {
        devstack::certs::StackCerts::generate(&scratch("deploy-test-certs")).unwrap()
    })
}

/// The gateways' token keys, made once per test process as PEM files: the current
/// Ed25519 key pair (PKCS#8 private key, SPKI public key) and a retired public key.
struct TokenKeys {
    signing: PathBuf,
    public: PathBuf,
    retired: PathBuf,
}

fn token_keys() -> &'static TokenKeys {
    static KEYS: OnceLock<TokenKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = scratch("deploy-test-keys");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (private, public) = common::token::generate_key_pair().unwrap();
        let (_, retired) = common::token::generate_key_pair().unwrap();
        let keys = TokenKeys {
            signing: dir.join("jwt-current.pem"),
            public: dir.join("jwt-current.pub.pem"),
            retired: dir.join("jwt-retired.pub.pem"),
        };
        std::fs::write(&keys.signing, private.as_bytes()).unwrap();
        std::fs::write(&keys.public, public).unwrap();
        std::fs::write(&keys.retired, retired).unwrap();
        keys
    })
}

/// Settings holding `kid:path,…` lists of token public keys.
const KEY_LISTS: [&str; 2] = ["JWT_PUBLIC_KEYS", "JWT_RETIRED_PUBLIC_KEYS"];

/// A value of the shape `name` needs, for a secret the manifest only refers to (or a
/// required setting an image leaves to its deployment).
pub fn placeholder(name: &str) -> String {
    const KEY: &str = "placeholder-key-for-the-deploy-test-0123456789abcdef";
    // base64 of 32 bytes.
    const MASTER: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    const AUDIT: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    let keys = token_keys();
    match name {
        "INTERNAL_SECRET" => KEY.into(),
        "MASTER_KEY" => MASTER.into(),
        "MASTER_KEYS_RETIRED" => format!("9:{MASTER}"),
        "AUDIT_KEY" => AUDIT.into(),
        "AUDIT_KEYS_RETIRED" => format!("a0:{MASTER}"),
        "JWT_SIGNING_KEY_FILE" => keys.signing.display().to_string(),
        "JWT_PUBLIC_KEYS" => format!("k1:{}", keys.public.display()),
        "JWT_RETIRED_PUBLIC_KEYS" => format!("k0:{}", keys.retired.display()),
        "REGION" => "placeholder-region".into(),
        n if n.ends_with("_SSLROOTCERT") => certs().ca.display().to_string(),
        n if n.ends_with("_PASSWORD") => "placeholder-password".into(),
        other => panic!(
            "no placeholder shape for the secret {other}: teach tests/deploy/config.rs \
             what a valid {other} looks like"
        ),
    }
}

/// A readable file for a `*_FILE` setting.
fn file_for(name: &str) -> PathBuf {
    let c = certs();
    let (client, server) = (&c.gateway, &c.worker);
    if name == "JWT_SIGNING_KEY_FILE" {
        token_keys().signing.clone()
    } else if name.ends_with("_CA_FILE") {
        c.ca.clone()
    } else if name.ends_with("_CERT_FILE") {
        if name.starts_with("UPSTREAM") {
            &client.cert
        } else {
            &server.cert
        }
        .clone()
    } else if name.ends_with("_KEY_FILE") {
        if name.starts_with("UPSTREAM") {
            &client.key
        } else {
            &server.key
        }
        .clone()
    } else {
        panic!("no file to stand for {name}")
    }
}

/// The `(kid, path)` pairs of a `kid:path,…` list (malformed items left out: the
/// configuration code refuses them).
fn kid_paths(value: &str) -> Vec<(&str, &str)> {
    value
        .split(',')
        .map(str::trim)
        .filter_map(|item| item.split_once(':'))
        .map(|(kid, path)| (kid.trim(), path.trim()))
        .collect()
}

/// What a process reads for the literal setting `name = value`: a setting naming
/// files names the run's own files instead; anything else is as given.
fn stand_in(name: &str, value: &str) -> String {
    if value.is_empty() {
        value.to_owned()
    } else if name.ends_with("_FILE") {
        file_for(name).display().to_string()
    } else if name.ends_with("_SSLROOTCERT") {
        certs().ca.display().to_string()
    } else if KEY_LISTS.contains(&name) {
        let keys = token_keys();
        let file = if name == "JWT_RETIRED_PUBLIC_KEYS" {
            &keys.retired
        } else {
            &keys.public
        };
        kid_paths(value)
            .into_iter()
            .map(|(kid, _)| format!("{kid}:{}", file.display()))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        value.to_owned()
    }
}

/// Every file the literal settings of `env` name, with the path given: `*_FILE`,
/// `*_SSLROOTCERT` and each path of a token public key list.
pub fn file_paths(env: &Env) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for (k, v) in env {
        let Some(value) = v.literal().filter(|v| !v.is_empty()) else {
            continue;
        };
        if k.ends_with("_FILE") || k.ends_with("_SSLROOTCERT") {
            files.push((k.clone(), value.to_owned()));
        } else if KEY_LISTS.contains(&k.as_str()) {
            for (kid, path) in kid_paths(value) {
                files.push((format!("{k} ({kid})"), path.to_owned()));
            }
        }
    }
    files
}

/// The `Source` a process given `env` sees, with what stands in for secrets and files.
fn source(env: &Env) -> Source {
    Source::from_pairs(env.iter().map(|(k, v)| {
        let value = match v {
            Val::Secret(_) => placeholder(k),
            Val::Literal(s) => stand_in(k, s),
        };
        (k.clone(), value)
    }))
}

fn load(binary: Binary, src: &Source) -> Result<Loaded, ConfigError> {
    Ok(match binary {
        Binary::Gateway => {
            let c = gateway::config::Config::from_source(src)?;
            Loaded {
                binary,
                listen: c.listen,
                admin: c.admin_listen,
                central: c.central,
                regional: None,
                region: None,
                worker_url: None,
                pool_budget: None,
                mutual_tls: c.upstream_tls.is_some(),
                default_region: c.default_region,
                trusted_proxies: c.trusted_proxies,
                shutdown_delay: c.shutdown_delay,
                shutdown_grace: c.shutdown_grace,
                files: Vec::new(),
            }
        }
        Binary::Worker => {
            let c = worker::config::Config::from_source(src)?;
            Loaded {
                binary,
                listen: c.listen,
                admin: c.admin_listen,
                central: c.central,
                regional: Some(c.regional),
                region: Some(c.region),
                worker_url: Some(c.advertise_url),
                pool_budget: Some(c.pool.server_budget),
                mutual_tls: c.tls.is_some(),
                default_region: None,
                trusted_proxies: Vec::new(),
                shutdown_delay: Duration::ZERO,
                shutdown_grace: Duration::ZERO,
                files: Vec::new(),
            }
        }
    })
}

/// Names given but not read, less those the process reads itself.
fn unread(src: &Source) -> Vec<String> {
    src.unread()
        .into_iter()
        .filter(|n| !PROCESS_ENV.contains(&n.as_str()))
        .collect()
}

/// Runs `binary`'s configuration over `env` and checks that it is accepted and that
/// every setting given is one it reads; `what` names the manifest in failures.
pub fn configure(binary: Binary, env: &Env, what: &str) -> Loaded {
    let src = source(env);
    let mut loaded = load(binary, &src).unwrap_or_else(|e| {
        panic!(
            "{what}: the {} refuses this environment: {e}\n  given: {:?}",
            binary.name(),
            env.keys().collect::<Vec<_>>()
        )
    });
    let unread = unread(&src);
    assert!(
        unread.is_empty(),
        "{what}: the {} never reads {unread:?} (misspelt, obsolete or meant for another binary)",
        binary.name()
    );
    loaded.files = file_paths(env);
    loaded
}

/// Runs the admin tool's configuration over the environment of a job that runs it
/// (`AdminSettings::from_source`, and the master keys as the key commands read them
/// when `MASTER_KEY` is given), and checks that it is accepted and that every name
/// is read, but for `own`: names the job's script reads itself. Returns the
/// settings and the files they name.
pub fn configure_admin(
    env: &Env,
    own: &[String],
    what: &str,
) -> (admin::config::AdminSettings, Vec<(String, String)>) {
    let src = source(env);
    let settings = admin::config::AdminSettings::from_source(&src).unwrap_or_else(|e| {
        panic!(
            "{what}: medicalpro-admin refuses this environment: {e}\n  given: {:?}",
            env.keys().collect::<Vec<_>>()
        )
    });
    if env.contains_key("MASTER_KEY") {
        if let Err(e) = common::crypto::KeyRing::from_source(&src) {
            panic!("{what}: medicalpro-admin refuses the master keys: {e}");
        }
    }
    let unread: Vec<String> = unread(&src)
        .into_iter()
        .filter(|n| !own.contains(n))
        .collect();
    assert!(
        unread.is_empty(),
        "{what}: medicalpro-admin never reads {unread:?} (misspelt, obsolete or meant for a service)"
    );
    (settings, file_paths(env))
}

/// What the shell script of a one-shot job does with `medicalpro-admin`.
#[derive(Debug)]
pub struct JobScript {
    /// It runs `migrate-central`, before anything else it runs.
    pub migrates: bool,
    /// The service roles it makes (`create-service-role`), in order.
    pub roles: Vec<ServiceRole>,
}

/// A `create-service-role` line: `printf '%s\n' "$VAR" | medicalpro-admin
/// create-service-role --kind KIND --name NAME`.
#[derive(Debug)]
pub struct ServiceRole {
    pub kind: String,
    pub name: String,
    /// The environment variable whose value is the password, handed over on stdin.
    pub password_var: String,
}

/// Reads a job's shell script (compose's `$$` already turned into `$`).
pub fn job_script(script: &str, what: &str) -> JobScript {
    let mut job = JobScript {
        migrates: false,
        roles: Vec::new(),
    };
    let mut ran_before_migrating = false;
    for line in script.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with("set ") {
            continue;
        }
        if line.contains("medicalpro-admin migrate-central") {
            assert!(
                !ran_before_migrating,
                "{what}: migrate-central must run first (the service roles need the group roles it makes)"
            );
            job.migrates = true;
        } else if line.contains("create-service-role") {
            let (feed, command) = line.split_once('|').unwrap_or_else(|| {
                panic!("{what}: `{line}`: the password goes in on standard input, through a pipe")
            });
            assert!(
                feed.trim_start().starts_with("printf "),
                "{what}: `{line}`: feed the password with the shell's printf (a builtin: it \
                 never shows on a command line)"
            );
            let var = feed
                .split_once('$')
                .map(|(_, v)| {
                    v.trim_start_matches('{')
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| panic!("{what}: `{line}`: no $VARIABLE holds the password"));
            let words: Vec<&str> = command.split_whitespace().collect();
            let arg = |flag: &str| {
                words
                    .iter()
                    .position(|w| *w == flag)
                    .and_then(|i| words.get(i + 1))
                    .map(|w| (*w).to_owned())
                    .unwrap_or_else(|| panic!("{what}: `{line}`: no {flag}"))
            };
            job.roles.push(ServiceRole {
                kind: arg("--kind"),
                name: arg("--name"),
                password_var: var,
            });
            ran_before_migrating |= !job.migrates;
        } else if line.contains("medicalpro-admin") {
            ran_before_migrating |= !job.migrates;
        }
    }
    job
}

/// Like [`configure`], for an image that leaves required settings (secrets, the
/// region) to its deployment: those are filled with placeholders first.
pub fn configure_filling_required(binary: Binary, env: &Env, what: &str) -> Loaded {
    let mut env = env.clone();
    for _ in 0..16 {
        match load(binary, &source(&env)) {
            // Missing, or refused while absent (a CA file required under TLS).
            Err(ConfigError::Missing(name) | ConfigError::Invalid { name, .. })
                if !env.contains_key(name) =>
            {
                env.insert(name.to_owned(), Val::Secret("required".into()));
            }
            _ => return configure(binary, &env, what),
        }
    }
    panic!("{what}: too many missing settings")
}

/// Whether the setting `name = value`, added to a complete environment of a binary
/// (one of `bases`), is accepted and read by it.
pub fn read_by_some(name: &str, value: &str, bases: &[(Binary, Env)]) -> bool {
    bases.iter().any(|(binary, base)| {
        let mut env = base.clone();
        env.insert(name.to_owned(), Val::Literal(value.to_owned()));
        let src = source(&env);
        load(*binary, &src).is_ok() && !src.unread().contains(&name.to_owned())
    })
}

/// Whether the binary refuses to start with `env` (e.g. with example placeholders).
pub fn refused(binary: Binary, env: &BTreeMap<String, String>) -> Option<ConfigError> {
    let src = Source::from_pairs(env.clone());
    load(binary, &src).err()
}

#[test]
fn the_checker_catches_typos_and_missing_settings() {
    let mut env: Env = [
        ("INTERNAL_SECRET", Val::Secret("s".into())),
        ("AUDIT_KEY", Val::Secret("s".into())),
        (
            "JWT_SIGNING_KEY_FILE",
            Val::Literal("/etc/medicalpro/jwt-signing/jwt-k1.pem".into()),
        ),
        (
            "JWT_RETIRED_PUBLIC_KEYS",
            Val::Literal("k0:/etc/medicalpro/jwt/jwt-k0.pub.pem".into()),
        ),
        (
            "DB_SSLROOTCERT",
            Val::Literal("/etc/medicalpro/pg-ca.pem".into()),
        ),
        ("ADMIN_ADDR", Val::Literal("0.0.0.0:9999".into())),
        ("LOG_FORMAT", Val::Literal("json".into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let loaded = configure(Binary::Gateway, &env, "ok");
    assert_eq!(loaded.admin.port(), 9999);
    assert_eq!(loaded.listen.port(), 8080);
    assert!(loaded.central.tls.is_enabled());
    assert_eq!(
        loaded.files,
        [
            (
                "DB_SSLROOTCERT".to_owned(),
                "/etc/medicalpro/pg-ca.pem".to_owned()
            ),
            (
                "JWT_RETIRED_PUBLIC_KEYS (k0)".into(),
                "/etc/medicalpro/jwt/jwt-k0.pub.pem".into()
            ),
            (
                "JWT_SIGNING_KEY_FILE".into(),
                "/etc/medicalpro/jwt-signing/jwt-k1.pem".into()
            ),
        ]
    );

    env.insert("SHUTDOWN_DELAY_SEC".into(), Val::Literal("5".into()));
    let typo = std::panic::catch_unwind(|| configure(Binary::Gateway, &env, "typo"));
    let message = *typo.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("SHUTDOWN_DELAY_SEC"), "{message}");
    env.remove("SHUTDOWN_DELAY_SEC");

    // A setting the services no longer read is reported like a typo.
    env.insert("JWT_SECRET".into(), Val::Secret("s".into()));
    let obsolete = std::panic::catch_unwind(|| configure(Binary::Gateway, &env, "obsolete"));
    let message = *obsolete.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("JWT_SECRET"), "{message}");

    let missing = std::panic::catch_unwind(|| configure(Binary::Worker, &Env::new(), "empty"));
    let message = *missing.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("is required"), "{message}");

    let filled = configure_filling_required(Binary::Worker, &Env::new(), "image");
    assert_eq!(filled.listen.port(), 8081);
    assert!(filled.central.tls.is_enabled() && filled.regional.unwrap().tls.is_enabled());
    assert_eq!(Binary::named("medicalpro/worker:1"), Some(Binary::Worker));
    assert_eq!(
        Binary::named("/usr/local/bin/gateway"),
        Some(Binary::Gateway)
    );
    assert_eq!(Binary::named("haproxy:3.0"), None);
    assert_eq!(Binary::named("example/gateway:1"), None);
    assert_eq!(Binary::named("medicalpro/admin-job:1"), None);
}

#[test]
fn the_admin_checker_reads_job_scripts_and_settings() {
    let script = "set -eu\n\
        medicalpro-admin migrate-central\n\
        printf '%s\\n' \"$GATEWAY_ROLE_PASSWORD\" | medicalpro-admin create-service-role --kind gateway --name gw_svc\n";
    let job = job_script(script, "job");
    assert!(job.migrates);
    assert_eq!(job.roles.len(), 1);
    assert_eq!(
        (
            job.roles[0].kind.as_str(),
            job.roles[0].name.as_str(),
            job.roles[0].password_var.as_str()
        ),
        ("gateway", "gw_svc", "GATEWAY_ROLE_PASSWORD")
    );
    let late =
        "printf '%s\\n' \"$P\" | medicalpro-admin create-service-role --kind worker --name w\n\
        medicalpro-admin migrate-central\n";
    assert!(std::panic::catch_unwind(|| job_script(late, "late")).is_err());
    let argv = "medicalpro-admin migrate-central\n\
        echo \"$P\" | medicalpro-admin create-service-role --kind worker --name w\n";
    assert!(std::panic::catch_unwind(|| job_script(argv, "echo")).is_err());

    let mut env: Env = [
        ("DB_HOST", Val::Literal("central-db".into())),
        ("DB_USER", Val::Literal("medicalpro".into())),
        ("DB_PASSWORD", Val::Secret("s".into())),
        (
            "DB_SSLROOTCERT",
            Val::Literal("/etc/medicalpro/pg-ca.pem".into()),
        ),
        (
            "REGION_DB_SSLROOTCERT",
            Val::Literal("/etc/medicalpro/pg-ca.pem".into()),
        ),
        ("GATEWAY_ROLE_PASSWORD", Val::Secret("s".into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let own = ["GATEWAY_ROLE_PASSWORD".to_owned()];
    let (settings, files) = configure_admin(&env, &own, "admin");
    assert_eq!(settings.central.user, "medicalpro");
    assert!(settings.central.tls.is_enabled() && settings.audit_keys.is_none());
    assert_eq!(files.len(), 2);
    env.insert("JWT_PUBLIC_KEYS".into(), Val::Literal("k1:/x.pem".into()));
    assert!(std::panic::catch_unwind(|| configure_admin(&env, &own, "stray")).is_err());
}
