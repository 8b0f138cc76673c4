//! Metric names, in one place so dashboards, alert rules and code agree.
//! Label sets are fixed and small: never one label value per clinic, except the
//! `clinic` label of the busiest-pools gauges, bounded by [`TOP_CLINICS`]. Every
//! name here is described in `deploy/README.md` (a test checks the table).

/// Histogram, seconds; labels `component` (`gateway`, `worker`), `route` (route
/// class), `status` (status class like `2xx`): time to a response's head.
pub const HTTP_REQUEST_DURATION: &str = "medicalpro_http_request_duration_seconds";
/// Counter; labels `component`, `kind` (error kind).
pub const ERRORS: &str = "medicalpro_errors_total";
/// Counter; label `result` (`hit`, `miss`, `negative_hit`, `stale`).
pub const PLACEMENT_CACHE: &str = "medicalpro_placement_cache_total";
/// Gauge: placements held in the gateway cache.
pub const PLACEMENT_CACHE_SIZE: &str = "medicalpro_placement_cache_entries";
/// Counter; label `reason` (`bad_credentials`, `throttled`).
pub const LOGIN_FAILURES: &str = "medicalpro_login_failures_total";
/// Counter; label `outcome` (`success`, `failure`).
pub const PROVISIONING: &str = "medicalpro_provisioning_total";
/// Histogram, seconds: time to provision one clinic.
pub const PROVISIONING_DURATION: &str = "medicalpro_provisioning_duration_seconds";
/// Gauge; label `server`: clinic pools open on the worker.
pub const POOLS_OPEN: &str = "medicalpro_clinic_pools_open";
/// Gauge; labels `server`, `state` (`in_use`, `idle`): connections across clinic pools.
pub const POOL_CONNECTIONS: &str = "medicalpro_pool_connections";
/// Gauge; label `server`: the connection budget of the worker's clinic pools.
pub const POOL_BUDGET: &str = "medicalpro_pool_budget_connections";
/// Gauge; label `server`: requests waiting for a clinic connection.
pub const POOL_WAITING: &str = "medicalpro_pool_waiting";
/// Counter; label `server`: idle connections closed to make room for another clinic.
pub const POOL_EVICTIONS: &str = "medicalpro_pool_evictions_total";
/// Histogram, seconds; label `server`: time to borrow a clinic connection.
pub const POOL_ACQUIRE: &str = "medicalpro_pool_acquire_seconds";
/// Gauge; labels `server`, `clinic`, `state` (`in_use`, `idle`): connections of the
/// busiest clinic pools only (at most [`TOP_CLINICS`] clinics per server, by
/// connections in use); a clinic that leaves the top is zeroed, then dropped.
pub const CLINIC_POOL_CONNECTIONS: &str = "medicalpro_clinic_pool_connections";
/// Gauge; labels `server`, `clinic`: requests waiting on one of the busiest clinic
/// pools (the same clinics as [`CLINIC_POOL_CONNECTIONS`]).
pub const CLINIC_POOL_WAITING: &str = "medicalpro_clinic_pool_waiting";
/// How many clinics per server get their own pool series: the label `clinic` takes at
/// most this many values at a time.
pub const TOP_CLINICS: usize = 10;
/// Counter; label `resource`: clinic data statements slower than `SLOW_QUERY_MS`.
pub const SLOW_QUERIES: &str = "medicalpro_slow_queries_total";
/// Gauge, seconds; label `region`: age of the oldest latest successful backup among
/// the region's active clinics (a clinic never backed up counts from its creation).
pub const BACKUP_OLDEST_AGE: &str = "medicalpro_backup_oldest_success_age_seconds";
/// Gauge; label `region`: active clinics whose latest successful backup is older than
/// `BACKUP_MAX_AGE_SECS`.
pub const BACKUPS_OVERDUE: &str = "medicalpro_clinics_backup_overdue";
/// Gauge: audit outbox rows the shipper's last attempt could not ship to the central
/// database (0 when every clinic it tried shipped).
pub const AUDIT_BACKLOG: &str = "medicalpro_audit_backlog";
/// Gauge: clinics whose audit outbox the shipper's last attempt could not empty.
pub const AUDIT_BACKLOG_CLINICS: &str = "medicalpro_audit_backlog_clinics";
/// Gauge, seconds: age of the oldest audit outbox row not yet shipped (0: none).
pub const AUDIT_BACKLOG_AGE: &str = "medicalpro_audit_backlog_oldest_age_seconds";
/// Counter: audit records shipped to the central database.
pub const AUDIT_SHIPPED: &str = "medicalpro_audit_shipped_total";
/// Counter; label `reason` (`refused`, `timeout`): TLS handshakes on the worker's
/// public listener that did not complete (a peer without a valid client certificate).
pub const TLS_HANDSHAKE_FAILURES: &str = "medicalpro_tls_handshake_failures_total";
/// Counter: password checks shed (answered 503) because the hashing queue was full.
pub const PASSWORD_HASH_SHED: &str = "medicalpro_password_hash_shed_total";
/// Counter; label `reason` (`closed`, `invite`, `throttled`, `provisioning`): sign-ups
/// refused by the registration policy or its limits.
pub const SIGNUPS_REFUSED: &str = "medicalpro_signups_refused_total";
/// Counter; labels `component`, `reason` (`revoked`, `expired`, `invalid`,
/// `clinic_unavailable`): requests refused for their access token or their clinic.
pub const ACCESS_REFUSED: &str = "medicalpro_access_refused_total";
/// Counter; labels `component`, `reason` (`connection_cap`, `header_timeout`,
/// `body_timeout`, `export_cap`, `export_idle`): clients cut off for holding too much
/// or being too slow.
pub const CLIENTS_CUT_OFF: &str = "medicalpro_clients_cut_off_total";

/// The `status` label of a response: its status class (`2xx` … `5xx`).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
/// Counter; label `outcome` (`delivered`, `failed`): webhook delivery attempts.
pub const WEBHOOK_DELIVERIES: &str = "medicalpro_webhook_deliveries_total";
/// Counter: webhook subscriptions disabled after failing too long (or an
/// unreadable secret).
pub const WEBHOOK_DISABLED: &str = "medicalpro_webhook_subscriptions_disabled_total";
