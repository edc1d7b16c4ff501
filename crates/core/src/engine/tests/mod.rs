//! Engine tests with plain data: no I/O, no clock, no sleeps. This file holds the span builders and runners they
//! share; `correlation` covers finding orders, labelling and emission, `accountability` SLA clocks and
//! conformance, `bounds` memory bounds, eviction and state kept across restarts.

mod accountability;
mod bounds;
mod correlation;
mod invariance;

use super::*;
use crate::config::{default_config, parse, DEFAULT_CONFIG_YAML};
use crate::ids;
use attributes::{find, scalar_string};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Status};
use std::collections::HashSet;

pub(super) const SECOND: u64 = 1_000_000_000;
pub(super) const T0: u64 = 1_780_000_000 * SECOND;

pub(super) fn kv(key: &str, value: &str) -> KeyValue {
    attributes::string(key, value)
}

/// An attribute whose value is an array of strings (`order.ids`, the deliveries of a consolidated booking).
pub(super) fn string_array<S: AsRef<str>>(key: &str, values: &[S]) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: values
                    .iter()
                    .map(|v| AnyValue { value: Some(Value::StringValue(v.as_ref().into())) })
                    .collect(),
            })),
        }),
        ..Default::default()
    }
}

pub(super) struct SpanSpec {
    pub(super) service: &'static str,
    pub(super) name: &'static str,
    pub(super) trace: u8,
    pub(super) span: u8,
    pub(super) kind: SpanKind,
    pub(super) attrs: Vec<KeyValue>,
    pub(super) error: Option<&'static str>,
    pub(super) events: Vec<Event>,
    pub(super) start: Option<u64>,
}

pub(super) fn spec(service: &'static str, name: &'static str, trace: u8, span: u8) -> SpanSpec {
    SpanSpec {
        service,
        name,
        trace,
        span,
        kind: SpanKind::Internal,
        attrs: vec![],
        error: None,
        events: vec![],
        start: None,
    }
}

impl SpanSpec {
    fn attr(mut self, key: &str, value: &str) -> Self {
        self.attrs.push(kv(key, value));
        self
    }
    fn attr_kv(mut self, kv: KeyValue) -> Self {
        self.attrs.push(kv);
        self
    }
    fn kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }
    fn error(mut self, message: &'static str) -> Self {
        self.error = Some(message);
        self
    }
    /// Sets the span's start (source clock); it lasts 5 ms.
    fn at(mut self, start: u64) -> Self {
        self.start = Some(start);
        self
    }
    fn build(self) -> ResourceSpans {
        let start = self.start.unwrap_or(T0 + u64::from(self.span) * SECOND);
        let span = Span {
            trace_id: vec![self.trace; 16],
            span_id: vec![self.span; 8],
            name: self.name.into(),
            kind: self.kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + 5_000_000,
            attributes: self.attrs,
            events: self.events,
            status: self.error.map(|m| Status { code: StatusCode::Error as i32, message: m.into() }),
            ..Default::default()
        };
        ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", self.service)], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            schema_url: String::new(),
        }
    }
}

pub(super) fn engine() -> Engine {
    Engine::new(Arc::new(default_config()), vec![], vec![])
}

pub(super) fn run(engine: &mut Engine, spans: Vec<SpanSpec>, now: u64) -> Vec<(String, Span)> {
    let mut out = Output::default();
    engine.process(spans.into_iter().map(SpanSpec::build).collect(), now, &mut out);
    collect(out)
}

pub(super) fn collect(out: Output) -> Vec<(String, Span)> {
    out.into_resource_spans()
        .into_iter()
        .flat_map(|rs| {
            let service = ResourceContext::new(rs.resource, String::new()).service_name;
            rs.scope_spans.into_iter().flat_map(move |ss| {
                let service = service.clone();
                ss.spans.into_iter().map(move |s| (service.clone(), s))
            })
        })
        .collect()
}

pub(super) fn attr(span: &Span, key: &str) -> Option<String> {
    find(&span.attributes, key).and_then(scalar_string).map(|s| s.into_owned())
}

/// The technical spans re-emitted into the trace of `order` (ordertrail's own root, milestone and finding spans
/// left out).
pub(super) fn in_order_trace<'a>(spans: &'a [(String, Span)], order: &str) -> Vec<&'a Span> {
    let trace = ids::order_trace_id(order).to_vec();
    spans.iter().filter(|(service, s)| s.trace_id == trace && service != "ordertrail").map(|(_, s)| s).collect()
}

/// The settling delay of the default configuration.
pub(super) fn delay() -> u64 {
    crate::time::nanos(default_config().sla.detection_delay)
}

/// Advances the engine past the settling delay after `now`: what follows from the milestones reached by then. It
/// ticks at `now` first, which starts a fresh engine's clock (judgements hold for the delay after the first tick).
pub(super) fn settle(engine: &mut Engine, now: u64) -> Vec<(String, Span)> {
    let mut out = Output::default();
    engine.tick(now, &mut out);
    engine.tick(now + crate::time::nanos(engine.config().sla.detection_delay), &mut out);
    collect(out)
}

/// Processes `spans` at `now` and lets them settle: what a run of the old, immediate engine produced at once.
pub(super) fn run_settled(engine: &mut Engine, spans: Vec<SpanSpec>, now: u64) -> Vec<(String, Span)> {
    let mut out = run(engine, spans, now);
    out.extend(settle(engine, now));
    out
}

pub(super) const MINUTE: u64 = 60 * SECOND;
pub(super) const HOUR: u64 = 60 * MINUTE;
/// A span that starts at `t` ends 5 ms later; milestones are reached at the end.
pub(super) const END: u64 = 5_000_000;

pub(super) fn capture(trace: u8, order: &str, segment: &str, at: u64) -> SpanSpec {
    spec("erp", "order.create", trace, 1).attr("order.id", order_static(order)).attr("customer.segment", segment).at(at)
}

pub(super) fn order_static(order: &str) -> &'static str {
    Box::leak(order.to_string().into_boxed_str())
}

pub(super) fn milestone(service: &'static str, name: &'static str, order: &str, at: u64) -> SpanSpec {
    spec(service, name, 9, 9).attr("order.id", order_static(order)).at(at)
}

pub(super) fn tick(engine: &mut Engine, now: u64) -> (Vec<(String, Span)>, Vec<events::Event>) {
    let mut out = Output::default();
    engine.tick(now, &mut out);
    let events = std::mem::take(&mut out.events);
    (collect(out), events)
}

pub(super) fn process(
    engine: &mut Engine,
    spans: Vec<SpanSpec>,
    now: u64,
) -> (Vec<(String, Span)>, Vec<events::Event>) {
    let mut out = Output::default();
    engine.process(spans.into_iter().map(SpanSpec::build).collect(), now, &mut out);
    let events = std::mem::take(&mut out.events);
    (collect(out), events)
}

pub(super) fn breaches(events: &[events::Event]) -> usize {
    events.iter().filter(|e| matches!(e, events::Event::SlaBreached { .. })).count()
}

/// The records of the orders a commit writes, as a restarted engine is given them.
pub(super) fn records(writes: Vec<OrderWrite>) -> Vec<OrderRecord> {
    writes.into_iter().map(|write| write.record).collect()
}
