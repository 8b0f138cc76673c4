//! What every test module shares, and nothing else defines:
//!
//! - [`stacks`]: the shared stack, a module's own stack ([`Setup`], [`hold`]), a
//!   test's own stack, and turns (which tests run side by side, which alone);
//! - [`clinic`]: registering clinics and reaching a stack's databases, audit trail,
//!   admin tool settings and workers ([`StackExt`]);
//! - [`requests`]: building and checking requests (problem bodies, statuses, ids,
//!   URL encoding, raw HTTP);
//! - [`tools`]: outside programs (`promtool`, `haproxy`, …), run when installed,
//!   skipped with one line when not, required under `CI=true`.
//!
//! Helpers without a stack argument (`http()`, `central_db()`, …) work on the
//! shared stack; a module on a stack of its own calls them on it, as
//! `stack().central_db()`.

#![allow(dead_code)]

pub mod clinic;
pub mod requests;
pub mod stacks;
pub mod tools;

pub use clinic::*;
pub use requests::*;
pub use stacks::*;
pub use tools::*;
