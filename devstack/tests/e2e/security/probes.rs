//! Hostile input: the probes (NUL, SQL and LIKE metacharacters, lone surrogates,
//! bidi and zero-width characters, control characters, lengths at and over the
//! limits) and the verdict each field owes them.

use super::*;

/// A hostile value for a string.
#[derive(Clone, Debug)]
pub(super) enum Probe {
    /// A string JSON can carry.
    Str(&'static str, String),
    /// Raw JSON text in place of the string, with what it decodes to if it is valid
    /// (a lone surrogate escape is not; a Rust string cannot even hold one).
    Raw(&'static str, &'static str, Option<&'static str>),
}

impl Probe {
    pub(super) fn label(&self) -> &'static str {
        match self {
            Probe::Str(label, _) | Probe::Raw(label, _, _) => label,
        }
    }

    /// The string the server receives, when it is one.
    pub(super) fn decoded(&self) -> Option<String> {
        match self {
            Probe::Str(_, s) => Some(s.clone()),
            Probe::Raw(_, _, decoded) => decoded.map(str::to_owned),
        }
    }
}

/// Where the probe goes in a JSON body before it is serialised.
pub(super) const PLACEHOLDER: &str = "@@PROBE@@";

/// Serialises `body` with the probe in place of [`PLACEHOLDER`].
pub(super) fn with_probe(body: &Value, probe: &Probe) -> Body {
    let text = serde_json::to_string(body).unwrap();
    let quoted = format!("\"{PLACEHOLDER}\"");
    let literal = match probe {
        Probe::Str(_, s) => serde_json::to_string(s).unwrap(),
        Probe::Raw(_, raw, _) => (*raw).to_owned(),
    };
    Body::Raw(text.replace(&quoted, &literal))
}

/// Quotes, comment and statement separators, LIKE wildcards and escapes,
/// placeholders, dollar quoting and casts: the telling ones first, so that a cut to
/// a short field's limit keeps them.
pub(super) const METACHARACTERS: &str =
    "';--\"%_\\ Robert'); DROP TABLE patients;-- ' OR '1'='1 $1 $$ E'\\x00' ::text /* */ \\u0000";

/// The hostile strings for free text of at most `max_len` characters.
pub(super) fn text_probes(max_len: usize) -> Vec<Probe> {
    use Probe::{Raw, Str};
    let metacharacters = METACHARACTERS.chars().take(max_len).collect();
    vec![
        Str("SQL and LIKE metacharacters", metacharacters),
        Str("NUL inside", "a\u{0}b".into()),
        Raw("lone high surrogate", r#""\ud800""#, None),
        Str(
            "bidi override and zero-width",
            "\u{202E}evil\u{200B}\u{200D}\u{FEFF}txt".into(),
        ),
        Str("one over the limit (2-byte chars)", "é".repeat(max_len + 1)),
        Str(
            "control characters",
            "\u{1}\u{7}\u{1b}[31m\u{7f}\t\r\n".into(),
        ),
        Str("astral and combining", "𝕏🦀 é\u{301} \u{FDFD}".into()),
        Str("whitespace only", "   ".into()),
        Str("at the limit (4-byte chars)", "🦀".repeat(max_len)),
        Str("very long", "x".repeat(100_000)),
        Str("near the body limit", "x".repeat(1_000_000)),
        Raw(
            "lone low surrogate, then high, then an escape",
            r#""x\udfff\ud800\u0041""#,
            None,
        ),
        Raw("valid surrogate pair", r#""\ud83e\udd80""#, Some("🦀")),
    ]
}

/// E-mail-shaped hostile strings, each holding `m` (so they can be told apart).
pub(super) fn email_probes(m: &str) -> Vec<Probe> {
    use Probe::{Raw, Str};
    vec![
        Str(
            "quote, plus and LIKE in the local part",
            format!("o'brien+%_{m}@Example.ORG"),
        ),
        Str("SQL in the local part", format!("x'--;DROP{m}@example.org")),
        Str("padded and upper case", format!("  Ada{m}@Example.org  ")),
        Str("NUL in the local part", format!("a\u{0}{m}@example.org")),
        Str("trailing NUL", format!("{m}@example.org\u{0}")),
        Str(
            "bidi in the local part",
            format!("a\u{202E}\u{200B}{m}@example.org"),
        ),
        Str(
            "over 254 characters",
            format!("{}{m}@example.org", "a".repeat(250)),
        ),
        Raw(
            "lone surrogate in the local part",
            r#""\ud800@example.org""#,
            None,
        ),
    ]
}

/// What the API must do with a value.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// Stored, reading back as this.
    Accept(String),
    /// Refused with a 4xx, nothing stored.
    Reject,
    /// Either, consistently (the rules leave it open).
    Either(String),
}

/// E-mail rules: no NUL, control or white space inside, at most 254 bytes, an `@`;
/// plain ASCII of the usual shape is accepted, trimmed and lower-cased.
pub(super) fn email_verdict(s: &str) -> Verdict {
    let t = s.trim();
    let shaped = t.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.contains('@') && domain.contains('.')
    });
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) || t.len() > 254 || !shaped {
        Verdict::Reject
    } else if t.is_ascii() {
        Verdict::Accept(t.to_lowercase())
    } else {
        Verdict::Either(t.to_lowercase())
    }
}

pub(super) fn verdict(f: &Field, probe: &Probe) -> Verdict {
    let Some(s) = probe.decoded() else {
        return Verdict::Reject; // not even valid JSON
    };
    match f.ty {
        FieldType::Text { max_len } => {
            if s.contains('\0')
                || s.chars().count() > max_len
                || (f.required && s.trim().is_empty())
                || shape(f).is_some_and(|(_, shaped)| !shaped(&s))
            {
                Verdict::Reject
            } else {
                Verdict::Accept(s)
            }
        }
        FieldType::Email => email_verdict(&s),
        // No hostile string is a date, an instant, an enum value or an id.
        _ => Verdict::Reject,
    }
}

/// Where a string goes in a resource's body.
#[derive(Clone, Copy, Debug)]
pub(super) enum Slot {
    Field(&'static Field),
    /// An id inside a reference list.
    ListItem(&'static Field),
    ChildField(&'static Child, &'static Field),
}

impl Slot {
    pub(super) fn field(self) -> &'static Field {
        match self {
            Slot::Field(f) | Slot::ListItem(f) | Slot::ChildField(_, f) => f,
        }
    }

    pub(super) fn name(self) -> String {
        match self {
            Slot::Field(f) => f.name.into(),
            Slot::ListItem(f) => format!("{}[0]", f.name),
            Slot::ChildField(c, f) => format!("{}[0].{}", c.name, f.name),
        }
    }

    /// Every place a string goes in `r`'s bodies.
    pub(super) fn all(r: &'static Resource) -> Vec<Slot> {
        let stringy = |f: &Field| {
            !f.read_only && !matches!(f.ty, FieldType::Integer { .. } | FieldType::Boolean)
        };
        let mut slots = Vec::new();
        for f in r.fields.iter().filter(|f| stringy(f)) {
            slots.push(match f.ty {
                FieldType::ReferenceList { .. } => Slot::ListItem(f),
                _ => Slot::Field(f),
            });
        }
        for c in r.children {
            for f in c.fields.iter().filter(|f| stringy(f)) {
                slots.push(Slot::ChildField(c, f));
            }
        }
        slots
    }

    /// The probes for this slot: every text probe for free text; e-mail-shaped
    /// ones for e-mails; for values that are parsed (dates, instants, enum values,
    /// ids), a valid value with SQL or a NUL after it, and the metacharacters.
    pub(super) fn probes(self, r: &Resource, deps: &Deps) -> Vec<Probe> {
        let f = self.field();
        let owner = match self {
            Slot::ChildField(c, _) => c.name,
            _ => r.name,
        };
        match f.ty {
            FieldType::Text { max_len } => {
                let mut p = text_probes(max_len);
                if let Some((sample, _)) = shape(f) {
                    p.push(Probe::Str("the shape, lower case", sample.to_lowercase()));
                    p.push(Probe::Str(
                        "the shape, then SQL",
                        format!("{sample}' OR '1'='1"),
                    ));
                }
                p
            }
            FieldType::Email => {
                let mut p = email_probes("");
                p.push(Probe::Str(
                    "SQL and LIKE metacharacters",
                    METACHARACTERS.into(),
                ));
                p
            }
            _ => {
                let valid = sample_value(owner, f, deps, next_seq(), 0);
                let valid = valid.as_str().or(valid[0].as_str()).unwrap().to_owned();
                vec![
                    Probe::Str("a valid value, then SQL", format!("{valid}' OR '1'='1")),
                    Probe::Str("a valid value, then NUL", format!("{valid}\u{0}")),
                    Probe::Str("SQL and LIKE metacharacters", METACHARACTERS.into()),
                ]
            }
        }
    }

    /// Puts [`PLACEHOLDER`] into a body: a whole one (create, PUT) or, for a PATCH,
    /// one holding only this slot.
    pub(super) fn fill(self, r: &'static Resource, deps: &Deps, patch: bool) -> Value {
        let mut body = if patch {
            json!({})
        } else {
            sample_body(r, deps, true)
        };
        match self {
            Slot::Field(f) => body[f.name] = json!(PLACEHOLDER),
            Slot::ListItem(f) => body[f.name] = json!([PLACEHOLDER]),
            Slot::ChildField(c, f) => {
                let mut row = child_sample(c, deps, next_seq());
                row[f.name] = json!(PLACEHOLDER);
                body[c.name] = json!([row]);
            }
        }
        body
    }

    /// The slot's value in a row.
    pub(super) fn read(self, row: &Value) -> Value {
        match self {
            Slot::Field(f) => row[f.name].clone(),
            Slot::ListItem(f) => row[f.name][0].clone(),
            Slot::ChildField(c, f) => row[c.name][0][f.name].clone(),
        }
    }
}
