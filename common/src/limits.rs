//! The sizes the API accepts, in one place: the services check requests against
//! these constants and the OpenAPI document publishes the same ones, so the
//! document cannot promise what the code refuses.

pub use crate::ids::Email;
pub use crate::password::{MAX_LEN as PASSWORD_MAX, MIN_LEN as PASSWORD_MIN};

/// A clinic's name at registration, in characters.
pub const CLINIC_NAME_MAX: usize = 200;
/// An e-mail address, in bytes.
pub const EMAIL_MAX: usize = Email::MAX_LEN;
/// A region's name.
pub const REGION_MAX: usize = 64;
/// An invitation's sign-up code.
pub const INVITE_CODE_MAX: usize = 200;
/// A refresh token as sent back.
pub const REFRESH_TOKEN_MAX: usize = 200;
/// One query-string value (`q`, a filter, a cursor).
pub const QUERY_VALUE_MAX: usize = 200;
