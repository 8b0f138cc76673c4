//! The security matrix, end to end against a real stack (see `support`).
//!
//! 1. **Role × endpoint.** Every operation of the served OpenAPI document is called
//!    as a clinic admin, a practitioner, a staff member and anonymously, and each
//!    answer is checked against [`RULES`], an explicit table that a unit test holds
//!    against the code's own flags (`RowAction::admin_only`, `Field::restricted`,
//!    `Role::sees_restricted`). A refusal must be `403` (`401` without a token)
//!    problem+json with nothing changed in the clinic database; a success must hide
//!    the [`RESTRICTED`] fields from staff on every read path (get, list, search,
//!    filters, the answers of writes, row actions and export) and show them to the
//!    others; staff can neither set nor clear them. A disabled user is locked out as
//!    the gateway promises: at once for logins and refreshes, within the access
//!    token's lifetime for the token in hand.
//! 2. **Hostile input.** NUL bytes, SQL and LIKE metacharacters, lone UTF-16
//!    surrogate escapes, bidi and zero-width characters, control characters, values
//!    at, just over and far over their limits go into every string field of every
//!    resource (create, PUT and PATCH; child rows; reference lists), every list query
//!    parameter, every path id, undocumented methods, and the users and auth
//!    endpoints. Never a 5xx; a refusal is a 4xx problem+json with nothing changed
//!    in the database; an accepted value reads back exactly (e-mails normalised),
//!    through the API and in the database.
//!
//! Every reply is also checked for other clinics' data: clinics in both regions are
//! seeded with rows full of the same hostile strings plus a marker, and no reply
//! may contain their markers or ids.
//!
//! Layout: `rules`, the expectation table; `judge`, [`Api`], the client that
//! judges every reply (failures are collected, so one run reports every broken
//! cell rather than the first); `site`, a clinic with a user per role and samples
//! generated from `common::resource`; `snapshots` of the database; then the tests:
//! `roles` (1), and hostile input (2): `probes`, then `fields`, `queries`, `auth`.

use crate::support::{
    central_db, clinic_db, http, register, signed_worker_get, stack, turn, unique, url_encode,
    wait_audit_for, Clinic,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use common::resource::{self, Child, Field, FieldType, Resource, RESOURCES};
use common::token::Role;
use devstack::{Http, Reply};
use http::Method;
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;
use uuid::Uuid;

mod auth;
mod fields;
mod judge;
mod probes;
mod queries;
mod roles;
mod rules;
mod site;
mod snapshots;

use judge::*;
use probes::*;
use queries::*;
use rules::*;
use site::*;
use snapshots::*;
