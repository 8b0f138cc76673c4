//! Documents as PDF: `GET /api/v1/documents/{id}` with `Accept: application/pdf`
//! answers the quote, invoice or credit note printed with the clinic's legal
//! identity (its settings), the patient, the lines, the VAT breakdown, the totals
//! and, for an invoice, its payments and balance (the `docpdf` crate). The read is
//! audited like the JSON one.

use crate::access::{read_audited, Lane};
use crate::context::Caller;
use crate::data::{self, Action};
use crate::error::WorkerError;
use crate::state::AppState;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use common::resource::DOCUMENTS;
use serde_json::Value;
use uuid::Uuid;

/// The media type of a printed document.
pub const PDF: &str = "application/pdf";

/// Whether the request asks for the PDF rather than JSON.
pub fn wants_pdf(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| media.split(';').next().map(str::trim) == Some(PDF))
}

fn db(e: tokio_postgres::Error) -> WorkerError {
    WorkerError::from_db(e)
}

fn int(doc: &Value, name: &str) -> i64 {
    doc.get(name).and_then(Value::as_i64).unwrap_or_default()
}

fn text(doc: &Value, name: &str) -> Option<String> {
    doc.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// Everything printed beside the document's own row.
async fn gather(
    client: &impl deadpool_postgres::GenericClient,
    doc: &Value,
) -> Result<docpdf::Document, WorkerError> {
    let settings = client
        .query_one(
            "SELECT name, address, registration_number, vat_number, time_zone FROM clinic_settings",
            &[],
        )
        .await
        .map_err(db)?;
    let tz_name: String = settings.get(4);
    let tz = schedule::zone(&tz_name).unwrap_or(jiff::tz::TimeZone::UTC);
    let patient_id = text(doc, "patient_id")
        .and_then(|p| Uuid::parse_str(&p).ok())
        .unwrap_or_default();
    let patient = client
        .query_opt(
            "SELECT first_name, last_name, email, phone FROM patients WHERE id = $1",
            &[&patient_id],
        )
        .await
        .map_err(db)?;
    let id = text(doc, "id")
        .and_then(|p| Uuid::parse_str(&p).ok())
        .unwrap_or_default();
    let payments = client
        .query(
            "SELECT paid_on, method, amount_cents, reference FROM payments \
             WHERE document_id = $1 AND deleted_at IS NULL ORDER BY paid_on, id",
            &[&id],
        )
        .await
        .map_err(db)?;
    let credits = match text(doc, "credits").and_then(|c| Uuid::parse_str(&c).ok()) {
        Some(invoice) => client
            .query_opt("SELECT number FROM documents WHERE id = $1", &[&invoice])
            .await
            .map_err(db)?
            .and_then(|r| r.get::<_, Option<String>>(0)),
        None => None,
    };
    let kind = match text(doc, "kind").as_deref() {
        Some("invoice") => docpdf::Kind::Invoice,
        Some("credit_note") => docpdf::Kind::CreditNote,
        _ => docpdf::Kind::Quote,
    };
    let issued_on = text(doc, "issued_at")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .and_then(|t| {
            jiff::Timestamp::from_microsecond(t.with_timezone(&Utc).timestamp_micros()).ok()
        })
        .map(|t| tz.to_datetime(t).date().to_string());
    let lines = doc
        .get("lines")
        .and_then(Value::as_array)
        .map(|lines| {
            lines
                .iter()
                .map(|l| docpdf::Line {
                    description: text(l, "description").unwrap_or_default(),
                    quantity: int(l, "quantity"),
                    unit_price: int(l, "unit_price_cents"),
                    vat_rate_bp: int(l, "vat_rate_bp"),
                    net: int(l, "net_cents"),
                    vat: int(l, "vat_cents"),
                    gross: int(l, "gross_cents"),
                })
                .collect()
        })
        .unwrap_or_default();
    let address: Option<String> = settings.get(1);
    let recipient = match patient {
        Some(p) => {
            let (first, last): (String, String) = (p.get(0), p.get(1));
            let contact: Vec<String> =
                [p.get::<_, Option<String>>(2), p.get::<_, Option<String>>(3)]
                    .into_iter()
                    .flatten()
                    .collect();
            docpdf::Recipient {
                name: format!("{first} {last}"),
                lines: contact,
            }
        }
        None => docpdf::Recipient::default(),
    };
    Ok(docpdf::Document {
        kind,
        number: text(doc, "number"),
        status: text(doc, "status").unwrap_or_default(),
        issued_on,
        credits,
        issuer: docpdf::Issuer {
            name: settings.get(0),
            address: address
                .map(|a| a.lines().map(str::to_owned).collect())
                .unwrap_or_default(),
            registration_number: settings.get(2),
            vat_number: settings.get(3),
        },
        recipient,
        lines,
        net: int(doc, "net_cents"),
        vat: int(doc, "vat_cents"),
        gross: int(doc, "gross_cents"),
        payments: payments
            .iter()
            .map(|p| docpdf::Payment {
                date: p.get::<_, NaiveDate>(0).to_string(),
                method: p.get(1),
                amount: p.get(2),
                reference: p.get(3),
            })
            .collect(),
        balance: (kind == docpdf::Kind::Invoice && text(doc, "status").as_deref() != Some("draft"))
            .then(|| int(doc, "balance_cents")),
        currency: text(doc, "currency").unwrap_or_else(|| "EUR".into()),
        notes: text(doc, "notes"),
    })
}

/// `GET /api/v1/documents/{id}` as PDF.
pub async fn document(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Response, WorkerError> {
    let printable = read_audited(
        state,
        caller,
        &DOCUMENTS,
        Action::Read,
        Some(id),
        Lane::Own,
        |_| None,
        |client, actor, keys| async move {
            let result = async {
                let doc = data::get(
                    &client,
                    &keys,
                    &DOCUMENTS,
                    &actor,
                    id,
                    data::Audit::Deferred,
                )
                .await?;
                gather(&**client, &doc).await
            }
            .await;
            (client, result)
        },
    )
    .await?;
    let number = printable.number.clone().unwrap_or_else(|| "draft".into());
    let pdf = tokio::task::spawn_blocking(move || docpdf::render(&printable))
        .await
        .map_err(|e| WorkerError::Internal(format!("rendering a PDF: {e}")))?
        .map_err(|e| WorkerError::Internal(format!("rendering a PDF: {e}")))?;
    let disposition = format!("inline; filename=\"{}.pdf\"", number.replace('"', ""));
    Ok((
        [
            (header::CONTENT_TYPE, PDF.to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        pdf,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdf_is_chosen_only_when_asked_for() {
        let mut h = HeaderMap::new();
        assert!(!wants_pdf(&h));
        h.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert!(!wants_pdf(&h));
        h.insert(
            header::ACCEPT,
            "text/html, application/pdf;q=0.9".parse().unwrap(),
        );
        assert!(wants_pdf(&h));
    }
}
