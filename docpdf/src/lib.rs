//! A quote, invoice or credit note as a PDF (A4): the clinic's legal identity, the
//! patient, the lines, the VAT breakdown by rate, the totals and, for invoices, the
//! payments and the balance. Pure: the caller gathers a [`Document`] (amounts in
//! minor units of its currency, as the database keeps them) and gets bytes back.
//!
//! Text is set in DejaVu Sans (regular and bold, embedded and subset by krilla), so
//! every Latin, Greek and Cyrillic name prints and the PDF needs no font on the
//! reader's machine. Long documents continue on further pages, each numbered.

mod layout;
mod money;

pub use money::{format_money, minor_unit_digits};

/// What kind of document to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Quote,
    Invoice,
    CreditNote,
}

impl Kind {
    fn title(self) -> &'static str {
        match self {
            Kind::Quote => "QUOTE",
            Kind::Invoice => "INVOICE",
            Kind::CreditNote => "CREDIT NOTE",
        }
    }
}

/// The clinic as it names itself on its documents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Issuer {
    pub name: String,
    pub address: Vec<String>,
    pub registration_number: Option<String>,
    pub vat_number: Option<String>,
}

/// Who the document is for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recipient {
    pub name: String,
    pub lines: Vec<String>,
}

/// One line, its amounts as the database computed them (minor units).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub description: String,
    pub quantity: i64,
    pub unit_price: i64,
    /// VAT rate in basis points (2000 = 20 %).
    pub vat_rate_bp: i64,
    pub net: i64,
    pub vat: i64,
    pub gross: i64,
}

/// A payment recorded against an invoice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// The civil date it was received (clinic time), e.g. `2026-01-15`.
    pub date: String,
    pub method: String,
    pub amount: i64,
    pub reference: Option<String>,
}

/// Everything printed on one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    pub kind: Kind,
    /// `None` for a draft (printed as such).
    pub number: Option<String>,
    /// The document's status (`draft`, `issued`, `paid`, …).
    pub status: String,
    /// The civil issue date in the clinic's time zone.
    pub issued_on: Option<String>,
    /// For a credit note: the number of the invoice it credits.
    pub credits: Option<String>,
    pub issuer: Issuer,
    pub recipient: Recipient,
    pub lines: Vec<Line>,
    pub net: i64,
    pub vat: i64,
    pub gross: i64,
    /// Payments received (invoices).
    pub payments: Vec<Payment>,
    /// What remains to pay (invoices), `None` where it does not apply.
    pub balance: Option<i64>,
    /// ISO 4217 code, e.g. `EUR`.
    pub currency: String,
    pub notes: Option<String>,
}

/// Why a PDF could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("the embedded font could not be read")]
    Font,
    #[error("the PDF could not be written: {0}")]
    Write(String),
}

/// The document as PDF bytes.
pub fn render(doc: &Document) -> Result<Vec<u8>, PdfError> {
    layout::render(doc)
}

/// The VAT breakdown: for each rate (ascending), the net base and the VAT.
pub fn vat_breakdown(lines: &[Line]) -> Vec<(i64, i64, i64)> {
    let mut rates: Vec<(i64, i64, i64)> = Vec::new();
    for line in lines {
        match rates
            .iter_mut()
            .find(|(rate, _, _)| *rate == line.vat_rate_bp)
        {
            Some(entry) => {
                entry.1 += line.net;
                entry.2 += line.vat;
            }
            None => rates.push((line.vat_rate_bp, line.net, line.vat)),
        }
    }
    rates.sort_by_key(|(rate, _, _)| *rate);
    rates
}

#[cfg(test)]
mod tests;
