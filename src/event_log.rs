//! Log lines for per-order events, sampled. A breach or a conformance finding is an event of one order: its full
//! record is a span in that order's trace and a count in the metrics. The log is for operators watching the
//! process, and one line per order drowned it under load (175,000 conformance warnings, 64 MB in 60 s with a
//! million new orders). So each kind of event is logged one by one up to [`LINES_PER_WINDOW`] times a minute,
//! and what is left over is summed up in one line when the minute is over.

use std::collections::BTreeMap;

/// Lines of one kind logged one by one in a window.
pub const LINES_PER_WINDOW: u64 = 10;
/// The window, in Unix nanoseconds.
const WINDOW: u64 = 60_000_000_000;

/// The kinds of per-order events that are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    SlaBreach,
    SlaBreachWithdrawn,
    FindingWithdrawn,
    ConformanceException,
    OrderAtRisk,
    ExceptionPattern,
}

impl EventKind {
    /// What the summary line calls events of this kind, and where their full record is.
    pub fn summary(self) -> &'static str {
        match self {
            EventKind::SlaBreach => "sla breaches (spans `<milestone> overdue`, ordertrail_sla_breaches_total)",
            EventKind::SlaBreachWithdrawn => {
                "sla breaches withdrawn (spans `… overdue withdrawn`, ordertrail_sla_breaches_withdrawn_total)"
            }
            EventKind::FindingWithdrawn => {
                "conformance findings withdrawn (ordertrail_conformance_findings_withdrawn_total)"
            }
            EventKind::ConformanceException => "conformance exceptions (ordertrail_exceptions_total)",
            EventKind::OrderAtRisk => "orders at risk (spans `<milestone> at risk`, ordertrail_sla_at_risk_total)",
            EventKind::ExceptionPattern => {
                "new or jumping exception patterns (GET /v1/patterns, ordertrail_exception_pattern_events_total)"
            }
        }
    }
}

/// Decides which per-order events get a line of their own.
#[derive(Debug, Default)]
pub struct EventLog {
    window_start: u64,
    /// Per kind: lines logged and events left unlogged in the current window.
    counts: BTreeMap<EventKind, (u64, u64)>,
}

impl EventLog {
    /// Whether an event of `kind` at `now` gets its own line. When a new window begins, the events left unlogged
    /// in the one before are handed to `summarise`, one call per kind.
    pub fn admit(&mut self, kind: EventKind, now: u64, summarise: &mut impl FnMut(EventKind, u64)) -> bool {
        self.roll(now, summarise);
        let (logged, left) = self.counts.entry(kind).or_default();
        if *logged < LINES_PER_WINDOW {
            *logged += 1;
            true
        } else {
            *left += 1;
            false
        }
    }

    /// Closes the window if it is over, summing up what was left unlogged; called on every engine tick, so a
    /// summary comes out even when no new event follows.
    pub fn roll(&mut self, now: u64, summarise: &mut impl FnMut(EventKind, u64)) {
        if now < self.window_start.saturating_add(WINDOW) {
            return;
        }
        for (kind, (_, left)) in std::mem::take(&mut self.counts) {
            if left > 0 {
                summarise(kind, left);
            }
        }
        self.window_start = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_flood_of_events_gives_a_few_lines_and_one_summary_per_kind_and_minute() {
        let mut log = EventLog::default();
        let summaries = std::cell::RefCell::new(Vec::new());
        let mut summarise = |kind, left| summaries.borrow_mut().push((kind, left));
        let start = 1_780_000_000 * SECOND;
        let mut lines = 0;
        for i in 0..175_000u64 {
            let now = start + i * 300_000; // 175,000 events over 52.5 s
            if log.admit(EventKind::ConformanceException, now, &mut summarise) {
                lines += 1;
            }
        }
        for i in 0..5 {
            assert!(log.admit(EventKind::SlaBreach, start + i, &mut summarise), "another kind has lines of its own");
        }
        assert_eq!(lines, LINES_PER_WINDOW);
        log.roll(start + 61 * SECOND, &mut summarise);
        assert_eq!(*summaries.borrow(), [(EventKind::ConformanceException, 175_000 - LINES_PER_WINDOW)]);
        // A new window logs again, and a quiet one sums up nothing.
        assert!(log.admit(EventKind::ConformanceException, start + 62 * SECOND, &mut summarise));
        log.roll(start + 200 * SECOND, &mut summarise);
        assert_eq!(summaries.borrow().len(), 1);
    }
}
