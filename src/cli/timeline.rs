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
            format!("{}, next action owned by {}{blocked}", n.milestone, n.owner)
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
