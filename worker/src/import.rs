//! `POST /api/v1/patients/import`: a clinic's patients from another system, as CSV
//! (`text/csv`, a header row naming patient fields) or NDJSON
//! (`application/x-ndjson`, one JSON object a line), admins only.
//!
//! Every row is validated and written exactly as `POST /api/v1/patients` writes a
//! body (the data layer's `write_in`: sealing, bounds, unknown fields refused, a
//! create record each), all in one transaction with one `import` record of its own.
//! A row whose `external_id` a patient of the clinic already has (a deleted one
//! too) is skipped and reported `existing`, so importing the same file again
//! changes nothing; a second row with the same `external_id` in one file is
//! refused. `mode=all` (the default) imports nothing when any row is refused
//! (`422`, the report in `rows`); `mode=valid` imports the valid rows and reports
//! the refused ones. The body is bounded (`MAX_IMPORT_BYTES`) and so is the number
//! of rows (`MAX_IMPORT_ROWS`, `413`).

use crate::access::{self, audited};
use crate::context::Caller;
use crate::data::{self, Action};
use crate::error::WorkerError;
use crate::state::AppState;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::resource::{self, FieldType, Resource};
use common::token::Role;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

const PATIENTS: &Resource = &resource::PATIENTS;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    All,
    Valid,
}

fn mode(raw: Option<&str>) -> Result<Mode, WorkerError> {
    let mut mode = Mode::All;
    for (k, v) in raw
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
    {
        if k != "mode" {
            continue;
        }
        mode = match v {
            "all" => Mode::All,
            "valid" => Mode::Valid,
            _ => {
                return Err(WorkerError::BadRequest(
                    "`mode` must be `all` or `valid`.".into(),
                ))
            }
        };
    }
    Ok(mode)
}

/// One row of the file: its line (1-based, the header being line 1 of a CSV) and
/// the body it stands for, or why it could not be read.
struct Row {
    line: u64,
    body: Result<Map<String, Value>, String>,
}

/// A CSV cell as the JSON value a body would carry: empty is absent, numbers and
/// booleans for such fields, text otherwise.
fn cell(ty: FieldType, s: &str) -> Value {
    match ty {
        FieldType::Integer { .. } => s
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(s.into())),
        FieldType::Boolean => match s.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(s.into()),
        },
        _ => Value::String(s.into()),
    }
}

fn csv_rows(bytes: &[u8], max_rows: usize) -> Result<Vec<Row>, WorkerError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| WorkerError::BadRequest(format!("The CSV header row is unreadable: {e}.")))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    if headers.iter().all(|h| h.is_empty()) {
        return Err(WorkerError::BadRequest(
            "A CSV import starts with a header row naming patient fields.".into(),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = headers.iter().find(|h| !seen.insert(h.as_str())) {
        return Err(WorkerError::BadRequest(format!(
            "The CSV header names `{dup}` twice."
        )));
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        if rows.len() == max_rows {
            return Err(WorkerError::TooManyRows(max_rows));
        }
        let row = match record {
            Ok(record) => {
                let line = record.position().map_or(0, |p| p.line());
                if record.len() != headers.len() {
                    Row {
                        line,
                        body: Err(format!(
                            "The row has {} cells; the header names {}.",
                            record.len(),
                            headers.len()
                        )),
                    }
                } else {
                    let body = headers
                        .iter()
                        .zip(record.iter())
                        .filter(|(_, v)| !v.is_empty())
                        .map(|(h, v)| {
                            let ty = PATIENTS
                                .field(h)
                                .map_or(FieldType::Text { max_len: 0 }, |f| f.ty);
                            (h.clone(), cell(ty, v))
                        })
                        .collect();
                    Row {
                        line,
                        body: Ok(body),
                    }
                }
            }
            Err(e) => Row {
                line: e.position().map_or(0, |p| p.line()),
                body: Err(match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => "The row is not valid UTF-8.".to_owned(),
                    _ => "The row is not valid CSV.".to_owned(),
                }),
            },
        };
        rows.push(row);
    }
    Ok(rows)
}

fn ndjson_rows(bytes: &[u8], max_rows: usize) -> Result<Vec<Row>, WorkerError> {
    let mut rows = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_no = i as u64 + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if rows.len() == max_rows {
            return Err(WorkerError::TooManyRows(max_rows));
        }
        let body = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(obj)) => Ok(obj),
            Ok(_) => Err("The line must be a JSON object.".to_owned()),
            Err(e) => Err(format!("The line is not valid JSON: {e}.")),
        };
        rows.push(Row {
            line: line_no,
            body,
        });
    }
    Ok(rows)
}

#[derive(Clone, Copy)]
enum Format {
    Csv,
    Ndjson,
}

fn format(req: &Request) -> Result<Format, WorkerError> {
    let media = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media.as_str() {
        "text/csv" => Ok(Format::Csv),
        "application/x-ndjson" => Ok(Format::Ndjson),
        _ => Err(WorkerError::UnsupportedMediaType(
            "An import is `text/csv` (a header row naming patient fields) or `application/x-ndjson` (one JSON object a line).".into(),
        )),
    }
}

/// Why the data layer refused a row, as a client reads it.
fn reason(e: &WorkerError) -> String {
    e.problem().detail.unwrap_or_else(|| e.to_string())
}

/// What became of the rows.
#[derive(Default)]
struct Report {
    imported: usize,
    existing: usize,
    refused: usize,
    rows: Vec<Value>,
}

impl Report {
    fn refuse(&mut self, line: u64, errors: Vec<String>) {
        self.refused += 1;
        self.rows
            .push(json!({"line": line, "status": "refused", "errors": errors}));
    }

    fn json(&self) -> Value {
        json!({
            "imported": self.imported,
            "existing": self.existing,
            "refused": self.refused,
            "rows": self.rows,
        })
    }
}

/// The patients of the clinic that already carry one of `ids`, by external id.
async fn existing(
    tx: &deadpool_postgres::Transaction<'_>,
    actor: &data::Actor,
    ids: Vec<String>,
) -> Result<HashMap<String, Uuid>, WorkerError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = tx
        .query(
            "SELECT external_id, id FROM patients WHERE company_id = $1 AND external_id = ANY($2::text[])",
            &[actor.clinic.as_uuid(), &ids],
        )
        .await
        .map_err(WorkerError::from_db)?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get::<_, String>(0).map_err(WorkerError::from_db)?,
                row.try_get::<_, Uuid>(1).map_err(WorkerError::from_db)?,
            ))
        })
        .collect()
}

/// Imports `rows` in one transaction (committed unless `mode=all` met a refusal).
async fn import(
    client: &mut deadpool_postgres::Object,
    keys: &crate::keys::ClinicKeyCache,
    actor: &data::Actor,
    mode: Mode,
    rows: Vec<Row>,
) -> Result<Report, WorkerError> {
    let tx = client.transaction().await.map_err(WorkerError::from_db)?;
    let external = |body: &Map<String, Value>| {
        body.get("external_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let wanted: Vec<String> = rows
        .iter()
        .filter_map(|r| r.body.as_ref().ok().and_then(external))
        .collect();
    let known = existing(&tx, actor, wanted).await?;
    let mut lines_of: HashMap<String, u64> = HashMap::new();
    let mut report = Report::default();
    for row in rows {
        let body = match row.body {
            Ok(body) => body,
            Err(e) => {
                report.refuse(row.line, vec![e]);
                continue;
            }
        };
        let ext = external(&body);
        if let Some(ext) = &ext {
            if let Some(id) = known.get(ext) {
                report.existing += 1;
                report.rows.push(
                    json!({"line": row.line, "status": "existing", "external_id": ext, "id": id}),
                );
                continue;
            }
            if let Some(first) = lines_of.get(ext) {
                report.refuse(
                    row.line,
                    vec![format!("`external_id` {ext:?} is already on line {first}.")],
                );
                continue;
            }
        }
        let bytes = serde_json::to_vec(&Value::Object(body))
            .map_err(|e| WorkerError::Internal(e.to_string()))?;
        let id = Uuid::now_v7();
        match data::write_in(&tx, keys, PATIENTS, actor, id, data::Write::Create, &bytes).await {
            Ok(_) => {
                if let Some(ext) = &ext {
                    lines_of.insert(ext.clone(), row.line);
                }
                report.imported += 1;
                report.rows.push(
                    json!({"line": row.line, "status": "imported", "external_id": ext, "id": id}),
                );
            }
            // Refusals of the body come before any statement: the transaction
            // goes on. Anything else ends the import.
            Err(e @ (WorkerError::BadRequest(_) | WorkerError::Forbidden(_))) => {
                report.refuse(row.line, vec![reason(&e)]);
            }
            Err(e) => return Err(e),
        }
    }
    if mode == Mode::All && report.refused > 0 {
        // Dropping the transaction rolls every row back.
        let refused: Vec<Value> = report
            .rows
            .iter()
            .filter(|r| r["status"] == "refused")
            .cloned()
            .collect();
        return Err(WorkerError::ImportRefused(
            format!(
                "{} of the rows were refused, so none was imported (`mode=valid` imports the valid ones).",
                report.refused
            ),
            Value::Array(refused),
        ));
    }
    let outcome = "success";
    data::record_access(&tx, actor, PATIENTS, Action::Named("import"), None, outcome).await?;
    tx.commit().await.map_err(WorkerError::from_db)?;
    Ok(report)
}

/// `POST /api/v1/patients/import`: admins only.
pub async fn patients(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
    req: Request,
) -> Result<Response, WorkerError> {
    let refused = (caller.role != Role::Admin).then(|| {
        format!(
            "Only admin may import patients; you are signed in as {}.",
            caller.role.as_str()
        )
    });
    let mode = mode(raw.as_deref())?;
    let format = format(&req)?;
    let max_rows = state.max_import_rows;
    let bytes = access::body_within(state.max_import_bytes, req).await?;
    let report = audited(
        &state,
        &caller,
        PATIENTS,
        Action::Named("import"),
        None,
        |mut client, actor, keys| async move {
            if let Some(refusal) = refused {
                return (client, Err(WorkerError::Forbidden(refusal)));
            }
            let rows = match format {
                Format::Csv => csv_rows(&bytes, max_rows),
                Format::Ndjson => ndjson_rows(&bytes, max_rows),
            };
            let result = match rows {
                Ok(rows) => import(&mut client, &keys, &actor, mode, rows).await,
                Err(e) => Err(e),
            };
            (client, result)
        },
    )
    .await?;
    let status = if report.imported > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(report.json())).into_response())
}
