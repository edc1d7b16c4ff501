//! SLA clocks (deadlines, breaches, lateness, calendars, restarts) and conformance findings.

use super::*;

/// An order's milestones, one an hour: service, span name, hour.
const DAY: [(&str, &str, u64); 7] = [
    ("erp", "order.create", 0),
    ("erp", "credit.check", 1),
    ("erp", "inventory.allocate", 2),
    ("wms", "wave.release", 3),
    ("wms", "pack.confirm", 4),
    ("tms", "shipment.pickup.confirm", 5),
    ("finance", "invoice.create", 6),
];
#[test]
fn a_missed_deadline_is_breached_once_at_the_deadline_and_owned_by_the_awaited_milestone() {
    let mut engine = engine();
    process(&mut engine, vec![capture(1, "SO-1", "standard", T0)], T0);
    settle(&mut engine, T0);
    let deadline = T0 + END + 4 * HOUR;
    let order = engine.order("SO-1").unwrap();
    assert_eq!(order.sla("order_release").unwrap().deadline_unix_nanos, deadline);

    // The detection delay lets spans in flight arrive; the breach comes right after it.
    let detected = deadline + delay();
    let (spans, events) = tick(&mut engine, detected - 1);
    assert!(breaches(&events) == 0, "not due yet");
    // The first tick came after the risk point and the deadline: the clock was at risk all the same, and is marked
    // so (at its risk point, 3 h in), told to nobody.
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    assert_eq!(names, ["pick_release at risk"]);
    assert!(
        at_risk(&events).is_empty()
            || events.iter().any(|e| matches!(e, events::Event::SlaAtRisk { settled: true, .. }))
    );
    let marked = engine.order("SO-1").unwrap().sla("order_release").unwrap().at_risk_at_unix_nanos;
    assert_eq!(marked, Some(deadline - HOUR));
    let (spans, events) = tick(&mut engine, detected);
    assert_eq!(breaches(&events), 1);
    let overdue = spans.iter().map(|(_, s)| s).find(|s| s.name == "pick_release overdue").expect("breach span");
    assert_eq!(overdue.trace_id, ids::order_trace_id("SO-1"));
    assert_eq!(overdue.parent_span_id, ids::root_span_id("SO-1"));
    assert_eq!(overdue.status.as_ref().unwrap().code, StatusCode::Error as i32);
    assert_eq!(attr(overdue, "order.exception.class").as_deref(), Some("execution"));
    assert_eq!(attr(overdue, "order.exception.owner").as_deref(), Some("warehouse-operations"));
    assert_eq!(attr(overdue, "order.sla.target").as_deref(), Some("order_release"));
    let exception = engine.order("SO-1").unwrap().exceptions.iter().find(|e| e.signature == "sla:order_release");
    let exception = exception.expect("breach recorded as an exception").clone();
    assert_eq!((exception.class.as_str(), exception.owner.as_str()), ("execution", "warehouse-operations"));
    assert!(exception.resolved_at_unix_nanos.is_none());

    let (spans, events) = tick(&mut engine, deadline + HOUR);
    assert!(spans.is_empty() && breaches(&events) == 0, "a breach is reported once");
    assert_eq!(engine.stats().sla_breaches, 1);
}

fn at_risk(events: &[events::Event]) -> Vec<(String, usize)> {
    events
        .iter()
        .filter_map(|e| match e {
            events::Event::SlaAtRisk { order, target, .. } => Some((order.clone(), *target)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_clock_past_its_share_of_time_puts_the_order_at_risk_once_before_the_breach() {
    let mut engine = engine();
    process(&mut engine, vec![capture(1, "SO-1", "standard", T0)], T0);
    settle(&mut engine, T0);
    let state = engine.order("SO-1").unwrap().sla("order_release").unwrap().clone();
    let (start, deadline) = (state.started_at_unix_nanos, state.deadline_unix_nanos);
    // 4 hours allowed, at risk after three quarters of them (the default `sla.at_risk_share`), judged after the
    // detection delay like a breach.
    let risk = start + 3 * HOUR;
    let (spans, events) = tick(&mut engine, risk + delay() - 1);
    assert!(spans.is_empty() && at_risk(&events).is_empty(), "not yet");
    let (spans, events) = tick(&mut engine, risk + delay());
    assert_eq!(at_risk(&events), [("SO-1".to_string(), 0)]);
    let warning = spans.iter().map(|(_, s)| s).find(|s| s.name == "pick_release at risk").expect("at-risk span");
    assert_eq!(warning.trace_id, ids::order_trace_id("SO-1"));
    assert_eq!(attr(warning, "order.sla.status").as_deref(), Some("at_risk"));
    assert_eq!(attr(warning, "order.owner").as_deref(), Some("warehouse-operations"));
    assert_eq!(
        attr(warning, "order.risk.basis").as_deref(),
        Some("75 % of the allowance used"),
        "too few orders known"
    );
    assert!(warning.status.is_none(), "a warning, not an error");
    let owner = events.iter().find_map(|e| match e {
        events::Event::SlaAtRisk { owner, deadline_unix_nanos, .. } => Some((owner.clone(), *deadline_unix_nanos)),
        _ => None,
    });
    assert_eq!(owner, Some(("warehouse-operations".to_string(), deadline)));
    let record = engine.order("SO-1").unwrap().sla("order_release").unwrap().clone();
    assert_eq!(record.at_risk_at_unix_nanos, Some(risk), "at the risk point, kept in the record: once across restarts");
    assert!(engine.take_changes().orders.iter().any(|w| w.record.key == "SO-1"), "written");
    let (_, events) = tick(&mut engine, risk + HOUR / 2);
    assert!(at_risk(&events).is_empty(), "once");
    let (_, events) = tick(&mut engine, deadline + delay());
    assert_eq!((breaches(&events), at_risk(&events).len()), (1, 0), "then the breach, as before");

    // A clock whose milestone arrives in time is never at risk.
    let mut engine = super::engine();
    process(&mut engine, vec![capture(1, "SO-2", "standard", T0)], T0);
    settle(&mut engine, T0);
    let release_at = T0 + 2 * HOUR;
    process(&mut engine, vec![milestone("wms", "wave.release", "SO-2", release_at - END)], release_at);
    let (_, events) = tick(&mut engine, release_at + delay());
    assert!(at_risk(&events).is_empty());
    let (_, events) = tick(&mut engine, T0 + 10 * HOUR);
    assert!(at_risk(&events).is_empty() && breaches(&events) == 0);
}

#[test]
fn a_late_milestone_resolves_the_breach_and_records_its_lateness() {
    let mut engine = engine();
    process(&mut engine, vec![capture(1, "SO-1", "standard", T0)], T0);
    settle(&mut engine, T0);
    let deadline = T0 + END + 4 * HOUR;
    let (_, events) = tick(&mut engine, deadline + delay());
    assert_eq!(breaches(&events), 1);
    let release_at = deadline + 30 * MINUTE;
    let (mut spans, mut events) =
        process(&mut engine, vec![milestone("wms", "wave.release", "SO-1", release_at - END)], release_at);
    let (settled, settle_events) = tick(&mut engine, release_at + delay());
    spans.extend(settled);
    events.extend(settle_events);
    let order = engine.order("SO-1").unwrap();
    let sla = order.sla("order_release").unwrap();
    assert_eq!(sla.status(), crate::order::SlaStatus::Late);
    assert_eq!(sla.lateness_nanos, Some(30 * MINUTE));
    let exception = order.exceptions.iter().find(|e| e.signature == "sla:order_release").unwrap();
    assert_eq!(exception.resolved_at_unix_nanos, Some(release_at));
    assert_eq!(breaches(&events), 0, "already reported");
    let settled = events.iter().find_map(|e| match e {
        events::Event::SlaSettled { lateness_nanos, duration_nanos, .. } => Some((*lateness_nanos, *duration_nanos)),
        _ => None,
    });
    assert_eq!(settled, Some((Some(30 * MINUTE), 4 * HOUR + 30 * MINUTE)));
    let milestone_span = spans.iter().map(|(_, s)| s).find(|s| s.name == "pick_release").unwrap();
    assert_eq!(attr(milestone_span, "order.sla.status").as_deref(), Some("late"));
    assert_eq!(attr(milestone_span, "order.sla.lateness_ms").as_deref(), Some("1800000"));
}

#[test]
fn a_milestone_in_time_meets_the_target_and_a_late_one_arriving_before_the_check_is_still_a_breach() {
    let mut engine = engine();
    tick(&mut engine, T0);
    process(&mut engine, vec![capture(1, "SO-1", "standard", T0), capture(2, "SO-2", "standard", T0)], T0);
    let deadline = T0 + END + 4 * HOUR;
    process(&mut engine, vec![milestone("wms", "wave.release", "SO-1", T0 + HOUR)], T0 + HOUR);
    // SO-2's release happened after its deadline, and its span arrives before any tick has checked: the breach
    // comes when it settles, once.
    let (_, events) =
        process(&mut engine, vec![milestone("wms", "wave.release", "SO-2", deadline + MINUTE)], deadline + MINUTE);
    assert_eq!(breaches(&events), 0, "judged when settled");
    let (_, events) = tick(&mut engine, deadline + 2 * HOUR);
    assert_eq!(breaches(&events), 1);
    let (_, events) = tick(&mut engine, deadline + 3 * HOUR);
    assert_eq!(breaches(&events), 0);
    assert_eq!(engine.order("SO-1").unwrap().sla("order_release").unwrap().status().as_str(), "met");
    assert_eq!(engine.order("SO-2").unwrap().sla("order_release").unwrap().status().as_str(), "late");
    assert!(engine.order("SO-1").unwrap().exceptions.iter().all(|e| !e.signature.starts_with("sla:")));
}

#[test]
fn a_backfilled_clock_waits_the_detection_delay_for_its_milestone() {
    let mut engine = engine();
    let now = T0 + 10 * HOUR;
    tick(&mut engine, now - HOUR);
    // The capture happened ten hours ago; its 4 h deadline is long past when the span arrives.
    process(&mut engine, vec![capture(1, "SO-1", "standard", T0)], now);
    let (_, events) = tick(&mut engine, now);
    assert_eq!(breaches(&events), 0, "the release may be on its way");
    // The release, which happened in time, arrives 100 ms later.
    process(&mut engine, vec![milestone("wms", "wave.release", "SO-1", T0 + HOUR)], now + 100_000_000);
    let (_, events) = tick(&mut engine, now + 3 * delay());
    assert_eq!(breaches(&events), 0);
    assert_eq!(engine.order("SO-1").unwrap().sla("order_release").unwrap().status().as_str(), "met");
}

#[test]
fn deadlines_survive_a_restart_and_a_breach_is_not_repeated_after_one() {
    let config = Arc::new(default_config());
    let mut first = Engine::new(config.clone(), vec![], vec![]);
    process(&mut first, vec![capture(1, "SO-1", "standard", T0)], T0);
    settle(&mut first, T0);
    let deadline = T0 + END + 4 * HOUR;
    let saved: Vec<OrderRecord> = records(first.take_changes().orders);

    // Restarted before the deadline: the clock is still running and breaches on time.
    let mut second = Engine::new(config.clone(), saved, vec![]);
    assert_eq!(second.stats().pending_deadlines, 0, "gauge is set on the first tick");
    let (_, events) = tick(&mut second, deadline - SECOND);
    assert_eq!(breaches(&events), 0);
    assert_eq!(second.stats().pending_deadlines, 1);
    let (_, events) = tick(&mut second, deadline + delay() + SECOND);
    assert_eq!(breaches(&events), 1);
    let saved: Vec<OrderRecord> = records(second.take_changes().orders);

    // Restarted after the breach: nothing is reported again.
    let mut third = Engine::new(config, saved, vec![]);
    let (spans, events) = tick(&mut third, deadline + HOUR);
    assert_eq!(breaches(&events), 0);
    assert!(spans.is_empty());
    assert_eq!(third.stats().pending_deadlines, 0);
}

#[test]
fn an_override_by_dimension_and_a_business_calendar_change_the_deadline() {
    let extra = r#"
sla:
  calendars:
    office:
      time_zone: Europe/Paris
      working_days: [mon, tue, wed, thu, fri]
      working_hours: "09:00-17:00"
  targets:
    - name: order_release
      from: order_capture
      to: pick_release
      within: 4h
      calendar: office
      overrides:
        - dimension: segment
          values: [key-account]
          within: 30m
          calendar: null
"#;
    let yaml = DEFAULT_CONFIG_YAML.split("\nsla:\n").next().unwrap().to_string();
    let rest = DEFAULT_CONFIG_YAML.split("\nconformance:").nth(1).unwrap();
    // The default's playbooks name a clock for shipment confirmation, which these targets do not have.
    let (before, after) = (rest.split("\nplaybooks:").next().unwrap(), rest.split("\ntelemetry:").nth(1).unwrap());
    let config = parse(&format!("{yaml}{extra}\nconformance:{before}\ntelemetry:{after}"), "test.yaml").unwrap();
    let mut engine = Engine::new(Arc::new(config), vec![], vec![]);
    // Friday 2026-11-20 15:00 Paris time is 14:00 UTC: 2 working hours left on Friday, 2 more on Monday.
    let friday = 1_795_183_200 * SECOND;
    process(
        &mut engine,
        vec![capture(1, "SO-STD", "standard", friday - END), capture(2, "SO-KEY", "key-account", friday - END)],
        friday,
    );
    settle(&mut engine, friday);
    let monday_11_paris = friday + 3 * 24 * HOUR - 4 * HOUR;
    assert_eq!(engine.order("SO-STD").unwrap().sla("order_release").unwrap().deadline_unix_nanos, monday_11_paris);
    assert_eq!(engine.order("SO-KEY").unwrap().sla("order_release").unwrap().deadline_unix_nanos, friday + 30 * MINUTE);
}

#[test]
fn an_invoice_before_shipment_confirmation_is_a_policy_exception_of_the_invoicing_team() {
    let mut engine = engine();
    let steps: Vec<_> = DAY.iter().filter(|(service, ..)| *service != "tms").collect();
    let spans = steps.iter().map(|(svc, name, h)| milestone(svc, name, "SO-1", T0 + h * HOUR)).collect();
    process(&mut engine, spans, T0 + 6 * HOUR);
    let out = settle(&mut engine, T0 + 6 * HOUR);
    let order = engine.order("SO-1").unwrap();
    let open: Vec<_> = order.open_exceptions().collect();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].class, "policy");
    assert_eq!(open[0].owner, "finance-billing");
    assert_eq!(open[0].reason, "invoicing reached before shipment_confirmation");
    let finding = out.iter().map(|(_, s)| s).find(|s| s.name == "invoicing reached before shipment_confirmation");
    let finding = finding.expect("the finding is visible in the order trace");
    assert_eq!(finding.parent_span_id, ids::milestone_span_id("SO-1", "invoicing"));

    // The shipment confirmation arrives after the finding was judged, later than the settling delay, but happened
    // before the invoice: the events were merely delivered out of order, and the finding is resolved.
    process(&mut engine, vec![milestone("tms", "shipment.pickup.confirm", "SO-1", T0 + 5 * HOUR)], T0 + 7 * HOUR);
    settle(&mut engine, T0 + 7 * HOUR);
    assert_eq!(engine.order("SO-1").unwrap().open_exceptions().count(), 0);
}

#[test]
fn a_release_before_credit_approval_stays_a_finding_when_credit_comes_later() {
    let mut engine = engine();
    let spans = vec![
        milestone("erp", "order.create", "SO-1", T0),
        milestone("erp", "inventory.allocate", "SO-1", T0 + HOUR),
        milestone("wms", "wave.release", "SO-1", T0 + 2 * HOUR),
        milestone("erp", "credit.check", "SO-1", T0 + 3 * HOUR),
    ];
    process(&mut engine, spans, T0 + 3 * HOUR);
    settle(&mut engine, T0 + 3 * HOUR);
    let order = engine.order("SO-1").unwrap();
    let reasons: Vec<_> = order.open_exceptions().map(|e| (e.reason.as_str(), e.owner.as_str())).collect();
    assert_eq!(
        reasons,
        [
            ("inventory_allocation reached before credit_approval", "inventory-planning"),
            ("pick_release reached before credit_approval", "warehouse-operations")
        ]
    );
}

#[test]
fn work_after_a_cancellation_is_a_finding_whichever_arrives_first() {
    let mut engine = engine();
    process(
        &mut engine,
        vec![milestone("erp", "order.create", "SO-1", T0), milestone("erp", "order.cancel", "SO-1", T0 + HOUR)],
        T0 + HOUR,
    );
    settle(&mut engine, T0 + HOUR);
    process(&mut engine, vec![milestone("wms", "pack.confirm", "SO-1", T0 + 2 * HOUR)], T0 + 2 * HOUR);
    settle(&mut engine, T0 + 2 * HOUR);
    // SO-2: the pick span arrives before the cancellation that preceded it, later than the settling delay.
    process(
        &mut engine,
        vec![milestone("erp", "order.create", "SO-2", T0), milestone("wms", "pack.confirm", "SO-2", T0 + 2 * HOUR)],
        T0 + 2 * HOUR,
    );
    settle(&mut engine, T0 + 2 * HOUR);
    process(&mut engine, vec![milestone("erp", "order.cancel", "SO-2", T0 + HOUR)], T0 + 3 * HOUR);
    settle(&mut engine, T0 + 3 * HOUR);
    for key in ["SO-1", "SO-2"] {
        let order = engine.order(key).unwrap();
        assert!(
            order.open_exceptions().any(|e| e.reason == "pick_pack reached after order_cancellation"),
            "{key}: {:?}",
            order.exceptions
        );
    }
}

#[test]
fn an_approval_by_email_is_a_policy_exception_with_the_approver_as_actor() {
    let mut engine = engine();
    process(
        &mut engine,
        vec![spec("erp", "pricing.approve", 1, 1)
            .attr("order.id", "SO-1")
            .attr("approval.channel", "email")
            .attr("enduser.id", "j.moreau@example.com")],
        T0,
    );
    let order = engine.order("SO-1").unwrap();
    let e = order.exceptions.iter().find(|e| e.signature == "approval-outside-system-of-record").unwrap();
    assert_eq!(e.class, "policy");
    assert_eq!(e.actor.as_deref(), Some("j.moreau@example.com"));
    assert!(e.resolved_at_unix_nanos.is_none());
}

#[test]
fn a_cancelled_or_closed_order_stops_its_clocks_instead_of_breaching() {
    let mut engine = engine();
    process(&mut engine, vec![capture(1, "SO-C", "standard", T0), capture(2, "SO-I", "standard", T0)], T0);
    settle(&mut engine, T0);
    // SO-C is cancelled; SO-I is invoiced (which closes it) before it was ever released.
    process(&mut engine, vec![milestone("erp", "order.cancel", "SO-C", T0 + HOUR)], T0 + HOUR);
    process(&mut engine, vec![milestone("finance", "invoice.post", "SO-I", T0 + HOUR)], T0 + HOUR);
    let (spans, events) = tick(&mut engine, T0 + 10 * HOUR);
    assert_eq!(breaches(&events), 0, "{spans:?}");
    for key in ["SO-C", "SO-I"] {
        let sla = engine.order(key).unwrap().sla("order_release").unwrap().clone();
        assert_eq!(sla.status(), crate::order::SlaStatus::Stopped, "{key}");
    }
    // A restart does not bring the stopped clocks back.
    let saved: Vec<OrderRecord> = engine.orders().cloned().collect();
    let mut restarted = Engine::new(Arc::new(default_config()), saved, vec![]);
    tick(&mut restarted, T0 + 10 * HOUR);
    let (_, events) = tick(&mut restarted, T0 + 11 * HOUR);
    assert_eq!(breaches(&events), 0);
    assert_eq!(restarted.stats().pending_deadlines, 0);
}

#[test]
fn a_milestone_reached_in_time_is_met_whenever_its_span_arrives() {
    let mut engine = engine();
    tick(&mut engine, T0);
    let deadline = T0 + END + 4 * HOUR;
    process(&mut engine, vec![capture(1, "SO-A", "standard", T0), capture(2, "SO-B", "standard", T0)], T0);
    settle(&mut engine, T0);
    // SO-A's release happened a minute before the deadline; its span arrives within the settling delay after it.
    let (_, events) =
        process(&mut engine, vec![milestone("wms", "wave.release", "SO-A", deadline - MINUTE)], deadline + SECOND);
    assert_eq!(breaches(&events), 0);
    let (spans, events) = tick(&mut engine, deadline + delay() + SECOND);
    assert_eq!(breaches(&events), 1, "SO-B's release never came");
    assert!(spans
        .iter()
        .all(|(_, s)| !(s.name == "pick_release overdue" && s.trace_id == ids::order_trace_id("SO-A"))));
    assert_eq!(engine.order("SO-A").unwrap().sla("order_release").unwrap().status().as_str(), "met");

    // SO-B's release also happened in time, but its span arrives an hour late, after the breach went out: the breach
    // is withdrawn, visibly, and the order is on time again.
    let (spans, events) =
        process(&mut engine, vec![milestone("wms", "wave.release", "SO-B", deadline - MINUTE)], deadline + HOUR);
    let (settled, _) = tick(&mut engine, deadline + HOUR + delay());
    let order = engine.order("SO-B").unwrap();
    let sla = order.sla("order_release").unwrap();
    assert_eq!(sla.status().as_str(), "met");
    assert!(sla.withdrawn_at_unix_nanos.is_some() && sla.lateness_nanos.is_none());
    assert!(order.exceptions.iter().all(|e| e.signature != "sla:order_release"), "the breach is no exception now");
    assert_eq!(order.sla_status(deadline + 2 * HOUR).as_str(), "on_time");
    let withdrawn = spans.iter().chain(&settled).map(|(_, s)| s).find(|s| s.name == "pick_release overdue withdrawn");
    let withdrawn = withdrawn.expect("the withdrawal is visible in the order trace");
    assert_eq!(withdrawn.parent_span_id, ids::root_span_id("SO-B"));
    assert_eq!(withdrawn.status.as_ref().unwrap().code, StatusCode::Ok as i32);
    assert!(events
        .iter()
        .chain(&tick(&mut engine, deadline + 3 * HOUR).1)
        .all(|e| !matches!(e, events::Event::SlaBreached { .. })));
    assert_eq!(engine.stats().sla_breaches_withdrawn, 1);
}

#[test]
fn milestones_delivered_out_of_order_within_the_delay_make_no_conformance_finding() {
    let mut engine = engine();
    tick(&mut engine, T0);
    let steps = DAY;
    // Every system flushed in reverse: the invoice arrives first, the order capture last, all within a few seconds.
    let mut spans = Vec::new();
    for (i, (service, name, h)) in steps.iter().rev().enumerate() {
        let arrival = T0 + 6 * HOUR + u64::try_from(i).unwrap() * SECOND;
        spans.extend(process(&mut engine, vec![milestone(service, name, "SO-1", T0 + h * HOUR)], arrival).0);
        spans.extend(tick(&mut engine, arrival).0);
    }
    spans.extend(settle(&mut engine, T0 + 6 * HOUR + 7 * SECOND));
    let order = engine.order("SO-1").unwrap();
    assert!(order.exceptions.is_empty(), "{:?}", order.exceptions);
    assert!(spans.iter().all(|(_, s)| s.status.as_ref().is_none_or(|st| st.code != StatusCode::Error as i32)));
    assert_eq!(engine.stats().conformance_findings, 0, "no finding was ever made, not even one taken back");
    assert!(order.is_closed());
}

#[test]
fn a_conformance_finding_disproved_by_a_late_span_is_withdrawn() {
    let mut engine = engine();
    tick(&mut engine, T0);
    // The credit approval settles without an order capture: out of order, as far as anyone can tell.
    run_settled(&mut engine, vec![milestone("erp", "credit.check", "SO-1", T0 + HOUR)], T0 + 2 * HOUR);
    let open: Vec<String> = engine.order("SO-1").unwrap().open_exceptions().map(|e| e.signature.clone()).collect();
    assert_eq!(open, ["conformance:credit_approval"]);
    // The capture, an hour earlier, arrives an hour late: the finding was only delivery order.
    let out = run_settled(&mut engine, vec![milestone("erp", "order.create", "SO-1", T0)], T0 + 3 * HOUR);
    let order = engine.order("SO-1").unwrap();
    assert!(order.exceptions.iter().all(|e| !e.signature.starts_with("conformance:")), "{:?}", order.exceptions);
    let withdrawn = out.iter().map(|(_, s)| s).find(|s| s.name.ends_with(" withdrawn")).expect("a withdrawal span");
    assert_eq!(withdrawn.parent_span_id, ids::milestone_span_id("SO-1", "credit_approval"));
    assert_eq!(withdrawn.status.as_ref().unwrap().code, StatusCode::Ok as i32);
    assert_eq!(engine.stats().conformance_findings_withdrawn, 1);
}

#[test]
fn clocks_of_an_order_closed_before_its_shipment_arrived_settle_by_the_shipment_time() {
    let mut engine = engine();
    tick(&mut engine, T0);
    let steps: Vec<_> = DAY.iter().filter(|(service, ..)| *service != "tms").collect();
    let spans = steps.iter().map(|(svc, name, h)| milestone(svc, name, "SO-1", T0 + h * HOUR)).collect();
    run_settled(&mut engine, spans, T0 + 7 * HOUR);
    assert!(engine.order("SO-1").unwrap().is_closed(), "the invoice closes it");
    // The carrier's confirmation, from hour 5, arrives a day late.
    run_settled(&mut engine, vec![milestone("tms", "shipment.pickup.confirm", "SO-1", T0 + 5 * HOUR)], T0 + 31 * HOUR);
    let order = engine.order("SO-1").unwrap();
    let status = |target: &str| order.sla(target).map(|s| s.status().as_str().to_string());
    assert_eq!(status("pick_pack_ship").as_deref(), Some("met"), "stopped at the close, settled by its time");
    assert_eq!(status("invoice_completion").as_deref(), Some("met"), "started by the late shipment, already met");
    let targets: Vec<&str> = order.slas.iter().map(|s| s.target.as_str()).collect();
    let config = default_config();
    let configured: Vec<&str> = config.sla.targets.iter().map(|t| t.name.as_str()).collect();
    assert!(configured.iter().filter(|t| targets.contains(t)).eq(targets.iter()), "configuration order: {targets:?}");
}

#[test]
fn milestones_settle_in_the_order_they_were_reached() {
    let mut engine = engine();
    tick(&mut engine, T0 + 2 * HOUR);
    // The release arrives first, the capture that starts its clock a few seconds later, within the delay.
    let arrival = T0 + 2 * HOUR + SECOND;
    process(&mut engine, vec![milestone("wms", "wave.release", "SO-1", T0 + HOUR)], arrival);
    process(&mut engine, vec![milestone("erp", "order.create", "SO-1", T0)], arrival + 3 * SECOND);
    let mut spans = Vec::new();
    for step in 0..=30 {
        spans.extend(tick(&mut engine, arrival + step * SECOND).0);
    }
    let release = spans.iter().map(|(_, s)| s).find(|s| s.name == "pick_release").expect("the release settled");
    assert_eq!(attr(release, "order.sla.target").as_deref(), Some("order_release"), "its clock had started");
    assert_eq!(attr(release, "order.sla.status").as_deref(), Some("met"));
}

#[test]
fn a_sender_not_trusted_to_declare_labels_cannot_cancel_an_order_and_stop_its_clocks() {
    let cancel = |service: &'static str, span: u8| {
        spec(service, "anything", 7, span)
            .attr("order.id", "SO-1")
            .attr("order.milestone", "order_cancellation")
            .at(T0 + MINUTE)
    };
    // By default nobody is believed: the statement is ignored and counted, and the clock still breaches.
    let mut engine = engine();
    process(&mut engine, vec![capture(1, "SO-1", "standard", T0), cancel("curious-script", 2)], T0 + MINUTE);
    settle(&mut engine, T0 + MINUTE);
    assert_eq!(engine.stats().declared_labels_ignored, 1);
    assert!(engine.order("SO-1").unwrap().milestone("order_cancellation").is_none());
    let (_, events) = tick(&mut engine, T0 + END + 4 * HOUR + delay());
    assert_eq!(breaches(&events), 1, "the order's clock was not stopped");

    // A system the configuration names is believed.
    let yaml = DEFAULT_CONFIG_YAML.replace("trust_declared_labels_from: []", "trust_declared_labels_from: [\"erp*\"]");
    let mut engine = Engine::new(Arc::new(parse(&yaml, "test.yaml").unwrap()), vec![], vec![]);
    process(&mut engine, vec![capture(1, "SO-1", "standard", T0), cancel("erp-core", 2)], T0 + MINUTE);
    settle(&mut engine, T0 + MINUTE);
    assert_eq!(engine.stats().declared_labels_ignored, 0);
    assert!(engine.order("SO-1").unwrap().milestone("order_cancellation").is_some_and(|m| m.reached.is_some()));
    let (_, events) = tick(&mut engine, T0 + END + 4 * HOUR + delay());
    assert_eq!(breaches(&events), 0, "a cancelled order's clocks stop");
}

#[test]
fn stalled_orders_and_open_exceptions_are_counted_by_whose_move_it_is() {
    let mut engine = Engine::new(Arc::new(default_config()), vec![], vec![]);
    process(&mut engine, vec![milestone("erp", "order.create", "SO-1", T0)], T0);
    process(
        &mut engine,
        vec![milestone("erp", "order.create", "SO-2", T0 + 3 * 3600 * SECOND)],
        T0 + 3 * 3600 * SECOND,
    );
    settle(&mut engine, T0 + 3 * 3600 * SECOND);
    // Five hours after SO-1's capture its release (4 h) is overdue; SO-2's is not yet.
    tick(&mut engine, T0 + 5 * 3600 * SECOND);
    let stats = engine.stats();
    let stalled: Vec<_> = stats.stalled_orders.iter().collect();
    let config = default_config();
    let awaited = config.taxonomy.milestones.iter().find(|m| m.name == "credit_approval").unwrap();
    assert_eq!(stalled, [(&("order_capture".to_string(), awaited.owner.clone()), &1)], "{stats:?}");
    // The breach is an open exception of the owner of the overdue milestone.
    let release_owner = &config.taxonomy.milestones.iter().find(|m| m.name == "pick_release").unwrap().owner;
    let breaches: u64 =
        stats.open_exceptions.iter().filter(|((_, owner), _)| owner == release_owner).map(|(_, n)| *n).sum();
    assert_eq!(breaches, 1, "{:?}", stats.open_exceptions);
}

/// An order of `warehouse` captured at `start` and released to the warehouse `took` later (the `order_release`
/// clock, 4 h for the standard segment).
fn released(engine: &mut Engine, order: &str, warehouse: &'static str, start: u64, took: u64) {
    let capture = capture(1, order, "standard", start).attr("warehouse.id", warehouse);
    process(engine, vec![capture], start);
    settle(engine, start);
    let at = start + took;
    process(engine, vec![milestone("wms", "wave.release", order, at - END)], at);
    settle(engine, at);
}

#[test]
fn the_delay_model_learns_which_orders_run_late_and_warns_for_those_only() {
    let mut engine = engine();
    // History: 20 releases from WH-SOUTH took 5-6 h (all breached their 4 h), 20 from WH-EAST took 30-90 min.
    let mut t = T0;
    for i in 0..20u64 {
        released(&mut engine, &format!("SO-S{i}"), "WH-SOUTH", t, 5 * HOUR + i * 3 * MINUTE);
        released(&mut engine, &format!("SO-E{i}"), "WH-EAST", t, 30 * MINUTE + i * 3 * MINUTE);
        t += 10 * MINUTE;
    }
    let t = t + 7 * HOUR;
    tick(&mut engine, t);
    assert_eq!(engine.delay_model().samples("order_release"), 40);

    // A new WH-SOUTH order is at risk as soon as its clock is judged: every WH-SOUTH release so far was late.
    process(&mut engine, vec![capture(1, "SO-NEW-S", "standard", t).attr("warehouse.id", "WH-SOUTH")], t);
    process(&mut engine, vec![capture(1, "SO-NEW-E", "standard", t).attr("warehouse.id", "WH-EAST")], t);
    settle(&mut engine, t);
    let start = engine.order("SO-NEW-S").unwrap().sla("order_release").unwrap().started_at_unix_nanos;
    // Judged once the clock's start has settled and the detection delay has passed, as every judgement is.
    let (spans, events) = tick(&mut engine, start + 5 * MINUTE);
    assert_eq!(at_risk(&events), [("SO-NEW-S".to_string(), 0)], "hours before the fixed share's 3 h");
    let risk = events.iter().find_map(|e| match e {
        events::Event::SlaAtRisk { probability, basis, .. } => Some((*probability, basis.clone())),
        _ => None,
    });
    assert_eq!(
        risk,
        Some((
            Some(1.0),
            crate::insight::delay::RiskBasis::Dimension {
                dimension: "warehouse".into(),
                value: "WH-SOUTH".into(),
                samples: 20
            }
        ))
    );
    let warning = spans.iter().map(|(_, s)| s).find(|s| s.name == "pick_release at risk").unwrap();
    assert_eq!(attr(warning, "order.risk.basis").as_deref(), Some("20 past orders with warehouse WH-SOUTH"));
    let state = engine.order("SO-NEW-S").unwrap().sla("order_release").unwrap().clone();
    assert_eq!(state.at_risk_probability, Some(1.0));

    // The WH-EAST order is not at risk while it is within what WH-EAST releases take, although half of all
    // orders breached (the segment `standard`, shared by all of them, tells nothing)…
    let (_, events) = tick(&mut engine, start + 80 * MINUTE);
    assert!(at_risk(&events).is_empty(), "within what WH-EAST releases take");
    // …but once it has run longer than any WH-EAST release known (87 min, within the sketch's 2 %), it is: an hour
    // before the fixed share's 3 h.
    let (_, events) = tick(&mut engine, start + 89 * MINUTE + delay());
    assert_eq!(at_risk(&events), [("SO-NEW-E".to_string(), 0)]);
    let state = engine.order("SO-NEW-E").unwrap().sla("order_release").unwrap().clone();
    assert_eq!(state.at_risk_probability, Some(1.0), "no WH-EAST release known took this long");
}

#[test]
fn a_group_processed_again_after_a_refused_commit_is_learned_once() {
    let mut engine = engine();
    released(&mut engine, "SO-A", "WH-EAST", T0, HOUR);
    tick(&mut engine, T0 + 2 * HOUR);
    assert_eq!(engine.delay_model().samples("order_release"), 1);
    // The next group settles SO-B's clock; its commit is refused for another replica's write, so a new engine
    // takes over and the group is processed again: SO-B is learned once, not twice.
    released(&mut engine, "SO-B", "WH-EAST", T0 + 3 * HOUR, HOUR);
    let mut rebuilt = super::engine();
    rebuilt.take_over(&engine);
    assert_eq!(rebuilt.delay_model().samples("order_release"), 1, "what the refused group learned is not carried");
    released(&mut rebuilt, "SO-B", "WH-EAST", T0 + 3 * HOUR, HOUR);
    tick(&mut rebuilt, T0 + 5 * HOUR);
    assert_eq!(rebuilt.delay_model().samples("order_release"), 2);
}

#[test]
fn clocks_loaded_before_the_model_are_judged_again_once_it_is_restored() {
    // A model in which every WH-SOUTH release breached.
    let mut trained = engine();
    for i in 0..20u64 {
        released(&mut trained, &format!("SO-S{i}"), "WH-SOUTH", T0 + i * 10 * MINUTE, 5 * HOUR);
    }
    tick(&mut trained, T0 + 10 * HOUR);
    let saved = crate::insight::SavedInsight { delay: trained.delay_model().clone(), ..Default::default() };
    // A restarted engine holds a running WH-SOUTH clock, indexed before the model was restored (the fixed share
    // would check it at 3 h); restored, it is judged at once.
    let start = T0 + 20 * HOUR;
    let mut running = engine();
    process(&mut running, vec![capture(1, "SO-NEW", "standard", start).attr("warehouse.id", "WH-SOUTH")], start);
    settle(&mut running, start);
    let records = vec![running.order("SO-NEW").unwrap().clone()];
    let mut restarted = Engine::new(running.config().clone(), records, vec![]);
    restarted.restore_insight(saved);
    tick(&mut restarted, start);
    let (_, events) = tick(&mut restarted, start + 10 * MINUTE);
    assert_eq!(at_risk(&events), [("SO-NEW".to_string(), 0)], "not left for the share's 3 h");
}

#[test]
fn a_replica_takes_up_what_the_others_saved_without_counting_its_own_twice() {
    let mut engine = engine();
    released(&mut engine, "SO-A", "WH-EAST", T0, HOUR);
    tick(&mut engine, T0 + 2 * HOUR);
    // Saved: the store holds SO-A's sample, plus two another replica saved.
    let saved = engine.take_changes().insight.expect("learning to save").learned;
    assert_eq!(saved.samples("order_release"), 1);
    let mut stored = saved.clone();
    let mut other = super::engine();
    released(&mut other, "SO-X", "WH-EAST", T0, HOUR);
    released(&mut other, "SO-Y", "WH-EAST", T0, HOUR);
    tick(&mut other, T0 + 2 * HOUR);
    stored.merge_bounded(other.delay_model(), 200);
    // This replica learns one more before it reads the store back.
    released(&mut engine, "SO-B", "WH-EAST", T0 + 3 * HOUR, HOUR);
    tick(&mut engine, T0 + 5 * HOUR);
    engine.refresh_delay_model(stored);
    assert_eq!(
        engine.delay_model().samples("order_release"),
        4,
        "its own saved one once, the other's two, its unsaved one"
    );
}

#[test]
fn a_dimension_learned_after_the_clock_started_moves_its_risk_check() {
    let mut engine = engine();
    // 20 WH-SOUTH releases all breached; 60 WH-EAST ones took 30-90 min. All orders: a quarter breached, so a
    // clock of unknown warehouse is at risk only past about 69 minutes.
    let mut t = T0;
    for i in 0..60u64 {
        if i < 20 {
            released(&mut engine, &format!("SO-S{i}"), "WH-SOUTH", t, 5 * HOUR + i * MINUTE);
        }
        released(&mut engine, &format!("SO-E{i}"), "WH-EAST", t, 30 * MINUTE + i * MINUTE);
        t += 10 * MINUTE;
    }
    let start = t + 8 * HOUR;
    tick(&mut engine, start);
    // Captured without a warehouse; the allocation names WH-SOUTH ten minutes later.
    process(&mut engine, vec![capture(1, "SO-NEW", "standard", start)], start);
    settle(&mut engine, start);
    let allocation =
        milestone("wms", "inventory.allocate", "SO-NEW", start + 10 * MINUTE).attr("warehouse.id", "WH-SOUTH");
    process(&mut engine, vec![allocation], start + 10 * MINUTE);
    let (_, events) = tick(&mut engine, start + 15 * MINUTE);
    assert_eq!(at_risk(&events), [("SO-NEW".to_string(), 0)], "judged again as a WH-SOUTH order, not at 69 min");
}
