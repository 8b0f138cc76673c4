//! The whole local stack: PostgreSQL servers, a worker per region, one gateway, and
//! by default mutual TLS between gateway and workers with certificates made per run.

use crate::certs::StackCerts;
use crate::pg::{self, PgServer, ServerSettings};
use crate::process;
use crate::Http;
use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CENTRAL_DB: &str = "medicalpro_central";

/// How to start a stack.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// Where the servers' data and the logs go; wiped at start.
    pub data_dir: PathBuf,
    /// The gateway's public address (port 0: any free port).
    pub listen: SocketAddr,
    /// Region names, one PostgreSQL server and one worker each.
    pub regions: Vec<String>,
    /// A binary that runs `__component gateway|worker` (see `run_component_if_asked`).
    pub exe: PathBuf,
    /// Tests only: PostgreSQL without fsync.
    pub fast_unsafe: bool,
    /// `max_connections` of every regional server.
    pub max_connections: u32,
    /// `RUST_LOG` of the services.
    pub log_level: String,
    /// Extra environment for every service (e.g. a short `JWT_EXPIRE`).
    pub extra_env: Vec<(String, String)>,
    /// Gateway → worker traffic over mutual TLS, with a CA and certificates made
    /// for this run under `<data_dir>/certs` (default on, as in production).
    pub worker_mtls: bool,
    /// Extra `postgresql.conf` settings of every server (e.g. the bench loads
    /// `shared_preload_libraries = pg_stat_statements`).
    pub server_conf: Vec<(String, String)>,
}

impl StackOptions {
    pub fn new(exe: PathBuf, data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            listen: ([127, 0, 0, 1], 8080).into(),
            regions: vec!["eu-west".into(), "eu-central".into()],
            exe,
            fast_unsafe: false,
            max_connections: 200,
            log_level: "info".into(),
            extra_env: Vec::new(),
            worker_mtls: true,
            server_conf: Vec::new(),
        }
    }
}

/// Secrets the stack generated for its services.
#[derive(Clone, Debug)]
pub struct Secrets {
    /// The gateway's Ed25519 signing key (PKCS#8 PEM) and its public key (SPKI PEM).
    pub jwt_key: PathBuf,
    pub jwt_public_key: PathBuf,
    pub internal_secret: String,
    pub master_key: String,
    /// The audit chain's key (base64), as `AUDIT_KEY`.
    pub audit_key: String,
    /// The central database's service login roles: (name, password).
    pub gateway_role: (String, String),
    pub worker_role: (String, String),
}

/// The kid the stack's signing key is published under.
pub const JWT_KID: &str = "k1";

fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

/// A gateway or worker process.
pub struct Service {
    pub name: String,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    kind: &'static str,
    /// `https` for a worker under mutual TLS, `http` otherwise.
    scheme: &'static str,
    env: Vec<(String, String)>,
    exe: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Service {
    /// Starts the process without waiting for it to be ready (see
    /// [`Service::is_ready`]).
    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg(process::COMPONENT_ARG)
            .arg(self.kind)
            .env_remove("MEDICALPRO_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.child = Some(
            process::spawn(cmd, libc::SIGKILL)
                .with_context(|| format!("starting {}", self.name))?,
        );
        Ok(())
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if http_status(self.admin_addr, "/readyz") == Some(200) {
                return Ok(());
            }
            let exited = self.child.as_mut().map(|c| c.try_wait());
            if let Some(Ok(Some(status))) = exited {
                bail!(
                    "{} exited ({status}) during start-up:\n{}",
                    self.name,
                    tail(&self.log)
                );
            }
            if Instant::now() > deadline {
                bail!("{} did not become ready:\n{}", self.name, tail(&self.log));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait for the drain (at most `timeout`).
    pub fn stop(&mut self, timeout: Duration) {
        if let Some(mut child) = self.child.take() {
            process::stop(&mut child, libc::SIGTERM, timeout);
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&mut self) {
        if let Some(child) = &self.child {
            process::signal(child, libc::SIGTERM);
        }
    }

    /// Waits for the process to end; returns whether it exited successfully.
    pub fn wait(&mut self) -> bool {
        self.child
            .take()
            .is_some_and(|mut c| c.wait().is_ok_and(|s| s.success()))
    }

    /// Kills the process at once, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::stop(&mut child, libc::SIGKILL, Duration::from_secs(5));
        }
    }

    /// Reaps the process if it has ended, and says how it ended (once: the service
    /// then counts as stopped, and [`Service::spawn`] starts it again).
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Whether its admin listener answers `/readyz` with `200`.
    pub fn is_ready(&self) -> bool {
        http_status(self.admin_addr, "/readyz") == Some(200)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The environment the process was started with.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Sets `key` to `value` in the environment of the next start (see
    /// [`Service::restart`]); a running process keeps its own.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Starts the process again with the same configuration.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop(Duration::from_secs(30));
        self.spawn()?;
        self.wait_ready(Duration::from_secs(60))
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `GET path` over a plain TCP connection; the status code, if any answer came.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let text = std::str::from_utf8(&head[..n]).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// One region: its PostgreSQL server and its worker.
pub struct Region {
    pub name: String,
    pub server: PgServer,
    pub worker: Service,
}

/// A running stack.
pub struct Stack {
    pub options: StackOptions,
    pub central: PgServer,
    pub regions: Vec<Region>,
    pub gateway: Service,
    pub secrets: Secrets,
    /// The certificates of gateway → worker mutual TLS, when on.
    pub certs: Option<StackCerts>,
}

fn loopback(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

impl Stack {
    /// Starts everything. Must be called outside any async runtime.
    pub fn start(options: StackOptions) -> anyhow::Result<Self> {
        let bin = pg::find_bin_dir()?;
        let root = &options.data_dir;
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        pg::make_traversable(&root)?;
        let logs = root.join("logs");
        if logs.exists() {
            std::fs::remove_dir_all(&logs)?;
        }
        std::fs::create_dir_all(&logs)?;

        let mut raw = [0u8; 18];
        rand::rng().fill_bytes(&mut raw);
        let password = hex_string(&raw);
        let seed = pg::seed(&bin, &root, &password)?;
        append_server_conf(&seed, &options.server_conf)?;
        let settings = ServerSettings {
            fast_unsafe: options.fast_unsafe,
            max_connections: options.max_connections,
            tls: postgres_certs(&root.join("pg-certs"))?,
        };
        let pg_ca = settings.tls.ca.display().to_string();
        let central = PgServer::start(
            &bin,
            &seed,
            &root.join("central"),
            "central",
            &password,
            &settings,
        )?;
        let mut servers = Vec::new();
        for name in &options.regions {
            let server = PgServer::start(
                &bin,
                &seed,
                &root.join(format!("region-{name}")),
                name,
                &password,
                &settings,
            )?;
            servers.push((name.clone(), server));
        }
        create_database(&central, CENTRAL_DB)?;

        let keys_dir = root.join("keys");
        std::fs::create_dir_all(&keys_dir)?;
        let (private, public) = common::token::generate_key_pair()?;
        let jwt_key = keys_dir.join(format!("jwt-{JWT_KID}.pem"));
        let jwt_public_key = keys_dir.join(format!("jwt-{JWT_KID}.pub.pem"));
        {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&jwt_key)?
                .write_all(private.as_bytes())?;
        }
        std::fs::write(&jwt_public_key, public)?;
        let secrets = Secrets {
            jwt_key,
            jwt_public_key,
            internal_secret: random_b64(48),
            master_key: random_b64(32),
            audit_key: random_b64(32),
            gateway_role: (
                "medicalpro_gateway_svc".into(),
                hex_string(&random_bytes(24)),
            ),
            worker_role: (
                "medicalpro_worker_svc".into(),
                hex_string(&random_bytes(24)),
            ),
        };
        // The central schema and the services' least-privilege roles, made by its
        // owner as an operator would with `medicalpro-admin migrate-central`.
        prepare_central(&central, &secrets)?;
        let mut common_env: Vec<(String, String)> = vec![
            ("DB_HOST".into(), "127.0.0.1".into()),
            ("DB_PORT".into(), central.port.to_string()),
            ("DB_SSLROOTCERT".into(), pg_ca.clone()),
            ("CENTRAL_DB_NAME".into(), CENTRAL_DB.into()),
            ("INTERNAL_SECRET".into(), secrets.internal_secret.clone()),
            ("AUDIT_KEY".into(), secrets.audit_key.clone()),
            ("JWT_KID".into(), JWT_KID.into()),
            ("RUST_LOG".into(), options.log_level.clone()),
        ];
        // Open registration, with limits that let a newcomer sign up a few clinics
        // and refuse a flood from one address.
        for (name, value) in [
            ("REGISTRATION", "open"),
            ("SIGNUPS_PER_ADDRESS_PER_HOUR", "40"),
            ("SIGNUPS_PER_HOUR", "200"),
            ("SIGNUPS_PROVISIONING_MAX", "20"),
        ] {
            common_env.push((name.into(), value.into()));
        }
        common_env.extend(options.extra_env.iter().cloned());
        let certs = if options.worker_mtls {
            Some(StackCerts::generate(&root.join("certs"))?)
        } else {
            None
        };
        let setting = |(name, path): (&str, &Path)| (name.to_owned(), path.display().to_string());
        let scheme = if certs.is_some() { "https" } else { "http" };

        let mut regions = Vec::new();
        for (name, server) in servers {
            let addr = loopback(pg::free_port()?);
            let mut env = common_env.clone();
            env.extend([
                ("LISTEN_ADDR".to_owned(), addr.to_string()),
                ("WORKER_URL".into(), format!("{scheme}://{addr}")),
                ("REGION".into(), name.clone()),
                ("DB_USER".into(), secrets.worker_role.0.clone()),
                ("DB_PASSWORD".into(), secrets.worker_role.1.clone()),
                ("REGION_DB_HOST".into(), "127.0.0.1".into()),
                ("REGION_DB_PORT".into(), server.port.to_string()),
                ("REGION_DB_USER".into(), pg::SUPERUSER.into()),
                ("REGION_DB_PASSWORD".into(), password.clone()),
                ("REGION_DB_SSLROOTCERT".into(), pg_ca.clone()),
                ("MASTER_KEY".into(), secrets.master_key.clone()),
                (
                    "JWT_PUBLIC_KEYS".into(),
                    format!("{JWT_KID}:{}", secrets.jwt_public_key.display()),
                ),
            ]);
            if let Some(certs) = &certs {
                env.extend(certs.worker_tls().settings().map(setting));
            }
            let admin_addr = loopback(pg::free_port()?);
            env.push(("ADMIN_ADDR".into(), admin_addr.to_string()));
            let mut worker = Service {
                name: format!("worker-{name}"),
                addr,
                admin_addr,
                kind: "worker",
                scheme,
                env,
                exe: options.exe.clone(),
                log: logs.join(format!("worker-{name}.log")),
                child: None,
            };
            worker.spawn()?;
            regions.push(Region {
                name,
                server,
                worker,
            });
        }
        for region in &mut regions {
            region.worker.wait_ready(Duration::from_secs(90))?;
        }

        let listen = if options.listen.port() == 0 {
            SocketAddr::new(options.listen.ip(), pg::free_port()?)
        } else {
            options.listen
        };
        let admin_addr = loopback(pg::free_port()?);
        let mut env = common_env;
        env.extend([
            ("LISTEN_ADDR".to_owned(), listen.to_string()),
            ("ADMIN_ADDR".into(), admin_addr.to_string()),
            ("DB_USER".into(), secrets.gateway_role.0.clone()),
            ("DB_PASSWORD".into(), secrets.gateway_role.1.clone()),
            (
                "JWT_SIGNING_KEY_FILE".into(),
                secrets.jwt_key.display().to_string(),
            ),
        ]);
        if let Some(first) = options.regions.first() {
            env.push(("DEFAULT_REGION".into(), first.clone()));
        }
        if let Some(certs) = &certs {
            env.extend(certs.gateway_tls().settings().map(setting));
        }
        // Mail (password-reset links): without an SMTP server, `.eml` files under
        // `<data-dir>/mail/`; links point at this gateway.
        let set = |env: &[(String, String)], name: &str| env.iter().any(|(n, _)| n == name);
        if !set(&env, "SMTP_URL") && !set(&env, "MAIL_DIR") {
            env.push(("MAIL_DIR".into(), root.join("mail").display().to_string()));
        }
        if !set(&env, "PUBLIC_URL") {
            env.push(("PUBLIC_URL".into(), format!("http://{listen}")));
        }
        let mut gateway = Service {
            name: "gateway".into(),
            addr: listen,
            admin_addr,
            kind: "gateway",
            scheme: "http",
            env,
            exe: options.exe.clone(),
            log: logs.join("gateway.log"),
            child: None,
        };
        gateway.spawn()?;
        gateway.wait_ready(Duration::from_secs(60))?;
        Ok(Self {
            options,
            central,
            regions,
            gateway,
            secrets,
            certs,
        })
    }

    pub fn gateway_url(&self) -> String {
        self.gateway.url()
    }

    /// Where the gateway writes its mail as `.eml` files (`MAIL_DIR`), when it
    /// has no SMTP server.
    pub fn mail_dir(&self) -> Option<PathBuf> {
        self.gateway
            .env
            .iter()
            .rev()
            .find(|(name, _)| name == "MAIL_DIR")
            .map(|(_, dir)| PathBuf::from(dir))
    }

    /// Starts one more gateway configured like the first, on new ports (as a second
    /// replica behind a load balancer). It stops when the returned service is dropped.
    pub fn add_gateway(&self, name: &str) -> anyhow::Result<Service> {
        self.add_gateway_with(name, &[])
    }

    /// [`Stack::add_gateway`] with settings of its own (`overrides` replace the
    /// first gateway's values of the same names).
    pub fn add_gateway_with(
        &self,
        name: &str,
        overrides: &[(&str, &str)],
    ) -> anyhow::Result<Service> {
        let addr = loopback(pg::free_port()?);
        let admin_addr = loopback(pg::free_port()?);
        let mut env: Vec<(String, String)> = self
            .gateway
            .env
            .iter()
            .filter(|(k, _)| {
                k != "LISTEN_ADDR" && k != "ADMIN_ADDR" && !overrides.iter().any(|(o, _)| o == k)
            })
            .cloned()
            .collect();
        env.extend([
            ("LISTEN_ADDR".to_owned(), addr.to_string()),
            ("ADMIN_ADDR".to_owned(), admin_addr.to_string()),
        ]);
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let mut gateway = Service {
            name: name.to_owned(),
            addr,
            admin_addr,
            kind: "gateway",
            scheme: "http",
            env,
            exe: self.gateway.exe.clone(),
            log: self.gateway.log.with_file_name(format!("{name}.log")),
            child: None,
        };
        gateway.spawn()?;
        gateway.wait_ready(Duration::from_secs(60))?;
        Ok(gateway)
    }

    pub fn metrics_url(&self) -> String {
        format!("http://{}/metrics", self.gateway.admin_addr)
    }

    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    pub fn region_mut(&mut self, name: &str) -> Option<&mut Region> {
        self.regions.iter_mut().find(|r| r.name == name)
    }

    /// A client for a region's worker that connects as a gateway does (with the
    /// gateway's client certificate under mutual TLS) but signs nothing: what it
    /// sends must still carry a gateway's signed credential to be served.
    pub fn worker_client(&self, region: &str) -> anyhow::Result<Http> {
        let worker = &self
            .region(region)
            .with_context(|| format!("no region {region}"))?
            .worker;
        Ok(match &self.certs {
            Some(certs) => Http::with_tls(&worker.url(), certs.gateway_tls().client_config()?),
            None => Http::new(&worker.url()),
        })
    }

    /// The gateway's token signer (tests forge tokens with it).
    pub fn tokens(&self) -> anyhow::Result<common::token::TokenSigner> {
        let pem = zeroize::Zeroizing::new(std::fs::read_to_string(&self.secrets.jwt_key)?);
        Ok(common::token::TokenSigner::from_pem(
            JWT_KID,
            &pem,
            "medicalpro",
            "medicalpro-api",
            900,
        )?)
    }

    /// The audit chain's keys the services use.
    pub fn audit_keys(&self) -> anyhow::Result<common::audit::AuditKeys> {
        let src =
            common::config::Source::from_pairs([("AUDIT_KEY", self.secrets.audit_key.clone())]);
        Ok(common::audit::AuditKeys::from_source(&src)?)
    }

    /// The key ring the workers use.
    pub fn keys(&self) -> anyhow::Result<common::crypto::KeyRing> {
        let src =
            common::config::Source::from_pairs([("MASTER_KEY", self.secrets.master_key.clone())]);
        Ok(common::crypto::KeyRing::from_source(&src)?)
    }

    /// Stops everything in order: the gateway drains, workers drain, servers stop.
    pub fn stop(&mut self) {
        self.gateway.stop(Duration::from_secs(30));
        for r in &mut self.regions {
            r.worker.stop(Duration::from_secs(30));
        }
        for r in &mut self.regions {
            r.server.stop();
        }
        self.central.stop();
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Appends `name = 'value'` lines to the seed cluster's `postgresql.conf`, which
/// every server is copied from.
fn append_server_conf(seed: &Path, settings: &[(String, String)]) -> anyhow::Result<()> {
    if settings.is_empty() {
        return Ok(());
    }
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(seed.join("postgresql.conf"))?;
    for (name, value) in settings {
        writeln!(conf, "{name} = '{}'", value.replace('\'', "''"))?;
    }
    Ok(())
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A CA for the stack's PostgreSQL servers and one server certificate (loopback
/// names) they all present, in `dir` (emptied first; readable by the server user,
/// which reads the CA when one server replicates from another).
fn postgres_certs(dir: &Path) -> anyhow::Result<pg::ServerTls> {
    use crate::certs::{Authority, Usage};
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let authority = Authority::new("MedicalPro devstack PostgreSQL CA")?;
    let ca = dir.join("ca.pem");
    authority.write_cert(&ca)?;
    let issued = authority.issue(dir, "postgres", Usage::Server)?;
    Ok(pg::ServerTls {
        ca,
        cert: issued.cert,
        key: issued.key,
    })
}

/// Migrates the central database as its owner and makes the services' login roles.
fn prepare_central(central: &PgServer, secrets: &Secrets) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut client = central.connect(CENTRAL_DB).await?;
        migrations::apply(&mut client, migrations::CENTRAL).await?;
        let settings = central.superuser(CENTRAL_DB);
        for (kind, (name, password)) in [
            (admin::roles::ServiceKind::Gateway, &secrets.gateway_role),
            (admin::roles::ServiceKind::Worker, &secrets.worker_role),
        ] {
            admin::roles::create_service_role(&settings, kind, name, password).await?;
        }
        Ok(())
    })
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn create_database(server: &PgServer, name: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = server.connect("postgres").await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .await?;
        }
        Ok(())
    })
}
