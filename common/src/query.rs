//! Query strings: `application/x-www-form-urlencoded` pairs, decoded leniently (a
//! malformed escape stays as typed; invalid UTF-8 becomes U+FFFD). The API's own
//! query strings go through [`strict_pairs`]: bounded in size and count, and no
//! parameter given twice, so a client can neither make ambiguous requests nor
//! generate endless statement variants.

/// The longest query string the API reads.
pub const MAX_QUERY_BYTES: usize = 4096;
/// The most parameters one query string may carry.
pub const MAX_PARAMS: usize = 32;

/// Why a query string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("The query string is longer than {MAX_QUERY_BYTES} bytes.")]
    TooLong,
    #[error("The query string has more than {MAX_PARAMS} parameters.")]
    TooMany,
    #[error("`{0}` is given more than once; give each parameter once.")]
    Repeated(String),
}

/// Decodes pairs, refusing an oversized query string, too many parameters, or a
/// parameter given twice.
pub fn strict_pairs(raw: &str) -> Result<Vec<(String, String)>, QueryError> {
    if raw.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong);
    }
    let decoded = pairs(raw);
    if decoded.len() > MAX_PARAMS {
        return Err(QueryError::TooMany);
    }
    let mut seen = std::collections::HashSet::new();
    for (key, _) in &decoded {
        if !seen.insert(key.as_str()) {
            let shown: String = key.chars().filter(|c| !c.is_control()).take(64).collect();
            return Err(QueryError::Repeated(shown));
        }
    }
    Ok(decoded)
}

/// Decodes `application/x-www-form-urlencoded` pairs.
pub fn pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1]).zip(hex(bytes[i + 2])),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some((hi, lo)), _) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_pairs_refuse_repeats_and_excess() {
        assert!(strict_pairs("q=a&limit=5").is_ok());
        assert_eq!(
            strict_pairs("status=a&status=b"),
            Err(QueryError::Repeated("status".into()))
        );
        assert_eq!(
            strict_pairs("q=a&q%3D=b&%71=c"),
            Err(QueryError::Repeated("q".into())),
            "an encoded name is the same name"
        );
        let many: Vec<String> = (0..=MAX_PARAMS).map(|i| format!("p{i}=1")).collect();
        assert_eq!(strict_pairs(&many.join("&")), Err(QueryError::TooMany));
        assert_eq!(
            strict_pairs(&format!("q={}", "a".repeat(MAX_QUERY_BYTES))),
            Err(QueryError::TooLong)
        );
    }

    #[test]
    fn decodes_pairs() {
        assert_eq!(
            pairs("q=Du%20pont&limit=5&flag&a+b=c"),
            vec![
                ("q".to_owned(), "Du pont".to_owned()),
                ("limit".to_owned(), "5".to_owned()),
                ("flag".to_owned(), String::new()),
                ("a b".to_owned(), "c".to_owned()),
            ]
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%4a"), "AJ");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(percent_decode("%zz%"), "%zz%");
    }
}
