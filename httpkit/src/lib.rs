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
//! Problem+json bodies stay each service's: its error enum renders every refusal
//! (body limits included) through one `IntoResponse`, and [`Observer::panicked`] is
//! where a service hands that same renderer to the panic guard.
//!
//! [`Layer`]: tower::Layer

pub mod client;
pub mod observe;

pub use client::{client, Client, ClientSettings, Connector};
pub use observe::{ObserveFuture, ObserveLayer, Observed, Observer};

/// For [`request_line!`], which expands in the services' crates.
#[doc(hidden)]
pub use tracing as __tracing;
