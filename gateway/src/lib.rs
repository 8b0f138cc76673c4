//! The stateless edge gateway. It authenticates users against the central database,
//! verifies their tokens, finds each clinic's placement through an LRU cache and
//! forwards requests to the clinic's regional worker. See `ARCHITECTURE.md`.

pub mod api_clients;
pub mod audit;
pub mod auth;
pub mod caller;
pub mod config;
pub mod error;
pub mod events;
pub mod http;
pub mod mail;
pub mod mfa;
pub mod password;
pub mod passwords;
pub mod placement;
pub mod provision;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod state;
pub mod throttle;
pub mod tls;
pub mod totp;
pub mod trail;
pub mod upstream;
pub mod users;

pub use config::Config;
pub use server::{main_entry, run};
