//! What the gateway and the worker share. This crate depends on neither hyper nor
//! tokio-postgres: it holds plain types, pure functions and the process plumbing of
//! the service binaries.

pub mod audit;
pub mod config;
pub mod crypto;
pub mod ids;
pub mod internal;
pub mod limits;
pub mod metric_names;
pub mod openapi;
pub mod password;
pub mod problem;
pub mod query;
pub mod resource;
pub mod sealed_stream;
pub mod service;
pub mod source;
pub mod tls;
pub mod token;

pub use ids::{ClinicId, Email, RecordId, RequestId, UserId};
pub use problem::Problem;
