//! Users of a clinic, managed by its admins: `GET/POST /api/v1/users`,
//! `PATCH /api/v1/users/{id}` (role), `POST /api/v1/users/{id}/disable|enable` and
//! `POST /api/v1/users/{id}/sign-out` (every session of the user; any user may sign
//! itself out everywhere).
//!
//! Disabling a user, changing its role or signing it out raises its token version:
//! every gateway and worker refuses its older access tokens within a second
//! (`medicalpro_users` notifications), and its refresh tokens are revoked where the
//! change calls for it. Nobody changes its own role or enables or disables itself,
//! and the last active admin of a clinic stays one. Each change is checked against
//! the acting admin's current state and committed together with its audit record,
//! under a lock on the clinic so two admins cannot race past the last-admin rule.

use crate::error::GatewayError;
use crate::password;
use crate::state::{Ctx, Gateway};
use chrono::{DateTime, SecondsFormat, Utc};
use common::audit::Record;
use common::token::{Claims, Role};
use common::{Email, UserId};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_postgres::error::SqlState;
use uuid::Uuid;
use zeroize::Zeroizing;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    email: String,
    password: Zeroizing<String>,
    role: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    role: String,
}

pub fn admin_only(claims: &Claims) -> Result<(), GatewayError> {
    if claims.role == Role::Admin {
        Ok(())
    } else {
        Err(GatewayError::Forbidden(
            "Only a clinic admin can manage users.",
        ))
    }
}

/// Refuses a caller that is no active user of its clinic: an API client's
/// token (its subject names no user) reads no users, API clients or audit trail.
pub(crate) async fn person_only(gw: &Gateway, claims: &Claims) -> Result<(), GatewayError> {
    let person = gw
        .central
        .get()
        .await?
        .query_opt(
            "SELECT 1 FROM users WHERE id = $1 AND company_id = $2 AND disabled_at IS NULL",
            &[claims.sub.as_uuid(), claims.clinic.as_uuid()],
        )
        .await
        .map_err(db)?;
    match person {
        Some(_) => Ok(()),
        None => Err(GatewayError::Forbidden(
            "Users, API clients and the audit trail are for the clinic's admins themselves, not for an API client.",
        )),
    }
}

fn db(e: tokio_postgres::Error) -> GatewayError {
    GatewayError::from_db(e)
}

const COLUMNS: &str = "id, email, role, disabled_at IS NOT NULL, created_at";

fn user_json(row: &tokio_postgres::Row) -> Result<Value, GatewayError> {
    let created: DateTime<Utc> = row.try_get(4).map_err(db)?;
    Ok(json!({
        "id": row.try_get::<_, Uuid>(0).map_err(db)?,
        "email": row.try_get::<_, String>(1).map_err(db)?,
        "role": row.try_get::<_, String>(2).map_err(db)?,
        "disabled": row.try_get::<_, bool>(3).map_err(db)?,
        "created_at": created.to_rfc3339_opts(SecondsFormat::Micros, true),
    }))
}

fn record(ctx: &Ctx, claims: &Claims, action: &str, user: Uuid) -> Record {
    let mut r = Record::now(action, "users", "success");
    r.user_id = Some(*claims.sub.as_uuid());
    r.resource_id = Some(user);
    r.client_ip = Some(ctx.client_ip);
    r.request_id = Some(ctx.request_id.to_string());
    r
}

pub(crate) fn parse_id(raw: &str) -> Result<Uuid, GatewayError> {
    Uuid::parse_str(raw)
        .map_err(|_| GatewayError::BadRequest("The id in the path must be a UUID.".into()))
}

/// `GET /api/v1/users`: every user of the caller's clinic.
pub async fn list(gw: &Gateway, claims: &Claims) -> Result<Value, GatewayError> {
    admin_only(claims)?;
    person_only(gw, claims).await?;
    let client = gw.central.get().await?;
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM users WHERE company_id = $1 ORDER BY created_at, id"),
            &[claims.clinic.as_uuid()],
        )
        .await
        .map_err(db)?;
    let data = rows.iter().map(user_json).collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"data": data, "next_cursor": null}))
}

/// Locks the clinic (one user change at a time) and checks that the caller is
/// still what its token says: the same token version, not disabled, and an admin
/// when `admin` is asked for.
pub(crate) async fn lock_and_check_caller(
    tx: &deadpool_postgres::Transaction<'_>,
    claims: &Claims,
    admin: bool,
) -> Result<(), GatewayError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('users:' || $1::uuid::text, 0))",
        &[claims.clinic.as_uuid()],
    )
    .await
    .map_err(db)?;
    let caller = tx
        .query_opt(
            "SELECT role, disabled_at IS NOT NULL, token_version FROM users \
             WHERE id = $1 AND company_id = $2 FOR SHARE",
            &[claims.sub.as_uuid(), claims.clinic.as_uuid()],
        )
        .await
        .map_err(db)?;
    let revoked = || {
        GatewayError::Token(common::token::TokenError::Revoked {
            user: claims.sub,
            clinic: claims.clinic,
        })
    };
    let Some(caller) = caller else {
        return Err(revoked());
    };
    if caller.get::<_, bool>(1) || caller.get::<_, i64>(2) != claims.ver {
        return Err(revoked());
    }
    if admin && caller.get::<_, &str>(0) != "admin" {
        return Err(GatewayError::Forbidden(
            "Only a clinic admin can manage users.",
        ));
    }
    Ok(())
}

/// `POST /api/v1/users`: a new user of the caller's clinic.
pub async fn create(
    gw: &Gateway,
    ctx: &Ctx,
    claims: &Claims,
    body: NewUser,
) -> Result<Value, GatewayError> {
    admin_only(claims)?;
    let email = Email::parse(&body.email)
        .ok_or_else(|| GatewayError::BadRequest("`email` must be an e-mail address.".into()))?;
    password::check_new(&body.password)?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        GatewayError::BadRequest("`role` must be one of admin, practitioner, staff.".into())
    })?;
    let hash = gw.hasher.hash(&body.password).await?;
    let id = UserId::generate();
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    lock_and_check_caller(&tx, claims, true).await?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO users (id, company_id, email, password_hash, role) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
            ),
            &[id.as_uuid(), claims.clinic.as_uuid(), &email.as_str(), &hash, &role.as_str()],
        )
        .await
        .map_err(|e| match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => GatewayError::EmailTaken,
            _ => db(e),
        })?;
    let r = record(ctx, claims, "create", *id.as_uuid());
    pgconn::audit::append(&*tx, &gw.config.audit_keys, claims.clinic, &[r])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    user_json(&row)
}

/// What a change does to a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Disable,
    Enable,
    Role(Role),
    /// Every session ends: access tokens stop working, refresh tokens are revoked.
    SignOut,
}

impl Change {
    fn action(self) -> &'static str {
        match self {
            Change::Disable => "disable",
            Change::Enable => "enable",
            Change::Role(_) => "change_role",
            Change::SignOut => "sign_out",
        }
    }
}

/// `PATCH /api/v1/users/{id}`: `{"role": …}`.
pub async fn patch(
    gw: &Gateway,
    ctx: &Ctx,
    claims: &Claims,
    id: &str,
    body: UserChange,
) -> Result<Value, GatewayError> {
    let role = Role::parse(&body.role).ok_or_else(|| {
        GatewayError::BadRequest("`role` must be one of admin, practitioner, staff.".into())
    })?;
    change(gw, ctx, claims, id, Change::Role(role)).await
}

/// Applies `change` to user `id` of the caller's clinic (see the module docs).
pub async fn change(
    gw: &Gateway,
    ctx: &Ctx,
    claims: &Claims,
    id: &str,
    change: Change,
) -> Result<Value, GatewayError> {
    let own = id == claims.sub.to_string();
    if change != Change::SignOut || !own {
        admin_only(claims)?;
    }
    let id = parse_id(id)?;
    let own = own || id == *claims.sub.as_uuid();
    if own && change != Change::SignOut {
        return Err(GatewayError::Forbidden(
            "You cannot enable, disable or change the role of your own account; ask another admin.",
        ));
    }
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    lock_and_check_caller(&tx, claims, !own).await?;
    let target = tx
        .query_opt(
            "SELECT role, disabled_at IS NOT NULL FROM users WHERE id = $1 AND company_id = $2 FOR UPDATE",
            &[&id, claims.clinic.as_uuid()],
        )
        .await
        .map_err(db)?
        .ok_or(GatewayError::NotFound)?;
    let (role, disabled): (String, bool) = (target.get(0), target.get(1));
    let stops_being_admin = role == "admin"
        && !disabled
        && matches!(
            change,
            Change::Disable | Change::Role(Role::Practitioner | Role::Staff)
        );
    if stops_being_admin {
        let others: i64 = tx
            .query_one(
                "SELECT count(*) FROM users WHERE company_id = $1 AND id <> $2 AND role = 'admin' AND disabled_at IS NULL",
                &[claims.clinic.as_uuid(), &id],
            )
            .await
            .map_err(db)?
            .get(0);
        if others == 0 {
            return Err(GatewayError::Conflict(
                "This is the clinic's last active admin: make another user an admin first.",
            ));
        }
    }
    let (sql, revoke_refresh): (String, bool) = match change {
        Change::Disable => (
            "disabled_at = coalesce(disabled_at, now()), token_version = token_version + 1, token_version_at = now()".into(),
            true,
        ),
        Change::Enable => ("disabled_at = NULL".into(), false),
        Change::Role(new) if new.as_str() == role => (String::new(), false),
        Change::Role(new) => (
            format!(
                "role = '{}', token_version = token_version + 1, token_version_at = now()",
                new.as_str()
            ),
            false,
        ),
        Change::SignOut => (
            "token_version = token_version + 1, token_version_at = now()".into(),
            true,
        ),
    };
    let row = if sql.is_empty() {
        tx.query_one(
            &format!("SELECT {COLUMNS} FROM users WHERE id = $1"),
            &[&id],
        )
        .await
    } else {
        tx.query_one(
            &format!("UPDATE users SET {sql} WHERE id = $1 RETURNING {COLUMNS}"),
            &[&id],
        )
        .await
    }
    .map_err(db)?;
    if revoke_refresh {
        tx.execute(
            "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE user_id = $1",
            &[&id],
        )
        .await
        .map_err(db)?;
    }
    if stops_being_admin {
        // The integrations an admin made stop with their admin rights: their
        // API clients are revoked (tokens refused within a second); webhook
        // subscriptions are disabled by the worker when it next delivers.
        tx.execute(
            "UPDATE api_clients SET revoked_at = coalesce(revoked_at, now()), \
                    token_version = token_version + 1, token_version_at = now() \
             WHERE created_by = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await
        .map_err(db)?;
    }
    let r = record(ctx, claims, change.action(), id);
    pgconn::audit::append(&*tx, &gw.config.audit_keys, claims.clinic, &[r])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    user_json(&row)
}
