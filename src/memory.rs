//! The memory limiter: samples the process's resident memory and tells the receivers to refuse work while it is
//! above the soft limit, as the collector's `memory_limiter` processor does. Refused senders get a retryable error
//! and come back later; the alternative, growing until the kernel kills the process, loses everything in flight.
//!
//! Resident memory is what a container limit counts, so it is what is limited. It only falls after a flood if
//! the allocator gives freed memory back: with glibc's allocator it did not (measured: the process stayed above
//! its limit and refused everything afterwards), so the `ordertrail` binary uses jemalloc with a background thread
//! that returns freed pages within a second (`.cargo/config.toml`).

use ordertrail_core::config::PipelineConfig;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often resident memory is sampled: short enough to catch a flood before it doubles memory.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug)]
pub struct MemoryLimiter {
    soft_limit: u64,
    in_use: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

/// Resident memory of this process in bytes, from `VmRSS` in `/proc/self/status` (in kB there, so the page
/// size does not matter); `None` where that file does not exist.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl MemoryLimiter {
    /// Starts sampling on a thread of its own, so that a busy async runtime cannot delay the measurement.
    pub fn start(soft_limit: u64) -> MemoryLimiter {
        let in_use = Arc::new(AtomicU64::new(resident_bytes().unwrap_or(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (sample, stopped) = (in_use.clone(), stop.clone());
        let spawned = std::thread::Builder::new().name("ordertrail-memory".into()).spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if let Some(bytes) = resident_bytes() {
                    sample.store(bytes, Ordering::Relaxed);
                }
                std::thread::sleep(SAMPLE_INTERVAL);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "memory limiter could not start; memory is not limited");
        }
        MemoryLimiter { soft_limit, in_use, stop }
    }

    pub fn over_limit(&self) -> bool {
        self.in_use.load(Ordering::Relaxed) > self.soft_limit
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Stack of every thread that decodes, processes or encodes spans (the runtime's and the engine's): decoding,
/// cloning and encoding recurse once per level of a nested attribute value, and the receivers accept 128 levels
/// (`MAX_VALUE_DEPTH`); this leaves room for them several times over.
pub const THREAD_STACK_BYTES: usize = 8 * 1024 * 1024;

/// The memory bounds in force, resolved from the configuration and the container's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBounds {
    /// The limit resident memory is held under, if any.
    pub limit: Option<u64>,
    /// Refuse requests while resident memory is above this.
    pub soft_limit: Option<u64>,
    /// The admission budget for requests in flight.
    pub admission: u64,
    /// Where the limit came from: `configured`, `cgroup` or `none`.
    pub source: &'static str,
}

const MIB: u64 = 1024 * 1024;
/// The admission budget without any memory limit.
const UNLIMITED_ADMISSION: u64 = 256 * MIB;

impl MemoryBounds {
    /// The configured limit, else 80 % of the container's (the collector's `limit_percentage` guidance, leaving
    /// room for what the process does not count, such as the kernel's page cache of the store), else none. The
    /// spike headroom defaults to a fifth of the limit, the admission budget to a quarter of it.
    pub fn resolve(config: &PipelineConfig, container_limit: Option<u64>) -> MemoryBounds {
        let (limit, source) = match (config.memory_limit, container_limit) {
            (Some(limit), _) => (Some(limit), "configured"),
            (None, Some(container)) => (Some(container / 5 * 4), "cgroup"),
            (None, None) => (None, "none"),
        };
        let soft_limit = limit.map(|limit| limit - config.memory_spike.unwrap_or(limit / 5).min(limit));
        let admission =
            config.admission_limit.unwrap_or_else(|| limit.map_or(UNLIMITED_ADMISSION, |l| (l / 4).max(8 * MIB)));
        MemoryBounds { limit, soft_limit, admission, source }
    }
}

/// The memory limit of this process's cgroup (v2 `memory.max`, else v1 `memory.limit_in_bytes`), if it has one.
pub fn container_limit() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // v2: one line `0::/path`.
    if let Some(path) = cgroup.lines().find_map(|l| l.strip_prefix("0::")) {
        let file = format!("/sys/fs/cgroup{}/memory.max", path.trim_end_matches('/'));
        let value = std::fs::read_to_string(&file).or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/memory.max"));
        if let Ok(value) = value {
            return parse_limit(&value);
        }
    }
    let v1 = std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok()?;
    parse_limit(&v1)
}

/// A cgroup limit file's value; `max`, and v1's "no limit" (a page-rounded `i64::MAX`), are no limit.
fn parse_limit(value: &str) -> Option<u64> {
    let bytes: u64 = value.trim().parse().ok()?;
    (bytes < 1 << 60).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary's allocator, so that this test sees what the service sees.
    #[global_allocator]
    static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

    /// Bytes of heap allocated and not yet freed, from jemalloc's statistics.
    fn heap_in_use() -> Option<u64> {
        tikv_jemalloc_ctl::epoch::advance().ok()?;
        tikv_jemalloc_ctl::stats::allocated::read().ok().map(|b| b as u64)
    }

    #[test]
    fn the_heap_in_use_follows_allocation_and_freeing() {
        let before = heap_in_use().expect("jemalloc statistics");
        let block = vec![1u8; 64 * 1024 * 1024];
        let during = heap_in_use().unwrap();
        assert!(during >= before + 60 * 1024 * 1024, "{before} -> {during}");
        drop(block);
        let after = heap_in_use().unwrap();
        assert!(after < during - 60 * 1024 * 1024, "freed memory no longer counts: {during} -> {after}");
        assert!(resident_bytes().expect("linux /proc") > 1024 * 1024);
        assert!(MemoryLimiter::start(1024).over_limit());
        assert!(!MemoryLimiter::start(u64::MAX).over_limit());
    }

    #[test]
    fn bounds_come_from_the_configuration_else_the_container_else_none() {
        let config = |limit: Option<u64>, admission: Option<u64>| PipelineConfig {
            queue_size: 1,
            max_group_commit: 1,
            memory_limit: limit.map(|m| m * MIB),
            memory_spike: None,
            admission_limit: admission.map(|m| m * MIB),
        };
        let container = Some(1024 * MIB);
        let from_container = MemoryBounds::resolve(&config(None, None), container);
        assert_eq!(from_container.source, "cgroup");
        assert_eq!(from_container.limit, Some(1024 * MIB / 5 * 4));
        assert_eq!(from_container.admission, from_container.limit.unwrap() / 4);
        assert!(from_container.soft_limit.unwrap() < from_container.limit.unwrap());
        let configured = MemoryBounds::resolve(&config(Some(512), Some(64)), container);
        assert_eq!(
            (configured.source, configured.limit, configured.admission),
            ("configured", Some(512 * MIB), 64 * MIB)
        );
        let none = MemoryBounds::resolve(&config(None, None), None);
        assert_eq!((none.limit, none.soft_limit, none.admission), (None, None, UNLIMITED_ADMISSION));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("536870912\n"), Some(512 * MIB));
    }
}
