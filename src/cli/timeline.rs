//! Plain-text rendering of an order's labelled timeline, for the demo and the terminal.

use ordertrail::telemetry::Counters;
use ordertrail_core::config::Config;
use ordertrail_core::engine::EngineStats;
use ordertrail_core::ids::order_trace_id;
use ordertrail_core::order::progress::stage_and_next;
use ordertrail_core::order::OrderRecord;
use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

fn clock(unix_nanos: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_nanos(unix_nanos)).to_string()
}

/// One order: where it is, who owns the next action, its milestones, exceptions and SLA clocks.
pub(crate) fn render(config: &Config, order: &OrderRecord, now: u64) -> String {
    let mut s = String::new();
    let view = ordertrail_core::query::order_view(config, order, now);
    let (stage, _) = stage_and_next(&config.taxonomy, order);
    let _ = writeln!(s, "order {}  trace_id {}", order.key, hex::encode(order_trace_id(&order.key)));
    let state = match (&order.close_reason, order.is_closed()) {
        (Some(reason), true) => format!("closed ({reason})"),
        _ => "open".to_string(),
    };
    let next = match &view.next {
        None => "none".to_string(),
        Some(n) => {
            let blocked =
                n.blocked_by.as_ref().map(|b| format!(", blocked by {}: {}", b.class, b.reason)).unwrap_or_default();
            let recommended = n
                .playbook
                .as_ref()
                .map(|p| format!("; recommended ({}, {}): {}", p.urgency.as_str(), p.team, p.action))
                .unwrap_or_default();
            format!("{}, next action owned by {}{blocked}{recommended}", n.milestone, n.owner)
        }
    };
    let _ = writeln!(
        s,
        "  {state}; stage: {}; SLA {}; next: {next}",
        stage.map_or("none", |m| m.name.as_str()),
        view.sla_status
    );
    for milestone in &config.taxonomy.milestones {
        let Some(m) = order.milestone(&milestone.name) else { continue };
        match &m.reached {
            Some(reach) => {
                let actor = reach.actor.as_ref().map(|a| format!(", actor {a}")).unwrap_or_default();
                let _ =
                    writeln!(s, "  {}  {:<22} reached by {}{actor}", clock(reach.at_unix_nanos), m.name, reach.service);
            }
            None => {
                let _ = writeln!(
                    s,
                    "  {}  {:<22} NOT REACHED (worked on by {} span(s))",
                    clock(m.first_work_unix_nanos),
                    m.name,
                    m.span_count
                );
            }
        }
    }
    for e in &order.exceptions {
        let status = if e.resolved_at_unix_nanos.is_some() { "resolved" } else { "OPEN" };
        let actor = e.actor.as_ref().map(|a| format!(", actor {a}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "  ! {:<12} owner {:<20} {status:<8} {}: {} (x{}, {}{actor})",
            e.class,
            e.owner,
            e.milestone.as_deref().unwrap_or("-"),
            e.reason,
            e.count,
            e.service
        );
    }
    for sla in &view.slas {
        let late = sla
            .lateness_ms
            .map(|ms| format!(", {} late", humantime::format_duration(Duration::from_millis(ms))))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  sla {:<30} {:<8} {} -> {} due {}{late}",
            sla.target,
            sla.status,
            sla.from,
            sla.to,
            sla.deadline.as_deref().unwrap_or("never")
        );
    }
    s
}

/// What insight found: the orders at risk, the recurring exception patterns and the slowest transition's
/// bottleneck, as the demo prints them after the timelines.
pub(crate) fn insight(
    at_risk: &ordertrail_core::query::AtRiskOrders,
    patterns: &ordertrail_core::query::PatternList,
    bottlenecks: &ordertrail_core::query::Bottlenecks,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Orders at risk ({} clock(s); the delay model's breach probability at least {:.0} %), nearest deadline first:",
        at_risk.orders.len(),
        at_risk.threshold * 100.0
    );
    for c in at_risk.orders.iter().take(10) {
        let p = c.probability.map_or(String::new(), |p| format!("{:.0} %, ", p * 100.0));
        let left = humantime::format_duration(Duration::from_secs(c.remaining_ms / 60_000 * 60));
        let _ = writeln!(
            s,
            "  {:<9} {} (SLA {}) due {} (in {left}), owner {}: {p}{}",
            c.order_id, c.milestone, c.target, c.deadline, c.owner, c.basis
        );
    }
    let _ = writeln!(s, "\nTop exception patterns ({} kept), busiest first:", patterns.kept);
    for p in patterns.patterns.iter().take(8) {
        let playbook = p.playbook.as_ref().map(|name| format!(", playbook {name}")).unwrap_or_default();
        let capped = if p.orders_affected_capped { "+" } else { "" };
        let _ = writeln!(
            s,
            "  {:>4}x  {:<11} {:<22} {:<24} \"{}\"  {}{capped} orders, {}{playbook}",
            p.total,
            p.class,
            p.milestone.as_deref().unwrap_or("-"),
            p.system,
            p.template,
            p.orders_affected,
            serde_json::to_value(p.trend).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        );
    }
    let _ = writeln!(s, "\nBottlenecks (transitions by p90, the values that stand out):");
    for t in bottlenecks.transitions.iter().take(4) {
        let hours = |ms: u64| ms as f64 / 3_600_000.0;
        let _ = writeln!(
            s,
            "  {} -> {}: {} orders, median {:.1} h, p90 {:.1} h, {} breaches",
            t.from,
            t.to,
            t.orders,
            hours(t.median_ms),
            hours(t.p90_ms),
            t.breaches
        );
        for d in &t.dimensions {
            if let Some(v) = d.values.first().filter(|v| v.p90_vs_overall > 1.2 || v.breach_share > 0.5) {
                let _ = writeln!(
                    s,
                    "      {} {}: p90 {:.1} h ({:.1}x the whole), {:.0} % of the breaches",
                    d.dimension,
                    v.value,
                    hours(v.p90_ms),
                    v.p90_vs_overall,
                    v.breach_share * 100.0
                );
            }
        }
    }
    s
}

/// The counters that say whether anything was lost or turned away.
pub(crate) fn summary(counters: &Counters, engine: &EngineStats, export_endpoint: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "spans received {}, correlated {}, inherited from their trace {}, uncorrelated {}",
        Counters::get(&counters.spans_received),
        engine.spans_correlated,
        engine.spans_inherited,
        engine.spans_uncorrelated
    );
    let _ = writeln!(
        s,
        "emitted: {} spans into order traces, {} milestone spans, {} root spans; aliases learned {}",
        engine.order_spans_emitted, engine.milestone_spans_emitted, engine.root_spans_emitted, engine.aliases_learned
    );
    match export_endpoint {
        Some(endpoint) => {
            let _ = writeln!(
                s,
                "exported to {endpoint}: {} spans sent, {} failed",
                Counters::get(&counters.export_spans_sent),
                Counters::get(&counters.export_spans_failed)
            );
        }
        None => {
            let _ = writeln!(s, "no --export-endpoint given: nothing exported (open the trace ids above in Jaeger or Tempo after exporting)");
        }
    }
    s
}
