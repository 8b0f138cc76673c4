//! The end-to-end tests: one test binary, one module per concern, each against
//! real PostgreSQL servers, workers and gateways started by `devstack` (see
//! `support` for which stack a module gets and which tests run side by side).
//!
//! `cargo test -p devstack --test e2e -- MODULE::` runs one module, e.g.
//! `-- security::` or `-- api::patient_lifecycle`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod api;
mod api_clients;
mod attachments;
mod attacks;
mod audit_integrity;
mod clinic_day;
mod deploy;
mod durability;
mod export;
mod faults;
mod fleet;
mod import;
mod keys;
mod lifecycle;
mod mfa;
mod monitoring;
mod offboarding;
mod ops;
mod passwords;
mod placement;
mod relocation;
mod resources;
mod scale;
mod security;
mod sync;
mod webhooks;
