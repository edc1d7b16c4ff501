//! The durable state of an order: what the engine knows about it, and what the store persists.
//!
//! Milestones and exception classes are stored by name, not by their index in the configuration, so that a
//! taxonomy edit between restarts cannot silently re-label what was recorded before.

use super::status::SlaStatus;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One order as the engine and the store know it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRecord {
    pub key: String,
    /// Earliest start time of any span of the order (Unix nanoseconds, source clock).
    pub first_seen_unix_nanos: u64,
    /// Latest end time of any span of the order (Unix nanoseconds, source clock).
    pub last_seen_unix_nanos: u64,
    /// When ordertrail last received a span of the order (Unix nanoseconds, ordertrail's clock); drives idle close.
    pub last_activity_unix_nanos: u64,
    /// Spans correlated to the order.
    pub span_count: u64,
    /// Milestones the order has worked on or reached, in the order they were first touched.
    pub milestones: Vec<MilestoneState>,
    /// Exceptions recorded on the order.
    pub exceptions: Vec<ExceptionState>,
    /// When the order was closed and its root span emitted (ordertrail's clock).
    pub closed_at_unix_nanos: Option<u64>,
    /// Why it was closed: `milestone:<name>` or `idle`.
    pub close_reason: Option<String>,
    /// Values of the configured dimensions (customer, segment, warehouse…): the value of the span that started
    /// first wins, whatever order spans arrive in.
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// Start time of the span each dimension value came from (source clock); values recorded before this was kept
    /// count as the earliest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dimension_since: BTreeMap<String, u64>,
    /// SLA clocks started for the order, one per target whose `from` milestone was reached.
    #[serde(default)]
    pub slas: Vec<SlaState>,
    /// Quantity ordered, the value of the span that ended last.
    #[serde(default)]
    pub ordered_quantity: Option<f64>,
    /// End time of the span that reported `ordered_quantity` (source clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered_quantity_at: Option<u64>,
    /// Whether the root span `order <key>` was emitted; it is emitted when the order is first seen, so that its
    /// trace is a whole tree while it is open. Orders closed before this was kept emitted theirs at close.
    #[serde(default)]
    pub root_emitted: bool,
    /// Cumulative quantity shipped, the largest value a span reported.
    #[serde(default)]
    pub shipped_quantity: Option<f64>,
    /// How many commits to a store shared by replicas wrote this record before it was read (0: none, a new
    /// order). The store keeps it beside the record and refuses a write whose copy another replica has changed
    /// since; after a commit the engine counts it up (`Engine::committed`). A store with one writer ignores it.
    #[serde(skip)]
    pub revision: u64,
}

impl OrderRecord {
    pub fn new(key: String) -> OrderRecord {
        OrderRecord {
            key,
            first_seen_unix_nanos: 0,
            last_seen_unix_nanos: 0,
            last_activity_unix_nanos: 0,
            span_count: 0,
            milestones: Vec::new(),
            exceptions: Vec::new(),
            closed_at_unix_nanos: None,
            close_reason: None,
            dimensions: BTreeMap::new(),
            dimension_since: BTreeMap::new(),
            slas: Vec::new(),
            ordered_quantity: None,
            ordered_quantity_at: None,
            root_emitted: false,
            shipped_quantity: None,
            revision: 0,
        }
    }

    pub fn milestone(&self, name: &str) -> Option<&MilestoneState> {
        self.milestones.iter().find(|m| m.name == name)
    }

    pub fn is_closed(&self) -> bool {
        self.closed_at_unix_nanos.is_some()
    }

    pub fn sla(&self, target: &str) -> Option<&SlaState> {
        self.slas.iter().find(|s| s.target == target)
    }

    /// Shipped over ordered quantity, when both are known and something was ordered.
    pub fn fill_ratio(&self) -> Option<f64> {
        match (self.ordered_quantity, self.shipped_quantity) {
            (Some(ordered), Some(shipped)) if ordered > 0.0 => Some((shipped / ordered).clamp(0.0, 1.0)),
            _ => None,
        }
    }

    pub fn open_exceptions(&self) -> impl Iterator<Item = &ExceptionState> {
        self.exceptions.iter().filter(|e| e.resolved_at_unix_nanos.is_none())
    }
}

/// A milestone of one order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MilestoneState {
    pub name: String,
    /// Start of the first span that worked on the milestone (source clock).
    pub first_work_unix_nanos: u64,
    /// Spans that worked on or reached the milestone.
    pub span_count: u64,
    /// Set once the milestone is reached; never overwritten, so a replayed span cannot move it.
    pub reached: Option<Reach>,
    /// Whether the milestone span was emitted; it is emitted at most once.
    pub span_emitted: bool,
}

/// How a milestone was reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reach {
    /// End time of the span that reached it (source clock).
    pub at_unix_nanos: u64,
    /// The technical span that reached it (hex ids).
    pub trace_id: String,
    pub span_id: String,
    /// `service.name` of the system that reached it.
    pub service: String,
    /// The person or system that acted, when a span says so.
    pub actor: Option<String>,
}

/// An exception recorded on an order; repeated occurrences of the same exception increase `count`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExceptionState {
    /// Class name: `data_quality`, `policy`, `integration`, `execution`.
    pub class: String,
    pub owner: String,
    /// Milestone it concerns, when known.
    pub milestone: Option<String>,
    /// What identifies repeats: the rule name, or `default:<class>`, or `finding:<attribute>`.
    pub signature: String,
    /// Human-readable reason: span status message, rule name or finding.
    pub reason: String,
    pub first_seen_unix_nanos: u64,
    pub last_seen_unix_nanos: u64,
    pub count: u64,
    /// The latest technical span showing it (hex ids), and who acted.
    pub trace_id: String,
    pub span_id: String,
    pub service: String,
    pub actor: Option<String>,
    /// Set when the milestone it concerns is later reached.
    pub resolved_at_unix_nanos: Option<u64>,
}

/// A learned alias: `kind`/`value` (e.g. `shipment`/`SH-7`) leads to these orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub kind: String,
    pub value: String,
    /// Empty when `over_cap`.
    pub orders: Vec<String>,
    /// The value named more orders than `correlation.max_orders_per_alias`, so it is no alias.
    pub over_cap: bool,
}

/// One SLA clock of an order: started when `from` was reached, settled when `to` is reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlaState {
    /// Target name from the configuration.
    pub target: String,
    pub from: String,
    pub to: String,
    /// When `from` was reached (source clock): the clock's start.
    pub started_at_unix_nanos: u64,
    /// When `to` is due; a business calendar may put it days after the start.
    pub deadline_unix_nanos: u64,
    /// The allowance that applied (working time when a calendar applied).
    pub allowed_nanos: u64,
    /// When ordertrail detected the breach (its own clock); set at most once, which is what makes a breach
    /// reported exactly once across restarts.
    pub breached_at_unix_nanos: Option<u64>,
    /// When `to` was reached (source clock).
    pub reached_at_unix_nanos: Option<u64>,
    /// How late `to` arrived, when it arrived after the deadline.
    pub lateness_nanos: Option<u64>,
    /// Whether the breach span was emitted.
    #[serde(default)]
    pub breach_span_emitted: bool,
    /// When the clock stopped without its milestone because the order closed or was cancelled (ordertrail's
    /// clock); a stopped clock never breaches.
    #[serde(default)]
    pub stopped_at_unix_nanos: Option<u64>,
    /// When a breach was withdrawn (ordertrail's clock): a span that arrived after the breach was declared showed
    /// that `to` was reached in time. The breach span went out and cannot be taken back; a withdrawal span follows
    /// it into the order trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn_at_unix_nanos: Option<u64>,
    /// When ordertrail found the clock at risk (the delay model's breach probability reached `sla.risk.threshold`,
    /// or `sla.at_risk_share` of its time was used while the model knew too little); set at most once, which is
    /// what makes the team told once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk_at_unix_nanos: Option<u64>,
    /// The breach probability the delay model gave when the clock was found at risk; `None` on the fixed share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk_probability: Option<f64>,
    /// What the judgement was based on, in words ("212 past orders with warehouse WH-SOUTH").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_risk_basis: Option<String>,
}

impl SlaState {
    /// Whether the clock still runs: its milestone not reached, not breached, not stopped.
    pub fn is_running(&self) -> bool {
        self.reached_at_unix_nanos.is_none()
            && self.breached_at_unix_nanos.is_none()
            && self.stopped_at_unix_nanos.is_none()
    }

    /// Decided by the source times alone once `to` is reached, so that the order in which spans arrived cannot
    /// make a milestone reached in time late.
    pub fn status(&self) -> SlaStatus {
        match self.reached_at_unix_nanos {
            Some(at) if at <= self.deadline_unix_nanos => SlaStatus::Met,
            Some(_) => SlaStatus::Late,
            None if self.breached_at_unix_nanos.is_some() => SlaStatus::Breached,
            None if self.stopped_at_unix_nanos.is_some() => SlaStatus::Stopped,
            None => SlaStatus::Pending,
        }
    }
}
