//! API clients for integrations: a clinic admin's role-scoped, revocable client
//! credentials (`GET/POST /api/v1/api-clients`, `POST /api/v1/api-clients/{id}/revoke`)
//! and the OAuth 2.0 client credentials grant that turns them into access tokens
//! (`POST /api/v1/oauth/token`, RFC 6749 §4.4).
//!
//! A client secret is 256 random bits, shown once at creation; only its SHA-256 is
//! stored. A slow password hash (argon2) protects low-entropy human passwords
//! against offline guessing; a 256-bit random secret cannot be guessed, so its
//! SHA-256 is as safe and costs the token endpoint no hashing queue.
//!
//! An API client is the subject of its access tokens (`sub` = the client's `id`,
//! its role and clinic as created) and has a token version of its own, announced
//! on `medicalpro_users` like a user's: revoking it raises the version, so every
//! gateway and worker refuses its tokens within a second, and the audit trail's
//! `user_id` of everything it does is the client's `id`.
//!
//! The token endpoint answers RFC 6749 §5.2 errors (`{"error": …}`, `400`/`401`),
//! not problem+json; it is throttled like a sign-in, per `client_id` and address.

use crate::error::GatewayError;
use crate::http as h;
use crate::state::{Ctx, Gateway};
use crate::users::{admin_only, lock_and_check_caller, parse_id};
use crate::{audit, auth, throttle};
use axum::body::Body;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use common::audit::Record;
use common::token::{Claims, Role};
use common::{ClinicId, UserId};
use http::{Response, StatusCode};
use rand::RngCore;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewClient {
    name: String,
    role: String,
}

fn db(e: tokio_postgres::Error) -> GatewayError {
    GatewayError::from_db(e)
}

const COLUMNS: &str = "id, client_id, name, role, created_at, revoked_at";

fn client_json(row: &tokio_postgres::Row) -> Result<Value, GatewayError> {
    let created: DateTime<Utc> = row.try_get(4).map_err(db)?;
    let revoked: Option<DateTime<Utc>> = row.try_get(5).map_err(db)?;
    Ok(json!({
        "id": row.try_get::<_, Uuid>(0).map_err(db)?,
        "client_id": row.try_get::<_, String>(1).map_err(db)?,
        "name": row.try_get::<_, String>(2).map_err(db)?,
        "role": row.try_get::<_, String>(3).map_err(db)?,
        "created_at": created.to_rfc3339_opts(SecondsFormat::Micros, true),
        "revoked_at": revoked.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)),
    }))
}

fn record(ctx: &Ctx, claims: &Claims, action: &str, id: Uuid) -> Record {
    let mut r = Record::now(action, "api_clients", "success");
    r.user_id = Some(*claims.sub.as_uuid());
    r.resource_id = Some(id);
    r.client_ip = Some(ctx.client_ip);
    r.request_id = Some(ctx.request_id.to_string());
    r
}

fn random_token(prefix: &str, bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut raw);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw))
}

fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// `GET /api/v1/api-clients`: the clinic's API clients, without secrets.
pub async fn list(gw: &Gateway, claims: &Claims) -> Result<Value, GatewayError> {
    admin_only(claims)?;
    crate::users::person_only(gw, claims).await?;
    let client = gw.central.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM api_clients WHERE company_id = $1 ORDER BY created_at, id"
            ),
            &[claims.clinic.as_uuid()],
        )
        .await
        .map_err(db)?;
    let data = rows
        .iter()
        .map(client_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({"data": data, "next_cursor": null}))
}

/// `POST /api/v1/api-clients`: a new client; its secret is in this answer only.
pub async fn create(
    gw: &Gateway,
    ctx: &Ctx,
    claims: &Claims,
    body: NewClient,
) -> Result<Value, GatewayError> {
    admin_only(claims)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.contains('\0') {
        return Err(GatewayError::BadRequest(
            "name must be 1 to 200 characters.".into(),
        ));
    }
    let role = Role::parse(&body.role).ok_or_else(|| {
        GatewayError::BadRequest("role must be admin, practitioner or staff.".into())
    })?;
    let id = Uuid::new_v4();
    let client_id = random_token("mpc_", 16);
    let secret = random_token("mps_", 32);
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    lock_and_check_caller(&tx, claims, true).await?;
    tx.execute(
        "INSERT INTO api_clients (id, company_id, client_id, secret_hash, name, role, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &id,
            claims.clinic.as_uuid(),
            &client_id,
            &secret_hash(&secret),
            &name,
            &role.as_str(),
            claims.sub.as_uuid(),
        ],
    )
    .await
    .map_err(db)?;
    let r = record(ctx, claims, "create", id);
    pgconn::audit::append(&*tx, &gw.config.audit_keys, claims.clinic, &[r])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    Ok(json!({
        "id": id,
        "client_id": client_id,
        "client_secret": secret,
        "name": name,
        "role": role.as_str(),
    }))
}

/// `POST /api/v1/api-clients/{id}/revoke`: no new tokens, and its tokens refused
/// everywhere within a second (its token version raised). Revoking twice is fine.
pub async fn revoke(
    gw: &Gateway,
    ctx: &Ctx,
    claims: &Claims,
    raw_id: &str,
) -> Result<Value, GatewayError> {
    admin_only(claims)?;
    let id = parse_id(raw_id)?;
    let mut client = gw.central.get().await?;
    let tx = client.transaction().await.map_err(db)?;
    lock_and_check_caller(&tx, claims, true).await?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE api_clients SET revoked_at = coalesce(revoked_at, now()), \
                        token_version = token_version + 1, token_version_at = now() \
                 WHERE id = $1 AND company_id = $2 RETURNING {COLUMNS}"
            ),
            &[&id, claims.clinic.as_uuid()],
        )
        .await
        .map_err(db)?
        .ok_or(GatewayError::NotFound)?;
    let r = record(ctx, claims, "revoke", id);
    pgconn::audit::append(&*tx, &gw.config.audit_keys, claims.clinic, &[r])
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    client_json(&row)
}

/// An RFC 6749 §5.2 error answer.
pub fn oauth_error(status: StatusCode, error: &str) -> Response<Body> {
    let mut res = h::json(status, &json!({ "error": error }));
    let headers = res.headers_mut();
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Basic realm=\"medicalpro\""),
        );
    }
    res
}

/// A refused token request: its RFC 6749 error, or a gateway error (throttled,
/// unavailable) answered as usual.
pub enum TokenRefusal {
    OAuth(StatusCode, &'static str),
    Gateway(GatewayError),
}

impl From<GatewayError> for TokenRefusal {
    fn from(e: GatewayError) -> Self {
        TokenRefusal::Gateway(e)
    }
}

fn invalid_request() -> TokenRefusal {
    TokenRefusal::OAuth(StatusCode::BAD_REQUEST, "invalid_request")
}

fn invalid_client() -> TokenRefusal {
    TokenRefusal::OAuth(StatusCode::UNAUTHORIZED, "invalid_client")
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
fn form_decode(raw: &str) -> Option<String> {
    percent_encoding::percent_decode_str(&raw.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The form's fields; a field sent twice is an `invalid_request` (RFC 6749 §3.2).
fn form_fields(body: &[u8]) -> Result<Vec<(String, String)>, TokenRefusal> {
    std::str::from_utf8(body).map_err(|_| invalid_request())?;
    let mut fields: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(body) {
        if fields.iter().any(|(seen, _)| *seen == k) {
            return Err(invalid_request());
        }
        fields.push((k.into_owned(), v.into_owned()));
    }
    Ok(fields)
}

/// HTTP Basic credentials (RFC 6749 §2.3.1: each part form-encoded); another
/// scheme is ignored.
fn basic(headers: &http::HeaderMap) -> Result<Option<(String, String)>, TokenRefusal> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| invalid_client())?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("basic") {
        // Not client authentication (a bearer token, say): the form's fields are.
        return Ok(None);
    }
    let decoded = STANDARD.decode(rest.trim()).map_err(|_| invalid_client())?;
    let decoded = String::from_utf8(decoded).map_err(|_| invalid_client())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(invalid_client)?;
    Ok(Some((
        form_decode(id).ok_or_else(invalid_client)?,
        form_decode(secret).ok_or_else(invalid_client)?,
    )))
}

/// `POST /api/v1/oauth/token` with `grant_type=client_credentials`.
pub async fn token(
    gw: &Gateway,
    ctx: &Ctx,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Value, TokenRefusal> {
    let form_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(invalid_request());
    }
    let fields = form_fields(body)?;
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match field("grant_type") {
        None => return Err(invalid_request()),
        Some("client_credentials") => {}
        Some(_) => {
            return Err(TokenRefusal::OAuth(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
            ))
        }
    }
    let (client_id, secret) = match (basic(headers)?, field("client_id"), field("client_secret")) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => return Err(invalid_request()),
        (Some(pair), None, None) => pair,
        (None, Some(id), Some(secret)) => (id.to_owned(), secret.to_owned()),
        (None, _, _) => return Err(invalid_client()),
    };
    if client_id.is_empty() || client_id.len() > 100 || client_id.contains('\0') {
        return Err(invalid_client());
    }
    let counted = auth::count_sign_in(gw, ctx, &format!("api-client:{client_id}")).await?;
    let client = gw.central.get().await.map_err(GatewayError::from)?;
    let row = client
        .query_opt(
            "SELECT a.id, a.company_id, a.secret_hash, a.role, a.revoked_at IS NOT NULL, \
                    a.token_version, c.status \
             FROM api_clients a JOIN companies c ON c.id = a.company_id WHERE a.client_id = $1",
            &[&client_id],
        )
        .await
        .map_err(db)?;
    let Some(row) = row else {
        return Err(invalid_client());
    };
    let id: Uuid = row.try_get(0).map_err(db)?;
    let clinic = ClinicId::from_uuid(row.try_get(1).map_err(db)?);
    let stored: Vec<u8> = row.try_get(2).map_err(db)?;
    let role_text: String = row.try_get(3).map_err(db)?;
    let revoked: bool = row.try_get(4).map_err(db)?;
    let version: i64 = row.try_get(5).map_err(db)?;
    let status: String = row.try_get(6).map_err(db)?;
    let subject = UserId::from_uuid(id);
    let matches = bool::from(secret_hash(&secret).ct_eq(&stored));
    let outcome = if !matches {
        "bad_secret"
    } else if revoked {
        "revoked"
    } else if status != "active" {
        "clinic_unavailable"
    } else {
        "success"
    };
    let record = audit::session_record(ctx, Some(subject), "client_token", outcome);
    audit::record(gw, clinic, &record).await?;
    if outcome != "success" {
        return Err(invalid_client());
    }
    let role = Role::parse(&role_text)
        .ok_or_else(|| GatewayError::Internal("stored API client role unknown".into()))?;
    throttle::refund(&client, &counted).await?;
    let (access, expires_in) = gw
        .config
        .signer
        .issue(subject, clinic, role, version)
        .map_err(|e| GatewayError::Internal(e.to_string()))?;
    Ok(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": expires_in,
    }))
}
