//! RFC 9457 problem details: the one shape every error response takes.
//!
//! Each crate keeps its own error enum and maps every variant explicitly to a
//! [`Problem`]; the text a client sees is chosen there, apart from what is logged.

use serde::Serialize;

/// The media type of every error body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem+json body. `type` is a stable URN per kind of problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Seconds after which a retry may succeed (mirrored in the `retry-after` header).
    #[serde(skip)]
    pub retry_after: Option<u32>,
    /// Extension members of this kind of problem (RFC 9457 §3.2), e.g. the
    /// `conflicts` of a refused series of bookings.
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// `slug` names the kind of problem (`urn:medicalpro:problem:<slug>`).
    pub fn new(status: u16, slug: &str, title: &str) -> Self {
        Self {
            kind: format!("urn:medicalpro:problem:{slug}"),
            title: title.to_owned(),
            status,
            detail: None,
            retry_after: None,
            extensions: serde_json::Map::new(),
        }
    }

    /// Adds an extension member.
    pub fn with_extension(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(name.to_owned(), value);
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn not_found() -> Self {
        Self::new(404, "not-found", "Not found")
            .with_detail("No such resource exists in your clinic.")
    }

    pub fn unauthorized(detail: &str) -> Self {
        Self::new(401, "unauthorized", "Authentication required").with_detail(detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, "bad-request", "Bad request").with_detail(detail)
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(413, "payload-too-large", "Request body too large")
            .with_detail(format!("The request body must not exceed {limit} bytes."))
    }

    pub fn unavailable(detail: &str, retry_after: u32) -> Self {
        Self::new(503, "unavailable", "Service temporarily unavailable")
            .with_detail(detail)
            .with_retry_after(retry_after)
    }

    pub fn internal() -> Self {
        Self::new(500, "internal", "Internal error")
            .with_detail("The request failed on our side; it has been logged.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_rfc9457_members() {
        let p = Problem::not_found();
        let v: serde_json::Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["type"], "urn:medicalpro:problem:not-found");
        assert_eq!(v["status"], 404);
        assert_eq!(v["title"], "Not found");
        assert!(v.get("retry_after").is_none());
    }
}
