//! What the ops console's first pages show: the flow of open orders over the main-path milestones (per stage the
//! open orders, how many are at risk, breached or blocked, and their exception classes), and the stalled and
//! breached orders, most overdue first, with who owns the next action and why it is stuck.

use super::order_view::{deadline_text, next_action};
use super::NextAction;
use crate::config::Config;
use crate::ids::order_trace_id;
use crate::order::progress::{blocking_exception, stage_and_next};
use crate::order::{OrderRecord, OrderSlaStatus, OrderStatus};
use crate::time::{millis, rfc3339};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The stage of orders before their first main-path milestone, as the order list's `stage` filter names it.
pub const NO_STAGE: &str = "none";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FlowView {
    /// `none` first, then the main-path milestones in the taxonomy's order.
    pub stages: Vec<StageView>,
    pub open_orders: u64,
    /// The teams that own a milestone or an exception class: the console's team queues.
    pub teams: Vec<String>,
    /// The exception classes in the taxonomy's order, with the team that owns each.
    pub exception_classes: Vec<ClassView>,
    /// The share of a clock's time after which its order counts as at risk while the delay model knows too
    /// little of its target (`sla.at_risk_share`).
    pub at_risk_share: f64,
    /// The breach probability at which the delay model puts an order at risk (`sla.risk.threshold`).
    pub risk_threshold: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageView {
    /// The furthest main-path milestone the stage's orders reached (`none`: not yet the first).
    pub stage: String,
    /// Who owns the milestone; empty for `none`.
    pub owner: String,
    pub open: u64,
    /// Open orders with a running clock found at risk (see [`at_risk`]), not yet breached.
    pub at_risk: u64,
    /// Open orders with a clock whose deadline passed without its milestone.
    pub breached: u64,
    /// Open orders whose awaited milestone an open exception blocks.
    pub blocked: u64,
    /// Open orders per class of their open exceptions (an order with two classes counts in both).
    pub exceptions: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassView {
    pub class: String,
    pub owner: String,
}

/// Whether a running clock of `order` was found at risk and its deadline has not passed. The engine judges each
/// clock at its risk point (by the delay model, or the fixed share while the model knows too little) and marks it
/// once (`SlaState::at_risk_at_unix_nanos`); the console shows that mark, so that it and the team's notification
/// always agree.
pub fn at_risk(order: &OrderRecord, now: u64) -> bool {
    order.slas.iter().any(|s| {
        s.is_running()
            && s.deadline_unix_nanos != u64::MAX
            && now < s.deadline_unix_nanos
            && s.at_risk_at_unix_nanos.is_some()
    })
}

/// The flow of the open orders over the stages.
pub fn flow<'a>(config: &Config, orders: impl Iterator<Item = &'a OrderRecord>, now: u64) -> FlowView {
    let taxonomy = &config.taxonomy;
    let mut stages: Vec<StageView> = std::iter::once((NO_STAGE, ""))
        .chain(taxonomy.milestones.iter().filter(|m| !m.off_path).map(|m| (m.name.as_str(), m.owner.as_str())))
        .map(|(stage, owner)| StageView {
            stage: stage.to_string(),
            owner: owner.to_string(),
            open: 0,
            at_risk: 0,
            breached: 0,
            blocked: 0,
            exceptions: BTreeMap::new(),
        })
        .collect();
    let position: BTreeMap<String, usize> = stages.iter().enumerate().map(|(i, s)| (s.stage.clone(), i)).collect();
    let mut open_orders = 0;
    for order in orders.filter(|o| o.status() == OrderStatus::Open) {
        open_orders += 1;
        let stage = stage_and_next(taxonomy, order).0.map_or(NO_STAGE, |m| m.name.as_str());
        let Some(&index) = position.get(stage) else { continue };
        let view = &mut stages[index];
        view.open += 1;
        if order.sla_status(now) == OrderSlaStatus::Breached {
            view.breached += 1;
        } else if at_risk(order, now) {
            view.at_risk += 1;
        }
        if next_action(config, order, now).is_some_and(|n| n.blocked_by.is_some()) {
            view.blocked += 1;
        }
        let classes: BTreeSet<&str> = order.open_exceptions().map(|e| e.class.as_str()).collect();
        for class in classes {
            *view.exceptions.entry(class.to_string()).or_default() += 1;
        }
    }
    let teams: BTreeSet<String> = taxonomy
        .milestones
        .iter()
        .map(|m| m.owner.clone())
        .chain(taxonomy.classes.iter().map(|c| c.owner.clone()))
        .filter(|t| !t.is_empty())
        .collect();
    FlowView {
        stages,
        open_orders,
        teams: teams.into_iter().collect(),
        exception_classes: taxonomy
            .classes
            .iter()
            .map(|c| ClassView { class: c.name.clone(), owner: c.owner.clone() })
            .collect(),
        at_risk_share: config.sla.at_risk_share,
        risk_threshold: config.sla.risk.threshold,
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StalledOrders {
    /// The most overdue first.
    pub orders: Vec<StalledOrder>,
    /// How many open orders are stalled, of which `orders` lists the first.
    pub total: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StalledOrder {
    pub order_id: String,
    pub trace_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The awaited milestone, its owner, deadline and blocker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<NextAction>,
    /// Who owns the next action: the blocker's owner, the awaited milestone's, or the owner of the milestone
    /// whose clock breached.
    pub owner: String,
    /// Why it is stuck, in words.
    pub reason: String,
    /// Since when it is stuck: the earliest passed deadline, or when the blocking exception was first seen.
    pub stuck_since: String,
    /// How long since then, in milliseconds; the list is sorted by it.
    pub overdue_ms: u64,
    pub sla_status: OrderSlaStatus,
    pub exception_classes: Vec<String>,
    pub dimensions: BTreeMap<String, String>,
    pub last_seen: String,
}

/// Open orders that are stuck: a deadline passed without its milestone, or an open exception blocks the
/// awaited milestone. The `limit` most overdue, of `total`. `owner` keeps only those whose next action a team
/// owns.
pub fn stalled<'a>(
    config: &Config,
    orders: impl Iterator<Item = &'a OrderRecord>,
    owner: Option<&str>,
    limit: usize,
    now: u64,
) -> StalledOrders {
    let mut stuck: Vec<(u64, &OrderRecord, StalledOrder)> = orders
        .filter(|o| o.status() == OrderStatus::Open)
        .filter_map(|o| stalled_order(config, o, now))
        .filter(|(_, _, s)| owner.is_none_or(|want| s.owner == want))
        .collect();
    let total = stuck.len() as u64;
    let by_overdue = |a: &(u64, &OrderRecord, StalledOrder), b: &(u64, &OrderRecord, StalledOrder)| {
        b.0.cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key))
    };
    if stuck.len() > limit {
        stuck.select_nth_unstable_by(limit, by_overdue);
        stuck.truncate(limit);
    }
    stuck.sort_by(by_overdue);
    StalledOrders { orders: stuck.into_iter().map(|(_, _, s)| s).collect(), total }
}

fn stalled_order<'a>(
    config: &Config,
    order: &'a OrderRecord,
    now: u64,
) -> Option<(u64, &'a OrderRecord, StalledOrder)> {
    let next = next_action(config, order, now);
    // The earliest deadline that passed without its milestone, and the milestone it was for.
    let breach = order
        .slas
        .iter()
        .filter(|s| {
            s.reached_at_unix_nanos.is_none() && s.stopped_at_unix_nanos.is_none() && s.deadline_unix_nanos <= now
        })
        .min_by_key(|s| s.deadline_unix_nanos);
    let blocker = next.as_ref().and_then(|n| blocking_exception(order, &n.milestone));
    let blocked_since = blocker.map(|e| e.first_seen_unix_nanos);
    let since = match (breach.map(|s| s.deadline_unix_nanos), blocked_since) {
        (Some(deadline), Some(blocked)) => deadline.min(blocked),
        (Some(deadline), None) => deadline,
        (None, Some(blocked)) => blocked,
        (None, None) => return None,
    };
    let milestone_owner = |name: &str| {
        config.taxonomy.milestones.iter().find(|m| m.name == name).map(|m| m.owner.clone()).unwrap_or_default()
    };
    let (owner, reason) = match (&blocker, breach) {
        (Some(e), _) => (e.owner.clone(), format!("{} exception: {}", e.class, e.reason)),
        (None, Some(s)) => {
            let owner = next.as_ref().map_or_else(|| milestone_owner(&s.to), |n| n.owner.clone());
            let due = deadline_text(s.deadline_unix_nanos).unwrap_or_default();
            (owner, format!("{} not reached: SLA {} was due {due}", s.to, s.target))
        }
        (None, None) => return None,
    };
    let trace_id = hex::encode(order_trace_id(&order.key));
    let overdue = now.saturating_sub(since);
    let classes: BTreeSet<String> = order.open_exceptions().map(|e| e.class.clone()).collect();
    Some((
        overdue,
        order,
        StalledOrder {
            order_id: order.key.clone(),
            trace_url: config.api.trace_url(&trace_id),
            trace_id,
            stage: stage_and_next(&config.taxonomy, order).0.map(|m| m.name.clone()),
            next,
            owner,
            reason,
            stuck_since: rfc3339(since),
            overdue_ms: millis(overdue),
            sla_status: order.sla_status(now),
            exception_classes: classes.into_iter().collect(),
            dimensions: order.dimensions.clone(),
            last_seen: rfc3339(order.last_seen_unix_nanos),
        },
    ))
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchResult {
    pub query: String,
    pub matches: Vec<SearchMatch>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchMatch {
    pub order_id: String,
    /// `order` when the text is the order's key, else the alias kind that led to it (`shipment`, `invoice`, …).
    pub via: String,
    /// The alias value, or the order key.
    pub value: String,
}

/// What a search for `text` finds: the order of that key if `is_order`, then the orders each alias kind names
/// for that value, each order once.
pub fn search(text: &str, is_order: bool, by_alias: &[(&str, &[String])]) -> SearchResult {
    let mut matches: Vec<SearchMatch> = Vec::new();
    if is_order {
        matches.push(SearchMatch { order_id: text.to_string(), via: "order".into(), value: text.to_string() });
    }
    for (kind, orders) in by_alias {
        for order in orders.iter() {
            if !matches.iter().any(|m| &m.order_id == order) {
                matches.push(SearchMatch { order_id: order.clone(), via: kind.to_string(), value: text.to_string() });
            }
        }
    }
    SearchResult { query: text.to_string(), matches }
}
