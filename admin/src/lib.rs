//! Operator commands for a MedicalPro deployment, as a library so the end-to-end
//! tests can run them in-process.
//!
//! - [`fleet::migrate_region`] brings a region's clinic template and every clinic
//!   database of the region to the latest clinic schema, recording progress in the
//!   central database so an interrupted or partly failed run is resumed by the next.
//! - [`audit::verify`] checks every clinic's audit hash chain.
//! - [`keys::rewrap`] re-seals wrapped data keys and role passwords under a new master
//!   key; [`keys::rotate_data_keys`] gives clinics new data keys and re-encrypts their
//!   sealed values (both resumable).
//! - [`ops::set_status`] suspends or resumes a clinic (at once, fleet-wide).
//! - [`backup::backup_region`] dumps a region's clinic databases in parallel,
//!   resumably, recording each backup centrally; [`backup::restore_clinic`] puts one
//!   clinic's dump back.
//! - [`relocate::relocate`] moves a clinic's database to another region while it
//!   stays readable (logical replication, then a short write pause for the switch).
//! - [`fleet::list_clinics`] reads where each clinic lives and which schema version it
//!   was last recorded at.
//!
//! The `medicalpro-admin` binary is a thin shell over [`cli`].

pub mod audit;
pub mod backup;
pub mod cli;
pub mod config;
pub mod db;
pub mod fleet;
pub mod keys;
pub mod ops;
pub mod relocate;

pub use config::AdminSettings;
pub use fleet::{migrate_region, ClinicFailure, ClinicUpgrade, FleetReport};
/// The migration sets and runner the commands apply, re-exported so callers (the
/// end-to-end tests) use exactly the same ones.
pub use migrations;
