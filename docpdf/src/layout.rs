//! Where everything goes on the page. The document becomes a list of blocks (the
//! heading, the recipient, each line of the table, the VAT breakdown, the totals,
//! the payments, the notes), each a few drawing operations and a height; blocks
//! flow onto A4 pages, the table's header repeated on every page that continues
//! it, and every page gets its footer ("Page n of m") once their number is known.

use crate::money::format_rate;
use crate::{format_money, vat_breakdown, Document, Kind, PdfError};
use krilla::geom::{PathBuilder, Point};
use krilla::metadata::Metadata;
use krilla::page::PageSettings;
use krilla::paint::Stroke;
use krilla::surface::Surface;
use krilla::text::{Font, TextDirection};
use skrifa::prelude::{LocationRef, Size};
use skrifa::{FontRef, MetadataProvider};

static REGULAR: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
static BOLD: &[u8] = include_bytes!("../fonts/DejaVuSans-Bold.ttf");

const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const LEFT: f32 = 50.0;
const RIGHT: f32 = PAGE_W - 50.0;
const TOP: f32 = 56.0;
const BOTTOM: f32 = PAGE_H - 64.0;
const BODY: f32 = 9.0;
const SMALL: f32 = 8.0;

/// Columns of the lines table: description from the left margin, the rest
/// right-aligned at these x positions.
const COL_QTY: f32 = 300.0;
const COL_UNIT: f32 = 385.0;
const COL_VAT: f32 = 430.0;
const COL_NET: f32 = RIGHT;
const DESCRIPTION_WIDTH: f32 = COL_QTY - LEFT - 40.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Face {
    Regular,
    Bold,
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

enum Op {
    Text {
        x: f32,
        y: f32,
        size: f32,
        face: Face,
        align: Align,
        text: String,
    },
    Rule {
        y: f32,
        from: f32,
        to: f32,
    },
}

/// A piece of the page that is never split: its operations are relative to its top.
struct Block {
    height: f32,
    ops: Vec<Op>,
    /// A row of the lines table: a page it starts gets the table's header first.
    table_row: bool,
}

/// The two embedded faces, for drawing (krilla) and measuring (skrifa).
struct Fonts {
    regular: Font,
    bold: Font,
    regular_ref: FontRef<'static>,
    bold_ref: FontRef<'static>,
}

impl Fonts {
    fn load() -> Result<Self, PdfError> {
        Ok(Self {
            regular: Font::new(REGULAR.into(), 0).ok_or(PdfError::Font)?,
            bold: Font::new(BOLD.into(), 0).ok_or(PdfError::Font)?,
            regular_ref: FontRef::new(REGULAR).map_err(|_| PdfError::Font)?,
            bold_ref: FontRef::new(BOLD).map_err(|_| PdfError::Font)?,
        })
    }

    fn font(&self, face: Face) -> Font {
        match face {
            Face::Regular => self.regular.clone(),
            Face::Bold => self.bold.clone(),
        }
    }

    /// The advance width of `text` at `size` points (no kerning: enough to align).
    fn width(&self, face: Face, size: f32, text: &str) -> f32 {
        let font = match face {
            Face::Regular => &self.regular_ref,
            Face::Bold => &self.bold_ref,
        };
        let charmap = font.charmap();
        let metrics = font.glyph_metrics(Size::new(size), LocationRef::default());
        text.chars()
            .map(|c| {
                charmap
                    .map(c)
                    .and_then(|g| metrics.advance_width(g))
                    .unwrap_or(size * 0.6)
            })
            .sum()
    }

    /// `text` cut with an ellipsis to fit `max` points.
    fn fit(&self, face: Face, size: f32, text: &str, max: f32) -> String {
        if self.width(face, size, text) <= max {
            return text.to_owned();
        }
        let mut cut: String = text.to_owned();
        while !cut.is_empty() && self.width(face, size, &format!("{cut}…")) > max {
            cut.pop();
        }
        format!("{cut}…")
    }
}

/// Builds the operations of one block.
struct BlockBuilder {
    ops: Vec<Op>,
    height: f32,
}

impl BlockBuilder {
    fn new() -> Self {
        Self {
            ops: Vec::new(),
            height: 0.0,
        }
    }

    fn text(&mut self, x: f32, y: f32, size: f32, face: Face, align: Align, text: String) {
        self.height = self.height.max(y + size * 0.35);
        self.ops.push(Op::Text {
            x,
            y,
            size,
            face,
            align,
            text,
        });
    }

    fn left(&mut self, x: f32, y: f32, size: f32, face: Face, text: impl Into<String>) {
        self.text(x, y, size, face, Align::Left, text.into());
    }

    fn right(&mut self, x: f32, y: f32, size: f32, face: Face, text: impl Into<String>) {
        self.text(x, y, size, face, Align::Right, text.into());
    }

    fn rule(&mut self, y: f32, from: f32, to: f32) {
        self.height = self.height.max(y);
        self.ops.push(Op::Rule { y, from, to });
    }

    fn done(self, gap: f32, table_row: bool) -> Block {
        Block {
            height: self.height + gap,
            ops: self.ops,
            table_row,
        }
    }
}

pub(crate) fn render(doc: &Document) -> Result<Vec<u8>, PdfError> {
    let fonts = Fonts::load()?;
    let blocks = blocks(doc, &fonts);
    let header = table_header();
    // Flow the blocks onto pages: (page, y of the block's top).
    let mut pages: Vec<Vec<(f32, &Block)>> = vec![Vec::new()];
    let mut y = TOP;
    for block in &blocks {
        if y + block.height > BOTTOM && y > TOP {
            pages.push(Vec::new());
            y = TOP;
            if block.table_row {
                if let Some(page) = pages.last_mut() {
                    page.push((y, &header));
                }
                y += header.height;
            }
        }
        if let Some(page) = pages.last_mut() {
            page.push((y, block));
        }
        y += block.height;
    }

    let mut document = krilla::Document::new();
    let title = match &doc.number {
        Some(n) => format!("{} {n}", title_case(doc.kind)),
        None => format!("{} (draft)", title_case(doc.kind)),
    };
    document.set_metadata(
        Metadata::new()
            .title(title)
            .creator(doc.issuer.name.clone()),
    );
    let settings =
        PageSettings::from_wh(PAGE_W, PAGE_H).ok_or_else(|| PdfError::Write("page size".into()))?;
    let count = pages.len();
    for (index, page_blocks) in pages.iter().enumerate() {
        let mut page = document.start_page_with(settings.clone());
        let mut surface = page.surface();
        for (top, block) in page_blocks {
            draw(&mut surface, &fonts, *top, &block.ops);
        }
        let mut footer = BlockBuilder::new();
        footer.rule(0.0, LEFT, RIGHT);
        let identity = match &doc.issuer.vat_number {
            Some(vat) => format!("{} · VAT {vat}", doc.issuer.name),
            None => doc.issuer.name.clone(),
        };
        footer.left(LEFT, 12.0, SMALL, Face::Regular, identity);
        footer.right(
            RIGHT,
            12.0,
            SMALL,
            Face::Regular,
            format!("Page {} of {count}", index + 1),
        );
        draw(&mut surface, &fonts, BOTTOM + 14.0, &footer.ops);
        surface.finish();
        page.finish();
    }
    document
        .finish()
        .map_err(|e| PdfError::Write(format!("{e:?}")))
}

fn title_case(kind: Kind) -> &'static str {
    match kind {
        Kind::Quote => "Quote",
        Kind::Invoice => "Invoice",
        Kind::CreditNote => "Credit note",
    }
}

fn draw(surface: &mut Surface<'_>, fonts: &Fonts, top: f32, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Text {
                x,
                y,
                size,
                face,
                align,
                text,
            } => {
                let x = match align {
                    Align::Left => *x,
                    Align::Right => *x - fonts.width(*face, *size, text),
                };
                surface.draw_text(
                    Point::from_xy(x, top + y),
                    fonts.font(*face),
                    *size,
                    text,
                    false,
                    TextDirection::Auto,
                );
            }
            Op::Rule { y, from, to } => {
                let mut path = PathBuilder::new();
                path.move_to(*from, top + y);
                path.line_to(*to, top + y);
                if let Some(path) = path.finish() {
                    surface.set_fill(None);
                    surface.set_stroke(Some(Stroke {
                        width: 0.5,
                        ..Stroke::default()
                    }));
                    surface.draw_path(&path);
                    surface.set_stroke(None);
                    surface.set_fill(Some(krilla::paint::Fill::default()));
                }
            }
        }
    }
}

fn table_header() -> Block {
    let mut b = BlockBuilder::new();
    b.left(LEFT, 10.0, SMALL, Face::Bold, "Description");
    b.right(COL_QTY, 10.0, SMALL, Face::Bold, "Qty");
    b.right(COL_UNIT, 10.0, SMALL, Face::Bold, "Unit price");
    b.right(COL_VAT, 10.0, SMALL, Face::Bold, "VAT");
    b.right(COL_NET, 10.0, SMALL, Face::Bold, "Net");
    b.rule(15.0, LEFT, RIGHT);
    b.done(4.0, false)
}

fn blocks(doc: &Document, fonts: &Fonts) -> Vec<Block> {
    let money = |minor: i64| format_money(minor, &doc.currency);
    let mut blocks = Vec::new();

    // The clinic on the left, the document on the right.
    let mut head = BlockBuilder::new();
    head.left(LEFT, 14.0, 14.0, Face::Bold, doc.issuer.name.clone());
    let mut y = 30.0;
    for line in &doc.issuer.address {
        head.left(LEFT, y, BODY, Face::Regular, line.clone());
        y += 12.0;
    }
    if let Some(n) = &doc.issuer.registration_number {
        head.left(
            LEFT,
            y,
            BODY,
            Face::Regular,
            format!("Registration no. {n}"),
        );
        y += 12.0;
    }
    if let Some(n) = &doc.issuer.vat_number {
        head.left(LEFT, y, BODY, Face::Regular, format!("VAT no. {n}"));
    }
    head.right(RIGHT, 16.0, 18.0, Face::Bold, doc.kind.title());
    let mut y = 34.0;
    let number = doc.number.clone().unwrap_or_else(|| "draft".into());
    head.right(RIGHT, y, BODY, Face::Regular, format!("No. {number}"));
    y += 12.0;
    if let Some(date) = &doc.issued_on {
        head.right(RIGHT, y, BODY, Face::Regular, format!("Date: {date}"));
        y += 12.0;
    }
    head.right(
        RIGHT,
        y,
        BODY,
        Face::Regular,
        format!("Status: {}", doc.status),
    );
    y += 12.0;
    if let Some(invoice) = &doc.credits {
        head.right(
            RIGHT,
            y,
            BODY,
            Face::Regular,
            format!("Credits invoice {invoice}"),
        );
    }
    blocks.push(head.done(24.0, false));

    let mut to = BlockBuilder::new();
    let label = match doc.kind {
        Kind::Quote => "Prepared for",
        Kind::Invoice | Kind::CreditNote => "Bill to",
    };
    to.left(LEFT, 9.0, SMALL, Face::Bold, label);
    to.left(LEFT, 22.0, BODY, Face::Regular, doc.recipient.name.clone());
    let mut y = 34.0;
    for line in &doc.recipient.lines {
        to.left(LEFT, y, BODY, Face::Regular, line.clone());
        y += 12.0;
    }
    blocks.push(to.done(20.0, false));

    blocks.push(table_header());
    for line in &doc.lines {
        let mut row = BlockBuilder::new();
        let description = fonts.fit(Face::Regular, SMALL, &line.description, DESCRIPTION_WIDTH);
        row.left(LEFT, 9.0, SMALL, Face::Regular, description);
        row.right(
            COL_QTY,
            9.0,
            SMALL,
            Face::Regular,
            line.quantity.to_string(),
        );
        row.right(COL_UNIT, 9.0, SMALL, Face::Regular, money(line.unit_price));
        row.right(
            COL_VAT,
            9.0,
            SMALL,
            Face::Regular,
            format_rate(line.vat_rate_bp),
        );
        row.right(COL_NET, 9.0, SMALL, Face::Regular, money(line.net));
        blocks.push(row.done(5.0, true));
    }
    let mut end = BlockBuilder::new();
    end.rule(2.0, LEFT, RIGHT);
    blocks.push(end.done(10.0, false));

    // VAT breakdown (left) and totals (right), kept together.
    let mut sums = BlockBuilder::new();
    sums.left(LEFT, 9.0, SMALL, Face::Bold, "VAT rate");
    sums.right(LEFT + 130.0, 9.0, SMALL, Face::Bold, "Base");
    sums.right(LEFT + 220.0, 9.0, SMALL, Face::Bold, "VAT");
    let mut y = 22.0;
    for (rate, base, vat) in vat_breakdown(&doc.lines) {
        sums.left(LEFT, y, SMALL, Face::Regular, format_rate(rate));
        sums.right(LEFT + 130.0, y, SMALL, Face::Regular, money(base));
        sums.right(LEFT + 220.0, y, SMALL, Face::Regular, money(vat));
        y += 12.0;
    }
    let label_x = RIGHT - 170.0;
    sums.left(label_x, 9.0, BODY, Face::Regular, "Total excl. VAT");
    sums.right(RIGHT, 9.0, BODY, Face::Regular, money(doc.net));
    sums.left(label_x, 22.0, BODY, Face::Regular, "VAT");
    sums.right(RIGHT, 22.0, BODY, Face::Regular, money(doc.vat));
    sums.rule(28.0, label_x, RIGHT);
    sums.left(label_x, 40.0, 10.0, Face::Bold, "Total");
    sums.right(RIGHT, 40.0, 10.0, Face::Bold, money(doc.gross));
    blocks.push(sums.done(18.0, false));

    if doc.kind == Kind::Invoice {
        let mut paid = BlockBuilder::new();
        paid.left(LEFT, 9.0, SMALL, Face::Bold, "Payments");
        let mut y = 22.0;
        if doc.payments.is_empty() {
            paid.left(LEFT, y, SMALL, Face::Regular, "None received.");
            y += 12.0;
        }
        for p in &doc.payments {
            let what = match &p.reference {
                Some(r) => format!("{} · {} · {r}", p.date, p.method),
                None => format!("{} · {}", p.date, p.method),
            };
            let what = fonts.fit(Face::Regular, SMALL, &what, RIGHT - LEFT - 120.0);
            paid.left(LEFT, y, SMALL, Face::Regular, what);
            paid.right(RIGHT, y, SMALL, Face::Regular, money(p.amount));
            y += 12.0;
        }
        let received: i64 = doc.payments.iter().map(|p| p.amount).sum();
        paid.left(label_x, y + 4.0, BODY, Face::Regular, "Paid");
        paid.right(RIGHT, y + 4.0, BODY, Face::Regular, money(received));
        if let Some(balance) = doc.balance {
            paid.left(label_x, y + 18.0, 10.0, Face::Bold, "Balance due");
            paid.right(RIGHT, y + 18.0, 10.0, Face::Bold, money(balance));
        }
        blocks.push(paid.done(18.0, false));
    }

    if let Some(notes) = doc.notes.as_deref().filter(|n| !n.trim().is_empty()) {
        let mut b = BlockBuilder::new();
        b.left(LEFT, 9.0, SMALL, Face::Bold, "Notes");
        let mut y = 22.0;
        for line in wrap(fonts, notes, RIGHT - LEFT) {
            b.left(LEFT, y, SMALL, Face::Regular, line);
            y += 11.0;
        }
        blocks.push(b.done(10.0, false));
    }
    blocks
}

/// `text` broken into lines of at most `max` points, at spaces and line breaks.
fn wrap(fonts: &Fonts, text: &str, max: f32) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let candidate = if line.is_empty() {
                word.to_owned()
            } else {
                format!("{line} {word}")
            };
            if fonts.width(Face::Regular, SMALL, &candidate) > max && !line.is_empty() {
                lines.push(std::mem::take(&mut line));
                line = fonts.fit(Face::Regular, SMALL, word, max);
            } else {
                line = fonts.fit(Face::Regular, SMALL, &candidate, max);
            }
        }
        lines.push(line);
    }
    lines
}
