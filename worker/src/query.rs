//! The query string of a list request (`GET /api/v1/{resource}?…`): `q`, `limit`,
//! `cursor`, `updated_since`, `include_deleted` and the resource's filters, parsed into the data layer's [`ListQuery`].
//! Other parameters are ignored: a clinic id in the query string is never used.

use crate::data::{Cursor, ListQuery, MAX_LIMIT};
use crate::error::WorkerError;
use common::resource::Resource;

/// The page size of a list that names none.
pub const DEFAULT_LIMIT: i64 = 20;
/// The longest value of a query parameter.
const MAX_QUERY_LEN: usize = common::limits::QUERY_VALUE_MAX;

/// Parses a list request's query string for resource `r`.
pub fn list_query(r: &Resource, raw: Option<&str>) -> Result<ListQuery, WorkerError> {
    let mut out = ListQuery {
        limit: DEFAULT_LIMIT,
        ..ListQuery::default()
    };
    let pairs = common::query::strict_pairs(raw.unwrap_or(""))
        .map_err(|e| WorkerError::BadRequest(e.to_string()))?;
    for (key, value) in pairs {
        if value.len() > MAX_QUERY_LEN || value.contains('\0') {
            return Err(WorkerError::BadRequest(format!(
                "`{key}` must be at most {MAX_QUERY_LEN} characters without NUL."
            )));
        }
        match key.as_str() {
            "q" => out.q = Some(value).filter(|v| !v.trim().is_empty()),
            "limit" => {
                out.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        WorkerError::BadRequest(format!(
                            "`limit` must be an integer from 1 to {MAX_LIMIT}."
                        ))
                    })?
            }
            "cursor" => {
                out.after = Some(Cursor::decode(&value).ok_or_else(|| {
                    WorkerError::BadRequest("`cursor` is not a cursor this API returned.".into())
                })?)
            }
            "updated_since" => {
                let since = chrono::DateTime::parse_from_rfc3339(&value).map_err(|_| {
                    WorkerError::BadRequest("`updated_since` must be an RFC 3339 date-time.".into())
                })?;
                out.updated_since = Some(since.with_timezone(&chrono::Utc));
            }
            "include_deleted" => {
                out.include_deleted = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(WorkerError::BadRequest(
                            "`include_deleted` must be true or false.".into(),
                        ))
                    }
                }
            }
            other => {
                if let Some(f) = r.field(other).filter(|f| f.filterable) {
                    out.filters.push((f, value));
                } else if let Some((name, bound)) = other.rsplit_once('_') {
                    if let Some(f) = r.field(name).filter(|f| f.range) {
                        let (from, to) = match bound {
                            "from" => (Some(value), None),
                            "to" => (None, Some(value)),
                            _ => continue,
                        };
                        out.ranges.push((f, from, to));
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use common::resource::{APPOINTMENTS, PATIENTS};

    #[test]
    fn list_query_parsing() {
        let q = list_query(&PATIENTS, Some("q=Du%20pont&limit=5&company_id=x&ssn=123")).unwrap();
        assert_eq!(q.q.as_deref(), Some("Du pont"));
        assert_eq!(q.limit, 5);
        assert_eq!(q.filters.len(), 1);
        assert!(list_query(&PATIENTS, Some("limit=0")).is_err());
        assert!(list_query(&PATIENTS, Some("limit=101")).is_err());
        assert!(list_query(&PATIENTS, Some("cursor=%%%")).is_err());
        let a = list_query(
            &APPOINTMENTS,
            Some("starts_at_from=2026-01-01T00:00:00Z&status=booked"),
        )
        .unwrap();
        assert_eq!(a.ranges.len(), 1);
        assert_eq!(a.filters.len(), 1);
        let s = list_query(
            &PATIENTS,
            Some("updated_since=2026-01-01T10:00:00%2B01:00&include_deleted=true"),
        )
        .unwrap();
        assert_eq!(
            s.updated_since.map(|t| t.to_rfc3339()),
            Some("2026-01-01T09:00:00+00:00".into())
        );
        assert!(s.include_deleted);
        assert!(list_query(&PATIENTS, Some("updated_since=yesterday")).is_err());
        assert!(list_query(&PATIENTS, Some("include_deleted=yes")).is_err());
    }
}
