//! Where settings come from: the process environment over an optional `KEY=VALUE`
//! file named by `MEDICALPRO_CONFIG` (the environment wins), every name looked up
//! recorded so misspelt settings are reported; the configuration error; `Secret`.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

/// Exit code for a process that refuses its configuration (`EX_CONFIG`-like `EX_USAGE`).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// Names a service process reads from its environment itself, outside any [`Source`]
/// lookup: the settings file (`MEDICALPRO_CONFIG`, [`Source::from_env`]) and logging
/// (`LOG_FORMAT`, `RUST_LOG`: `service::init_tracing`). A deployment may set these
/// besides the names a configuration reads.
pub const PROCESS_ENV: [&str; 3] = ["MEDICALPRO_CONFIG", "LOG_FORMAT", "RUST_LOG"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required but not set")]
    Missing(&'static str),
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("cannot read config file {path}: {reason}")]
    File { path: String, reason: String },
}

/// A value that must never appear in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where settings are read from: the process environment over an optional file.
///
/// Every name looked up is recorded, so [`Source::unread`] can tell which of the
/// names given (by [`Source::from_pairs`] or in the file) no configuration asked
/// for: a misspelt or obsolete setting. Clones share the record.
#[derive(Clone, Debug, Default)]
pub struct Source {
    file: HashMap<String, String>,
    overrides: HashMap<String, String>,
    use_env: bool,
    read: Arc<Mutex<BTreeSet<String>>>,
}

impl Source {
    /// The process environment, over the file named by `MEDICALPRO_CONFIG` if any.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut source = Self {
            use_env: true,
            ..Self::default()
        };
        if let Ok(path) = std::env::var("MEDICALPRO_CONFIG") {
            let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            source.file = parse_file(&text);
        }
        Ok(source)
    }

    /// Only the given pairs (tests and embedded use).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            overrides: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            ..Self::default()
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned());
        if let Some(v) = self.overrides.get(name) {
            return Some(v.clone());
        }
        if self.use_env {
            if let Ok(v) = std::env::var(name) {
                return Some(v);
            }
        }
        self.file.get(name).cloned()
    }

    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::Missing(name))
    }

    pub fn or(&self, name: &'static str, default: &str) -> String {
        self.get(name)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    }

    pub fn parse_or<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.get(name).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: e.to_string(),
            }),
        }
    }

    /// The names given by [`Source::from_pairs`] or in the file that no lookup has
    /// asked for so far, sorted. (The process environment holds far more than
    /// settings, so its names are not counted as given.)
    pub fn unread(&self) -> Vec<String> {
        let read = self.read.lock().unwrap_or_else(PoisonError::into_inner);
        let given: BTreeSet<&String> = self.overrides.keys().chain(self.file.keys()).collect();
        given
            .into_iter()
            .filter(|name| !read.contains(*name))
            .cloned()
            .collect()
    }
}

fn parse_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn file_lines_parse() {
        let m = parse_file("# comment\nA=1\n B = two \nbad line\n");
        assert_eq!(m.get("A").map(String::as_str), Some("1"));
        assert_eq!(m.get("B").map(String::as_str), Some("two"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn unread_names_are_the_given_ones_never_asked_for() {
        let s = Source::from_pairs([("A", "1"), ("B", "2"), ("C", ""), ("TYPO", "x")]);
        assert_eq!(s.unread(), ["A", "B", "C", "TYPO"]);
        assert_eq!(s.required("A").unwrap(), "1");
        assert_eq!(s.parse_or::<u16>("B", 0).unwrap(), 2);
        // An empty value read through a default still counts as read.
        assert_eq!(s.or("C", "dflt"), "dflt");
        // Names looked up but not given are not reported.
        assert_eq!(s.or("MISSING", "m"), "m");
        assert!(s.required("ALSO_MISSING").is_err());
        assert_eq!(s.unread(), ["TYPO"]);
        // A clone shares the record both ways.
        let c = s.clone();
        assert!(c.get("TYPO").is_some());
        assert!(s.unread().is_empty());
    }

    #[test]
    fn file_names_count_as_given() {
        let s = Source {
            file: parse_file("FROM_FILE=1\nREAD=2\n"),
            ..Source::default()
        };
        assert_eq!(s.get("READ").as_deref(), Some("2"));
        assert_eq!(s.unread(), ["FROM_FILE"]);
    }

    #[test]
    fn typed_values_are_checked() {
        let s = Source::from_pairs([("PORT", "x")]);
        assert!(s.parse_or::<u16>("PORT", 1).is_err());
        assert_eq!(s.parse_or::<u16>("OTHER", 7).unwrap(), 7);
        assert!(matches!(
            s.required("NOPE"),
            Err(ConfigError::Missing("NOPE"))
        ));
    }
}
