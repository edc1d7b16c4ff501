//! How far an order has come and who holds it up: its stage, the next milestone awaited, the exception blocking
//! it, and its SLA standing. Read by the engine (root spans, stage gauges), the queries and the demo alike, so that
//! "who owns the next action" has one answer everywhere.

use super::record::{ExceptionState, OrderRecord};
use super::status::{ExceptionStatus, MilestoneStatus, OrderSlaStatus, OrderStatus, SlaStatus};
use crate::config::{Milestone, Taxonomy};

impl OrderRecord {
    /// Open until a `close_on` milestone or idleness closed it.
    pub fn status(&self) -> OrderStatus {
        if self.is_closed() {
            OrderStatus::Closed
        } else {
            OrderStatus::Open
        }
    }

    /// When milestone `name` was reached (its span's end, source clock).
    pub fn reached_at(&self, name: &str) -> Option<u64> {
        self.milestone(name).and_then(|m| m.reached.as_ref()).map(|r| r.at_unix_nanos)
    }

    /// Where milestone `name` stands for this order.
    pub fn milestone_status(&self, name: &str) -> MilestoneStatus {
        match self.milestone(name) {
            Some(m) if m.reached.is_some() => MilestoneStatus::Reached,
            Some(_) => MilestoneStatus::InProgress,
            None => MilestoneStatus::Pending,
        }
    }

    /// The worst of the order's SLA clocks at `now`. A deadline that passed before the engine's next check counts
    /// as breached already, so that an answer never lags behind the clock.
    pub fn sla_status(&self, now: u64) -> OrderSlaStatus {
        if self.slas.is_empty() {
            return OrderSlaStatus::None;
        }
        let mut late = false;
        for s in &self.slas {
            match s.status() {
                SlaStatus::Breached => return OrderSlaStatus::Breached,
                SlaStatus::Pending if s.deadline_unix_nanos <= now => return OrderSlaStatus::Breached,
                SlaStatus::Late => late = true,
                _ => {}
            }
        }
        if late {
            OrderSlaStatus::Late
        } else {
            OrderSlaStatus::OnTime
        }
    }
}

impl ExceptionState {
    /// Open until the milestone it concerns is reached or the finding is resolved.
    pub fn status(&self) -> ExceptionStatus {
        if self.resolved_at_unix_nanos.is_some() {
            ExceptionStatus::Resolved
        } else {
            ExceptionStatus::Open
        }
    }
}

/// The furthest main-path milestone reached, and the first main-path milestone after it not yet reached.
pub fn stage_and_next<'t>(
    taxonomy: &'t Taxonomy,
    order: &OrderRecord,
) -> (Option<&'t Milestone>, Option<&'t Milestone>) {
    let is_reached = |name: &str| order.milestone(name).is_some_and(|s| s.reached.is_some());
    let main_path = taxonomy.milestones.iter().filter(|m| !m.off_path);
    let stage = main_path.clone().rfind(|m| is_reached(&m.name));
    let next = match stage {
        Some(stage) => main_path.skip_while(|m| m.name != stage.name).skip(1).find(|m| !is_reached(&m.name)),
        None => main_path.clone().next(),
    };
    (stage, next)
}

/// The oldest open exception on milestone `awaited`, which blocks it and so owns the next action. An SLA breach
/// is a consequence of the block, not its cause, so it never counts.
pub fn blocking_exception<'o>(order: &'o OrderRecord, awaited: &str) -> Option<&'o ExceptionState> {
    order
        .open_exceptions()
        .filter(|e| e.milestone.as_deref() == Some(awaited) && !e.signature.starts_with("sla:"))
        .min_by_key(|e| e.first_seen_unix_nanos)
}

/// Who owns the next action on an order awaiting `next`: the owner of the exception that blocks it, else the
/// milestone's owner.
pub fn next_owner<'a>(order: &'a OrderRecord, next: &'a Milestone) -> &'a str {
    blocking_exception(order, &next.name).map_or(next.owner.as_str(), |b| b.owner.as_str())
}
