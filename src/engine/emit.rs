//! Building the spans that leave ordertrail: root and milestone spans of order traces, technical spans
//! re-emitted into order traces, and enriched originals; grouped back into OTLP `ResourceSpans`.

use super::attributes::{boolean, int, string, string_array, upsert};
use super::ids::{self, SpanId, TraceId};
use super::labels::Labels;
use super::{ResourceContext, ScopeContext, SpanInput};
use crate::config::Config;
use crate::order_state::OrderRecord;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::{Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use std::collections::HashMap;
use std::sync::Arc;

/// The spans of one scope.
type ScopeGroup = (Arc<ScopeContext>, Vec<Span>);

/// Spans to export, grouped by the resource and scope they came with.
#[derive(Debug, Default)]
pub struct Output {
    /// What happened to orders while producing these spans.
    pub events: Vec<super::events::Event>,
    /// Holding the `Arc`s keeps their addresses unique for as long as they serve as grouping keys.
    groups: Vec<(Arc<ResourceContext>, Vec<ScopeGroup>)>,
    index: HashMap<(usize, usize), (usize, usize)>,
    spans: usize,
}

impl Output {
    pub fn push(&mut self, resource: &Arc<ResourceContext>, scope: &Arc<ScopeContext>, span: Span) {
        let key = (Arc::as_ptr(resource) as usize, Arc::as_ptr(scope) as usize);
        let (g, s) = match self.index.get(&key) {
            Some(position) => *position,
            None => {
                let g = match self.groups.iter().position(|(r, _)| Arc::ptr_eq(r, resource)) {
                    Some(g) => g,
                    None => {
                        self.groups.push((resource.clone(), Vec::new()));
                        self.groups.len() - 1
                    }
                };
                self.groups[g].1.push((scope.clone(), Vec::new()));
                let position = (g, self.groups[g].1.len() - 1);
                self.index.insert(key, position);
                position
            }
        };
        self.groups[g].1[s].1.push(span);
        self.spans += 1;
    }

    pub fn span_count(&self) -> usize {
        self.spans
    }

    /// Whether there are no spans to export (events do not count).
    pub fn is_empty(&self) -> bool {
        self.spans == 0
    }

    /// The spans as OTLP `ResourceSpans`, and the events.
    pub fn into_parts(mut self) -> (Vec<ResourceSpans>, Vec<super::events::Event>) {
        let events = std::mem::take(&mut self.events);
        (self.into_resource_spans(), events)
    }

    /// The spans as OTLP `ResourceSpans`.
    pub fn into_resource_spans(self) -> Vec<ResourceSpans> {
        self.groups
            .into_iter()
            .map(|(resource, scopes)| ResourceSpans {
                resource: resource.resource.clone(),
                schema_url: resource.schema_url.clone(),
                scope_spans: scopes
                    .into_iter()
                    .map(|(scope, spans)| ScopeSpans {
                        scope: scope.scope.clone(),
                        schema_url: scope.schema_url.clone(),
                        spans,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Attribute keys ordertrail writes.
pub mod keys {
    pub const ORDER_ID: &str = "order.id";
    pub const ORDER_IDS: &str = "order.ids";
    pub const MILESTONE: &str = "order.milestone";
    pub const MILESTONE_OWNER: &str = "order.milestone.owner";
    pub const MILESTONE_REACHED: &str = "order.milestone.reached";
    pub const EXCEPTION_CLASS: &str = "order.exception.class";
    pub const EXCEPTION_OWNER: &str = "order.exception.owner";
    pub const EXCEPTION_REASON: &str = "order.exception.reason";
    pub const ACTOR: &str = "order.actor";
    pub const RULE: &str = "order.rule";
    pub const ORDER_TRACE_ID: &str = "order.trace_id";
    pub const LINK_KIND: &str = "ordertrail.link.kind";
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

pub fn link(trace_id: &[u8], span_id: &[u8], kind: &str) -> Link {
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
pub fn correlated_span(config: &Config, input: &SpanInput, labels: &Labels, order: &str) -> Span {
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

/// The original span, enriched with the labels and a link to each order trace's root.
pub fn enriched_original(config: &Config, input: &SpanInput, labels: &Labels, orders: &[String]) -> Span {
    let mut span = input.span.clone();
    label_attributes(config, labels, orders, &mut span.attributes);
    for order in orders {
        span.links.push(link(&ids::order_trace_id(order), &ids::root_span_id(order), "order_trace"));
    }
    span
}

pub fn attr_string(key: &str, value: &str) -> KeyValue {
    string(key, value.to_string())
}

pub fn attr_int(key: &str, value: i64) -> KeyValue {
    int(key, value)
}

pub fn error_status(message: String) -> Status {
    Status { code: StatusCode::Error as i32, message }
}

/// A span ordertrail creates to report a finding (an SLA breach, a conformance exception) under the order's
/// root; its id derives from the finding's signature, so a finding re-reported after a restart has the same id.
pub fn finding_span(order: &str, signature: &str, name: String, start: u64, end: u64) -> Span {
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
pub fn milestone_span(config: &Config, order: &OrderRecord, m: usize) -> Option<Span> {
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
        int("order.milestone.position", m as i64 + 1),
        int("order.milestone.span_count", state.span_count as i64),
    ];
    if let Some(description) = &milestone.description {
        attributes.push(string("order.milestone.description", description.clone()));
    }
    let exceptions: Vec<_> =
        order.exceptions.iter().filter(|e| e.milestone.as_deref() == Some(&milestone.name)).collect();
    if let Some(latest) = exceptions.last() {
        attributes.push(string(keys::EXCEPTION_CLASS, latest.class.clone()));
        attributes.push(string(keys::EXCEPTION_OWNER, latest.owner.clone()));
        attributes.push(string(keys::EXCEPTION_REASON, latest.reason.clone()));
        attributes.push(int("order.exception.count", exceptions.iter().map(|e| e.count as i64).sum()));
    }
    for sla in order.slas.iter().filter(|s| s.to == milestone.name && s.reached_at_unix_nanos.is_some()) {
        attributes.push(string("order.sla.target", sla.target.clone()));
        attributes.push(string("order.sla.status", sla.status().as_str()));
        if let Some(late) = sla.lateness_nanos {
            attributes.push(int("order.sla.lateness_ms", (late / 1_000_000) as i64));
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

/// The root span `order <key>`, emitted once when the order closes.
pub fn root_span(config: &Config, order: &OrderRecord) -> Span {
    let mut span = own_span(
        ids::order_trace_id(&order.key),
        ids::root_span_id(&order.key),
        None,
        format!("order {}", order.key),
        order.first_seen_unix_nanos,
        order.last_seen_unix_nanos,
    );
    let reached: Vec<String> = config
        .taxonomy
        .milestones
        .iter()
        .filter(|m| order.milestone(&m.name).is_some_and(|s| s.reached.is_some()))
        .map(|m| m.name.clone())
        .collect();
    let (stage, next) = stage_and_next(config, order);
    let open: Vec<_> = order.open_exceptions().collect();
    let mut attributes = vec![
        string(keys::ORDER_ID, order.key.clone()),
        string("order.close_reason", order.close_reason.clone().unwrap_or_default()),
        string_array("order.milestones.reached", &reached),
        int("order.span_count", order.span_count as i64),
        int("order.exceptions.open", open.len() as i64),
        int("order.exceptions.total", order.exceptions.len() as i64),
    ];
    if let Some(stage) = stage {
        attributes.push(string("order.stage", stage.name.clone()));
    }
    if let Some(next) = next {
        let blocker = blocking_exception(order, &next.name);
        attributes.push(string("order.next_milestone", next.name.clone()));
        attributes.push(string("order.next_owner", blocker.map_or(&next.owner, |b| &b.owner).clone()));
        if let Some(b) = blocker {
            attributes.push(string("order.next_blocked_by", format!("{}: {}", b.class, b.reason)));
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

/// The oldest open exception on milestone `awaited`, which blocks it and so owns the next action. An SLA breach
/// is a consequence of the block, not its cause, so it never counts.
pub fn blocking_exception<'o>(order: &'o OrderRecord, awaited: &str) -> Option<&'o crate::order_state::ExceptionState> {
    order
        .open_exceptions()
        .filter(|e| e.milestone.as_deref() == Some(awaited) && !e.signature.starts_with("sla:"))
        .min_by_key(|e| e.first_seen_unix_nanos)
}

/// The furthest main-path milestone reached, and the first main-path milestone after it not yet reached.
pub fn stage_and_next<'c>(
    config: &'c Config,
    order: &OrderRecord,
) -> (Option<&'c crate::config::Milestone>, Option<&'c crate::config::Milestone>) {
    let is_reached = |name: &str| order.milestone(name).is_some_and(|s| s.reached.is_some());
    let main_path = config.taxonomy.milestones.iter().filter(|m| !m.off_path);
    let stage = main_path.clone().rfind(|m| is_reached(&m.name));
    let next = match stage {
        Some(stage) => main_path.skip_while(|m| m.name != stage.name).skip(1).find(|m| !is_reached(&m.name)),
        None => main_path.clone().next(),
    };
    (stage, next)
}
