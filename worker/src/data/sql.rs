//! SQL building and the audited statement: numbered parameters ([`Sql`]) starting
//! with the audited actor, the select list of a resource (built once per
//! resource), the data-modifying CTE that writes a statement's audit record with it
//! ([`audited`]), and [`run`], which prepares, runs and times every data statement.

use crate::error::WorkerError;
use common::resource::Resource;
use common::token::Role;
use common::ClinicId;
use std::net::IpAddr;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;
use uuid::Uuid;

pub(super) type Param = Box<dyn ToSql + Sync + Send>;
/// A row to write: (column, value) pairs.
pub(super) type Columns = Vec<(String, Param)>;

/// Parameters of one statement, numbered as they are bound.
#[derive(Default)]
pub(super) struct Sql {
    params: Vec<Param>,
}

impl Sql {
    /// Starts with the audited actor as `$1`–`$4`.
    pub(super) fn for_actor(actor: &Actor) -> Self {
        let mut sql = Self::default();
        sql.bind(*actor.clinic.as_uuid());
        sql.bind(actor.user);
        sql.bind(actor.client_ip);
        sql.bind(actor.request_id.clone());
        sql
    }

    /// Starts with the clinic only, as `$1` (a statement recorded by its caller).
    pub(super) fn for_clinic(actor: &Actor) -> Self {
        let mut sql = Self::default();
        sql.bind(*actor.clinic.as_uuid());
        sql
    }

    /// The clinic's parameter: `$1` in every statement.
    pub(super) fn clinic_param(&self) -> &'static str {
        "$1"
    }

    pub(super) fn bind<T: ToSql + Sync + Send + 'static>(&mut self, value: T) -> String {
        self.push(Box::new(value))
    }

    pub(super) fn push(&mut self, value: Param) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    pub(super) fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The audited actor of a statement: always parameters `$1`–`$4`.
pub struct Actor {
    pub clinic: ClinicId,
    pub user: Uuid,
    pub role: Role,
    pub client_ip: IpAddr,
    pub request_id: String,
}

/// What the audit row says was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    List,
    Read,
    Create,
    Update,
    Delete,
    Restore,
    /// A row action such as `issue` or `convert`.
    Named(&'static str),
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::List => "list",
            Action::Read => "read",
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Restore => "restore",
            Action::Named(name) => name,
        }
    }
}

/// How a read's access is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audit {
    /// By the statement itself: the outbox row commits with it.
    Inline,
    /// By the caller, once it knows what the read showed, through the clinic's
    /// group commit ([`crate::commit`]) and before it answers.
    Deferred,
}

/// The select list of a resource, over the alias `t` (shared with the admin
/// tool's export: [`pgconn::rows::select_list`]).
pub(super) fn select_list(r: &Resource) -> std::borrow::Cow<'static, str> {
    pgconn::rows::select_list(r)
}

/// Wraps a statement into `WITH w AS (…)` plus the audit insert. `$1`..`$4` are the
/// actor; `resource_id` and `outcome` are SQL expressions that may refer to `w`.
pub(super) fn audited(
    body: &str,
    r: &Resource,
    action: Action,
    resource_id: &str,
    outcome: &str,
    tail: &str,
) -> String {
    audited_showing(body, r, action, resource_id, "NULL::uuid[]", outcome, tail)
}

/// [`audited`], also recording `resource_ids`: the ids of the rows shown (an SQL
/// expression that may refer to `w`).
pub(super) fn audited_showing(
    body: &str,
    r: &Resource,
    action: Action,
    resource_id: &str,
    resource_ids: &str,
    outcome: &str,
    tail: &str,
) -> String {
    format!(
        "WITH w AS ({body}), a AS (INSERT INTO audit_outbox \
         (user_id, action, resource, resource_id, resource_ids, client_ip, request_id, outcome) \
         SELECT $2::uuid, '{action}', '{resource}', {resource_id}, {resource_ids}, $3::inet, $4::text, {outcome}) \
         SELECT * FROM w{tail}",
        action = action.as_str(),
        resource = r.name,
    )
}

pub(super) const FOUND_OUTCOME: &str =
    "CASE WHEN EXISTS (SELECT 1 FROM w) THEN 'success' ELSE 'not_found' END";

/// Records an access outside a data statement: one that failed before or inside
/// its statement, or one made of several statements (an export).
pub async fn record_access(
    client: &impl deadpool_postgres::GenericClient,
    actor: &Actor,
    r: &Resource,
    action: Action,
    resource_id: Option<Uuid>,
    outcome: &str,
) -> Result<(), WorkerError> {
    client
        .execute(
            "INSERT INTO audit_outbox (user_id, action, resource, resource_id, client_ip, request_id, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &actor.user,
                &action.as_str(),
                &r.name,
                &resource_id,
                &actor.client_ip,
                &actor.request_id,
                &outcome,
            ],
        )
        .await
        .map_err(WorkerError::from_db)?;
    Ok(())
}

/// What a statement is run for: its resource and action, named in the slow-query
/// report with the actor's clinic and request id (never its parameters).
#[derive(Clone, Copy)]
pub(super) struct Op<'a> {
    actor: &'a Actor,
    resource: &'static str,
    action: &'static str,
}

impl<'a> Op<'a> {
    pub(super) fn new(actor: &'a Actor, r: &Resource, action: &'static str) -> Self {
        Self {
            actor,
            resource: r.name,
            action,
        }
    }
}

/// Runs one statement, timing it: a statement slower than `SLOW_QUERY_MS` is
/// reported (see [`crate::telemetry::statement_finished`]), failed or not.
pub(super) async fn run(
    client: &impl deadpool_postgres::GenericClient,
    op: Op<'_>,
    sql: &str,
    params: &Sql,
) -> Result<Vec<Row>, WorkerError> {
    let started = std::time::Instant::now();
    let result = async {
        let stmt = client
            .prepare_cached(sql)
            .await
            .map_err(WorkerError::from_db)?;
        client
            .query(&stmt, &params.refs())
            .await
            .map_err(WorkerError::from_db)
    }
    .await;
    crate::telemetry::statement_finished(
        &crate::telemetry::Statement {
            resource: op.resource,
            action: op.action,
            clinic: op.actor.clinic,
            request_id: &op.actor.request_id,
        },
        started.elapsed(),
    );
    result
}

/// One column of a row, typed; a type mismatch is an error, never a panic.
pub(super) fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a Row,
    idx: usize,
) -> Result<T, WorkerError> {
    row.try_get(idx)
        .map_err(|e| WorkerError::Internal(format!("reading column {idx}: {e}")))
}
