//! The gateway's one error enum and its explicit HTTP mapping. Infrastructure
//! failures are mapped on purpose: central DB down → 503, worker unreachable or its
//! connection lost (it died or stopped) → 503, worker timeout → 504, an upstream
//! answer that is not proper HTTP → 502.

use axum::response::{IntoResponse, Response};
use common::metric_names as m;
use common::problem::Problem;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("token refused: {0}")]
    Token(common::token::TokenError),
    #[error("no bearer token")]
    MissingToken,
    #[error("clinic unknown, suspended or provisioning")]
    ClinicUnavailable,
    #[error("clinic is being moved to another region; writes wait")]
    ClinicRelocating,
    #[error("role not allowed: {0}")]
    Forbidden(&'static str),
    #[error("bad credentials")]
    BadCredentials,
    #[error("refresh token refused")]
    BadRefreshToken,
    /// A second factor (TOTP code, recovery code or `mfa_token`) was refused.
    #[error("second factor refused: {0}")]
    MfaRefused(&'static str),
    #[error("too many attempts; retry in {0}s")]
    Throttled(u32),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("email already registered")]
    EmailTaken,
    #[error("registration is closed")]
    RegistrationClosed,
    #[error("sign-up needs a valid invitation: {0}")]
    InviteRequired(&'static str),
    #[error("too many clinics being set up")]
    SignupsPaused,
    #[error("password hashing queue full")]
    Overloaded,
    #[error("upload buffer full")]
    UploadsBusy,
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("unknown region {0}")]
    UnknownRegion(String),
    #[error("body over {0} bytes")]
    PayloadTooLarge(usize),
    #[error("no route")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("central database unavailable: {0}")]
    CentralUnavailable(String),
    #[error("provisioning did not finish: {0}")]
    ProvisioningIncomplete(String),
    #[error("worker unreachable: {0}")]
    WorkerUnreachable(String),
    /// The worker's connection ended before its answer (it died or stopped): the
    /// request may not have been served, and another attempt may well be.
    #[error("worker connection lost: {0}")]
    WorkerLost(String),
    #[error("worker timed out")]
    WorkerTimeout,
    #[error("upstream exchange failed: {0}")]
    BadGateway(String),
    #[error("clinic moved; placement refreshed")]
    Misrouted,
    #[error("internal: {0}")]
    Internal(String),
}

impl GatewayError {
    /// A short, fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Token(_) => "token",
            GatewayError::MissingToken => "missing_token",
            GatewayError::ClinicUnavailable => "clinic_unavailable",
            GatewayError::ClinicRelocating => "clinic_relocating",
            GatewayError::Forbidden(_) => "forbidden",
            GatewayError::BadCredentials => "bad_credentials",
            GatewayError::BadRefreshToken => "bad_refresh_token",
            GatewayError::MfaRefused(_) => "mfa_refused",
            GatewayError::Throttled(_) => "throttled",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::EmailTaken => "email_taken",
            GatewayError::RegistrationClosed => "registration_closed",
            GatewayError::InviteRequired(_) => "invite_required",
            GatewayError::SignupsPaused => "signups_paused",
            GatewayError::Overloaded => "overloaded",
            GatewayError::UploadsBusy => "uploads_busy",
            GatewayError::Conflict(_) => "conflict",
            GatewayError::BodyTimeout => "body_timeout",
            GatewayError::UnknownRegion(_) => "unknown_region",
            GatewayError::PayloadTooLarge(_) => "payload_too_large",
            GatewayError::NotFound => "not_found",
            GatewayError::MethodNotAllowed => "method_not_allowed",
            GatewayError::CentralUnavailable(_) => "central_unavailable",
            GatewayError::ProvisioningIncomplete(_) => "provisioning_incomplete",
            GatewayError::WorkerUnreachable(_) => "worker_unreachable",
            GatewayError::WorkerLost(_) => "worker_lost",
            GatewayError::WorkerTimeout => "worker_timeout",
            GatewayError::BadGateway(_) => "bad_gateway",
            GatewayError::Misrouted => "misrouted",
            GatewayError::Internal(_) => "internal",
        }
    }

    pub fn problem(&self) -> Problem {
        match self {
            GatewayError::Token(common::token::TokenError::Expired) => {
                Problem::unauthorized("The access token has expired; refresh it.")
            }
            GatewayError::Token(common::token::TokenError::Invalid) => {
                Problem::unauthorized("A valid bearer access token is required.")
            }
            GatewayError::Token(common::token::TokenError::Revoked { .. }) => Problem::unauthorized(
                "This access token was revoked (the account was disabled, its role changed or it was signed out everywhere); sign in again.",
            ),
            GatewayError::MissingToken => {
                Problem::unauthorized("Send `Authorization: Bearer <access token>`.")
            }
            GatewayError::ClinicUnavailable => {
                Problem::new(403, "clinic-unavailable", "Clinic not available")
                    .with_detail("Your clinic is unknown, suspended or not yet provisioned.")
            }
            GatewayError::ClinicRelocating => Problem::unavailable(
                "Your clinic's data is being moved; reading works, changes can be sent again in a few seconds.",
                2,
            ),
            GatewayError::Forbidden(detail) => {
                Problem::new(403, "forbidden", "Forbidden").with_detail(*detail)
            }
            GatewayError::BadCredentials => {
                Problem::new(401, "bad-credentials", "Invalid e-mail or password")
            }
            GatewayError::BadRefreshToken => Problem::unauthorized(
                "The refresh token is invalid, expired or already used; log in again.",
            ),
            GatewayError::MfaRefused(detail) => {
                Problem::new(401, "mfa-refused", "Second factor refused").with_detail(*detail)
            }
            GatewayError::Throttled(secs) => Problem::new(429, "throttled", "Too many attempts")
                .with_detail("Too many failed attempts; wait before trying again.")
                .with_retry_after(*secs),
            GatewayError::BadRequest(detail) => Problem::bad_request(detail.clone()),
            GatewayError::EmailTaken => {
                Problem::new(409, "email-taken", "E-mail already registered")
                    .with_detail("An account with this e-mail address exists; log in instead.")
            }
            GatewayError::RegistrationClosed => Problem::new(403, "registration-closed", "Registration closed")
                .with_detail("Clinics are not signed up here; ask the platform's operator to create yours."),
            GatewayError::InviteRequired(why) => {
                Problem::new(403, "invite-required", "Invitation required").with_detail(*why)
            }
            GatewayError::SignupsPaused => Problem::unavailable(
                "Many clinics are being set up right now; send the same registration again in a minute.",
                60,
            ),
            GatewayError::Overloaded => Problem::unavailable(
                "Too many sign-ins are being checked right now; retry in a moment.",
                1,
            ),
            GatewayError::UploadsBusy => Problem::unavailable(
                "Too many large uploads are arriving right now; send this one again in a few seconds.",
                5,
            ),
            GatewayError::Conflict(detail) => {
                Problem::new(409, "conflict", "Conflict").with_detail(*detail)
            }
            GatewayError::BodyTimeout => Problem::new(408, "request-timeout", "Request timeout")
                .with_detail("The request body did not arrive in time; send it again without pausing."),
            GatewayError::UnknownRegion(r) => {
                Problem::bad_request(format!("There is no region named `{r}`."))
            }
            GatewayError::PayloadTooLarge(limit) => Problem::payload_too_large(*limit),
            GatewayError::NotFound => Problem::new(404, "not-found", "Not found")
                .with_detail("No such endpoint; see /api/v1/openapi.json."),
            GatewayError::MethodNotAllowed => {
                Problem::new(405, "method-not-allowed", "Method not allowed")
            }
            GatewayError::CentralUnavailable(_) => {
                Problem::unavailable("Sign-in and clinic look-ups are temporarily unavailable; retry shortly.", 5)
            }
            GatewayError::ProvisioningIncomplete(_) => Problem::unavailable(
                "Your clinic is being set up; send the same registration again shortly.",
                5,
            ),
            GatewayError::WorkerUnreachable(_)
            | GatewayError::WorkerLost(_)
            | GatewayError::Misrouted => Problem::unavailable(
                "Your clinic's service is temporarily unavailable; retry shortly.",
                1,
            ),
            GatewayError::WorkerTimeout => {
                Problem::new(504, "upstream-timeout", "Upstream timeout")
                    .with_detail("Your clinic's service did not answer in time.")
                    .with_retry_after(2)
            }
            GatewayError::BadGateway(_) => Problem::new(502, "bad-gateway", "Bad gateway")
                .with_detail("The upstream service failed to answer properly."),
            GatewayError::Internal(_) => Problem::internal(),
        }
    }

    pub fn from_db(e: tokio_postgres::Error) -> Self {
        match e.code() {
            None => GatewayError::CentralUnavailable(e.to_string()),
            Some(c)
                if c.code().starts_with("08")
                    || c.code().starts_with("57P")
                    || c.code().starts_with("53") =>
            {
                GatewayError::CentralUnavailable(e.to_string())
            }
            // A data exception: a value the client sent that PostgreSQL cannot hold
            // (such as a NUL in text) is the client's, not ours.
            Some(c) if c.code().starts_with("22") => {
                GatewayError::BadRequest("A value in the request is not valid.".into())
            }
            Some(_) => GatewayError::Internal(match e.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => e.to_string(),
            }),
        }
    }
}

impl From<deadpool_postgres::PoolError> for GatewayError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => GatewayError::from_db(e),
            other => GatewayError::CentralUnavailable(other.to_string()),
        }
    }
}

/// The problem+json answer of an error. Server-side failures are logged here, once,
/// inside the request's span; every error is counted by kind.
impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let p = self.problem();
        if p.status >= 500 {
            tracing::warn!(error = %self, "request failed");
        }
        metrics::counter!(m::ERRORS, "component" => "gateway", "kind" => self.kind()).increment(1);
        let mut response = httpkit::problem::response(&p);
        if matches!(
            self,
            GatewayError::PayloadTooLarge(_) | GatewayError::BodyTimeout
        ) {
            // The body was not read to its end: this connection cannot carry
            // another request, and the client must not try.
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
