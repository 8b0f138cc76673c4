//! The settings `medicalpro-admin` needs against a running stack, handed over as
//! files: `<data-dir>/admin-<region>.env` for each region and `<data-dir>/admin.env`
//! (the first region's), each readable by its owner only (mode 0600). Every file
//! holds the central database as its owner (the PostgreSQL superuser), the region's
//! server as its superuser (`REGION_DB_*`), the CA both servers' certificates are
//! checked against (`…_SSLROOTCERT`), the master key and the audit key the services
//! run with. The format is the `KEY=VALUE` file `MEDICALPRO_CONFIG` names (values
//! unquoted: a shell can source it too, as long as the data directory's path has no
//! blanks). The secrets change at every start; the files are rewritten with them.

use crate::pg::{self, PgServer};
use crate::stack::{Region, Stack, CENTRAL_DB};
use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Names copied from the worker's environment when set there (the stack's extra
/// settings may give them), else left to the admin tool's defaults.
const KEY_SETTINGS: [&str; 6] = [
    "MASTER_KEY",
    "MASTER_KEY_ID",
    "MASTER_KEYS_RETIRED",
    "AUDIT_KEY",
    "AUDIT_KEY_ID",
    "AUDIT_KEYS_RETIRED",
];

/// The files [`Stack::write_admin_env`] wrote.
#[derive(Clone, Debug)]
pub struct AdminEnv {
    /// `admin.env`: the first region's settings.
    pub default: PathBuf,
    /// `admin-<region>.env`, by region.
    pub regions: Vec<(String, PathBuf)>,
}

fn server_settings(prefix: &str, server: &PgServer, dbname: Option<&str>) -> Vec<(String, String)> {
    let mut settings = vec![
        (format!("{prefix}HOST"), "127.0.0.1".to_owned()),
        (format!("{prefix}PORT"), server.port.to_string()),
        (format!("{prefix}USER"), pg::SUPERUSER.to_owned()),
        (format!("{prefix}PASSWORD"), server.password.clone()),
        (format!("{prefix}SSLMODE"), "verify-full".to_owned()),
        (
            format!("{prefix}SSLROOTCERT"),
            server.ca_file().display().to_string(),
        ),
    ];
    if let Some(name) = dbname {
        settings.push(("CENTRAL_DB_NAME".to_owned(), name.to_owned()));
    }
    settings
}

impl Stack {
    /// The settings `medicalpro-admin` needs to work on `region` of this stack, in
    /// the order they are written.
    pub fn admin_settings(&self, region: &Region) -> Vec<(String, String)> {
        let mut settings = server_settings("DB_", &self.central, Some(CENTRAL_DB));
        settings.extend(server_settings("REGION_DB_", &region.server, None));
        for name in KEY_SETTINGS {
            if let Some((_, value)) = region.worker.env().iter().rev().find(|(k, _)| k == name) {
                settings.push((name.to_owned(), value.clone()));
            }
        }
        settings
    }

    /// Writes `admin-<region>.env` for every region and `admin.env` (the first
    /// region's) into the data directory, mode 0600 (see the module's description).
    pub fn write_admin_env(&self) -> anyhow::Result<AdminEnv> {
        let dir = self.options.data_dir.canonicalize()?;
        let mut regions = Vec::new();
        let mut default = None;
        for region in &self.regions {
            let settings = self.admin_settings(region);
            let path = dir.join(format!("admin-{}.env", region.name));
            write_file(&path, &region.name, &settings)?;
            if default.is_none() {
                let path = dir.join("admin.env");
                write_file(&path, &region.name, &settings)?;
                default = Some(path);
            }
            regions.push((region.name.clone(), path));
        }
        Ok(AdminEnv {
            default: default.context("the stack has no region")?,
            regions,
        })
    }
}

fn write_file(path: &Path, region: &str, settings: &[(String, String)]) -> anyhow::Result<()> {
    let mut text = format!(
        "# medicalpro-admin settings for this devstack, region {region} (rewritten at every start).\n\
         # MEDICALPRO_CONFIG={} cargo run -p admin -- list-clinics\n",
        path.display()
    );
    for (name, value) in settings {
        text.push_str(&format!("{name}={value}\n"));
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // A file left by an earlier run keeps its mode: make it private too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use crate::test_support;
    use common::config::Source;
    use std::os::unix::fs::PermissionsExt;

    /// Reads a settings file as `MEDICALPRO_CONFIG` is read: `KEY=VALUE` lines,
    /// `#` comments.
    fn read_settings(path: &std::path::Path) -> Source {
        let text = std::fs::read_to_string(path).unwrap();
        Source::from_pairs(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())),
        )
    }

    /// The files written for a running stack are private, and the admin commands
    /// run with nothing else: `list-clinics` sees a clinic signed up through the
    /// gateway, in the region whose file was used; `verify-audit` checks its trail;
    /// the settings file starts the `medicalpro-admin` binary too when it is built.
    #[test]
    fn admin_commands_run_with_the_written_settings() {
        let stack = test_support::start("admin-env", &["eu-west", "eu-central"]);
        let files = stack.write_admin_env().unwrap();
        assert_eq!(files.regions.len(), 2);
        for path in std::iter::once(&files.default).chain(files.regions.iter().map(|(_, p)| p)) {
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        }
        let settings_of = |path: &std::path::Path| -> Vec<String> {
            let text = std::fs::read_to_string(path).unwrap();
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            settings_of(&files.default),
            settings_of(&files.regions[0].1),
            "admin.env is the first region's"
        );

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let demo = runtime
            .block_on(crate::cli::seed_demo(&stack.gateway_url()))
            .unwrap();
        let clinic = demo
            .split_whitespace()
            .nth(2)
            .expect("demo: clinic <id> …")
            .to_owned();

        let source = read_settings(&files.regions[1].1);
        let settings = admin::AdminSettings::from_source(&source).unwrap();
        assert_eq!(settings.regional.port, stack.regions[1].server.port);
        common::crypto::KeyRing::from_source(&source).expect("the master key");
        assert_eq!(
            source.unread(),
            Vec::<String>::new(),
            "every setting written is one the admin tool reads"
        );
        let (rows, report) = runtime.block_on(async {
            let rows = admin::fleet::list_clinics(&settings.central, None)
                .await
                .unwrap();
            // The sign-up's audit records reach the central trail within a moment.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            loop {
                let report = admin::audit::verify(
                    &settings.central,
                    Some(settings.audit_keys().unwrap()),
                    None,
                    None,
                )
                .await
                .unwrap();
                if report.rows > 0 || std::time::Instant::now() > deadline {
                    break (rows, report);
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
        let table = admin::fleet::format_table(&rows);
        assert!(table.contains(&clinic), "{table}");
        assert!(
            table.contains("eu-west") && table.contains("active"),
            "{table}"
        );
        assert!(
            report.is_intact() && report.rows > 0,
            "{}",
            report.summary()
        );

        // The binary, when built (`cargo build -p admin`), with the file alone.
        let admin_bin = std::env::current_exe()
            .unwrap()
            .parent()
            .and_then(|deps| deps.parent())
            .map(|dir| dir.join("medicalpro-admin"));
        if let Some(bin) = admin_bin.filter(|b| b.is_file()) {
            let out = std::process::Command::new(bin)
                .arg("list-clinics")
                .env_clear()
                .env("MEDICALPRO_CONFIG", &files.default)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && stdout.contains(&clinic),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        drop(stack);
    }
}
