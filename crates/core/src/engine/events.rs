//! What happened to orders, as plain data: the pipeline logs these and the metrics layer counts them, so the
//! engine itself neither logs nor touches a metric.

use crate::config::MilestoneId;
use std::collections::BTreeMap;

/// What kind of key went over its cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// An alias of this kind (`shipment`, `invoice`…).
    Alias(String),
    /// A technical trace (its id in hex is the value).
    Trace,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A milestone was reached for the first time.
    MilestoneReached {
        order: String,
        milestone: MilestoneId,
        /// The main-path milestone reached most recently before it, if any.
        previous: Option<MilestoneId>,
        /// Time since `previous` was reached, or since the order's first span (source clock).
        duration_nanos: u64,
        dimensions: BTreeMap<String, String>,
    },
    /// An exception was recorded, new or repeated.
    ExceptionRecorded {
        order: String,
        class: String,
        owner: String,
        milestone: Option<String>,
        signature: String,
        reason: String,
        /// The system (`service.name`) that reported it; ordertrail's own service name for its findings.
        system: String,
        /// When it happened, by the span's own clock (a finding: when ordertrail found it).
        at_unix_nanos: u64,
        dimensions: BTreeMap<String, String>,
        /// The order had no exception of this class, milestone and pattern before: it was opened, not repeated.
        opened: bool,
    },
    /// An SLA target's deadline passed without its milestone; reported once per order and target.
    SlaBreached {
        order: String,
        /// Index into `config.sla.targets`.
        target: usize,
        deadline_unix_nanos: u64,
        detected_unix_nanos: u64,
        owner: String,
        dimensions: BTreeMap<String, String>,
    },
    /// A running clock reached its risk point without its milestone: the delay model puts its breach probability
    /// at `sla.risk.threshold` or above (or, while the model knows too little, it used `sla.at_risk_share` of its
    /// time); reported once per order and target, before the deadline.
    SlaAtRisk {
        order: String,
        /// Index into `config.sla.targets`.
        target: usize,
        deadline_unix_nanos: u64,
        /// Who owns the awaited milestone.
        owner: String,
        /// The model's breach probability; `None` on the fixed share.
        probability: Option<f64>,
        basis: crate::insight::delay::RiskBasis,
        /// The milestone had arrived already (reached after the risk point): recorded, not told to anyone.
        settled: bool,
        dimensions: BTreeMap<String, String>,
    },
    /// An SLA target's milestone arrived, in time or late.
    SlaSettled {
        order: String,
        target: usize,
        /// From the `from` milestone to the `to` milestone (source clock): the KPI value.
        duration_nanos: u64,
        /// How late it arrived; `None` when in time.
        lateness_nanos: Option<u64>,
        dimensions: BTreeMap<String, String>,
    },
    /// A breach was taken back: a span that arrived after it showed the milestone was reached in time.
    SlaWithdrawn { order: String, target: usize, dimensions: BTreeMap<String, String> },
    /// A conformance finding was taken back: the milestones it missed arrived later, with earlier times.
    FindingWithdrawn { order: String, signature: String, reason: String },
    /// An alias value or a technical trace came to name more orders than its cap allows: from now on it names
    /// none. Reported once per alias value; once per technical trace while it is remembered (`trace_memory`
    /// after it was first seen), so a batch job running longer is reported again.
    KeyOverCap { kind: KeyKind, value: String, cap: usize },
    /// A new recurring exception pattern, or a pattern whose rate jumped (`patterns`).
    Pattern(crate::insight::patterns::PatternEvent),
    /// An order closed and its closing span was emitted.
    OrderClosed { order: String, reason: String, fill_ratio: Option<f64>, dimensions: BTreeMap<String, String> },
}
