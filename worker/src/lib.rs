//! The regional worker. It serves the clinic API for the clinics placed in its
//! region, trusting only what it can check itself: the gateway's signature on every
//! forwarded request and the user's token. See `ARCHITECTURE.md` for the codemap.

pub mod access;
pub mod api;
pub mod attachments;
pub mod audit;
pub mod budget;
pub mod calendar;
pub mod clinic;
pub mod commit;
pub mod config;
pub mod context;
pub mod data;
pub mod directory;
pub mod error;
pub mod export;
pub mod export_gate;
pub mod fhir;
pub mod import;
pub mod keys;
pub mod printing;
pub mod provision;
pub mod query;
pub mod registry;
pub mod routes;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod webhooks;

pub use config::Config;
pub use server::{main_entry, run};
