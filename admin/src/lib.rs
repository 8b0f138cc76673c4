//! Operator commands for a MedicalPro deployment, as a library so the end-to-end
//! tests can run them in-process.
//!
//! - [`fleet::migrate_region`] brings a region's clinic template and every clinic
//!   database of the region to the latest clinic schema, recording progress in the
//!   central database so an interrupted or partly failed run is resumed by the next.
//! - [`db::migrate_central`] brings the central database to the latest schema (as
//!   its owner; services never migrate it); [`roles::create_service_role`] makes
//!   the least-privilege login roles services use there.
//! - [`audit::verify`] checks every clinic's keyed audit chain, and against anchors
//!   kept outside the database.
//! - [`signup::invite`] issues single-use sign-up codes; [`signup::create_clinic`]
//!   creates and provisions a clinic directly.
//! - [`keys::rewrap`] re-seals wrapped data keys and role passwords under a new master
//!   key; [`keys::rotate_data_keys`] gives clinics new data keys and re-encrypts their
//!   sealed values (both resumable).
//! - [`ops::set_status`] suspends or resumes a clinic (at once, fleet-wide).
//! - [`backup::backup_region`] dumps a region's clinic databases in parallel,
//!   resumably, recording each backup centrally; [`backup::restore_clinic`] puts one
//!   clinic's dump back.
//! - [`offboard::offboard`] takes a leaving clinic's final export, then after a
//!   grace period drops its databases and role, shreds its data and backup keys and
//!   marks it deleted (resumable, step by step).
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
pub mod offboard;
pub mod ops;
pub mod relocate;
pub mod roles;
pub mod runner;
pub mod signup;

pub use config::AdminSettings;
pub use fleet::{migrate_region, ClinicFailure, ClinicUpgrade, FleetReport};
/// The migration sets and runner the commands apply, re-exported so callers (the
/// end-to-end tests) use exactly the same ones.
pub use migrations;
