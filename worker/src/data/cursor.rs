//! The one cursor codec: where the next page of a list starts, as an opaque,
//! URL-safe string. Decoded once, where a request's query is parsed; inside the
//! worker a page's cursor travels typed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

/// Where a page starts: after a row, by its id (lists, in creation order), by its
/// place in the order of changes (lists with `updated_since`), or by its place in a
/// search's relevance order (see [`super::search`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Id(Uuid),
    /// After the row `id` last changed at `updated_at` (microseconds since the
    /// Unix epoch): changes come in (`updated_at`, `id`) order.
    Changed {
        updated_at: i64,
        id: Uuid,
    },
    /// After the row `id` whose search key is `key`, among the rows that start
    /// with the term (`rest` false) or that only contain it (`rest` true).
    Search {
        rest: bool,
        key: String,
        id: Uuid,
    },
}

impl Cursor {
    /// URL-safe base64: the id's 16 bytes; the change time's 8 bytes (big-endian
    /// microseconds) and the id's 16; or a JSON array of the search rank (`"0"` or
    /// `"1"`), the search key and the id.
    pub fn encode(&self) -> String {
        match self {
            Cursor::Id(id) => URL_SAFE_NO_PAD.encode(id.as_bytes()),
            Cursor::Changed { updated_at, id } => {
                let mut bytes = updated_at.to_be_bytes().to_vec();
                bytes.extend_from_slice(id.as_bytes());
                URL_SAFE_NO_PAD.encode(bytes)
            }
            Cursor::Search { rest, key, id } => {
                let rank = if *rest { "1" } else { "0" };
                let id = id.to_string();
                let items: [&str; 3] = [rank, key, &id];
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&items).unwrap_or_default())
            }
        }
    }

    /// The cursor `raw` encodes, or `None` if it is none this API returned.
    pub fn decode(raw: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(raw.as_bytes()).ok()?;
        if bytes.len() == 16 {
            return Uuid::from_slice(&bytes).ok().map(Cursor::Id);
        }
        if let Some((time, id)) = bytes.split_first_chunk::<8>().filter(|_| bytes.len() == 24) {
            return Some(Cursor::Changed {
                updated_at: i64::from_be_bytes(*time),
                id: Uuid::from_slice(id).ok()?,
            });
        }
        let [rank, key, id]: [String; 3] = serde_json::from_slice(&bytes).ok()?;
        let rest = match rank.as_str() {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let id = id.parse().ok()?;
        Some(Cursor::Search { rest, key, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let id = Uuid::now_v7();
        for c in [
            Cursor::Id(id),
            Cursor::Changed {
                updated_at: 1_765_012_345_678_901,
                id,
            },
            Cursor::Changed { updated_at: -1, id },
            Cursor::Search {
                rest: false,
                key: "lovelace".into(),
                id,
            },
            Cursor::Search {
                rest: true,
                key: "ada \"the first\"".into(),
                id,
            },
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
        let not_a_rank = format!("[\"2\",\"x\",\"{id}\"]");
        let missing_key = format!("[\"0\",\"{id}\"]");
        for bad in [
            "",
            "!!",
            "AAAA",
            &URL_SAFE_NO_PAD.encode(b"[\"x\"]"),
            &URL_SAFE_NO_PAD.encode(b"[1,2]"),
            &URL_SAFE_NO_PAD.encode(not_a_rank.as_bytes()),
            &URL_SAFE_NO_PAD.encode(missing_key.as_bytes()),
        ] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
