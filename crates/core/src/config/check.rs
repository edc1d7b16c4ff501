//! What every section's check shares: the error type with file, key path and reason, and the checks of values
//! that recur across sections (positive counts, addresses, names, regular expressions and globs).

use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;
use std::net::SocketAddr;

/// A configuration that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid { file: String, key: String, reason: String },
}

/// Builds errors that name the file being checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checker<'a> {
    pub(crate) file: &'a str,
}

impl Checker<'_> {
    pub(crate) fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { file: self.file.to_string(), key: key.into(), reason: reason.into() }
    }

    pub(crate) fn regex(&self, key: String, pattern: &str) -> Result<Regex, ConfigError> {
        Regex::new(pattern).map_err(|e| self.err(key, format!("invalid regular expression: {e}")))
    }

    pub(crate) fn glob(&self, key: String, pattern: &str) -> Result<GlobMatcher, ConfigError> {
        GlobBuilder::new(pattern)
            .case_insensitive(true)
            .literal_separator(false)
            .build()
            .map(|g| g.compile_matcher())
            .map_err(|e| self.err(key, format!("invalid glob: {e}")))
    }

    pub(crate) fn positive(&self, key: &str, value: usize) -> Result<usize, ConfigError> {
        if value == 0 {
            return Err(self.err(key, "must be greater than zero"));
        }
        Ok(value)
    }

    /// A `host:port` listen address; `localhost` is taken as the IPv4 loopback.
    pub(crate) fn socket_addr(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        let normalised = value.strip_prefix("localhost:").map(|port| format!("127.0.0.1:{port}"));
        normalised
            .as_deref()
            .unwrap_or(value)
            .parse()
            .map_err(|e| self.err(key, format!("`{value}` is not a host:port address ({e})")))
    }

    /// A byte count given in MiB, as a `usize` on this platform.
    pub(crate) fn mib(&self, key: &str, mib: u64) -> Result<usize, ConfigError> {
        mib.checked_mul(1024 * 1024)
            .and_then(|bytes| usize::try_from(bytes).ok())
            .ok_or_else(|| self.err(key, format!("{mib} MiB is more than this platform can address")))
    }

    /// A byte count as a `usize` on this platform.
    pub(crate) fn bytes(&self, key: &str, bytes: u64) -> Result<usize, ConfigError> {
        usize::try_from(bytes)
            .map_err(|_| self.err(key, format!("{bytes} bytes is more than this platform can address")))
    }
}

/// Names of milestones, classes, dimensions and targets become metric labels and span attributes: lower snake case.
pub(crate) fn is_snake_name(name: &str) -> bool {
    !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
