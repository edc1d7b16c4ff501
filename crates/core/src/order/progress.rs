//! How far an order has come and who holds it up: its stage, the next milestone awaited, the exception blocking
//! it, and its SLA standing. Read by the engine (root spans, stage gauges), the queries and the demo alike, so that
//! "who owns the next action" has one answer everywhere.

use super::record::{ExceptionState, OrderRecord};
use super::status::{ExceptionStatus, MilestoneStatus, OrderSlaStatus, OrderStatus, SlaStatus};
use crate::config::{clock_playbook, find_playbook, Config, Milestone, Playbook, PlaybookWhen, Situation, Taxonomy};

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

/// The furthest main-path milestone reached, and the first main-path milestone after it that is not reached and is
/// expected: a skippable milestone (a pricing approval that only exceptions need) is expected only once a span
/// worked on it or an exception names it, so that it does not take the next action from the team that really
/// owns it.
pub fn stage_and_next<'t>(
    taxonomy: &'t Taxonomy,
    order: &OrderRecord,
) -> (Option<&'t Milestone>, Option<&'t Milestone>) {
    let is_reached = |name: &str| order.milestone(name).is_some_and(|s| s.reached.is_some());
    let expected = |m: &Milestone| {
        !m.skippable
            || order.milestone(&m.name).is_some()
            || order.open_exceptions().any(|e| e.milestone.as_deref() == Some(m.name.as_str()))
    };
    let main_path = taxonomy.milestones.iter().filter(|m| !m.off_path);
    let stage = main_path.clone().rfind(|m| is_reached(&m.name));
    let after_stage =
        main_path.skip_while(|m| stage.is_some_and(|s| m.name != s.name)).skip(usize::from(stage.is_some()));
    let next = after_stage.filter(|m| !is_reached(&m.name)).find(|m| expected(m));
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

/// The playbook for what an order is in now, if one matches: its open exceptions first (one blocking the awaited
/// milestone before the others, then the newest), as they are the causes; then its breached clocks; then its
/// clocks at risk. The first situation a playbook matches decides, so that an order whose breach an integration
/// failure caused is told to fix the integration, not to chase the breach.
pub fn playbook<'c>(config: &'c Config, order: &OrderRecord, now: u64) -> Option<&'c Playbook> {
    if order.is_closed() {
        return None;
    }
    situation_playbook(config, order, now)
}

/// As [`playbook`], for an order open or closed: what its situation calls for (the closing span of an order
/// closed for idleness says what it was still waiting for).
pub fn situation_playbook<'c>(config: &'c Config, order: &OrderRecord, now: u64) -> Option<&'c Playbook> {
    let playbooks = &config.playbooks;
    if playbooks.is_empty() {
        return None;
    }
    let (_, next) = stage_and_next(&config.taxonomy, order);
    let blocker = next.and_then(|n| blocking_exception(order, &n.name));
    let mut open: Vec<&ExceptionState> = order.open_exceptions().collect();
    open.sort_by_key(|e| {
        let blocks = blocker.is_some_and(|b| std::ptr::eq(b, *e));
        (!blocks, std::cmp::Reverse(e.last_seen_unix_nanos))
    });
    for e in open {
        let s = Situation {
            when: PlaybookWhen::Exception,
            class: Some(&e.class),
            milestone: e.milestone.as_deref(),
            system: Some(&e.service),
            reason: Some(&e.reason),
            dimensions: &order.dimensions,
        };
        if let Some(p) = find_playbook(playbooks, &s) {
            return Some(p);
        }
    }
    let class_of = |target: &str| {
        config.sla.targets.iter().find(|t| t.name == target).map(|t| config.taxonomy.classes[t.class].name.as_str())
    };
    let breached =
        order.slas.iter().filter(|s| s.breached_at_unix_nanos.is_some() && s.withdrawn_at_unix_nanos.is_none());
    for s in breached.filter(|s| s.reached_at_unix_nanos.is_none()) {
        let found = clock_playbook(playbooks, PlaybookWhen::Breached, class_of(&s.target), &s.to, &order.dimensions);
        if found.is_some() {
            return found;
        }
    }
    let at_risk = order
        .slas
        .iter()
        .filter(|s| s.at_risk_at_unix_nanos.is_some() && s.is_running() && now < s.deadline_unix_nanos);
    for s in at_risk {
        let found = clock_playbook(playbooks, PlaybookWhen::AtRisk, class_of(&s.target), &s.to, &order.dimensions);
        if found.is_some() {
            return found;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_config;
    use crate::order::{MilestoneState, Reach};

    fn worked_on(order: &mut OrderRecord, name: &str, reached: bool) {
        order.milestones.push(MilestoneState {
            name: name.into(),
            first_work_unix_nanos: 1,
            span_count: 1,
            reached: reached.then(|| Reach {
                at_unix_nanos: 2,
                trace_id: String::new(),
                span_id: String::new(),
                service: "erp".into(),
                actor: None,
            }),
            span_emitted: false,
        });
    }

    #[test]
    fn a_skippable_milestone_is_next_only_once_something_asks_for_it() {
        let taxonomy = default_config().taxonomy;
        let mut order = OrderRecord::new("SO-1".into());
        assert_eq!(stage_and_next(&taxonomy, &order).1.map(|m| m.name.as_str()), Some("order_capture"));
        worked_on(&mut order, "order_capture", true);
        worked_on(&mut order, "credit_approval", true);
        let (stage, next) = stage_and_next(&taxonomy, &order);
        assert_eq!(stage.map(|m| m.name.as_str()), Some("credit_approval"));
        assert_eq!(next.map(|m| m.name.as_str()), Some("inventory_allocation"), "no pricing exception: not expected");
        // A substitution that needs a price approval makes the approval the next step.
        worked_on(&mut order, "pricing_approval", false);
        assert_eq!(stage_and_next(&taxonomy, &order).1.map(|m| m.name.as_str()), Some("pricing_approval"));
    }
}
