//! TLS and authentication of the listeners, with the OpenTelemetry Collector's names: a `tls` section as its
//! server TLS settings (`cert_file`, `key_file`, `client_ca_file`, `min_version`, `reload_interval`), and an
//! `auth` section as its `bearertokenauth` extension (a token from a file or from the environment). The service
//! reads the files; this module only checks that the settings make sense and names the key when they do not.

use super::check::{Checker, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// TLS of a listener; plain text when the section is absent.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawServerTls {
    /// PEM certificate chain the listener presents, leaf first.
    pub cert_file: Option<String>,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<String>,
    /// PEM CA certificates: when given, a client must present a certificate signed by one of them (mutual TLS),
    /// or its connection is refused in the handshake.
    pub client_ca_file: Option<String>,
    /// Lowest TLS version accepted: `1.2` or `1.3` (quoted or not: YAML reads `1.3` as a number).
    #[serde(deserialize_with = "version_text")]
    pub min_version: String,
    /// How often the files are looked at; changed files are loaded for new connections (certificate rotation
    /// without a restart). `0s` loads them once.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for RawServerTls {
    fn default() -> RawServerTls {
        RawServerTls {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            min_version: "1.2".into(),
            reload_interval: Duration::from_secs(10),
        }
    }
}

/// A version written as text (`"1.3"`) or as the number YAML makes of `1.3`.
fn version_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Number(f64),
    }
    Ok(match Written::deserialize(deserializer)? {
        Written::Text(text) => text,
        Written::Number(number) => format!("{number:.1}"),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// Checked listener TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    /// `None` loads the files once.
    pub reload_interval: Option<Duration>,
}

impl RawServerTls {
    pub(crate) fn check(&self, check: &Checker<'_>, key: &str) -> Result<ServerTlsConfig, ConfigError> {
        let file = |field: &str, value: &Option<String>, required: bool| -> Result<Option<PathBuf>, ConfigError> {
            match value.as_deref().filter(|v| !v.is_empty()) {
                Some(path) if std::path::Path::new(path).is_file() => Ok(Some(PathBuf::from(path))),
                Some(path) => Err(check.err(format!("{key}.tls.{field}"), format!("file `{path}` does not exist"))),
                None if required => Err(check.err(format!("{key}.tls.{field}"), "is required when `tls` is given")),
                None => Ok(None),
            }
        };
        let cert_file = file("cert_file", &self.cert_file, true)?.unwrap_or_default();
        let key_file = file("key_file", &self.key_file, true)?.unwrap_or_default();
        let client_ca_file = file("client_ca_file", &self.client_ca_file, false)?;
        let min_version = match self.min_version.as_str() {
            "1.2" => TlsVersion::Tls12,
            "1.3" => TlsVersion::Tls13,
            other => {
                return Err(check.err(
                    format!("{key}.tls.min_version"),
                    format!("`{other}` is not one of 1.2, 1.3 (TLS 1.0 and 1.1 are not offered)"),
                ))
            }
        };
        let reload_interval = (!self.reload_interval.is_zero()).then_some(self.reload_interval);
        Ok(ServerTlsConfig { cert_file, key_file, client_ca_file, min_version, reload_interval })
    }
}

/// Bearer-token authentication of a listener, as the collector's `bearertokenauth`: a request must carry
/// `Authorization: Bearer <token>` with one of the tokens. The tokens come from a file (one per line; blank lines
/// and lines starting with `#` are skipped) or from an environment variable, never from this file itself, so
/// that the configuration can be shown and logged.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawAuth {
    pub bearer_token_file: Option<String>,
    pub bearer_token_env: Option<String>,
}

/// Where a listener's tokens come from; the service reads them at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
}

/// Checked authentication: the source of the tokens, and the key it was configured under (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub tokens: TokenSource,
    pub key: String,
}

impl RawAuth {
    pub(crate) fn check(&self, check: &Checker<'_>, key: &str) -> Result<AuthConfig, ConfigError> {
        let file = self.bearer_token_file.as_deref().filter(|v| !v.is_empty());
        let env = self.bearer_token_env.as_deref().filter(|v| !v.is_empty());
        let tokens = match (file, env) {
            (Some(_), Some(_)) => {
                return Err(
                    check.err(format!("{key}.auth"), "give one of bearer_token_file, bearer_token_env, not both")
                )
            }
            (Some(path), None) if std::path::Path::new(path).is_file() => TokenSource::File(PathBuf::from(path)),
            (Some(path), None) => {
                return Err(check.err(format!("{key}.auth.bearer_token_file"), format!("file `{path}` does not exist")))
            }
            (None, Some(name)) => TokenSource::Env(name.to_string()),
            (None, None) => {
                return Err(check.err(format!("{key}.auth"), "needs bearer_token_file or bearer_token_env"));
            }
        };
        Ok(AuthConfig { tokens, key: format!("{key}.auth") })
    }
}

/// Checks an optional `tls` section.
pub(crate) fn server_tls(
    check: &Checker<'_>,
    key: &str,
    raw: &Option<RawServerTls>,
) -> Result<Option<ServerTlsConfig>, ConfigError> {
    raw.as_ref().map(|tls| tls.check(check, key)).transpose()
}

/// Checks an optional `auth` section.
pub(crate) fn auth(check: &Checker<'_>, key: &str, raw: &Option<RawAuth>) -> Result<Option<AuthConfig>, ConfigError> {
    raw.as_ref().map(|auth| auth.check(check, key)).transpose()
}
