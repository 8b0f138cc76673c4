//! Start-up and shutdown: builds the state, the routers (see [`crate::routes`]) and
//! the background tasks, and runs them under one cancellation token until shutdown.

use crate::audit;
use crate::config::Config;
use crate::export_gate::ExportGate;
use crate::provision::{self, Provisioner};
use crate::registry::Registry;
use crate::routes;
use crate::state::AppState;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Closes every connection the public listener accepts until the returned token is
/// cancelled (the task then ends): while the worker starts up, a gateway is refused
/// at once and answers `503`, instead of waiting in the listen backlog for as long
/// as the start-up takes.
fn refuse_while_starting(
    listener: &TcpListener,
) -> std::io::Result<(CancellationToken, tokio::task::JoinHandle<()>)> {
    use std::os::fd::AsFd;
    let same_socket = std::net::TcpListener::from(listener.as_fd().try_clone_to_owned()?);
    let same_socket = TcpListener::from_std(same_socket)?;
    let starting = CancellationToken::new();
    let until = starting.clone();
    let refusing = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = until.cancelled() => return,
                accepted = same_socket.accept() => drop(accepted),
            }
        }
    });
    Ok((starting, refusing))
}

/// Runs the worker on listeners the caller bound, until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (starting, refusing) = refuse_while_starting(&listener)?;
    let metrics = common::service::metrics_handle();
    let central = pgconn::pool(
        &config.central,
        pgconn::limited(
            &config.central,
            "medicalpro-worker",
            pgconn::SessionLimits::SERVICE,
        ),
        8,
        Duration::from_secs(5),
    )?;
    {
        let conn = pgconn::connect(&config.central, "medicalpro-worker")
            .await
            .with_context(|| pgconn::describe(&config.central, "the central database", "DB_"))?;
        migrations::require_current(&conn, migrations::CENTRAL).await?;
    }
    // Token revocations are in place before the first request is served.
    let revocations = Arc::new(pgconn::revocations::Follow {
        state: config.tokens.revocations().clone(),
        horizon_secs: config.tokens.revocation_horizon_secs(),
    });
    let listening = pgconn::notify::start(
        &config.central,
        "medicalpro-worker-listen",
        revocations.as_ref(),
    )
    .await?;
    let admin = pgconn::pool(
        &config.regional,
        pgconn::config(&config.regional, "medicalpro-worker-admin"),
        4,
        Duration::from_secs(10),
    )?;
    let version = provision::prepare_region(&admin, &config.regional)
        .await
        .with_context(|| pgconn::describe(&config.regional, "the region's server", "REGION_DB_"))?;
    tracing::info!(region = %config.region, template_version = version, "region template ready");

    central
        .get()
        .await?
        .execute(
            "INSERT INTO regions (name, worker_url, pg_host, pg_port) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET worker_url = EXCLUDED.worker_url, pg_host = EXCLUDED.pg_host, \
             pg_port = EXCLUDED.pg_port, updated_at = now()",
            &[
                &config.region,
                &config.advertise_url,
                &config.regional.host,
                &i32::from(config.regional.port),
            ],
        )
        .await?;

    let registry = Arc::new(Registry::new(
        central.clone(),
        config.region.clone(),
        config.regional.clone(),
        config.keys.clone(),
        config.pool,
    ));
    let provisioner = Arc::new(Provisioner::new(
        registry.clone(),
        admin.clone(),
        config.keys.clone(),
    ));
    let (wake_tx, wake_rx) = mpsc::unbounded_channel();
    let (hooks, hooks_rx) = crate::webhooks::wake::Hooks::new();
    let state = AppState {
        registry: registry.clone(),
        provisioner: provisioner.clone(),
        tokens: config.tokens.clone(),
        internal: config.internal.clone(),
        keys: config.keys.clone(),
        max_body_bytes: config.max_body_bytes,
        max_import_bytes: config.max_import_bytes,
        max_import_rows: config.max_import_rows,
        max_attachment_bytes: config.max_attachment_bytes,
        exports: Arc::new(ExportGate::new(config.exports)),
        audit_wake: wake_tx,
        hooks: hooks.clone(),
        webhooks: config.webhooks,
    };

    let mut tasks = JoinSet::new();
    tasks.spawn(pgconn::notify::run(
        listening,
        config.central.clone(),
        "medicalpro-worker-listen".into(),
        revocations,
        shutdown.clone(),
    ));
    tasks.spawn(crate::webhooks::deliver::run(
        registry.clone(),
        hooks,
        config.webhooks,
        hooks_rx,
        shutdown.clone(),
    ));
    tasks.spawn(audit::run_shipper(
        registry.clone(),
        config.audit_keys.clone(),
        wake_rx,
        shutdown.clone(),
    ));
    crate::telemetry::set_slow_query_threshold(config.slow_query);
    crate::telemetry::register_counters();
    tasks.spawn(crate::telemetry::run_backup_gauges(
        central.clone(),
        config.region.clone(),
        config.backup_max_age,
        config.backup_check,
        shutdown.clone(),
    ));
    {
        let registry = registry.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            while tokio::select! { _ = shutdown.cancelled() => false, _ = tick.tick() => true } {
                registry.reap();
            }
        });
    }
    {
        let provisioner = provisioner.clone();
        tasks.spawn(async move {
            match provisioner.reconcile().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(completed = n, "resumed interrupted provisioning"),
                Err(e) => tracing::warn!(error = %e, "could not reconcile provisioning"),
            }
        });
    }
    let admin_app = routes::admin(metrics, admin.clone(), registry.clone());
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let serve = axum::serve(admin_listener, admin_app)
                .with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
    }

    let tls = config.tls.as_ref().map(|t| t.server_config()).transpose()?;
    starting.cancel();
    let _ = refusing.await;
    tracing::info!(addr = %listener.local_addr()?, region = %config.region, mutual_tls = tls.is_some(), "worker serving");
    let (app, stop) = (routes::public(state), shutdown.clone().cancelled_owned());
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await?
        }
        Some(tls) => {
            axum::serve(crate::tls::TlsListener::new(listener, tls), app)
                .with_graceful_shutdown(stop)
                .await?
        }
    }
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    registry.close_all();
    Ok(())
}

impl common::service::Service for Config {
    const NAME: &'static str = "worker";

    fn load(source: &common::config::Source) -> Result<Self, common::config::ConfigError> {
        Config::from_source(source)
    }

    fn addresses(&self) -> (std::net::SocketAddr, std::net::SocketAddr) {
        (self.listen, self.admin_listen)
    }

    fn run(
        self,
        listener: TcpListener,
        admin: TcpListener,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> + Send {
        run(self, listener, admin, shutdown)
    }
}

/// The worker binary: `--check` validates the configuration and exits.
pub fn main_entry() {
    common::service::main_entry::<Config>();
}
