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
    let plain = |f: &&Field| matches!(f.ty, FieldType::Text { .. }) && !f.encrypted;
    if let Some((name, value)) = r
        .fields
        .iter()
        .filter(plain)
        .find_map(|f| Some((f.name, body.get(f.name)?.as_str()?)))
    {
        let sql = format!("SELECT count(*) FROM {} WHERE {name} = $1", r.table);
        return db.query_one(sql.as_str(), &[&value]).await.unwrap().get(0);
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
        return db.query_one(sql.as_str(), &[&value]).await.unwrap().get(0);
    }
    // …or its (distinct) sample instant.
    let (name, value) = r
        .fields
        .iter()
        .filter(|f| f.ty == FieldType::Timestamp)
        .find_map(|f| Some((f.name, body.get(f.name)?.as_str()?)))
        .expect("a body with a text value or an instant");
    let sql = format!(
        "SELECT count(*) FROM {} WHERE {name} = $1::text::timestamptz",
        r.table
    );
    db.query_one(sql.as_str(), &[&value]).await.unwrap().get(0)
}
