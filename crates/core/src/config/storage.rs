//! `storage` and `pipeline`: where the durable state lives, how hard a commit tries to reach the disk, and the
//! bounds of the in-process pipeline between receivers and the engine.

use super::check::{Checker, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
}

impl Default for RawStorage {
    fn default() -> RawStorage {
        RawStorage { directory: "./ordertrail-data".into(), durability: "durable".into(), cache_size_mib: 64 }
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
}

impl Default for RawPipeline {
    fn default() -> RawPipeline {
        RawPipeline { queue_size: 256, max_group_commit: 64, memory_limit_mib: None, memory_spike_limit_mib: None }
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
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub queue_size: usize,
    pub max_group_commit: usize,
    /// Refuse requests while resident memory is above this many bytes.
    pub memory_soft_limit: Option<u64>,
}

impl RawStorage {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<StorageConfig, ConfigError> {
        let durability = match self.durability.as_str() {
            "durable" => Durability::Durable,
            "memory" => Durability::Memory,
            other => return Err(check.err("storage.durability", format!("`{other}` is not one of durable, memory"))),
        };
        let cache_mib = check.positive("storage.cache_size_mib", self.cache_size_mib)?;
        Ok(StorageConfig {
            directory: PathBuf::from(&self.directory),
            durability,
            cache_bytes: check.mib("storage.cache_size_mib", u64::try_from(cache_mib).unwrap_or(u64::MAX))?,
        })
    }
}

impl RawPipeline {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<PipelineConfig, ConfigError> {
        let memory_soft_limit = match self.memory_limit_mib {
            None => None,
            Some(limit) if limit < 64 => {
                return Err(check.err("pipeline.memory_limit_mib", "must be at least 64 MiB"));
            }
            Some(limit) => {
                let spike = self.memory_spike_limit_mib.unwrap_or(limit / 5);
                if spike >= limit {
                    return Err(check.err("pipeline.memory_spike_limit_mib", "must be below memory_limit_mib"));
                }
                Some((limit - spike).saturating_mul(1024 * 1024))
            }
        };
        Ok(PipelineConfig {
            queue_size: check.positive("pipeline.queue_size", self.queue_size)?,
            max_group_commit: check.positive("pipeline.max_group_commit", self.max_group_commit)?,
            memory_soft_limit,
        })
    }
}
