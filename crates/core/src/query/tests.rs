//! Query tests over hand-built order records.

use super::*;
use crate::config::default_config;
use crate::order::{ExceptionState, MilestoneState, OrderRecord, Reach, SlaState};
use crate::time::rfc3339;
use std::collections::BTreeSet;

const H: u64 = 3_600_000_000_000;
const T0: u64 = 1_795_000_000_000_000_000;

fn reach(order: &mut OrderRecord, name: &str, at: u64, service: &str) {
    order.milestones.push(MilestoneState {
        name: name.into(),
        first_work_unix_nanos: at,
        span_count: 1,
        reached: Some(Reach {
            at_unix_nanos: at,
            trace_id: "aa".repeat(16),
            span_id: "bb".repeat(8),
            service: service.into(),
            actor: None,
        }),
        span_emitted: true,
    });
}

fn exception(class: &str, owner: &str, milestone: &str, open: bool) -> ExceptionState {
    ExceptionState {
        class: class.into(),
        owner: owner.into(),
        milestone: Some(milestone.into()),
        signature: format!("{class}-{milestone}"),
        reason: "r".into(),
        first_seen_unix_nanos: T0,
        last_seen_unix_nanos: T0,
        count: 2,
        trace_id: "aa".repeat(16),
        span_id: "bb".repeat(8),
        service: "erp".into(),
        actor: None,
        resolved_at_unix_nanos: (!open).then_some(T0 + H),
    }
}

fn order(key: &str, first_seen: u64) -> OrderRecord {
    let mut o = OrderRecord::new(key.into());
    o.first_seen_unix_nanos = first_seen;
    o.last_seen_unix_nanos = first_seen + H;
    o
}

fn stalled() -> OrderRecord {
    let mut o = order("SO-1", T0);
    reach(&mut o, "order_capture", T0, "erp");
    reach(&mut o, "credit_approval", T0 + H, "erp");
    reach(&mut o, "inventory_allocation", T0 + 2 * H, "erp");
    reach(&mut o, "pick_release", T0 + 3 * H, "wms");
    o.dimensions.insert("customer".into(), "C-1".into());
    o.exceptions.push(exception("integration", "integration-team", "shipment_confirmation", true));
    o.slas.push(clock("pick_pack_ship", "pick_release", "shipment_confirmation", T0 + 3 * H, 30 * H));
    o
}

/// A running clock from `from` to `to`, started at `start`, due `allowed` later.
fn clock(target: &str, from: &str, to: &str, start: u64, allowed: u64) -> SlaState {
    SlaState {
        target: target.into(),
        from: from.into(),
        to: to.into(),
        started_at_unix_nanos: start,
        deadline_unix_nanos: start + allowed,
        allowed_nanos: allowed,
        breached_at_unix_nanos: None,
        reached_at_unix_nanos: None,
        lateness_nanos: None,
        breach_span_emitted: false,
        stopped_at_unix_nanos: None,
        withdrawn_at_unix_nanos: None,
        at_risk_at_unix_nanos: None,
        at_risk_probability: None,
        at_risk_basis: None,
    }
}

#[test]
fn the_timeline_names_stage_next_owner_deadline_and_durations() {
    let config = default_config();
    let view = order_view(&config, &stalled(), T0 + 10 * H);
    assert_eq!(view.stage.as_deref(), Some("pick_release"));
    let next = view.next.as_ref().unwrap();
    assert_eq!((next.milestone.as_str(), next.owner.as_str()), ("pick_pack", "warehouse-operations"));
    assert_eq!(next.blocked_by, None);
    assert_eq!(next.deadline, None, "no clock ends at pick_pack");
    assert_eq!(view.sla_status.as_str(), "on_time");
    assert_eq!(view.trace_url.as_deref(), Some(format!("http://localhost:16686/trace/{}", view.trace_id).as_str()));
    let release = view.milestones.iter().find(|m| m.name == "pick_release").unwrap();
    assert_eq!(release.duration_ms, Some(3_600_000));
    assert_eq!(release.system.as_deref(), Some("wms"));
    let ship = view.milestones.iter().find(|m| m.name == "shipment_confirmation").unwrap();
    assert_eq!(ship.state.as_str(), "pending");
    assert_eq!(ship.deadline.as_deref(), Some(rfc3339(T0 + 33 * H).as_str()));
    assert!(view.milestones.iter().all(|m| m.name != "customer_notification"), "off-path and untouched");
    // Past the deadline, the order counts as breached even before the engine's check ran.
    assert_eq!(order_view(&config, &stalled(), T0 + 34 * H).sla_status.as_str(), "breached");
}

#[test]
fn an_open_exception_on_the_awaited_milestone_owns_the_next_action() {
    let config = default_config();
    let mut o = stalled();
    reach(&mut o, "pick_pack", T0 + 4 * H, "wms");
    let mut breach = exception("execution", "transport-logistics", "shipment_confirmation", true);
    breach.signature = "sla:pick_pack_ship".into();
    breach.first_seen_unix_nanos = T0 - H;
    o.exceptions.push(breach);
    let next = order_view(&config, &o, T0 + 5 * H).next.unwrap();
    assert_eq!(next.milestone, "shipment_confirmation");
    assert_eq!(next.milestone_owner, "transport-logistics");
    assert_eq!(next.owner, "integration-team", "the mapping failure blocks it, not the SLA breach it caused");
    assert_eq!(next.blocked_by.unwrap().class, "integration");
    assert_eq!(next.deadline.as_deref(), Some(rfc3339(T0 + 33 * H).as_str()));
}

#[test]
fn lists_filter_and_paginate_without_gaps_or_repeats() {
    let config = default_config();
    let mut orders: Vec<OrderRecord> = (0..25).map(|i| order(&format!("SO-{i:02}"), T0 + i * H)).collect();
    orders.push(stalled());
    let filter = OrderFilter::default();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = list_orders(&config, orders.iter(), &filter, 10, &token, T0).unwrap();
        assert!(page.orders.len() <= 10);
        seen.extend(page.orders.iter().map(|o| o.order_id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 26);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 26);
    assert_eq!(seen[0], "SO-24", "newest first");

    let by_owner = OrderFilter { owner: Some("integration-team".into()), ..Default::default() };
    let page = list_orders(&config, orders.iter(), &by_owner, 10, "", T0).unwrap();
    assert_eq!(page.orders.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(), ["SO-1"]);
    let by_stage =
        OrderFilter { stage: Some("pick_release".into()), customer: Some("C-1".into()), ..Default::default() };
    assert_eq!(list_orders(&config, orders.iter(), &by_stage, 10, "", T0).unwrap().orders.len(), 1);
    let by_class = OrderFilter { exception_class: Some("policy".into()), ..Default::default() };
    assert!(list_orders(&config, orders.iter(), &by_class, 10, "", T0).unwrap().orders.is_empty());
    let range = OrderFilter { since: Some(T0 + 20 * H), until: Some(T0 + 22 * H), ..Default::default() };
    assert_eq!(list_orders(&config, orders.iter(), &range, 10, "", T0).unwrap().orders.len(), 2);
    assert_eq!(list_orders(&config, orders.iter(), &filter, 10, "zz", T0), Err(QueryError::PageToken));
    assert!(page_size(&config, 1001).is_err());
    assert_eq!(page_size(&config, 0), Ok(100));
}

#[test]
fn exceptions_group_by_class_and_owner_with_open_first() {
    let mut a = order("SO-A", T0);
    a.exceptions.push(exception("policy", "commercial-controls", "pricing_approval", true));
    a.exceptions.push(exception("integration", "integration-team", "shipment_confirmation", false));
    let mut b = order("SO-B", T0);
    b.exceptions.push(exception("policy", "commercial-controls", "pricing_approval", true));
    let summary = list_exceptions([a.clone(), b.clone()].iter(), &ExceptionFilter::default(), 10, 5);
    assert_eq!(summary.groups.len(), 1, "resolved ones are left out by default");
    let g = &summary.groups[0];
    assert_eq!((g.class.as_str(), g.open, g.orders, g.occurrences), ("policy", 2, 2, 4));
    assert_eq!(g.sample_orders, ["SO-A", "SO-B"]);
    let all = ExceptionFilter { include_resolved: true, ..Default::default() };
    let summary = list_exceptions([a, b].iter(), &all, 1, 5);
    assert_eq!(summary.groups.len(), 1);
    assert_eq!(summary.groups_omitted, 1);
}

/// An open order at `credit_approval` whose clock to `inventory_allocation` started at `T0` and is due at `T0 + 10 H`.
fn waiting_for_allocation(key: &str) -> OrderRecord {
    let mut o = order(key, T0);
    reach(&mut o, "order_capture", T0, "erp");
    reach(&mut o, "credit_approval", T0, "erp");
    o.slas.push(clock("allocation", "credit_approval", "inventory_allocation", T0, 10 * H));
    o
}

#[test]
fn the_flow_counts_open_orders_per_stage_with_risk_breach_blocks_and_classes() {
    let config = default_config();
    let on_time = waiting_for_allocation("SO-A");
    let mut blocked = waiting_for_allocation("SO-B");
    blocked.exceptions.push(exception("data_quality", "master-data", "inventory_allocation", true));
    let mut closed = waiting_for_allocation("SO-C");
    closed.closed_at_unix_nanos = Some(T0 + H);
    let orders = [on_time, blocked, closed, stalled()];
    // At 5 h the clocks to allocation have used half their time: nothing at risk yet.
    let flow = flow(&config, orders.iter(), T0 + 5 * H);
    assert_eq!(flow.open_orders, 3, "the closed order is not in the flow");
    assert_eq!(flow.stages[0].stage, NO_STAGE);
    let names: Vec<&str> = flow.stages.iter().map(|s| s.stage.as_str()).collect();
    let main_path: Vec<&str> =
        config.taxonomy.milestones.iter().filter(|m| !m.off_path).map(|m| m.name.as_str()).collect();
    assert_eq!(names[1..], main_path[..], "the stages are the main path in order");
    let credit = flow.stages.iter().find(|s| s.stage == "credit_approval").unwrap();
    assert_eq!((credit.open, credit.at_risk, credit.breached, credit.blocked), (2, 0, 0, 1));
    assert_eq!(credit.exceptions.get("data_quality"), Some(&1));
    assert_eq!(credit.owner, "credit-control");
    // At 8 h the engine found them at risk (it marks the clock). At 11 h the deadline passed: breached, and no
    // longer at risk.
    let mut orders = orders;
    for order in &mut orders {
        for s in &mut order.slas {
            s.at_risk_at_unix_nanos = Some(T0 + 8 * H);
        }
    }
    let late = flow_of(&config, &orders, T0 + 8 * H, "credit_approval");
    assert_eq!((late.at_risk, late.breached), (2, 0));
    let over = flow_of(&config, &orders, T0 + 11 * H, "credit_approval");
    assert_eq!((over.at_risk, over.breached), (0, 2));
    assert!(flow.teams.contains(&"integration-team".to_string()) && flow.teams.contains(&"master-data".to_string()));
}

fn flow_of(config: &crate::config::Config, orders: &[OrderRecord], now: u64, stage: &str) -> StageView {
    flow(config, orders.iter(), now).stages.into_iter().find(|s| s.stage == stage).unwrap()
}

#[test]
fn stalled_orders_are_the_overdue_and_the_blocked_most_overdue_first_with_the_owner_and_why() {
    let config = default_config();
    let on_time = waiting_for_allocation("SO-A");
    let mut blocked = waiting_for_allocation("SO-B");
    let mut e = exception("data_quality", "master-data", "inventory_allocation", true);
    e.first_seen_unix_nanos = T0 + 2 * H;
    e.reason = "stale inventory snapshot".into();
    blocked.exceptions.push(e);
    let orders = [on_time, blocked, stalled()];
    // At 5 h: only the blocked one, stuck for 3 h. SO-1 waits for pick-pack, due at 33 h; its integration exception
    // is on a later milestone and does not block it yet.
    let list = crate::query::stalled(&config, orders.iter(), None, 10, T0 + 5 * H);
    let keys: Vec<&str> = list.orders.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(keys, ["SO-B"]);
    assert_eq!(list.total, 1);
    let b = &list.orders[0];
    assert_eq!((b.owner.as_str(), b.overdue_ms), ("master-data", 3 * 3_600_000));
    assert_eq!(b.reason, "data_quality exception: stale inventory snapshot");
    // At 11 h the clock of SO-A has passed: it is stuck since its deadline, owned by the awaited milestone's owner.
    let list = crate::query::stalled(&config, orders.iter(), None, 10, T0 + 11 * H);
    let keys: Vec<&str> = list.orders.iter().map(|o| o.order_id.as_str()).collect();
    assert_eq!(keys, ["SO-B", "SO-A"], "SO-B is stuck since its exception at 2 h, SO-A since its deadline at 10 h");
    let a = &list.orders[1];
    assert_eq!((a.owner.as_str(), a.overdue_ms), ("inventory-planning", 3_600_000));
    assert!(a.reason.starts_with("inventory_allocation not reached: SLA allocation was due"), "{}", a.reason);
    // A team sees only what it owns; the limit cuts the list but not the total.
    let mine = crate::query::stalled(&config, orders.iter(), Some("master-data"), 10, T0 + 11 * H);
    assert_eq!(mine.orders.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(), ["SO-B"]);
    let first = crate::query::stalled(&config, orders.iter(), None, 1, T0 + 11 * H);
    assert_eq!((first.orders.len(), first.total), (1, 2));
    assert_eq!(first.orders[0].order_id, "SO-B", "the most overdue");
}

#[test]
fn a_search_finds_the_order_then_each_order_an_alias_names_once() {
    let shipments = ["SO-1".to_string(), "SO-2".to_string()];
    let invoices = ["SO-2".to_string()];
    let found = search("X-9", false, &[("shipment", &shipments[..]), ("invoice", &invoices[..])]);
    let got: Vec<(&str, &str)> = found.matches.iter().map(|m| (m.order_id.as_str(), m.via.as_str())).collect();
    assert_eq!(got, [("SO-1", "shipment"), ("SO-2", "shipment")]);
    let found = search("SO-2", true, &[("invoice", &invoices[..])]);
    assert_eq!(found.matches.len(), 1);
    assert_eq!(found.matches[0].via, "order");
}

#[test]
fn bottlenecks_name_the_dimension_value_that_drives_a_transitions_delay() {
    let config = default_config();
    let mut orders = Vec::new();
    for (i, (warehouse, pick_hours)) in
        [("WH-A", 9), ("WH-A", 10), ("WH-A", 12), ("WH-B", 1), ("WH-B", 2), ("WH-B", 2), ("WH-C", 1)]
            .into_iter()
            .enumerate()
    {
        let mut o = order(&format!("SO-{i}"), T0);
        reach(&mut o, "order_capture", T0, "erp");
        reach(&mut o, "pick_release", T0 + H, "wms");
        reach(&mut o, "pick_pack", T0 + H + pick_hours * H, "wms");
        o.dimensions.insert("warehouse".into(), warehouse.into());
        let mut pack = clock("pick_pack_sla", "pick_release", "pick_pack", T0 + H, 4 * H);
        if pick_hours > 4 {
            pack.breached_at_unix_nanos = Some(T0 + 5 * H);
            pack.reached_at_unix_nanos = Some(T0 + H + pick_hours * H);
            pack.lateness_nanos = Some((pick_hours - 4) * H);
        } else {
            pack.reached_at_unix_nanos = Some(T0 + H + pick_hours * H);
        }
        o.slas.push(pack);
        orders.push(o);
    }
    let report = bottlenecks(&config, orders.iter(), &BottleneckFilter::default());
    let slowest = &report.transitions[0];
    assert_eq!((slowest.from.as_str(), slowest.to.as_str()), ("pick_release", "pick_pack"));
    assert_eq!((slowest.orders, slowest.breaches), (7, 3));
    assert_eq!((slowest.median_ms, slowest.p90_ms), (2 * 3_600_000, 12 * 3_600_000));
    let warehouses = slowest.dimensions.iter().find(|d| d.dimension == "warehouse").unwrap();
    let values: Vec<&str> = warehouses.values.iter().map(|v| v.value.as_str()).collect();
    assert_eq!(values, ["WH-A", "WH-B"], "WH-C has too few orders to judge; WH-A first, the slowest");
    let a = &warehouses.values[0];
    assert_eq!((a.orders, a.median_ms, a.breaches), (3, 10 * 3_600_000, 3));
    assert!((a.breach_share - 1.0).abs() < 1e-9 && (a.p90_vs_overall - 1.0).abs() < 1e-9);
    assert!(warehouses.values[1].p90_vs_overall < 0.2 && warehouses.values[1].breach_share == 0.0);
    // A filter keeps one transition and one dimension.
    let filter = BottleneckFilter { to: Some("pick_release".into()), dimension: Some("warehouse".into()) };
    let only = bottlenecks(&config, orders.iter(), &filter);
    assert_eq!(only.transitions.len(), 1);
    assert_eq!(only.transitions[0].dimensions.len(), 1);
}
