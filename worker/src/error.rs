//! The worker's one error enum, with its explicit mapping to HTTP and problem+json.
//! What the client reads is chosen here; what is logged stays in the `Display` text.

use axum::response::{IntoResponse, Response};
use common::problem::Problem;
use tokio_postgres::error::SqlState;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("request did not come from a gateway: {0}")]
    GatewayCredential(common::internal::CredentialError),
    #[error("token refused: {0}")]
    Token(common::token::TokenError),
    #[error("clinic is unknown to the central database")]
    ClinicUnknown,
    #[error("clinic is not active (status {0})")]
    ClinicInactive(String),
    #[error("clinic is placed in region {0}, not here")]
    Misrouted(String),
    #[error("role not allowed: {0}")]
    Forbidden(String),
    #[error("no such resource type")]
    UnknownResource,
    #[error("row not found")]
    NotFound,
    #[error("bad request: {0}")]
    BadRequest(String),
    /// An `If-Match` that names none of the row's current version: nothing changed.
    #[error("precondition failed: the row changed since the version named")]
    PreconditionFailed,
    #[error("body over {0} bytes")]
    PayloadTooLarge(usize),
    #[error("conflict: {0}")]
    Conflict(String),
    /// A conflict with the parts that conflict listed (`conflicts` in the body).
    #[error("conflict: {0}")]
    Conflicts(String, serde_json::Value),
    #[error("timed out waiting for a clinic connection")]
    PoolTimeout,
    #[error("clinic is being relocated; writes are frozen")]
    ClinicRelocating,
    #[error("too many exports running: {0}")]
    TooManyExports(&'static str),
    #[error("statement ran past statement_timeout")]
    StatementTimeout,
    #[error("clinic database unavailable: {0}")]
    Unavailable(String),
    #[error("stored value failed to decrypt: {0}")]
    Integrity(String),
    /// A patient import with refused rows under `mode=all`: nothing imported, the
    /// rows' report (`rows` in the body).
    #[error("import refused: {0}")]
    ImportRefused(String, serde_json::Value),
    /// A patient import of more rows than the limit.
    #[error("import over {0} rows")]
    TooManyRows(usize),
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl WorkerError {
    /// A short, fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            WorkerError::GatewayCredential(_) => "gateway_credential",
            WorkerError::Token(_) => "token",
            WorkerError::ClinicUnknown => "clinic_unknown",
            WorkerError::ClinicInactive(_) => "clinic_inactive",
            WorkerError::Misrouted(_) => "misrouted",
            WorkerError::Forbidden(_) => "forbidden",
            WorkerError::UnknownResource => "unknown_resource",
            WorkerError::NotFound => "not_found",
            WorkerError::BadRequest(_) => "bad_request",
            WorkerError::PreconditionFailed => "precondition_failed",
            WorkerError::PayloadTooLarge(_) => "payload_too_large",
            WorkerError::Conflict(_) | WorkerError::Conflicts(..) => "conflict",
            WorkerError::PoolTimeout => "pool_timeout",
            WorkerError::ClinicRelocating => "clinic_relocating",
            WorkerError::TooManyExports(_) => "too_many_exports",
            WorkerError::StatementTimeout => "statement_timeout",
            WorkerError::Unavailable(_) => "db_unavailable",
            WorkerError::Integrity(_) => "integrity",
            WorkerError::ImportRefused(..) => "import_refused",
            WorkerError::TooManyRows(_) => "too_many_rows",
            WorkerError::UnsupportedMediaType(_) => "unsupported_media_type",
            WorkerError::Internal(_) => "internal",
        }
    }

    pub fn problem(&self) -> Problem {
        match self {
            WorkerError::GatewayCredential(_) => {
                Problem::new(403, "gateway-credential", "Forbidden").with_detail(
                    "This service only accepts requests forwarded by the MedicalPro gateway.",
                )
            }
            WorkerError::Token(common::token::TokenError::Expired) => {
                Problem::unauthorized("The access token has expired; refresh it.")
            }
            WorkerError::Token(common::token::TokenError::Invalid) => {
                Problem::unauthorized("A valid bearer access token is required.")
            }
            WorkerError::Token(common::token::TokenError::Revoked { .. }) => Problem::unauthorized(
                "This access token was revoked (the account was disabled, its role changed or it was signed out everywhere); sign in again.",
            ),
            WorkerError::ClinicUnknown | WorkerError::ClinicInactive(_) => {
                Problem::new(403, "clinic-unavailable", "Clinic not available")
                    .with_detail("Your clinic is unknown, suspended or not yet provisioned.")
            }
            WorkerError::Misrouted(_) => Problem::new(421, "misrouted", "Misdirected request")
                .with_detail("This clinic is served by another region; retry the request."),
            WorkerError::Forbidden(detail) => {
                Problem::new(403, "forbidden", "Forbidden").with_detail(detail.clone())
            }
            WorkerError::UnknownResource | WorkerError::NotFound => Problem::not_found(),
            WorkerError::BadRequest(detail) => Problem::bad_request(detail.clone()),
            WorkerError::PreconditionFailed => {
                Problem::new(412, "precondition-failed", "Precondition failed").with_detail(
                    "The object changed since the version `If-Match` names (or `If-Match` names no version this API gave); nothing was changed. Read it again and retry.",
                )
            }
            WorkerError::PayloadTooLarge(limit) => Problem::payload_too_large(*limit),
            WorkerError::Conflict(detail) => {
                Problem::new(409, "conflict", "Conflict").with_detail(detail.clone())
            }
            WorkerError::Conflicts(detail, conflicts) => Problem::new(409, "conflict", "Conflict")
                .with_detail(detail.clone())
                .with_extension("conflicts", conflicts.clone()),
            WorkerError::PoolTimeout => {
                Problem::unavailable("Your clinic's database is busy; retry shortly.", 1)
            }
            WorkerError::ClinicRelocating => Problem::unavailable(
                "Your clinic's data is being moved; reading works, changes can be sent again in a few seconds.",
                2,
            ),
            WorkerError::TooManyExports(detail) => {
                Problem::new(429, "too-many-exports", "Too many exports").with_detail(*detail).with_retry_after(30)
            }
            WorkerError::StatementTimeout => Problem::unavailable(
                "The request took too long and was stopped; narrow it down or retry shortly.",
                2,
            ),
            WorkerError::Unavailable(_) => Problem::unavailable(
                "Your clinic's database is temporarily unavailable; retry shortly.",
                2,
            ),
            WorkerError::Integrity(_) => {
                Problem::new(500, "integrity", "Stored data failed an integrity check").with_detail(
                    "A stored value could not be verified; the incident has been logged.",
                )
            }
            WorkerError::ImportRefused(detail, rows) => {
                Problem::new(422, "import-refused", "Import refused")
                    .with_detail(detail.clone())
                    .with_extension("rows", rows.clone())
            }
            WorkerError::TooManyRows(limit) => Problem::new(413, "too-many-rows", "Too many rows")
                .with_detail(format!("An import takes at most {limit} rows; split the file.")),
            WorkerError::UnsupportedMediaType(detail) => {
                Problem::new(415, "unsupported-media-type", "Unsupported media type")
                    .with_detail(detail.clone())
            }
            WorkerError::Internal(_) => Problem::internal(),
        }
    }

    /// Maps a PostgreSQL error in one place: constraint and data errors are the
    /// client's, connection trouble is a 503, anything else is ours.
    pub fn from_db(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            return WorkerError::Unavailable(e.to_string());
        };
        let code = db.code();
        let c = code.code();
        // Messages raised by the clinic schema's own rules (no constraint attached)
        // are written for clients; constraint messages name tables, so they are not.
        let own_rule = db.constraint().is_none() && db.table().is_none();
        let detail = |generic: &str| {
            if own_rule {
                format!("{}.", db.message().trim_end_matches('.'))
            } else {
                generic.to_owned()
            }
        };
        if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::EXCLUSION_VIOLATION {
            WorkerError::Conflict(detail(
                "The change conflicts with existing data (a duplicate or an overlap).",
            ))
        } else if *code == SqlState::RESTRICT_VIOLATION {
            WorkerError::Conflict(detail("The object's state does not allow this change."))
        } else if *code == SqlState::FOREIGN_KEY_VIOLATION {
            WorkerError::Conflict(
                "The change refers to something that does not exist or is still referenced.".into(),
            )
        } else if *code == SqlState::CHECK_VIOLATION
            || *code == SqlState::NOT_NULL_VIOLATION
            || c.starts_with("22")
        {
            WorkerError::BadRequest(detail(
                "A value is out of range or inconsistent with the others.",
            ))
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        {
            // The clinic's role may always write its own tables, except while its
            // database is frozen for the final switch of a relocation.
            WorkerError::ClinicRelocating
        } else if *code == SqlState::QUERY_CANCELED {
            WorkerError::StatementTimeout
        } else if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") {
            WorkerError::Unavailable(format!("{c}: {}", db.message()))
        } else {
            WorkerError::Internal(format!("{c}: {}", db.message()))
        }
    }
}

impl From<deadpool_postgres::PoolError> for WorkerError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Timeout(_) => WorkerError::PoolTimeout,
            PoolError::Backend(e) => WorkerError::from_db(e),
            PoolError::Closed | PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
                WorkerError::Unavailable(e.to_string())
            }
        }
    }
}

impl IntoResponse for WorkerError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        if problem.status >= 500 {
            tracing::error!(error = %self, kind = self.kind(), "request failed");
        } else {
            tracing::debug!(error = %self, kind = self.kind(), "request refused");
        }
        metrics::counter!(common::metric_names::ERRORS, "component" => "worker", "kind" => self.kind())
            .increment(1);
        problem_response(&problem)
    }
}

/// Renders a problem with its status, content type and `retry-after`.
pub fn problem_response(problem: &Problem) -> Response {
    httpkit::problem::response(problem)
}
