//! Renders documents and reads them back with `pdftotext` (Debian's
//! poppler-utils): every amount, the number and the legal identity must be in the
//! text. Without `pdftotext` the reading is skipped with a note, except under
//! `CI=true`, where it fails.

use super::*;
use std::process::Command;

fn invoice() -> Document {
    let lines = vec![
        Line {
            description: "Consultation, 45 minutes".into(),
            quantity: 1,
            unit_price: 6000,
            vat_rate_bp: 0,
            net: 6000,
            vat: 0,
            gross: 6000,
        },
        Line {
            description: "Orthèse plantaire — sur mesure".into(),
            quantity: 2,
            unit_price: 12_345,
            vat_rate_bp: 2000,
            net: 24_690,
            vat: 4938,
            gross: 29_628,
        },
        Line {
            description: "Crème".into(),
            quantity: 3,
            unit_price: 999,
            vat_rate_bp: 550,
            net: 2997,
            vat: 165,
            gross: 3162,
        },
    ];
    Document {
        kind: Kind::Invoice,
        number: Some("F-2027-000001".into()),
        status: "issued".into(),
        issued_on: Some("2027-01-01".into()),
        credits: None,
        issuer: Issuer {
            name: "Cabinet Dupont".into(),
            address: vec!["12 rue de la Paix".into(), "75002 Paris".into()],
            registration_number: Some("RCS 123 456 789".into()),
            vat_number: Some("FR12345678901".into()),
        },
        recipient: Recipient {
            name: "Zoë Łukasiewicz".into(),
            lines: vec!["3 place Bellecour, Lyon".into()],
        },
        net: 33_687,
        vat: 5103,
        gross: 38_790,
        payments: vec![Payment {
            date: "2027-01-03".into(),
            method: "card".into(),
            amount: 10_000,
            reference: Some("TPE 0042".into()),
        }],
        balance: Some(28_790),
        currency: "EUR".into(),
        notes: Some("Payable within 30 days.".into()),
        lines,
    }
}

/// The PDF's text, or `None` (with a note) where `pdftotext` is missing outside CI.
fn pdftotext(pdf: &[u8]) -> Option<String> {
    let dir = std::env::temp_dir().join(format!("docpdf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{:x}.pdf", pdf.len() ^ (pdf.as_ptr() as usize)));
    std::fs::write(&file, pdf).unwrap();
    let out = match Command::new("pdftotext")
        .args(["-layout", "-enc", "UTF-8"])
        .arg(&file)
        .arg("-")
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "pdftotext is required under CI=true (apt-get install poppler-utils)"
            );
            eprintln!(
                "skipped: reading the PDF back needs pdftotext — apt-get install poppler-utils"
            );
            return None;
        }
        Err(e) => panic!("pdftotext: {e}"),
    };
    let _ = std::fs::remove_file(&file);
    assert!(out.status.success(), "pdftotext: {:?}", out);
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn an_invoice_prints_every_amount_its_number_and_the_clinic() {
    let doc = invoice();
    let pdf = render(&doc).unwrap();
    assert!(pdf.starts_with(b"%PDF-"));
    // The fonts are embedded (subset), never referenced by name only.
    let raw = String::from_utf8_lossy(&pdf);
    assert!(raw.contains("FontFile2"), "an embedded TrueType font");
    let Some(text) = pdftotext(&pdf) else { return };
    for needle in [
        "INVOICE",
        "No. F-2027-000001",
        "Date: 2027-01-01",
        "Cabinet Dupont",
        "12 rue de la Paix",
        "Registration no. RCS 123 456 789",
        "VAT no. FR12345678901",
        "Zoë Łukasiewicz",
        "Orthèse plantaire — sur mesure",
        // Lines: unit prices and nets.
        "60.00 EUR",
        "123.45 EUR",
        "246.90 EUR",
        "9.99 EUR",
        "29.97 EUR",
        // VAT breakdown.
        "5.5 %",
        "20 %",
        "49.38 EUR",
        "1.65 EUR",
        // Totals, payment, balance.
        "336.87 EUR",
        "51.03 EUR",
        "387.90 EUR",
        "100.00 EUR",
        "287.90 EUR",
        "Balance due",
        "TPE 0042",
        "Payable within 30 days.",
        "Page 1 of 1",
    ] {
        assert!(text.contains(needle), "{needle:?} not in:\n{text}");
    }
}

#[test]
fn a_credit_note_names_the_invoice_it_credits_and_a_quote_has_no_payments() {
    let mut credit = invoice();
    credit.kind = Kind::CreditNote;
    credit.number = Some("AV-2027-000001".into());
    credit.credits = Some("F-2027-000001".into());
    credit.payments.clear();
    credit.balance = None;
    let Some(text) = pdftotext(&render(&credit).unwrap()) else {
        return;
    };
    assert!(text.contains("CREDIT NOTE"));
    assert!(text.contains("Credits invoice F-2027-000001"));
    assert!(!text.contains("Balance due"));

    let mut quote = invoice();
    quote.kind = Kind::Quote;
    quote.number = None;
    quote.status = "draft".into();
    let Some(text) = pdftotext(&render(&quote).unwrap()) else {
        return;
    };
    assert!(text.contains("QUOTE"));
    assert!(text.contains("No. draft"));
    assert!(!text.contains("Payments"));
}

#[test]
fn long_documents_continue_on_numbered_pages_with_the_header_repeated() {
    let mut doc = invoice();
    let line = doc.lines[0].clone();
    doc.lines = (0..120)
        .map(|i| Line {
            description: format!("Séance {i}"),
            ..line.clone()
        })
        .collect();
    doc.net = 120 * 6000;
    doc.vat = 0;
    doc.gross = doc.net;
    let Some(text) = pdftotext(&render(&doc).unwrap()) else {
        return;
    };
    let pages = text.split('\u{c}').filter(|p| !p.trim().is_empty()).count();
    assert!(pages >= 3, "{pages} pages");
    assert!(text.contains(&format!("Page {pages} of {pages}")));
    for i in 0..120 {
        assert!(text.contains(&format!("Séance {i} ")), "line {i}");
    }
    assert_eq!(text.matches("Description").count(), pages);
    assert!(text.contains("7,200.00 EUR"));
}

#[test]
fn long_descriptions_are_cut_to_their_column() {
    let mut doc = invoice();
    doc.lines[0].description = "A very long description ".repeat(20);
    let Some(text) = pdftotext(&render(&doc).unwrap()) else {
        return;
    };
    assert!(text.contains('…'));
    assert!(text.contains("60.00 EUR"));
}

#[test]
fn sample_invoice_for_review() {
    // Writes the sample invoice where `DOCPDF_SAMPLE` points, to look at.
    if let Ok(path) = std::env::var("DOCPDF_SAMPLE") {
        std::fs::write(path, render(&invoice()).unwrap()).unwrap();
    }
}

#[test]
fn vat_breakdown_groups_lines_by_rate() {
    let doc = invoice();
    assert_eq!(
        vat_breakdown(&doc.lines),
        [(0, 6000, 0), (550, 2997, 165), (2000, 24_690, 4938)]
    );
}
