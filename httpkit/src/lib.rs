//! The HTTP toolkit the gateway and the worker share, so that both answer, log and
//! measure requests the same way:
//!
//! - [`observe`]: every public request observed once, as a tower [`Layer`]
//!   ([`ObserveLayer`]) or a service wrapper ([`Observed`]): its request id (by the
//!   service's rule), the `request` span every log line of the request carries, a
//!   panic guard answering the service's own `500` problem+json, and its duration
//!   recorded in `medicalpro_http_request_duration_seconds` by `component`, route
//!   class, status class and (gateway) matched `endpoint`. Each service says what
//!   differs through an [`Observer`].
//! - [`client`]: the one hyper client builder (kept-alive pool, `TCP_NODELAY`,
//!   rustls through hyper-rustls when given a configuration) used by the gateway's
//!   upstream client, the dev stack's client and the bench.
//!
//! - [`problem`]: the one problem+json renderer; each service's error enum chooses
//!   the problem (its explicit HTTP mapping) and renders it here, and
//!   [`Observer::panicked`] is where it hands that renderer to the panic guard.
//!
//! [`Layer`]: tower::Layer

pub mod client;
pub mod observe;
pub mod problem;

pub use client::{client, is_public, Client, ClientSettings, Connector, Resolver};
pub use observe::{ObserveFuture, ObserveLayer, Observed, Observer};

/// For [`request_line!`], which expands in the services' crates.
#[doc(hidden)]
pub use tracing as __tracing;
