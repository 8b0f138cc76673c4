//! Runs a binary's real configuration code over the environment a manifest gives
//! it: `gateway::config::Config::from_source` or the worker's, over a
//! `common::config::Source` of exactly those settings. Secret references (a compose
//! `${NAME}`, a Kubernetes `secretKeyRef`, a line of a systemd secrets file) become
//! placeholders of the shape the code wants; file settings (`*_FILE`) become
//! certificates made for the run. The configuration must be accepted (so every
//! required setting is there) and must have read every name it was given (so none
//! is misspelt or obsolete).

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
    /// A reference to a secret kept elsewhere, described (e.g. `secret medicalpro-keys/JWT_SECRET`).
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
    /// Every `*_FILE` setting with the path the manifest gave.
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

/// A value of the shape `name` needs, for a secret the manifest only refers to (or a
/// required setting an image leaves to its deployment).
pub fn placeholder(name: &str) -> String {
    const KEY: &str = "placeholder-key-for-the-deploy-test-0123456789abcdef";
    // base64 of 32 bytes.
    const MASTER: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    match name {
        "JWT_SECRET" | "INTERNAL_SECRET" => KEY.into(),
        "JWT_RETIRED_SECRETS" => format!("k0:{KEY}"),
        "MASTER_KEY" => MASTER.into(),
        "MASTER_KEYS_RETIRED" => format!("9:{MASTER}"),
        "REGION" => "placeholder-region".into(),
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
    if name.ends_with("_CA_FILE") {
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

/// The `Source` a process given `env` sees, with what stands in for secrets and files.
fn source(env: &Env) -> Source {
    Source::from_pairs(env.iter().map(|(k, v)| {
        let value = match v {
            Val::Secret(_) => placeholder(k),
            Val::Literal(_) if k.ends_with("_FILE") => file_for(k).display().to_string(),
            Val::Literal(s) => s.clone(),
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
    loaded.files = env
        .iter()
        .filter(|(k, _)| k.ends_with("_FILE"))
        .filter_map(|(k, v)| v.literal().map(|p| (k.clone(), p.to_owned())))
        .collect();
    loaded
}

/// Like [`configure`], for an image that leaves required settings (secrets, the
/// region) to its deployment: those are filled with placeholders first.
pub fn configure_filling_required(binary: Binary, env: &Env, what: &str) -> Loaded {
    let mut env = env.clone();
    for _ in 0..16 {
        match load(binary, &source(&env)) {
            Err(ConfigError::Missing(name)) => {
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
        ("JWT_SECRET", Val::Secret("s".into())),
        ("INTERNAL_SECRET", Val::Secret("s".into())),
        ("ADMIN_ADDR", Val::Literal("0.0.0.0:9999".into())),
        ("LOG_FORMAT", Val::Literal("json".into())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let loaded = configure(Binary::Gateway, &env, "ok");
    assert_eq!(loaded.admin.port(), 9999);
    assert_eq!(loaded.listen.port(), 8080);

    env.insert("SHUTDOWN_DELAY_SEC".into(), Val::Literal("5".into()));
    let typo = std::panic::catch_unwind(|| configure(Binary::Gateway, &env, "typo"));
    let message = *typo.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("SHUTDOWN_DELAY_SEC"), "{message}");

    let missing = std::panic::catch_unwind(|| configure(Binary::Worker, &Env::new(), "empty"));
    let message = *missing.unwrap_err().downcast::<String>().unwrap();
    assert!(message.contains("is required"), "{message}");

    let filled = configure_filling_required(Binary::Worker, &Env::new(), "image");
    assert_eq!(filled.listen.port(), 8081);
    assert_eq!(Binary::named("medicalpro/worker:1"), Some(Binary::Worker));
    assert_eq!(
        Binary::named("/usr/local/bin/gateway"),
        Some(Binary::Gateway)
    );
    assert_eq!(Binary::named("haproxy:3.0"), None);
    assert_eq!(Binary::named("example/gateway:1"), None);
}
