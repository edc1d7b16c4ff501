//! The memory limiter: samples the process's resident memory and tells the receivers to refuse work while it is
//! above the soft limit, as the collector's `memory_limiter` processor does. Refused senders get a retryable error
//! and come back later; the alternative, growing until the kernel kills the process, loses everything in flight.
//!
//! Resident memory is what a container limit counts, so it is what is limited. It only falls after a flood if
//! the allocator gives freed memory back: with glibc's allocator it did not (measured: the process stayed above
//! its limit and refused everything afterwards), so the `ordertrail` binary uses jemalloc with a background thread
//! that returns freed pages within a second (`.cargo/config.toml`).

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
}
