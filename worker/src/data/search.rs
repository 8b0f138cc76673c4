//! The search order of a resource with a `SearchIndex` (patients): relevance —
//! names starting with the term, then names containing it — read from one index of
//! a lowercased search column under the "C" collation ([`search_keys`]).

use super::sql::Sql;
use uuid::Uuid;

/// Index entries a search walks in order before it asks the trigram index instead
/// (see [`search_keys`]): a term matching one row in 50 fills a page of 20 within
/// it; a rarer one is found faster through the trigram index.
const SEARCH_WALK: u32 = 1000;

/// The keys (`search_rank`, `search_key`, `id`) of a search's next page, at most
/// `limit` of them, in relevance order: first the rows whose search column starts
/// with `q` (rank 0: a last name typed from its start), then the other rows that
/// contain it (rank 1), each in the search column's order (lowercased names,
/// code point order). The key is the search column under the "C" collation, which
/// the order index (`patients_search_order`) is built on, so both ranks are read
/// in order from it:
/// - rank 0 is one range of the index, whatever the clinic's size;
/// - rank 1 walks the index from the start (or the cursor) over at most
///   [`SEARCH_WALK`] entries, which finds a page of a common term at once; when
///   that walk found too few, the trigram index's matches are read and sorted
///   instead — bounded work for a rare term, or one whose matches all sort late.
///
/// Each part runs only when the parts before it left the page short.
pub(super) fn search_keys(
    sql: &mut Sql,
    table: &str,
    column: &str,
    conditions: &[String],
    q: &str,
    after: Option<(bool, String, Uuid)>,
    limit: &str,
) -> String {
    let key = format!("t.{column} COLLATE \"C\"");
    let term = sql.bind(q.to_owned());
    let contains = sql.bind(like_pattern(q));
    // Starts with the term: the range [term, term + the last code point).
    let prefix =
        |k: &str| format!("({k} >= lower({term}) AND {k} < lower({term}) || chr(1114111))");
    let base = conditions.join(" AND ");
    let (skip_prefix, prefix_after, rest_after) = match after {
        None => (false, String::new(), String::new()),
        Some((rest, k, id)) => {
            let seek = format!(
                " AND ({key}, t.id) > ({} COLLATE \"C\", {})",
                sql.bind(k),
                sql.bind(id)
            );
            if rest {
                (true, String::new(), seek)
            } else {
                (false, seek, String::new())
            }
        }
    };
    let prefix_part = if skip_prefix {
        "SELECT 0 AS search_rank, NULL::text COLLATE \"C\" AS search_key, NULL::uuid AS id WHERE false".to_owned()
    } else {
        format!(
            "SELECT 0 AS search_rank, {key} AS search_key, t.id FROM {table} t \
             WHERE {base} AND {range}{prefix_after} ORDER BY 2, 3 LIMIT {limit}",
            range = prefix(&key),
        )
    };
    format!(
        "WITH prefix AS ({prefix_part}), \
         walk AS (SELECT 1 AS search_rank, w.search_key, w.id FROM \
             (SELECT {key} AS search_key, t.id FROM {table} t WHERE {base}{rest_after} ORDER BY 1, 2 LIMIT {SEARCH_WALK}) w \
             WHERE w.search_key LIKE lower({contains}) AND NOT {w_prefix} ORDER BY 2, 3 LIMIT {limit}) \
         (SELECT * FROM prefix \
          UNION ALL \
          SELECT * FROM walk WHERE (SELECT count(*) FROM prefix) < {limit} \
              AND (SELECT count(*) FROM walk) >= {limit} - (SELECT count(*) FROM prefix) \
          UNION ALL \
          (SELECT 1, f.search_key, f.id FROM \
              (SELECT {key} AS search_key, t.id FROM {table} t WHERE {base}{rest_after} \
                  AND t.{column} LIKE lower({contains}) AND NOT {t_prefix} OFFSET 0) f \
           WHERE (SELECT count(*) FROM prefix) < {limit} \
              AND (SELECT count(*) FROM walk) < {limit} - (SELECT count(*) FROM prefix) \
           ORDER BY 2, 3 LIMIT {limit})) \
         ORDER BY 1, 2, 3 LIMIT {limit}",
        w_prefix = prefix("w.search_key"),
        t_prefix = prefix(&key),
    )
}

pub(super) fn like_pattern(q: &str) -> String {
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(like_pattern("50%_a\\"), "%50\\%\\_a\\\\%");
    }
}
