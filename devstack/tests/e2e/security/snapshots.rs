//! Database snapshots: a row, a table's counts, and values stored like a body, to
//! show a refusal changed nothing and an accepted value reads back exactly.

use super::*;

/// Everything stored for one row: the row, its child rows and its links (one
/// round trip).
pub(super) async fn snapshot(db: &tokio_postgres::Client, r: &Resource, id: &str) -> String {
    let id: Uuid = id.parse().unwrap();
    let mut parts = vec![format!(
        "(SELECT row_to_json(t)::text FROM {} t WHERE t.id = $1)",
        r.table
    )];
    for c in r.children {
        parts.push(format!(
            "(SELECT json_agg(c ORDER BY c.position)::text FROM {} c WHERE c.{} = $1)",
            c.table, c.parent_column
        ));
    }
    for f in r.fields {
        if let FieldType::ReferenceList {
            link_table,
            owner_column,
            target_column,
            ..
        } = f.ty
        {
            parts.push(format!(
                "(SELECT json_agg(l.{target_column} ORDER BY l.{target_column})::text FROM {link_table} l WHERE l.{owner_column} = $1)"
            ));
        }
    }
    let sql = format!("SELECT concat_ws(E'\\n', {})", parts.join(", "));
    db.query_one(sql.as_str(), &[&id]).await.unwrap().get(0)
}

/// Row counts of a resource's tables (its own, child and link tables), deleted rows
/// included (one round trip).
pub(super) async fn counts(db: &tokio_postgres::Client, r: &Resource) -> String {
    let mut tables = vec![r.table];
    tables.extend(r.children.iter().map(|c| c.table));
    tables.extend(r.fields.iter().filter_map(|f| match f.ty {
        FieldType::ReferenceList { link_table, .. } => Some(link_table),
        _ => None,
    }));
    let parts: Vec<String> = tables
        .iter()
        .map(|t| format!("(SELECT count(*) FROM {t})"))
        .collect();
    let sql = format!("SELECT concat_ws(' ', {})", parts.join(", "));
    db.query_one(sql.as_str(), &[]).await.unwrap().get(0)
}

/// How many rows of `r` hold the first text value of `body` (sample text values are
/// distinct).
pub(super) async fn stored_like(db: &tokio_postgres::Client, r: &Resource, body: &Value) -> i64 {
    stored_count(db, r, body)
        .await
        .expect("a body with a text value, an instant or a time")
}

/// [`stored_like`], when the body holds a value that tells its rows apart: free
/// text, a child row's text, an instant or the times of day (samples differ in
/// each).
pub(super) async fn stored_count(
    db: &tokio_postgres::Client,
    r: &Resource,
    body: &Value,
) -> Option<i64> {
    let plain = |f: &&Field| matches!(f.ty, FieldType::Text { .. }) && !f.encrypted;
    let count = |sql: String, values: Vec<String>| async move {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        db.query_one(sql.as_str(), &params).await.unwrap().get(0)
    };
    if let Some((name, value)) = r
        .fields
        .iter()
        .filter(plain)
        .find_map(|f| Some((f.name, body.get(f.name)?.as_str()?)))
    {
        let sql = format!("SELECT count(*) FROM {} WHERE {name} = $1", r.table);
        return Some(count(sql, vec![value.to_owned()]).await);
    }
    // Its only free text is sealed: the rows holding the child rows' text…
    if let Some((c, name, value)) = r.children.iter().find_map(|c| {
        let f = c.fields.iter().find(plain)?;
        let value = body.get(c.name)?.get(0)?.get(f.name)?.as_str()?;
        Some((c, f.name, value))
    }) {
        let sql = format!(
            "SELECT count(*) FROM {} t WHERE EXISTS (SELECT 1 FROM {} c WHERE c.{} = t.id AND c.{name} = $1)",
            r.table, c.table, c.parent_column
        );
        return Some(count(sql, vec![value.to_owned()]).await);
    }
    // …or its (distinct) sample instant…
    if let Some((name, value)) = r
        .fields
        .iter()
        .filter(|f| f.ty == FieldType::Timestamp)
        .find_map(|f| Some((f.name, body.get(f.name)?.as_str()?)))
    {
        let sql = format!(
            "SELECT count(*) FROM {} WHERE {name} = $1::text::timestamptz",
            r.table
        );
        return Some(count(sql, vec![value.to_owned()]).await);
    }
    // …or its (distinct) times of day.
    let times: Vec<(&str, String)> = r
        .fields
        .iter()
        .filter(|f| f.ty == FieldType::Time)
        .filter_map(|f| Some((f.name, body.get(f.name)?.as_str()?.to_owned())))
        .collect();
    if times.is_empty() {
        return None;
    }
    let conditions: Vec<String> = times
        .iter()
        .enumerate()
        .map(|(i, (name, _))| format!("{name} = ${}::text::time", i + 1))
        .collect();
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {}",
        r.table,
        conditions.join(" AND ")
    );
    Some(count(sql, times.into_iter().map(|(_, v)| v).collect()).await)
}

/// How many rows a row action made from `id` (rows of `r`'s table naming it in a
/// server-set reference: a converted invoice, a credit note).
pub(super) async fn derived_rows(db: &tokio_postgres::Client, r: &Resource, id: &str) -> i64 {
    let id: Uuid = id.parse().unwrap();
    let mut total = 0;
    for f in r.fields.iter().filter(|f| f.read_only) {
        if f.ty == FieldType::Reference(r.table) {
            let sql = format!("SELECT count(*) FROM {} WHERE {} = $1", r.table, f.name);
            total += db
                .query_one(sql.as_str(), &[&id])
                .await
                .unwrap()
                .get::<_, i64>(0);
        }
    }
    total
}

/// A series and its occurrences as stored.
pub(super) async fn series_snapshot(db: &tokio_postgres::Client, id: &str) -> String {
    let id: Uuid = id.parse().unwrap();
    db.query_one(
        "SELECT concat_ws(E'\\n', (SELECT row_to_json(s)::text FROM appointment_series s WHERE s.id = $1), \
         (SELECT json_agg(a ORDER BY a.series_index)::text FROM appointments a WHERE a.series_id = $1))",
        &[&id],
    )
    .await
    .unwrap()
    .get(0)
}
