//! Building the spans that leave ordertrail: root and milestone spans of order traces, technical spans
//! re-emitted into order traces, enriched originals, and the spans of findings.

use super::attributes::{boolean, double, int, string, string_array, upsert};
use super::input::SpanInput;
use super::labels::Labels;
use crate::config::Config;
use crate::ids::{self, SpanId, TraceId};
use crate::order::progress::{blocking_exception, next_owner, stage_and_next};
use crate::order::OrderRecord;
use crate::time::millis_i64;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};

/// Attribute keys ordertrail writes.
pub(crate) mod keys {
    pub(crate) const ORDER_ID: &str = "order.id";
    pub(crate) const ORDER_IDS: &str = "order.ids";
    pub(crate) const MILESTONE: &str = "order.milestone";
    pub(crate) const MILESTONE_OWNER: &str = "order.milestone.owner";
    pub(crate) const MILESTONE_REACHED: &str = "order.milestone.reached";
    pub(crate) const EXCEPTION_CLASS: &str = "order.exception.class";
    pub(crate) const EXCEPTION_OWNER: &str = "order.exception.owner";
    pub(crate) const EXCEPTION_REASON: &str = "order.exception.reason";
    pub(crate) const ACTOR: &str = "order.actor";
    pub(crate) const RULE: &str = "order.rule";
    pub(crate) const ORDER_TRACE_ID: &str = "order.trace_id";
    pub(crate) const LINK_KIND: &str = "ordertrail.link.kind";
}

/// The labels written on a span that concerns `orders`.
fn label_attributes(config: &Config, labels: &Labels, orders: &[String], out: &mut Vec<KeyValue>) {
    if let [only] = orders {
        upsert(out, string(keys::ORDER_ID, only.clone()));
        upsert(out, string(keys::ORDER_TRACE_ID, hex::encode(ids::order_trace_id(only))));
    } else {
        upsert(out, string_array(keys::ORDER_IDS, orders));
    }
    if let Some(m) = labels.milestone {
        let milestone = &config.taxonomy.milestones[m];
        upsert(out, string(keys::MILESTONE, milestone.name.clone()));
        upsert(out, string(keys::MILESTONE_OWNER, milestone.owner.clone()));
        upsert(out, boolean(keys::MILESTONE_REACHED, labels.reaches));
    }
    if let Some(exception) = labels.exception.as_ref().or(labels.findings.first()) {
        upsert(out, string(keys::EXCEPTION_CLASS, config.taxonomy.classes[exception.class].name.clone()));
        upsert(out, string(keys::EXCEPTION_OWNER, exception.owner.clone()));
        upsert(out, string(keys::EXCEPTION_REASON, exception.reason.clone()));
    }
    if let Some(actor) = &labels.actor {
        upsert(out, string(keys::ACTOR, actor.clone()));
    }
    if let Some(rule) = &labels.rule {
        upsert(out, string(keys::RULE, rule.clone()));
    }
}

pub(crate) fn link(trace_id: &[u8], span_id: &[u8], kind: &str) -> Link {
    Link {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        trace_state: String::new(),
        attributes: vec![string(keys::LINK_KIND, kind)],
        dropped_attributes_count: 0,
        flags: 0x100, // The link's remote flag is known: not remote, it points into the same backend.
    }
}

/// The parent within the order trace: the milestone span when the span has a milestone, otherwise the root.
fn parent_in_order(config: &Config, order: &str, labels: &Labels) -> SpanId {
    match labels.milestone {
        Some(m) => ids::milestone_span_id(order, &config.taxonomy.milestones[m].name),
        None => ids::root_span_id(order),
    }
}

/// The technical span `input` as a child in the trace of `order`, linked to the original.
pub(crate) fn correlated_span(config: &Config, input: &SpanInput, labels: &Labels, order: &str) -> Span {
    let original = &input.span;
    let mut span = original.clone();
    span.trace_id = ids::order_trace_id(order).to_vec();
    span.span_id = ids::correlated_span_id(order, &original.trace_id, &original.span_id).to_vec();
    span.parent_span_id = parent_in_order(config, order, labels).to_vec();
    span.trace_state.clear();
    label_attributes(config, labels, std::slice::from_ref(&order.to_string()), &mut span.attributes);
    span.links.push(link(&original.trace_id, &original.span_id, "technical_span"));
    span
}

/// The original span, enriched with the labels and a link to each order trace's root. It is the span's last use,
/// so the span is taken rather than copied.
pub(crate) fn enriched_original(config: &Config, span: Span, labels: &Labels, orders: &[String]) -> Span {
    let mut span = span;
    label_attributes(config, labels, orders, &mut span.attributes);
    for order in orders {
        span.links.push(link(&ids::order_trace_id(order), &ids::root_span_id(order), "order_trace"));
    }
    span
}

pub(crate) fn attr_string(key: &str, value: &str) -> KeyValue {
    string(key, value.to_string())
}

pub(crate) fn attr_int(key: &str, value: i64) -> KeyValue {
    int(key, value)
}

pub(crate) fn attr_double(key: &str, value: f64) -> KeyValue {
    double(key, value)
}

pub(crate) fn ok_status() -> Status {
    Status { code: StatusCode::Ok as i32, message: String::new() }
}

pub(crate) fn error_status(message: String) -> Status {
    Status { code: StatusCode::Error as i32, message }
}

/// A span ordertrail creates to report a finding (an SLA breach, a conformance exception) under the order's
/// root; its id derives from the finding's signature, so a finding re-reported after a restart has the same id.
pub(crate) fn finding_span(order: &str, signature: &str, name: String, start: u64, end: u64) -> Span {
    let mut span = own_span(
        ids::order_trace_id(order),
        ids::finding_span_id(order, signature),
        Some(ids::root_span_id(order)),
        name,
        start,
        end,
    );
    span.attributes = vec![string(keys::ORDER_ID, order.to_string()), string("order.finding", signature.to_string())];
    span
}

fn own_span(trace_id: TraceId, span_id: SpanId, parent: Option<SpanId>, name: String, start: u64, end: u64) -> Span {
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name,
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end.max(start),
        ..Default::default()
    }
}

/// The span of milestone `m` of `order`; `reached` is false when the order closed before reaching it.
pub(crate) fn milestone_span(config: &Config, order: &OrderRecord, m: usize) -> Option<Span> {
    let milestone = &config.taxonomy.milestones[m];
    let state = order.milestone(&milestone.name)?;
    let end = state.reached.as_ref().map_or(order.last_seen_unix_nanos, |r| r.at_unix_nanos);
    let mut span = own_span(
        ids::order_trace_id(&order.key),
        ids::milestone_span_id(&order.key, &milestone.name),
        Some(ids::root_span_id(&order.key)),
        milestone.name.clone(),
        state.first_work_unix_nanos,
        end,
    );
    let mut attributes = vec![
        string(keys::ORDER_ID, order.key.clone()),
        string(keys::MILESTONE, milestone.name.clone()),
        string(keys::MILESTONE_OWNER, milestone.owner.clone()),
        boolean(keys::MILESTONE_REACHED, state.reached.is_some()),
        int("order.milestone.position", i64::try_from(m + 1).unwrap_or(i64::MAX)),
        int("order.milestone.span_count", i64::try_from(state.span_count).unwrap_or(i64::MAX)),
    ];
    if let Some(description) = &milestone.description {
        attributes.push(string("order.milestone.description", description.clone()));
    }
    let exceptions: Vec<_> =
        order.exceptions.iter().filter(|e| e.milestone.as_deref() == Some(&milestone.name)).collect();
    // The exception that began last before the milestone was reached (or at all, when it was not): chosen by the
    // spans' own times, so the order they arrived in does not change what the milestone span shows.
    let reached_at = state.reached.as_ref().map(|r| r.at_unix_nanos);
    let latest = exceptions
        .iter()
        .filter(|e| reached_at.is_none_or(|at| e.first_seen_unix_nanos <= at))
        .max_by(|a, b| (a.first_seen_unix_nanos, &a.signature).cmp(&(b.first_seen_unix_nanos, &b.signature)));
    if let Some(latest) = latest {
        attributes.push(string(keys::EXCEPTION_CLASS, latest.class.clone()));
        attributes.push(string(keys::EXCEPTION_OWNER, latest.owner.clone()));
        attributes.push(string(keys::EXCEPTION_REASON, latest.reason.clone()));
        let occurrences = exceptions.iter().map(|e| e.count).fold(0u64, u64::saturating_add);
        attributes.push(int("order.exception.count", i64::try_from(occurrences).unwrap_or(i64::MAX)));
    }
    for sla in order.slas.iter().filter(|s| s.to == milestone.name && s.reached_at_unix_nanos.is_some()) {
        attributes.push(string("order.sla.target", sla.target.clone()));
        attributes.push(string("order.sla.status", sla.status().as_str()));
        if let Some(late) = sla.lateness_nanos {
            attributes.push(int("order.sla.lateness_ms", millis_i64(late)));
        }
    }
    match &state.reached {
        Some(reach) => {
            attributes.push(string("order.milestone.reached_by", reach.service.clone()));
            if let Some(actor) = &reach.actor {
                attributes.push(string(keys::ACTOR, actor.clone()));
            }
            if let (Ok(t), Ok(s)) = (hex::decode(&reach.trace_id), hex::decode(&reach.span_id)) {
                span.links.push(link(&t, &s, "reached_by"));
            }
            span.status = Some(Status { code: StatusCode::Ok as i32, message: String::new() });
        }
        None => {
            span.status = Some(Status {
                code: StatusCode::Error as i32,
                message: format!("{} not reached; next action owned by {}", milestone.name, milestone.owner),
            });
        }
    }
    span.attributes = attributes;
    Some(span)
}

/// The root span `order <key>`, emitted once, when the order is first seen: every other span of the order trace
/// hangs under it, so that the trace is whole while the order is open. It covers the first span the order was
/// seen with; the closing span covers the whole order.
/// What a playbook recommends, as span attributes: `order.next_action` and its team, runbook, urgency and name.
pub(crate) fn playbook_attributes(p: &crate::config::Playbook) -> Vec<KeyValue> {
    let mut attributes = vec![
        string("order.next_action", p.action.clone()),
        string("order.next_action.team", p.team.clone()),
        string("order.next_action.urgency", p.urgency.as_str()),
        string("order.next_action.playbook", p.name.clone()),
    ];
    if let Some(runbook) = &p.runbook {
        attributes.push(string("order.next_action.runbook", runbook.clone()));
    }
    attributes
}

pub(crate) fn root_span(order: &OrderRecord) -> Span {
    let mut span = own_span(
        ids::order_trace_id(&order.key),
        ids::root_span_id(&order.key),
        None,
        format!("order {}", order.key),
        order.first_seen_unix_nanos,
        order.last_seen_unix_nanos,
    );
    span.attributes = vec![string(keys::ORDER_ID, order.key.clone())];
    span
}

/// The closing span `order <key> closed`, under the root, emitted once when the order closes (at `now`): the order's
/// final state, from its first span to its last.
pub(crate) fn closing_span(config: &Config, order: &OrderRecord, now: u64) -> Span {
    let mut span = own_span(
        ids::order_trace_id(&order.key),
        ids::closing_span_id(&order.key),
        Some(ids::root_span_id(&order.key)),
        format!("order {} closed", order.key),
        order.first_seen_unix_nanos,
        order.last_seen_unix_nanos.max(order.first_seen_unix_nanos),
    );
    span.events.push(Event { time_unix_nano: now, name: "order.closed".into(), ..Default::default() });
    let reached: Vec<String> = config
        .taxonomy
        .milestones
        .iter()
        .filter(|m| order.milestone(&m.name).is_some_and(|s| s.reached.is_some()))
        .map(|m| m.name.clone())
        .collect();
    let (stage, next) = stage_and_next(&config.taxonomy, order);
    let open: Vec<_> = order.open_exceptions().collect();
    let mut attributes = vec![
        string(keys::ORDER_ID, order.key.clone()),
        string("order.close_reason", order.close_reason.clone().unwrap_or_default()),
        string_array("order.milestones.reached", &reached),
        int("order.span_count", i64::try_from(order.span_count).unwrap_or(i64::MAX)),
        int("order.exceptions.open", i64::try_from(open.len()).unwrap_or(i64::MAX)),
        int("order.exceptions.total", i64::try_from(order.exceptions.len()).unwrap_or(i64::MAX)),
    ];
    if let Some(stage) = stage {
        attributes.push(string("order.stage", stage.name.clone()));
    }
    if let Some(next) = next {
        attributes.push(string("order.next_milestone", next.name.clone()));
        attributes.push(string("order.next_owner", next_owner(order, next)));
        if let Some(b) = blocking_exception(order, &next.name) {
            attributes.push(string("order.next_blocked_by", format!("{}: {}", b.class, b.reason)));
        }
        // An order given up on for idleness still awaits something: what its playbook recommends goes with it.
        if order.close_reason.as_deref() == Some(super::records::IDLE) {
            if let Some(p) = crate::order::progress::situation_playbook(config, order, now) {
                attributes.extend(playbook_attributes(p));
            }
        }
    }
    span.attributes = attributes;
    span.status = Some(if open.is_empty() && next.is_none() {
        Status { code: StatusCode::Ok as i32, message: String::new() }
    } else {
        let mut parts: Vec<String> =
            open.iter().map(|e| format!("{} ({}, owner {})", e.reason, e.class, e.owner)).collect();
        if let Some(next) = next {
            parts.insert(0, format!("{} not reached, owner {}", next.name, next.owner));
        }
        Status { code: StatusCode::Error as i32, message: parts.join("; ") }
    });
    span
}
