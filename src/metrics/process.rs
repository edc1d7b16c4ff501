//! The `process_*` series every Prometheus exporter publishes (CPU time, memory, file descriptors, start time),
//! read from `/proc` when `/metrics` is scraped, and `ordertrail_build_info`. They are written as exposition text
//! after the registry's own series: they are facts about the process at the moment of the scrape, not values the
//! pipeline keeps.

use std::fmt::Write as _;

/// The kernel's clock ticks per second in `/proc/<pid>/stat`, which Linux fixes at 100 for user space (`USER_HZ`);
/// Prometheus' own process collector assumes the same.
const USER_HZ: f64 = 100.0;

/// One reading of the process's figures; a figure `/proc` did not give is left out.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub threads: Option<u64>,
}

impl ProcessSample {
    /// Reads `/proc/self`; on a system without it, every figure is absent.
    pub fn read() -> ProcessSample {
        let stat = std::fs::read_to_string("/proc/self/stat").ok();
        let status = std::fs::read_to_string("/proc/self/status").ok();
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| boot_time_seconds(&s));
        let mut sample = stat.as_deref().map(|s| from_stat(s, boot_time)).unwrap_or_default();
        if let Some(status) = status.as_deref() {
            sample.resident_bytes = status_kib(status, "VmRSS:").map(|kib| kib * 1024);
            sample.virtual_bytes = status_kib(status, "VmSize:").map(|kib| kib * 1024);
        }
        sample.open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as u64);
        sample.max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| max_open_files(&s));
        sample
    }

    /// The series as exposition text: Prometheus' text format, or OpenMetrics (without its closing `# EOF`).
    pub fn render(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            let Some(value) = value else { return };
            let sample_name = if kind == "counter" { format!("{name}_total") } else { name.to_string() };
            let family_name = if kind == "counter" && !openmetrics { sample_name.as_str() } else { name };
            let _ = writeln!(out, "# HELP {family_name} {help}");
            let _ = writeln!(out, "# TYPE {family_name} {kind}");
            let _ = writeln!(out, "{sample_name} {value}");
        };
        family("process_cpu_seconds", "counter", "Total user and system CPU time spent in seconds.", self.cpu_seconds);
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.map(|b| b as f64),
        );
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes.map(|b| b as f64),
        );
        family("process_open_fds", "gauge", "Number of open file descriptors.", self.open_fds.map(|n| n as f64));
        family("process_max_fds", "gauge", "Maximum number of open file descriptors.", self.max_fds.map(|n| n as f64));
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds,
        );
        family("process_threads", "gauge", "Number of OS threads in the process.", self.threads.map(|n| n as f64));
        let _ = writeln!(out, "# HELP ordertrail_build_info The running ordertrail's version; always 1.");
        let _ = writeln!(out, "# TYPE ordertrail_build_info gauge");
        let _ = writeln!(out, "ordertrail_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
        out
    }
}

/// CPU time, threads and start time from `/proc/self/stat`. The command name (field 2) is in parentheses and may
/// hold spaces or parentheses itself, so fields are counted from the last `)`.
fn from_stat(stat: &str, boot_time: Option<u64>) -> ProcessSample {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return ProcessSample::default() };
    // `rest` starts at field 3 (state); field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let cpu_seconds = field(14).zip(field(15)).map(|(user, system)| (user + system) as f64 / USER_HZ);
    let start_time_seconds = field(22).zip(boot_time).map(|(ticks, boot)| boot as f64 + ticks as f64 / USER_HZ);
    ProcessSample { cpu_seconds, threads: field(20), start_time_seconds, ..ProcessSample::default() }
}

fn boot_time_seconds(proc_stat: &str) -> Option<u64> {
    proc_stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The soft limit on open files from `/proc/self/limits`; `unlimited` is no figure.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_a_command_name_with_spaces_and_parentheses() {
        // Fields 14 and 15 (utime, stime) are 250 and 50 ticks; field 20 (threads) is 7; field 22 (start) 1000.
        let stat = "42 (odd (name) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 123456 789 18446744073709551615";
        let sample = from_stat(stat, Some(1_700_000_000));
        assert_eq!(sample.cpu_seconds, Some(3.0));
        assert_eq!(sample.threads, Some(7));
        assert_eq!(sample.start_time_seconds, Some(1_700_000_010.0));
    }

    #[test]
    fn limits_and_status_are_read_and_unlimited_is_no_figure() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(max_open_files("Max open files            unlimited            unlimited            files\n"), None);
        assert_eq!(status_kib("Name:\tx\nVmRSS:\t  2048 kB\n", "VmRSS:"), Some(2048));
    }

    #[test]
    fn this_process_is_read_and_rendered_in_both_formats() {
        let sample = ProcessSample::read();
        assert!(sample.cpu_seconds.is_some() && sample.resident_bytes.is_some() && sample.open_fds.is_some());
        let text = sample.render(false);
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "), "{text}");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.contains(&format!("ordertrail_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
        let open = sample.render(true);
        assert!(open.contains("# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total "), "{open}");
    }
}
