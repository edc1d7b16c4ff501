//! `storage` and `pipeline`: where the durable state lives, how hard a commit tries to reach the disk, and the
//! bounds of the in-process pipeline between receivers and the engine.

use super::check::{Checker, ConfigError};
use super::exporter::{RawTls, TlsConfig};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Durable state.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawStorage {
    /// Data directory of the embedded store.
    pub directory: String,
    /// `durable`: a request is acknowledged once its state and the spans to export are on disk, and the export
    /// queue lives on disk. `memory`: faster, but a crash may lose acknowledged spans.
    pub durability: String,
    /// Page cache of the embedded store in MiB; it counts against `pipeline.memory_limit_mib`.
    pub cache_size_mib: usize,
    /// Keep the state in PostgreSQL instead of the embedded store; `directory` and `cache_size_mib` then go unused.
    pub postgres: Option<RawPostgres>,
}

/// A PostgreSQL database for the state. The connection string (which may hold a password) comes from the
/// environment or a file, never from this file, so that the configuration can be shown and logged.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawPostgres {
    /// Environment variable holding the connection string (`host=… user=… dbname=…` or `postgres://…`).
    pub url_env: Option<String>,
    /// File holding the connection string, e.g. a mounted Secret.
    pub url_file: Option<String>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long a statement may run before it fails (and the request with it, retryably).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// TLS to the server, as the exporter's `tls` section: when present, every connection is encrypted and the
    /// server's certificate verified (against `ca_file`, or the system's roots), whatever `sslmode` the
    /// connection string gives. When absent, the connection string decides: `sslmode=require` gets TLS verified
    /// against the system's roots, anything else plain text.
    pub tls: Option<RawTls>,
}

impl Default for RawPostgres {
    fn default() -> RawPostgres {
        RawPostgres {
            url_env: None,
            url_file: None,
            pool_size: 8,
            statement_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// Where the PostgreSQL connection string comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresUrl {
    Env(String),
    File(PathBuf),
}

/// Checked PostgreSQL settings.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub url: PostgresUrl,
    pub pool_size: usize,
    pub statement_timeout: Duration,
    pub tls: PostgresTls,
}

/// Whether the connections to PostgreSQL are encrypted. The connection string is read only at startup (it may
/// come from the environment), so what it says about TLS is checked against this there.
#[derive(Debug, Clone)]
pub enum PostgresTls {
    /// No `tls` section: `sslmode=require` in the connection string gets TLS verified against the system's roots,
    /// any other mode plain text.
    AsConnectionStringSays,
    /// A `tls` section: TLS on every connection, the server's certificate verified; a server that does not offer
    /// TLS is refused rather than spoken to in plain text.
    Required(TlsConfig),
    /// `tls.insecure: true`: plain text; a connection string that requires TLS stops startup.
    Off,
}

impl Default for RawStorage {
    fn default() -> RawStorage {
        RawStorage {
            directory: "./ordertrail-data".into(),
            durability: "durable".into(),
            cache_size_mib: 64,
            postgres: None,
        }
    }
}

/// Pipeline bounds.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawPipeline {
    /// OTLP requests queued for the engine; when full, senders get UNAVAILABLE / 503.
    pub queue_size: usize,
    /// Requests the engine takes together into one state commit.
    pub max_group_commit: usize,
    /// Resident memory, in MiB, above which senders get a retryable error until it falls again, as the
    /// collector's memory limiter; no limit when absent. Set it below the container limit.
    pub memory_limit_mib: Option<u64>,
    /// Headroom below `memory_limit_mib` at which refusing starts; a fifth of the limit when absent.
    pub memory_spike_limit_mib: Option<u64>,
    /// Memory that requests being received and processed may hold at once, in MiB: each is charged for its body
    /// as sent, decompressed and decoded before those are allocated, and refused with a retryable status when
    /// the budget is taken. When absent, a quarter of the memory limit, or 256 MiB without one.
    pub admission_limit_mib: Option<u64>,
}

impl Default for RawPipeline {
    fn default() -> RawPipeline {
        RawPipeline {
            queue_size: 256,
            max_group_commit: 64,
            memory_limit_mib: None,
            memory_spike_limit_mib: None,
            admission_limit_mib: None,
        }
    }
}

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is on disk when it returns (one fsync per group): nothing acknowledged is lost.
    Durable,
    /// Commits reach the disk soon after they return; a crash may lose the last moments. Spans to export wait
    /// in memory instead of on disk.
    Memory,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub directory: PathBuf,
    pub durability: Durability,
    pub cache_bytes: usize,
    /// The state is in PostgreSQL when set, in the embedded store in `directory` otherwise.
    pub postgres: Option<PostgresConfig>,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub queue_size: usize,
    pub max_group_commit: usize,
    /// The configured memory limit in bytes; when absent, the service derives one from its container's.
    pub memory_limit: Option<u64>,
    /// The configured headroom below the limit in bytes; a fifth of the limit when absent.
    pub memory_spike: Option<u64>,
    /// The configured admission budget in bytes; derived from the memory limit when absent.
    pub admission_limit: Option<u64>,
}

impl RawStorage {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<StorageConfig, ConfigError> {
        let durability = match self.durability.as_str() {
            "durable" => Durability::Durable,
            "memory" => Durability::Memory,
            other => return Err(check.err("storage.durability", format!("`{other}` is not one of durable, memory"))),
        };
        let cache_mib = check.positive("storage.cache_size_mib", self.cache_size_mib)?;
        let postgres = match &self.postgres {
            Some(pg) => Some(pg.check(check)?),
            None => None,
        };
        Ok(StorageConfig {
            directory: PathBuf::from(&self.directory),
            durability,
            cache_bytes: check.mib("storage.cache_size_mib", u64::try_from(cache_mib).unwrap_or(u64::MAX))?,
            postgres,
        })
    }
}

impl RawPipeline {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<PipelineConfig, ConfigError> {
        const MIB: u64 = 1024 * 1024;
        match (self.memory_limit_mib, self.memory_spike_limit_mib) {
            (Some(limit), _) if limit < 64 => {
                return Err(check.err("pipeline.memory_limit_mib", "must be at least 64 MiB"));
            }
            (Some(limit), Some(spike)) if spike >= limit => {
                return Err(check.err("pipeline.memory_spike_limit_mib", "must be below memory_limit_mib"));
            }
            _ => {}
        }
        if self.admission_limit_mib.is_some_and(|a| a < 8) {
            return Err(check.err("pipeline.admission_limit_mib", "must be at least 8 MiB"));
        }
        Ok(PipelineConfig {
            queue_size: check.positive("pipeline.queue_size", self.queue_size)?,
            max_group_commit: check.positive("pipeline.max_group_commit", self.max_group_commit)?,
            memory_limit: self.memory_limit_mib.map(|m| m.saturating_mul(MIB)),
            memory_spike: self.memory_spike_limit_mib.map(|m| m.saturating_mul(MIB)),
            admission_limit: self.admission_limit_mib.map(|m| m.saturating_mul(MIB)),
        })
    }
}

impl RawPostgres {
    fn check(&self, check: &Checker<'_>) -> Result<PostgresConfig, ConfigError> {
        let env = self.url_env.as_deref().filter(|v| !v.is_empty());
        let file = self.url_file.as_deref().filter(|v| !v.is_empty());
        let url = match (env, file) {
            (Some(_), Some(_)) => return Err(check.err("storage.postgres", "give one of url_env, url_file, not both")),
            (Some(name), None) => PostgresUrl::Env(name.to_string()),
            (None, Some(path)) if std::path::Path::new(path).is_file() => PostgresUrl::File(PathBuf::from(path)),
            (None, Some(path)) => {
                return Err(check.err("storage.postgres.url_file", format!("file `{path}` does not exist")))
            }
            (None, None) => return Err(check.err("storage.postgres", "needs url_env or url_file")),
        };
        let pool_size = check.positive("storage.postgres.pool_size", self.pool_size)?;
        if self.statement_timeout.is_zero() {
            return Err(check.err("storage.postgres.statement_timeout", "must be greater than zero"));
        }
        let tls = match &self.tls {
            None => PostgresTls::AsConnectionStringSays,
            Some(tls) => match tls.check(check, "storage.postgres.tls", "database server")? {
                Some(verified) => PostgresTls::Required(verified),
                None => PostgresTls::Off,
            },
        };
        Ok(PostgresConfig { url, pool_size, statement_timeout: self.statement_timeout, tls })
    }
}
