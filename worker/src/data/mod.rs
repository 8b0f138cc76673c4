//! The generic data layer: every resource described in `common::resource` is read
//! and written through these functions, never through per-resource copies.
//!
//! A write runs in one transaction whose statement writes the audit outbox row
//! with the change (a data-modifying CTE, [`sql`]); a read's record is either in its
//! statement too or group-committed by its caller before it answers ([`Audit`]).
//! Nothing is answered before its record commits.
//!
//! - [`sql`]: parameters, select lists, the audited statement, running a statement;
//! - [`codec`]: stored rows to JSON, sealing and opening sensitive fields;
//! - [`input`]: request bodies parsed and validated;
//! - [`list`], [`search`], [`cursor`]: pages, the search order, the one cursor codec;
//! - [`read`], [`write`]: single-row reads and the writes;
//! - [`version`]: a row's `ETag` and a write's `If-Match`;
//! - [`singleton`]: the one-row resources (the clinic's settings).

pub mod codec;
pub mod cursor;
pub mod input;
pub mod list;
pub mod read;
pub mod search;
pub mod singleton;
pub mod sql;
pub mod version;
pub mod write;

pub use cursor::Cursor;
pub use input::Write;
pub use list::{list, ListQuery, MAX_LIMIT};
pub use read::{export_patient, get};
pub use sql::{record_access, Action, Actor, Audit};
pub use version::{etag, IfMatch};
pub use write::{act, set_deleted, write, write_in};
