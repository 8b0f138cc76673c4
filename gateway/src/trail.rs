//! `GET /api/v1/audit-logs`: a clinic admin reads their own clinic's audit trail
//! from the central database, newest first, with filters. Reading it is audited too.

use crate::audit;
use crate::error::GatewayError;
use crate::state::{Ctx, Gateway};
use chrono::{DateTime, SecondsFormat, Utc};
use common::token::{Claims, Role};
use serde_json::{json, Value};
use std::net::IpAddr;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

type Param = Box<dyn ToSql + Sync + Send>;

fn bad(name: &str, expected: &str) -> GatewayError {
    GatewayError::BadRequest(format!("`{name}` must be {expected}."))
}

fn timestamp(name: &str, v: &str) -> Result<DateTime<Utc>, GatewayError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| bad(name, "an RFC 3339 date-time"))
}

/// Builds the filter conditions from the query string (`$1` is the clinic).
fn filters(query: &str, params: &mut Vec<Param>) -> Result<(Vec<String>, i64), GatewayError> {
    let mut conditions = vec!["clinic_id = $1".to_owned()];
    let mut limit = DEFAULT_LIMIT;
    let pairs =
        common::query::strict_pairs(query).map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    for (key, value) in pairs {
        if value.len() > common::limits::QUERY_VALUE_MAX || value.contains('\0') {
            return Err(bad(&key, "at most 200 characters without NUL"));
        }
        let (column, op, param): (&str, &str, Param) = match key.as_str() {
            "from" => ("occurred_at", ">=", Box::new(timestamp("from", &value)?)),
            "to" => ("occurred_at", "<", Box::new(timestamp("to", &value)?)),
            "action" | "resource" | "outcome" => {
                let column = match key.as_str() {
                    "action" => "action",
                    "resource" => "resource",
                    _ => "outcome",
                };
                (column, "=", Box::new(value))
            }
            "user_id" => (
                "user_id",
                "=",
                Box::new(Uuid::parse_str(&value).map_err(|_| bad("user_id", "a UUID"))?),
            ),
            "resource_id" => (
                "resource_id",
                "=",
                Box::new(Uuid::parse_str(&value).map_err(|_| bad("resource_id", "a UUID"))?),
            ),
            "cursor" => (
                "chain_seq",
                "<",
                Box::new(
                    value
                        .parse::<i64>()
                        .map_err(|_| bad("cursor", "a cursor this API returned"))?,
                ),
            ),
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| bad("limit", &format!("an integer from 1 to {MAX_LIMIT}")))?;
                continue;
            }
            _ => continue,
        };
        params.push(param);
        conditions.push(format!("{column} {op} ${}", params.len()));
    }
    Ok((conditions, limit))
}

fn entry(row: &tokio_postgres::Row) -> Result<Value, tokio_postgres::Error> {
    let occurred: DateTime<Utc> = row.try_get(7)?;
    Ok(json!({
        "chain_seq": row.try_get::<_, Option<i64>>(0)?,
        "user_id": row.try_get::<_, Option<Uuid>>(1)?,
        "action": row.try_get::<_, String>(2)?,
        "resource": row.try_get::<_, String>(3)?,
        "resource_id": row.try_get::<_, Option<Uuid>>(4)?,
        "client_ip": row.try_get::<_, Option<IpAddr>>(5)?.map(|ip| ip.to_string()),
        "outcome": row.try_get::<_, String>(6)?,
        "occurred_at": occurred.to_rfc3339_opts(SecondsFormat::Micros, true),
        "request_id": row.try_get::<_, Option<String>>(8)?,
        "resource_ids": row.try_get::<_, Option<Vec<Uuid>>>(9)?,
    }))
}

/// Answers one page of the caller's clinic's audit trail.
pub async fn list(
    gw: &Gateway,
    ctx: &Ctx,
    claims: &Claims,
    query: &str,
) -> Result<Value, GatewayError> {
    if claims.role != Role::Admin {
        return Err(GatewayError::Forbidden(
            "Only a clinic admin can read the audit trail.",
        ));
    }
    crate::users::person_only(gw, claims).await?;
    let mut params: Vec<Param> = vec![Box::new(*claims.clinic.as_uuid())];
    let (conditions, limit) = filters(query, &mut params)?;
    params.push(Box::new(limit + 1));
    let sql = format!(
        "SELECT chain_seq, user_id, action, resource, resource_id, client_ip, outcome, occurred_at, request_id, resource_ids \
         FROM audit_logs WHERE {} ORDER BY chain_seq DESC LIMIT ${}",
        conditions.join(" AND "),
        params.len()
    );
    let client = gw.central.get().await?;
    let refs: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let mut rows = client
        .query(&sql, &refs)
        .await
        .map_err(GatewayError::from_db)?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let data = rows
        .iter()
        .map(entry)
        .collect::<Result<Vec<_>, _>>()
        .map_err(GatewayError::from_db)?;
    let next = if more {
        rows.last()
            .and_then(|r| r.try_get::<_, Option<i64>>(0).ok().flatten())
            .map(|s| s.to_string())
    } else {
        None
    };
    drop(client);
    let record = audit::request_record(ctx, claims.sub, "list", "audit-logs", "success");
    audit::record(gw, claims.clinic, &record).await?;
    Ok(json!({"data": data, "next_cursor": next}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_typed_and_bounded() {
        let mut params: Vec<Param> = vec![Box::new(Uuid::nil())];
        let (conditions, limit) = filters(
            "action=read&from=2026-01-01T00:00:00Z&limit=10&clinic_id=x",
            &mut params,
        )
        .unwrap();
        assert_eq!(limit, 10);
        assert_eq!(
            conditions,
            vec!["clinic_id = $1", "action = $2", "occurred_at >= $3"]
        );
        for bad_query in [
            "from=yesterday",
            "limit=0",
            "limit=201",
            "user_id=x",
            "cursor=abc",
        ] {
            let mut params: Vec<Param> = vec![Box::new(Uuid::nil())];
            assert!(filters(bad_query, &mut params).is_err(), "{bad_query}");
        }
    }
}
