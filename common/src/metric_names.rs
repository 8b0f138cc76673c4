//! Metric names, in one place so dashboards, alert rules and code agree.
//! Label sets are fixed and small: never one label value per clinic.

/// Histogram, seconds; labels `route` (route class), `status` (status class like `2xx`).
pub const HTTP_REQUEST_DURATION: &str = "medicalpro_http_request_duration_seconds";
/// Counter; labels `component`, `kind` (error kind).
pub const ERRORS: &str = "medicalpro_errors_total";
/// Counter; label `result` (`hit`, `miss`, `negative_hit`, `stale`).
pub const PLACEMENT_CACHE: &str = "medicalpro_placement_cache_total";
/// Gauge: placements held in the gateway cache.
pub const PLACEMENT_CACHE_SIZE: &str = "medicalpro_placement_cache_entries";
/// Counter; label `reason`.
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
/// Gauge: audit records written but not yet shipped to the central database.
pub const AUDIT_BACKLOG: &str = "medicalpro_audit_backlog";
/// Counter: audit records shipped to the central database.
pub const AUDIT_SHIPPED: &str = "medicalpro_audit_shipped_total";

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
