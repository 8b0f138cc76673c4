//! Descriptions of the clinic resources. Each resource is described once here — its
//! table, its fields and their types, which are encrypted, searched or looked up —
//! and the worker's generic data layer and the OpenAPI document are both driven by it.

/// The type of a field as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// Free text up to `max_len` characters.
    Text { max_len: usize },
    /// An e-mail address (checked for shape, at most 254 characters).
    Email,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
}

/// One client-visible field of a resource.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    pub required: bool,
    /// Stored only as ciphertext (`<name>_enc`).
    pub encrypted: bool,
    /// Matched by `q` (case-insensitive substring).
    pub searchable: bool,
    /// Exact-match lookup through a blind index (`<name>_bidx`) with `?<name>=`.
    pub lookup: bool,
    pub description: &'static str,
}

impl Field {
    const fn text(name: &'static str, max_len: usize, description: &'static str) -> Self {
        Self {
            name,
            ty: FieldType::Text { max_len },
            required: false,
            encrypted: false,
            searchable: false,
            lookup: false,
            description,
        }
    }
    const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    const fn searchable(mut self) -> Self {
        self.searchable = true;
        self
    }
    const fn encrypted_lookup(mut self) -> Self {
        self.encrypted = true;
        self.lookup = true;
        self
    }
    const fn of_type(mut self, ty: FieldType) -> Self {
        self.ty = ty;
        self
    }
}

/// A clinic resource served under `/api/v1/{name}`.
#[derive(Debug)]
pub struct Resource {
    /// The path segment, e.g. `patients`.
    pub name: &'static str,
    /// The table in the clinic database.
    pub table: &'static str,
    /// The schema name in the OpenAPI document, e.g. `Patient`.
    pub title: &'static str,
    pub fields: &'static [Field],
}

impl Resource {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Fields every stored row carries, set by the server only.
pub const SERVER_FIELDS: &[&str] = &["id", "created_at", "updated_at"];

pub const PATIENTS: Resource = Resource {
    name: "patients",
    table: "patients",
    title: "Patient",
    fields: &[
        Field::text("first_name", 100, "Given name.")
            .required()
            .searchable(),
        Field::text("last_name", 100, "Family name.")
            .required()
            .searchable(),
        Field::text("email", 254, "Contact e-mail address.").of_type(FieldType::Email),
        Field::text("phone", 40, "Contact phone number."),
        Field::text("birth_date", 10, "Date of birth.").of_type(FieldType::Date),
        Field::text(
            "ssn",
            32,
            "Social security number; stored encrypted, exact-match lookup with `?ssn=`.",
        )
        .encrypted_lookup(),
    ],
};

/// Every resource the clinic API serves.
pub const RESOURCES: &[&Resource] = &[&PATIENTS];

/// The resource served under `/api/v1/{name}`, if any.
pub fn find(name: &str) -> Option<&'static Resource> {
    RESOURCES.iter().copied().find(|r| r.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_not_reserved() {
        for r in RESOURCES {
            assert!(find(r.name).is_some());
            for f in r.fields {
                assert!(
                    !SERVER_FIELDS.contains(&f.name),
                    "{} shadows a server field",
                    f.name
                );
                assert_ne!(f.name, "company_id");
                assert_eq!(r.fields.iter().filter(|g| g.name == f.name).count(), 1);
            }
        }
        assert!(find("companies").is_none());
    }
}
