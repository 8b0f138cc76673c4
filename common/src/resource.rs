//! Descriptions of the clinic resources. Each resource is described once here — its
//! table, its fields and their types, which are encrypted, searched, filtered or
//! computed by the server, and its child rows — and the worker's generic data layer
//! and the OpenAPI document are both driven by it. Rules that must hold whatever
//! the client does (no double booking, gapless invoice numbers, immutable issued
//! invoices) live in the clinic migrations as constraints and triggers.

use crate::token::Role;

/// The type of a field as clients see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// Free text up to `max_len` characters.
    Text {
        max_len: usize,
    },
    /// An e-mail address (checked for shape, at most 254 characters).
    Email,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
    /// An instant, RFC 3339.
    Timestamp,
    /// A civil time of day in the clinic's time zone, `HH:MM` (24-hour clock); as
    /// the end of an interval, `00:00` is the midnight that ends the day.
    Time,
    /// A whole number within bounds (money is integer cents).
    Integer {
        min: i64,
        max: i64,
    },
    Boolean,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// The id of a live row of another resource of the same clinic (its table).
    Reference(&'static str),
    /// Ids of live rows of another resource, kept in a link table.
    ReferenceList {
        target: &'static str,
        link_table: &'static str,
        owner_column: &'static str,
        target_column: &'static str,
    },
}

/// One client-visible field of a resource.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub ty: FieldType,
    pub required: bool,
    /// Computed by the server; ignored in request bodies.
    pub read_only: bool,
    /// Used when a create or replace leaves the field out.
    pub default: Option<&'static str>,
    /// Stored only as ciphertext (`<name>_enc`).
    pub encrypted: bool,
    /// An encrypted field that was once stored in plaintext (`<name>`): values
    /// written before it was sealed are still read from there until
    /// `medicalpro-admin rotate-data-keys` seals them; every write clears it.
    pub legacy_plaintext: bool,
    /// Matched by `q` (case-insensitive substring).
    pub searchable: bool,
    /// Exact-match filter `?<name>=` (a blind index `<name>_bidx` when encrypted).
    pub filterable: bool,
    /// Range filters `?<name>_from=` (inclusive) and `?<name>_to=` (exclusive).
    pub range: bool,
    /// Identifying or clinical data outside the staff role's minimum necessary:
    /// staff neither see nor set it (see [`crate::token::Role::sees_restricted`]).
    pub restricted: bool,
    pub description: &'static str,
}

impl Field {
    /// The column the value is stored in (`<name>_enc` when encrypted).
    pub fn stored_column(&self) -> String {
        if self.encrypted {
            format!("{}_enc", self.name)
        } else {
            self.name.to_owned()
        }
    }

    pub const fn new(name: &'static str, ty: FieldType, description: &'static str) -> Self {
        Self {
            name,
            ty,
            required: false,
            read_only: false,
            default: None,
            encrypted: false,
            legacy_plaintext: false,
            searchable: false,
            filterable: false,
            range: false,
            restricted: false,
            description,
        }
    }
    pub const fn text(name: &'static str, max_len: usize, description: &'static str) -> Self {
        Self::new(name, FieldType::Text { max_len }, description)
    }
    pub const fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub const fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }
    pub const fn default(mut self, value: &'static str) -> Self {
        self.default = Some(value);
        self
    }
    pub const fn searchable(mut self) -> Self {
        self.searchable = true;
        self
    }
    pub const fn filterable(mut self) -> Self {
        self.filterable = true;
        self
    }
    pub const fn range(mut self) -> Self {
        self.range = true;
        self
    }
    pub const fn restricted(mut self) -> Self {
        self.restricted = true;
        self
    }
    /// Stored only as ciphertext, without a lookup: clinical free text. It was
    /// stored in plaintext before (see [`Field::legacy_plaintext`]).
    pub const fn sealed_since_plaintext(mut self) -> Self {
        self.encrypted = true;
        self.legacy_plaintext = true;
        self
    }
    /// Stored only as ciphertext, without a lookup, never in plaintext before.
    pub const fn sealed(mut self) -> Self {
        self.encrypted = true;
        self
    }
    pub const fn encrypted_lookup(mut self) -> Self {
        self.encrypted = true;
        self.filterable = true;
        self
    }
    /// Whether the field is a column of the resource's own table.
    pub const fn is_column(&self) -> bool {
        !matches!(self.ty, FieldType::ReferenceList { .. })
    }
}

/// Rows owned by a resource row and written with it (invoice lines, booked items).
#[derive(Debug)]
pub struct Child {
    /// The array field in the parent's JSON.
    pub name: &'static str,
    pub table: &'static str,
    pub parent_column: &'static str,
    pub fields: &'static [Field],
    pub max_items: usize,
    /// The schema name in the OpenAPI document.
    pub title: &'static str,
}

/// An action on one row beyond CRUD: `POST /api/v1/{resource}/{id}/{name}` calls the
/// clinic database function `function(id, new_id)` and answers with the row it returns.
#[derive(Debug)]
pub struct RowAction {
    pub name: &'static str,
    pub function: &'static str,
    /// Whether the answer is a new row (`201`) rather than the same one (`200`).
    pub creates: bool,
    /// Only clinic admins may run it.
    pub admin_only: bool,
    /// It applies to soft-deleted rows too (erasure must reach a deleted patient).
    pub on_deleted: bool,
    /// Encrypted fields the new row (`creates`) takes over from the old one: their
    /// sealed values are bound to their row, so they are opened and sealed again
    /// for the new row by the data layer.
    pub carries: &'static [&'static str],
    /// A short title for the OpenAPI document (`Issue a document`).
    pub summary: &'static str,
    pub description: &'static str,
}

/// Who may write a resource's rows (every role of the clinic reads them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// May create, replace and patch rows.
    pub write: &'static [Role],
    /// May delete and restore rows.
    pub delete: &'static [Role],
}

impl Access {
    /// Every role writes and deletes.
    pub const EVERYONE: Access = Access {
        write: &[Role::Admin, Role::Practitioner, Role::Staff],
        delete: &[Role::Admin, Role::Practitioner, Role::Staff],
    };
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
    pub children: &'static [Child],
    pub actions: &'static [RowAction],
    /// How `q` searches a large resource: one lowercased column of its searchable
    /// text under a trigram index, results in a name order with an index of its
    /// own (`None`: `q` matches each searchable field, results in id order).
    pub search: Option<SearchIndex>,
    /// Which roles may write and delete (see [`Access`]).
    pub access: Access,
}

/// A resource's search column and result order (see [`Resource::search`]).
#[derive(Debug)]
pub struct SearchIndex {
    /// The generated column `q` is matched against (lowercased text); results
    /// come in its order (under the "C" collation), rows starting with `q` first.
    pub column: &'static str,
}

impl Resource {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
    pub fn child(&self, name: &str) -> Option<&'static Child> {
        self.children.iter().find(|c| c.name == name)
    }
    pub fn action(&self, name: &str) -> Option<&'static RowAction> {
        self.actions.iter().find(|a| a.name == name)
    }
}

/// Fields every stored row carries, set by the server only.
pub const SERVER_FIELDS: &[&str] = &["id", "created_at", "updated_at"];

const MONEY: FieldType = FieldType::Integer {
    min: 0,
    max: 100_000_000_000,
};
const VAT_BP: FieldType = FieldType::Integer {
    min: 0,
    max: 10_000,
};
const BALANCE: FieldType = FieldType::Integer {
    min: -100_000_000_000,
    max: 100_000_000_000,
};
const MINUTES: FieldType = FieldType::Integer { min: 5, max: 1440 };
const ADMINS: &[Role] = &[Role::Admin];
const CLINICIANS: &[Role] = &[Role::Admin, Role::Practitioner];
const QUANTITY: FieldType = FieldType::Integer {
    min: 1,
    max: 100_000,
};

pub const PATIENTS: Resource = Resource {
    access: Access::EVERYONE,
    name: "patients",
    table: "patients",
    title: "Patient",
    search: Some(SearchIndex {
        column: "search_name",
    }),
    fields: &[
        Field::text("first_name", 100, "Given name.")
            .required()
            .searchable(),
        Field::text("last_name", 100, "Family name.")
            .required()
            .searchable(),
        Field::new("email", FieldType::Email, "Contact e-mail address."),
        Field::text("phone", 40, "Contact phone number."),
        Field::new("birth_date", FieldType::Date, "Date of birth."),
        Field::text(
            "ssn",
            32,
            "Social security number; stored encrypted, exact-match lookup with `?ssn=`. Not shown to staff.",
        )
        .encrypted_lookup()
        .restricted(),
        Field::text(
            "external_id",
            100,
            "The patient's id in the system the clinic imported them from (`POST /api/v1/patients/import`); unique per clinic.",
        )
        .filterable(),
    ],
    children: &[],
    actions: &[RowAction {
        name: "erase",
        function: "erase_patient",
        creates: false,
        admin_only: true,
        on_deleted: true,
        carries: &[],
        summary: "Erase a patient's personal data",
        description: "Erases the patient's personal data, also of a deleted patient (names pseudonymised; contact data, birth date, ssn, the clinical notes of their appointments and the free text of their documents and document lines removed; their attachments deleted, content and file names included); invoices and consents are kept.",
    }],
};

pub const PRACTITIONERS: Resource = Resource {
    access: Access::EVERYONE,
    name: "practitioners",
    table: "practitioners",
    title: "Practitioner",
    search: None,
    fields: &[
        Field::text("first_name", 100, "Given name.")
            .required()
            .searchable(),
        Field::text("last_name", 100, "Family name.")
            .required()
            .searchable(),
        Field::new("email", FieldType::Email, "Professional e-mail address."),
        Field::text("phone", 40, "Professional phone number."),
        Field::text("specialty", 100, "Medical specialty.")
            .searchable()
            .filterable(),
        Field::text(
            "license_number",
            50,
            "Registration number with the medical board.",
        )
        .filterable(),
    ],
    children: &[],
    actions: &[],
};

pub const CATEGORIES: Resource = Resource {
    access: Access::EVERYONE,
    name: "categories",
    table: "categories",
    title: "Category",
    search: None,
    fields: &[
        Field::text("name", 100, "Category name, unique in the clinic.")
            .required()
            .searchable(),
        Field::text("description", 1000, "What belongs in the category."),
    ],
    children: &[],
    actions: &[],
};

pub const PRODUCTS: Resource = Resource {
    access: Access::EVERYONE,
    name: "products",
    table: "product_services",
    title: "Product",
    search: None,
    fields: &[
        Field::text("name", 200, "What is sold or performed.")
            .required()
            .searchable(),
        Field::new(
            "kind",
            FieldType::Enum(&["product", "service"]),
            "A physical product or a service.",
        )
        .required()
        .filterable(),
        Field::text("description", 2000, "Longer description."),
        Field::new(
            "unit_price_cents",
            MONEY,
            "Price per unit before VAT, in cents.",
        )
        .required(),
        Field::new(
            "vat_rate_bp",
            VAT_BP,
            "VAT rate in basis points (2000 = 20 %).",
        )
        .required(),
        Field::new(
            "active",
            FieldType::Boolean,
            "Whether it can still be booked or invoiced.",
        )
        .default("true")
        .filterable(),
        Field::new(
            "category_ids",
            FieldType::ReferenceList {
                target: "categories",
                link_table: "product_categories",
                owner_column: "product_id",
                target_column: "category_id",
            },
            "Categories the product belongs to.",
        ),
    ],
    children: &[],
    actions: &[],
};

pub const APPOINTMENTS: Resource = Resource {
    access: Access::EVERYONE,
    name: "appointments",
    table: "appointments",
    title: "Appointment",
    search: None,
    fields: &[
        Field::new(
            "patient_id",
            FieldType::Reference("patients"),
            "The patient.",
        )
        .required()
        .filterable(),
        Field::new(
            "practitioner_id",
            FieldType::Reference("practitioners"),
            "Who sees the patient; never double-booked.",
        )
        .required()
        .filterable(),
        Field::new(
            "starts_at",
            FieldType::Timestamp,
            "Start; filter with `starts_at_from` / `starts_at_to`.",
        )
        .required()
        .range(),
        Field::new(
            "ends_at",
            FieldType::Timestamp,
            "End, after the start; when left out, the start plus the duration of the appointment's type.",
        ),
        Field::new(
            "appointment_type_id",
            FieldType::Reference("appointment_types"),
            "What kind of appointment (its duration gives the default end).",
        )
        .filterable(),
        Field::new(
            "outside_hours",
            FieldType::Boolean,
            "Booked outside the practitioner's working hours on purpose: without it, such a booking is refused (409).",
        )
        .default("false"),
        Field::new(
            "series_id",
            FieldType::Reference("appointment_series"),
            "The recurring series the appointment belongs to (`POST /api/v1/appointments/series`).",
        )
        .read_only()
        .filterable(),
        Field::new(
            "series_index",
            FieldType::Integer { min: 0, max: 1000 },
            "Its place in the series, from 0.",
        )
        .read_only(),
        Field::new(
            "status",
            FieldType::Enum(&["booked", "confirmed", "cancelled", "no_show", "done"]),
            "Cancelled and no-show appointments free the slot.",
        )
        .default("booked")
        .filterable(),
        Field::text(
            "notes",
            2000,
            "Clinical notes. Not shown to staff; stored encrypted.",
        )
        .restricted()
        .sealed_since_plaintext(),
    ],
    children: &[Child {
        name: "items",
        table: "appointment_items",
        parent_column: "appointment_id",
        title: "AppointmentItem",
        max_items: 50,
        fields: &[
            Field::new(
                "product_id",
                FieldType::Reference("product_services"),
                "The product or service.",
            )
            .required(),
            Field::new("quantity", QUANTITY, "How many.").default("1"),
            Field::new(
                "unit_price_cents",
                MONEY,
                "Price at booking time, copied from the product.",
            )
            .read_only(),
            Field::new("vat_rate_bp", VAT_BP, "VAT rate at booking time.").read_only(),
        ],
    }],
    actions: &[],
};

pub const DOCUMENTS: Resource = Resource {
    access: Access::EVERYONE,
    name: "documents",
    table: "documents",
    title: "Document",
    search: None,
    fields: &[
        Field::new("kind", FieldType::Enum(&["quote", "invoice", "credit_note"]), "A quote, an invoice, or a credit note (made from an issued invoice with `POST …/{id}/credit` or `…/cancel`, never created directly).").required().filterable(),
        Field::new(
            "status",
            FieldType::Enum(&["draft", "issued", "accepted", "paid", "cancelled"]),
            "Drafts are editable; issue with `POST …/{id}/issue`.",
        )
        .read_only()
        .filterable(),
        Field::new("patient_id", FieldType::Reference("patients"), "Who the document is for.").required().filterable(),
        Field::text("number", 32, "Invoice or credit-note number, gapless per clinic, series and year (in the clinic's time zone), given when issued: `<prefix>-<year>-<000001>`.").read_only(),
        Field::new("issued_at", FieldType::Timestamp, "When it was issued.").read_only(),
        Field::new("converted_from", FieldType::Reference("documents"), "The quote an invoice came from.").read_only(),
        Field::new("net_cents", MONEY, "Total before VAT, computed.").read_only(),
        Field::new("vat_cents", MONEY, "VAT total, computed.").read_only(),
        Field::new("gross_cents", MONEY, "Total with VAT, computed.").read_only(),
        Field::text("currency", 3, "ISO 4217 code of every amount, the clinic's currency when the document was created.").read_only(),
        Field::new("credits", FieldType::Reference("documents"), "For a credit note: the invoice it credits.").read_only().filterable(),
        Field::new("paid_cents", MONEY, "Payments received (invoices).").read_only(),
        Field::new("credited_cents", MONEY, "Credited by issued credit notes (invoices).").read_only(),
        Field::new("balance_cents", BALANCE, "What is left to pay on an issued invoice (gross − paid − credited; negative: owed back); 0 otherwise. The invoice is `paid` at 0, `cancelled` once fully credited.").read_only(),
        Field::text("notes", 2000, "Free-text notes printed on the document; stored encrypted.").sealed_since_plaintext(),
    ],
    children: &[Child {
        name: "lines",
        table: "document_lines",
        parent_column: "document_id",
        title: "DocumentLine",
        max_items: 200,
        fields: &[
            Field::text("description", 500, "What is charged.").required(),
            Field::new("product_id", FieldType::Reference("product_services"), "The product or service, if any."),
            Field::new("quantity", QUANTITY, "How many.").required(),
            Field::new("unit_price_cents", MONEY, "Price per unit before VAT, in cents.").required(),
            Field::new("vat_rate_bp", VAT_BP, "VAT rate in basis points.").required(),
            Field::new("net_cents", MONEY, "quantity × unit price, computed.").read_only(),
            Field::new("vat_cents", MONEY, "VAT of the line, rounded half up, computed.").read_only(),
            Field::new("gross_cents", MONEY, "net + VAT, computed.").read_only(),
        ],
    }],
    actions: &[
        RowAction {
            name: "issue",
            function: "issue_document",
            creates: false,
            admin_only: false,
            on_deleted: false,
            carries: &[],
            summary: "Issue a document",
            description: "Issues a draft: an invoice gets its gapless number; issued invoices can no longer change.",
        },
        RowAction {
            name: "convert",
            function: "convert_quote",
            creates: true,
            admin_only: false,
            on_deleted: false,
            carries: &["notes"],
            summary: "Convert a quote into an invoice",
            description: "Turns a quote into a draft invoice with the same lines.",
        },
        RowAction {
            name: "credit",
            function: "credit_invoice",
            creates: true,
            admin_only: true,
            on_deleted: false,
            carries: &[],
            summary: "Credit an invoice",
            description: "Makes a draft credit note for an issued invoice with the invoice's lines: change or remove lines for a partial credit, then issue it (its own gapless series). It may not credit more than is left on the invoice.",
        },
        RowAction {
            name: "cancel",
            function: "cancel_invoice",
            creates: true,
            admin_only: true,
            on_deleted: false,
            carries: &[],
            summary: "Cancel an invoice",
            description: "Cancels an issued invoice, never editing it: issues a credit note for the whole invoice and answers with it; the invoice becomes `cancelled`. A partly credited invoice is credited further with `credit` instead.",
        },
    ],
};

pub const CONSENT_TEMPLATES: Resource = Resource {
    access: Access::EVERYONE,
    name: "consent-templates",
    table: "consent_templates",
    title: "ConsentTemplate",
    search: None,
    fields: &[
        Field::text("name", 200, "Template name; versions share it.")
            .required()
            .searchable()
            .filterable(),
        Field::new(
            "version",
            FieldType::Integer {
                min: 1,
                max: 1_000_000,
            },
            "Version, numbered by the server per name.",
        )
        .read_only(),
        Field::text(
            "body",
            20_000,
            "The text the patient consents to. A version in use cannot change.",
        )
        .required(),
    ],
    children: &[],
    actions: &[],
};

pub const CONSENTS: Resource = Resource {
    access: Access::EVERYONE,
    name: "consents",
    table: "consents",
    title: "Consent",
    search: None,
    fields: &[
        Field::new(
            "patient_id",
            FieldType::Reference("patients"),
            "Who consented.",
        )
        .required()
        .filterable(),
        Field::new(
            "template_id",
            FieldType::Reference("consent_templates"),
            "The template version consented to.",
        )
        .required()
        .filterable(),
        Field::new(
            "given_at",
            FieldType::Timestamp,
            "When consent was given (default: now).",
        )
        .default("now")
        .range(),
        Field::new(
            "revoked_at",
            FieldType::Timestamp,
            "When it was withdrawn, if it was.",
        ),
        Field::new(
            "attachment_id",
            FieldType::Reference("attachments"),
            "The signed form: an attachment of the same patient (`POST /api/v1/patients/{id}/attachments`); another patient's is `400`.",
        ),
    ],
    children: &[],
    actions: &[],
};

/// The content of attachments, one 64 KiB chunk a row, each sealed on its own and
/// bound to the chunk's id (derived from its attachment and place). Never served;
/// described so that key rotation re-seals and checks it like any sealed field.
pub const ATTACHMENT_CHUNKS: Resource = Resource {
    access: Access {
        write: &[],
        delete: &[],
    },
    name: "attachment-chunks",
    table: "attachment_chunks",
    title: "AttachmentChunk",
    search: None,
    fields: &[Field::text(
        "content",
        65_536,
        "64 KiB of an attachment's content, sealed with the clinic's data key.",
    )
    .read_only()
    .sealed()],
    children: &[],
    actions: &[],
};

/// Files on a patient (`/api/v1/patients/{id}/attachments`, `/api/v1/attachments/{id}`):
/// the metadata as the data layer reads, lists and exports it; the content is
/// stored in sealed chunks beside it and served by the worker's own handlers, so
/// the resource is not one of [`RESOURCES`] (no generic create, change or restore).
pub const ATTACHMENTS: Resource = Resource {
    access: Access {
        write: &[Role::Admin, Role::Practitioner, Role::Staff],
        delete: CLINICIANS,
    },
    name: "attachments",
    table: "attachments",
    title: "Attachment",
    search: None,
    fields: &[
        Field::new(
            "patient_id",
            FieldType::Reference("patients"),
            "The patient the file is on.",
        )
        .read_only()
        .filterable(),
        Field::text(
            "filename",
            255,
            "The file's name as uploaded (stored encrypted); null once the patient was erased.",
        )
        .read_only()
        .sealed(),
        Field::text(
            "description",
            1000,
            "What the file is, as the uploader described it (stored encrypted).",
        )
        .read_only()
        .sealed(),
        Field::text(
            "content_type",
            100,
            "The media type found in the file's bytes (not the one the client claimed).",
        )
        .read_only(),
        Field::new(
            "size",
            FieldType::Integer {
                min: 0,
                max: i64::MAX,
            },
            "Size of the content in bytes.",
        )
        .read_only(),
        Field::text("sha256", 64, "SHA-256 of the content, lowercase hex.").read_only(),
        Field::new(
            "created_by",
            FieldType::Reference("users"),
            "The user (or API client) who uploaded it.",
        )
        .read_only(),
    ],
    children: &[],
    actions: &[],
};

pub const APPOINTMENT_TYPES: Resource = Resource {
    name: "appointment-types",
    table: "appointment_types",
    title: "AppointmentType",
    search: None,
    access: Access {
        write: ADMINS,
        delete: ADMINS,
    },
    fields: &[
        Field::text("name", 100, "What the appointment is, unique in the clinic (`Follow-up`).")
            .required()
            .searchable(),
        Field::new("duration_minutes", MINUTES, "How long it lasts.").required(),
        Field::new(
            "buffer_after_minutes",
            FieldType::Integer { min: 0, max: 240 },
            "Time kept free after it (notes, cleaning): free-slot search leaves it between bookings.",
        )
        .default("0"),
        Field::new(
            "default_product_id",
            FieldType::Reference("product_services"),
            "The product or service billed for it (its price).",
        ),
        Field::text("colour", 7, "Calendar colour, `#RRGGBB`."),
    ],
    children: &[],
    actions: &[],
};

pub const WORKING_HOURS: Resource = Resource {
    name: "working-hours",
    table: "working_hours",
    title: "WorkingHours",
    search: None,
    access: Access {
        write: CLINICIANS,
        delete: CLINICIANS,
    },
    fields: &[
        Field::new(
            "practitioner_id",
            FieldType::Reference("practitioners"),
            "Whose hours.",
        )
        .required()
        .filterable(),
        Field::new("weekday", WEEKDAY, "The day of the week they repeat on.")
            .required()
            .filterable(),
        Field::new(
            "start_time",
            FieldType::Time,
            "Start, in the clinic's time zone.",
        )
        .required(),
        Field::new(
            "end_time",
            FieldType::Time,
            "End, after the start (`00:00`: midnight at the end of the day).",
        )
        .required(),
    ],
    children: &[],
    actions: &[],
};

pub const HOURS_EXCEPTIONS: Resource = Resource {
    name: "hours-exceptions",
    table: "hours_exceptions",
    title: "HoursException",
    search: None,
    access: Access {
        write: CLINICIANS,
        delete: CLINICIANS,
    },
    fields: &[
        Field::new(
            "practitioner_id",
            FieldType::Reference("practitioners"),
            "Whose hours change.",
        )
        .required()
        .filterable(),
        Field::new("date", FieldType::Date, "The day, in the clinic's calendar.")
            .required()
            .range(),
        Field::new(
            "change",
            FieldType::Enum(&["closed", "open"]),
            "`closed`: not working (the whole day without times, or the times given); `open`: extra hours (times required).",
        )
        .required()
        .filterable(),
        Field::new("start_time", FieldType::Time, "Start of the changed hours."),
        Field::new("end_time", FieldType::Time, "End of the changed hours."),
        Field::text("reason", 200, "Why (leave, public holiday, extra session)."),
    ],
    children: &[],
    actions: &[],
};

pub const PAYMENTS: Resource = Resource {
    name: "payments",
    table: "payments",
    title: "Payment",
    search: None,
    access: Access {
        write: &[Role::Admin, Role::Practitioner, Role::Staff],
        delete: ADMINS,
    },
    fields: &[
        Field::new(
            "document_id",
            FieldType::Reference("documents"),
            "The issued invoice it pays (also `POST /api/v1/documents/{id}/payments`).",
        )
        .required()
        .filterable(),
        Field::new(
            "amount_cents",
            FieldType::Integer {
                min: 1,
                max: 100_000_000_000,
            },
            "Amount received, in the invoice's currency; never more than the balance.",
        )
        .required(),
        Field::new(
            "method",
            FieldType::Enum(&["cash", "card", "transfer", "cheque", "insurance", "other"]),
            "How it was paid.",
        )
        .required()
        .filterable(),
        Field::new("paid_on", FieldType::Date, "The day it was received.")
            .required()
            .range(),
        Field::text("reference", 200, "Cheque number, transaction id, …"),
    ],
    children: &[],
    actions: &[],
};

/// The clinic's own settings (`GET`/`PUT /api/v1/clinic`): one object, not a
/// collection, so not in [`RESOURCES`].
pub const CLINIC_SETTINGS: Resource = Resource {
    name: "clinic",
    table: "clinic_settings",
    title: "ClinicSettings",
    search: None,
    access: Access {
        write: ADMINS,
        delete: &[],
    },
    fields: &[
        Field::text("name", 200, "The clinic's name as printed on its documents.").required(),
        Field::text("address", 1000, "Postal address, lines separated by newlines."),
        Field::text("registration_number", 64, "Company or practice registration number."),
        Field::text("vat_number", 64, "VAT identification number."),
        Field::text(
            "time_zone",
            64,
            "IANA time zone (`Europe/Paris`): working hours, \"today\" and the invoice year follow it.",
        )
        .default("UTC"),
        Field::text("locale", 35, "BCP 47 language tag (`fr-FR`).").default("en"),
        Field::text(
            "currency",
            3,
            "ISO 4217 code of the clinic's money (`EUR`); documents keep the currency they were created in.",
        )
        .default("EUR"),
        Field::text("invoice_prefix", 12, "Invoice numbers start with it (letters and digits).")
            .default("F"),
        Field::text(
            "credit_note_prefix",
            12,
            "Credit-note numbers start with it (letters and digits).",
        )
        .default("AV"),
    ],
    children: &[],
    actions: &[],
};

/// Free slots (`GET /api/v1/availability`): computed, not stored; named in the
/// audit trail and the OpenAPI document. Not in [`RESOURCES`].
pub const AVAILABILITY: Resource = Resource {
    name: "availability",
    table: "",
    title: "Availability",
    search: None,
    access: Access::EVERYONE,
    fields: &[],
    children: &[],
    actions: &[],
};

/// A recurring series of appointments (`POST /api/v1/appointments/series`,
/// `/api/v1/appointment-series/{id}`): how it repeats; its occurrences are
/// appointments. Not in [`RESOURCES`]: created and changed only as a whole.
pub const APPOINTMENT_SERIES: Resource = Resource {
    name: "appointment-series",
    table: "appointment_series",
    title: "AppointmentSeries",
    search: None,
    access: Access::EVERYONE,
    fields: &[
        Field::new(
            "frequency",
            FieldType::Enum(&["weekly", "monthly"]),
            "Every `every` weeks, or every `every` months on the first occurrence's day of the month (the month's last day when it has no such day).",
        )
        .required(),
        Field::new(
            "every",
            FieldType::Integer { min: 1, max: 52 },
            "The interval, in weeks or months.",
        )
        .default("1"),
        Field::new(
            "count",
            FieldType::Integer { min: 1, max: 260 },
            "How many occurrences (the first included); or give `until`.",
        ),
        Field::new(
            "until",
            FieldType::Date,
            "The last day an occurrence may fall on (clinic time); or give `count`.",
        ),
    ],
    children: &[],
    actions: &[],
};

/// A clinic's webhook subscriptions (`/api/v1/webhook-subscriptions`, admins only):
/// served by handlers of their own (the secret is shown once, deliveries have a
/// state of their own); described here for the audit trail and the document. Not in
/// [`RESOURCES`].
pub const WEBHOOK_SUBSCRIPTIONS: Resource = Resource {
    name: "webhook-subscriptions",
    table: "webhook_subscriptions",
    title: "WebhookSubscription",
    search: None,
    access: Access {
        write: &[Role::Admin],
        delete: &[Role::Admin],
    },
    // Described for key rotation, which re-seals it with every other sealed field.
    fields: &[Field::new(
        "secret",
        FieldType::Text { max_len: 64 },
        "The signing secret's 32 bytes, sealed with the clinic's data key.",
    )
    .sealed()],
    children: &[],
    actions: &[],
};

/// Every event type a webhook subscription may ask for, each written by a
/// trigger in the transaction of the change it announces (clinic migration 018).
pub const WEBHOOK_EVENT_TYPES: &[&str] = &[
    "patient.created",
    "patient.updated",
    "patient.deleted",
    "patient.erased",
    "appointment.booked",
    "appointment.moved",
    "appointment.cancelled",
    "appointment.updated",
    "invoice.issued",
    "invoice.paid",
    "invoice.cancelled",
    "credit_note.issued",
];

const WEEKDAY: FieldType = FieldType::Enum(&[
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
]);

/// Every resource the clinic API serves.
pub const RESOURCES: &[&Resource] = &[
    &PATIENTS,
    &PRACTITIONERS,
    &APPOINTMENTS,
    &DOCUMENTS,
    &CONSENTS,
    &CONSENT_TEMPLATES,
    &PRODUCTS,
    &CATEGORIES,
    &APPOINTMENT_TYPES,
    &WORKING_HOURS,
    &HOURS_EXCEPTIONS,
    &PAYMENTS,
];

/// Every resource with sealed fields: those the API serves, the webhook
/// subscriptions' secrets, and attachments' names, descriptions and content (what
/// key rotation re-seals).
pub fn with_sealed_fields() -> impl Iterator<Item = &'static Resource> {
    RESOURCES
        .iter()
        .copied()
        .chain([&WEBHOOK_SUBSCRIPTIONS, &ATTACHMENTS, &ATTACHMENT_CHUNKS])
        .filter(|r| r.fields.iter().any(|f| f.encrypted))
}

/// The resource served under `/api/v1/{name}`, if any.
pub fn find(name: &str) -> Option<&'static Resource> {
    RESOURCES.iter().copied().find(|r| r.name == name)
}

/// The resource stored in `table`, if any (attachments included).
pub fn by_table(table: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .copied()
        .chain([&ATTACHMENTS])
        .find(|r| r.table == table)
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
                if let (FieldType::Reference(t), false) = (f.ty, f.read_only) {
                    assert!(
                        by_table(t).is_some(),
                        "{}.{} refers to unknown table {t}",
                        r.name,
                        f.name
                    );
                }
                assert!(!(f.required && f.read_only), "{}.{}", r.name, f.name);
            }
            for c in r.children {
                assert!(r.field(c.name).is_none());
            }
        }
        assert!(find("companies").is_none());
        assert_eq!(RESOURCES.len(), 12);
        // The objects that are not collections are served on their own paths.
        for other in [
            &CLINIC_SETTINGS,
            &AVAILABILITY,
            &APPOINTMENT_SERIES,
            &ATTACHMENTS,
            &ATTACHMENT_CHUNKS,
        ] {
            assert!(find(other.name).is_none(), "{}", other.name);
        }
    }
}
