//! Throwaway PostgreSQL servers: `initdb` once into a seed directory, copied for each
//! server, started with `postgres` on a free loopback port. As root, everything runs
//! as the `postgres` user (PostgreSQL refuses to run as root). Every server speaks
//! TLS only (`hostssl` in `pg_hba.conf`), with a certificate from the stack's
//! throwaway CA, and every connection to it verifies that certificate.

use anyhow::{bail, Context};
use common::config::{DbSettings, DbTls};
use std::ffi::CString;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The superuser every throwaway server has.
pub const SUPERUSER: &str = "postgres";

/// Finds `initdb`, `postgres` and friends: on PATH, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                // Follow symlinks (e.g. /usr/local/bin/initdb) to the real bin dir,
                // where the other server tools live too.
                let real = dir.join("initdb").canonicalize()?;
                if let Some(parent) = real.parent().filter(|p| p.join("pg_isready").is_file()) {
                    return Ok(parent.to_owned());
                }
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .context("PostgreSQL server binaries not found: install PostgreSQL (Debian: `apt-get install postgresql`)")
}

/// The uid/gid to run PostgreSQL as: the `postgres` user when we are root.
fn run_as() -> anyhow::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new(SUPERUSER)?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy the ids out at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("running as root but there is no `postgres` user to run PostgreSQL as");
    }
    // SAFETY: pw is non-null and points to a valid passwd struct.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn command(bin: &Path, ids: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(bin);
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGDATA").env("LC_ALL", "C.UTF-8");
    // The server's own libpq (a subscription connecting to another server) looks
    // for client certificates under $HOME, which must not be root's.
    if ids.is_some() {
        cmd.env("HOME", "/nonexistent");
    }
    cmd
}

fn chown_tree(path: &Path, ids: Option<(u32, u32)>) -> anyhow::Result<()> {
    let Some((uid, gid)) = ids else { return Ok(()) };
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), ids)?;
        }
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (released before returning).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Makes an initialised, never-started cluster at `dir` whose superuser has `password`.
pub fn init_cluster(bin_dir: &Path, dir: &Path, password: &str) -> anyhow::Result<()> {
    let ids = run_as()?;
    std::fs::create_dir_all(dir)?;
    // The data directory's parents must be traversable by the postgres user.
    let pwfile = dir.with_extension("pw");
    std::fs::write(&pwfile, password)?;
    chown_tree(dir, ids)?;
    chown_tree(&pwfile, ids)?;
    let out = command(&bin_dir.join("initdb"), ids)
        .arg("-D")
        .arg(dir)
        .args([
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ])
        .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .stdout(Stdio::null())
        .output()
        .context("running initdb")?;
    let _ = std::fs::remove_file(&pwfile);
    if !out.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    if !status.success() {
        bail!("copying {} to {} failed", from.display(), to.display());
    }
    Ok(())
}

/// One running PostgreSQL server.
pub struct PgServer {
    pub name: String,
    pub port: u16,
    pub password: String,
    pub data_dir: PathBuf,
    bin_dir: PathBuf,
    settings: ServerSettings,
    /// How clients reach it: TLS verified against the CA.
    client_tls: DbTls,
    child: Option<Child>,
}

/// The TLS files of a server: its certificate and key (copied into its data
/// directory) and the CA clients check it against.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How a server is started.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Tests only: no fsync, no full-page writes.
    pub fast_unsafe: bool,
    pub max_connections: u32,
    pub tls: ServerTls,
}

impl PgServer {
    /// Copies the seed cluster to `data_dir` and starts it on a free port.
    pub fn start(
        bin_dir: &Path,
        seed: &Path,
        data_dir: &Path,
        name: &str,
        password: &str,
        settings: &ServerSettings,
    ) -> anyhow::Result<Self> {
        if data_dir.exists() {
            std::fs::remove_dir_all(data_dir)?;
        }
        copy_dir(seed, data_dir)?;
        std::fs::copy(&settings.tls.cert, data_dir.join("server.crt"))?;
        std::fs::copy(&settings.tls.key, data_dir.join("server.key"))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data_dir.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )?;
        }
        chown_tree(data_dir, run_as()?)?;
        let _ = std::fs::remove_file(data_dir.with_extension("log"));
        let mut server = Self {
            name: name.to_owned(),
            port: free_port()?,
            password: password.to_owned(),
            data_dir: data_dir.to_owned(),
            bin_dir: bin_dir.to_owned(),
            settings: settings.clone(),
            client_tls: DbTls::verify_full("SSLROOTCERT", settings.tls.ca.clone())?,
            child: None,
        };
        server.launch()?;
        Ok(server)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.data_dir.with_extension("log"))?;
        let mut cmd = command(&self.bin_dir.join("postgres"), run_as()?);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args([
                "-c",
                &format!("max_connections={}", self.settings.max_connections),
            ])
            .args(["-c", "shared_buffers=64MB"])
            .args(["-c", "ssl=on"])
            .args(["-c", "ssl_cert_file=server.crt"])
            .args(["-c", "ssl_key_file=server.key"])
            .args(["-c", "ssl_min_protocol_version=TLSv1.2"])
            // Relocating a clinic between regions streams its database with logical
            // replication.
            .args(["-c", "wal_level=logical"])
            .args(["-c", "log_min_messages=warning"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.settings.fast_unsafe {
            cmd.args([
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ]);
        }
        // SIGQUIT is PostgreSQL's immediate shutdown: right for a stack that is gone.
        self.child = Some(crate::process::spawn(cmd, libc::SIGQUIT).context("starting postgres")?);
        self.wait_ready(Duration::from_secs(30))
    }

    fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let ready = Command::new(self.bin_dir.join("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-t",
                    "1",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.data_dir.with_extension("log"))
                    .unwrap_or_default();
                bail!("PostgreSQL `{}` did not become ready: {log}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A tokio-postgres configuration for `dbname` as the superuser (TLS required;
    /// connect with [`PgServer::tls`]).
    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .password(self.password.as_bytes())
            .dbname(dbname)
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        cfg
    }

    /// How the services reach `dbname` on this server as `user` (TLS verified
    /// against the stack's CA).
    pub fn settings(&self, dbname: &str, user: &str, password: &str) -> DbSettings {
        DbSettings {
            host: "127.0.0.1".into(),
            port: self.port,
            user: user.to_owned(),
            password: common::config::Secret::new(password.to_owned()),
            dbname: dbname.to_owned(),
            tls: self.client_tls.clone(),
        }
    }

    /// The superuser's [`PgServer::settings`].
    pub fn superuser(&self, dbname: &str) -> DbSettings {
        self.settings(dbname, SUPERUSER, &self.password)
    }

    /// The TLS connector that checks this server's certificate against the CA.
    pub fn tls(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        tokio_postgres_rustls::MakeRustlsConnect::new(self.client_tls.config.as_ref().clone())
    }

    /// The CA file clients check this server's certificate against.
    pub fn ca_file(&self) -> &Path {
        &self.settings.tls.ca
    }

    /// A URL `psql` accepts (TLS, the certificate verified).
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{dbname}?sslmode=verify-full&sslrootcert={}",
            self.password,
            self.port,
            self.settings.tls.ca.display()
        )
    }

    /// Connects as the superuser (the connection task runs on the current runtime).
    pub async fn connect(&self, dbname: &str) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = self.config(dbname).connect(self.tls()).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Whether the server process is still running (a server found ended is
    /// reaped, as by [`PgServer::try_exit`]).
    pub fn is_running(&mut self) -> bool {
        self.try_exit();
        self.child.is_some()
    }

    /// Reaps the server process if it has ended, and says how it ended (once: the
    /// server then counts as stopped, and [`PgServer::restart`] starts it again).
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.with_extension("log")
    }

    /// Stops the server (fast shutdown: sessions are ended, data is flushed).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::process::stop(&mut child, libc::SIGINT, Duration::from_secs(30));
        }
    }

    /// Kills the server at once, as a crash of its machine would: the postmaster and
    /// every process it started. (A postmaster killed alone leaves its backends
    /// finishing the statements they were running, and answering on their open
    /// connections.) The postmaster is frozen first so it starts no new ones.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::process::signal(&child, libc::SIGSTOP);
            for pid in children_of(child.id()) {
                // SAFETY: plain kill(2) on a process our own child started.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            crate::process::stop(&mut child, libc::SIGKILL, Duration::from_secs(5));
        }
    }

    /// Sets `max_connections` for the next start (see [`PgServer::restart`]).
    pub fn set_max_connections(&mut self, max_connections: u32) {
        self.settings.max_connections = max_connections;
    }

    /// Starts a stopped server again on the same port and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.launch()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The processes whose parent is `parent` (from `/proc`).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// Prepares the seed cluster every server is copied from: TCP connections must
/// use TLS (plain ones are rejected), everything authenticates with SCRAM.
pub fn seed(bin_dir: &Path, root: &Path, password: &str) -> anyhow::Result<PathBuf> {
    let seed = root.join("seed");
    if seed.exists() {
        std::fs::remove_dir_all(&seed)?;
    }
    init_cluster(bin_dir, &seed, password)?;
    std::fs::write(
        seed.join("pg_hba.conf"),
        "# TLS only, SCRAM only (written by the devstack)\n\
         local   all          all                 scram-sha-256\n\
         hostssl all          all   127.0.0.1/32  scram-sha-256\n\
         hostssl all          all   ::1/128       scram-sha-256\n\
         hostssl replication  all   127.0.0.1/32  scram-sha-256\n\
         hostnossl all        all   0.0.0.0/0     reject\n\
         hostnossl all        all   ::/0          reject\n",
    )?;
    Ok(seed)
}

/// Lets the `postgres` user traverse to `dir` (temp dirs may be private).
pub fn make_traversable(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut p = Some(dir);
    while let Some(d) = p {
        if let Ok(meta) = std::fs::metadata(d) {
            let mode = meta.permissions().mode();
            if mode & 0o001 == 0 {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode | 0o011))?;
            }
        }
        p = d.parent();
    }
    Ok(())
}
