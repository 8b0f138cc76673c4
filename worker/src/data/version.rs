//! Versions of a row for clients that sync and write concurrently: the `ETag` of a
//! row (a strong validator derived from its `updated_at`, which every write moves
//! forward) and the `If-Match` precondition of a write, checked in the write's own
//! statement (see [`super::write`]).

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The `ETag` of a row as stored: its `updated_at` in microseconds since the Unix
/// epoch, quoted (`"1765012345678901"`). Every write of a row moves `updated_at`
/// forward by at least a microsecond, so a changed row never keeps its tag.
pub fn etag_of(updated_at: DateTime<Utc>) -> String {
    format!("\"{}\"", updated_at.timestamp_micros())
}

/// The `ETag` of a row in its JSON form (its `updated_at` field), if it has one.
pub fn etag(row: &Value) -> Option<String> {
    let updated_at = row.get("updated_at")?.as_str()?;
    let t = DateTime::parse_from_rfc3339(updated_at).ok()?;
    Some(etag_of(t.with_timezone(&Utc)))
}

/// An `If-Match` request header: `*` (any existing row) or the tags one of which
/// must be the row's current `ETag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    /// The `updated_at` values the listed tags name; a tag this API never gave
    /// (weak, malformed) names none and so never matches.
    Versions(Vec<DateTime<Utc>>),
}

impl IfMatch {
    /// Parses the header's value (a comma-separated list of entity tags, or `*`).
    pub fn parse(raw: &str) -> Self {
        if raw.trim() == "*" {
            return IfMatch::Any;
        }
        IfMatch::Versions(
            raw.split(',')
                .filter_map(|tag| {
                    let micros = tag.trim().strip_prefix('"')?.strip_suffix('"')?;
                    DateTime::from_timestamp_micros(micros.parse().ok()?)
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn etags_round_trip_through_if_match() {
        let row = json!({"id": "x", "updated_at": "2026-12-06T08:51:50.123456Z"});
        let tag = etag(&row).unwrap();
        assert_eq!(tag, "\"1796547110123456\"");
        let t = DateTime::parse_from_rfc3339("2026-12-06T08:51:50.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(IfMatch::parse(&tag), IfMatch::Versions(vec![t]));
        assert_eq!(
            IfMatch::parse(&format!("\"1\", {tag}")),
            IfMatch::Versions(vec![DateTime::from_timestamp_micros(1).unwrap(), t])
        );
        assert_eq!(IfMatch::parse(" * "), IfMatch::Any);
        // Weak or malformed tags name no version: they never match.
        assert_eq!(
            IfMatch::parse(&format!("W/{tag}, abc, \"x\"")),
            IfMatch::Versions(vec![])
        );
        assert_eq!(etag(&json!({"id": "x"})), None);
    }
}
