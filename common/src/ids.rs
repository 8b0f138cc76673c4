//! Newtype identifiers. One macro makes them all so a `ClinicId` can never be
//! passed where a `UserId` is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

id_newtype!(
    /// A clinic (a "company" in the central database). Always taken from a verified token.
    ClinicId
);
id_newtype!(
    /// A user of the product, member of exactly one clinic.
    UserId
);
id_newtype!(
    /// A row of a clinic resource (patient, appointment, ...).
    RecordId
);

impl ClinicId {
    /// The name of the clinic's own PostgreSQL database.
    pub fn database_name(&self) -> String {
        format!("medicalpro_clinic_{}", self.0.hyphenated())
    }

    /// The name of the clinic's own PostgreSQL login role.
    pub fn role_name(&self) -> String {
        format!("medicalpro_clinic_{}", self.0.simple())
    }
}

/// The id of one request, echoed in `x-request-id` and carried into logs and audit rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// A random (v4) UUID from the thread's userspace CSPRNG (one `getrandom`
    /// system call per request was measurable on the hot path).
    pub fn generate() -> Self {
        let bytes: [u8; 16] = rand::random();
        Self(
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .hyphenated()
                .to_string(),
        )
    }

    /// Accepts a client-sent id only when it is short and made of safe characters.
    pub fn parse(value: &str) -> Option<Self> {
        let sane = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        sane.then(|| Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Format characters that render as nothing or reorder text (bidi controls, zero
/// width characters, the BOM): refused in addresses so two that look the same are
/// the same.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_clinic_id() {
        let id: ClinicId = "0190a5b2-7c4e-7d1a-9e0f-123456789abc".parse().unwrap();
        assert_eq!(
            id.database_name(),
            "medicalpro_clinic_0190a5b2-7c4e-7d1a-9e0f-123456789abc"
        );
        assert_eq!(
            id.role_name(),
            "medicalpro_clinic_0190a5b27c4e7d1a9e0f123456789abc"
        );
        assert!(id.database_name().len() < 64);
    }

    #[test]
    fn request_ids_are_sanitised() {
        assert!(RequestId::parse("abc-123_x.y").is_some());
        assert!(RequestId::parse("").is_none());
        assert!(RequestId::parse("a b").is_none());
        assert!(RequestId::parse("x\r\nset-cookie: y").is_none());
        assert!(RequestId::parse(&"a".repeat(65)).is_none());
    }
}

/// An e-mail address that has been checked for shape and normalised to lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(raw: &str) -> Option<Self> {
        let s = raw.trim();
        let shaped = s.len() <= Self::MAX_LEN
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || invisible(c))
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            });
        shaped.then(|| Self(s.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod email_tests {
    use super::Email;

    #[test]
    fn parses_and_normalises() {
        assert_eq!(
            Email::parse(" Ada@Example.ORG ").unwrap().as_str(),
            "ada@example.org"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@x.org",
            "a b@x.org",
            "a@x",
            "a@.org",
            "a@b@c.org",
            "a\0@x.org",
            "ad\u{200B}a@x.org",
            "ada@x\u{202E}gro.",
            "\u{FEFF}ada@x.org",
        ] {
            assert!(Email::parse(bad).is_none(), "{bad:?}");
        }
    }
}
