//! Engine tests with plain data: no I/O, no clock, no sleeps.

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

const SECOND: u64 = 1_000_000_000;
const T0: u64 = 1_780_000_000 * SECOND;

fn kv(key: &str, value: &str) -> KeyValue {
    attributes::string(key, value)
}

struct SpanSpec {
    service: &'static str,
    name: &'static str,
    trace: u8,
    span: u8,
    kind: SpanKind,
    attrs: Vec<KeyValue>,
    error: Option<&'static str>,
    events: Vec<Event>,
    start: Option<u64>,
}

fn spec(service: &'static str, name: &'static str, trace: u8, span: u8) -> SpanSpec {
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

fn engine() -> Engine {
    Engine::new(Arc::new(default_config()), vec![], vec![])
}

fn run(engine: &mut Engine, spans: Vec<SpanSpec>, now: u64) -> Vec<(String, Span)> {
    let mut out = Output::default();
    engine.process(spans.into_iter().map(SpanSpec::build).collect(), now, &mut out);
    collect(out)
}

fn collect(out: Output) -> Vec<(String, Span)> {
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

fn attr(span: &Span, key: &str) -> Option<String> {
    find(&span.attributes, key).and_then(scalar_string).map(|s| s.into_owned())
}

fn in_order_trace<'a>(spans: &'a [(String, Span)], order: &str) -> Vec<&'a Span> {
    let trace = ids::order_trace_id(order).to_vec();
    spans.iter().map(|(_, s)| s).filter(|s| s.trace_id == trace).collect()
}

#[test]
fn keyed_span_is_reemitted_under_its_milestone_with_links_both_ways() {
    let mut engine = engine();
    let out = run(
        &mut engine,
        vec![spec("erp", "credit.check", 1, 1).attr("order.id", "SO-1").attr("credit.decision", "approved")],
        T0,
    );
    let order_spans = in_order_trace(&out, "SO-1");
    let correlated = order_spans.iter().find(|s| s.name == "credit.check").expect("re-emitted span");
    assert_eq!(correlated.parent_span_id, ids::milestone_span_id("SO-1", "credit_approval"));
    assert_eq!(attr(correlated, "order.milestone").as_deref(), Some("credit_approval"));
    assert_eq!(attr(correlated, "order.milestone.reached").as_deref(), Some("true"));
    assert_eq!(correlated.links[0].trace_id, vec![1; 16]);
    assert_eq!(correlated.links[0].span_id, vec![1; 8]);
    // The milestone span is emitted at once because the span reached it; it keeps its service as ordertrail.
    let milestone = out.iter().find(|(_, s)| s.name == "credit_approval").expect("milestone span");
    assert_eq!(milestone.0, "ordertrail");
    assert_eq!(milestone.1.parent_span_id, ids::root_span_id("SO-1"));
    // The original keeps its ids and links to the order trace's root.
    let original = out.iter().find(|(_, s)| s.trace_id == vec![1; 16]).expect("enriched original");
    assert_eq!(original.0, "erp");
    assert_eq!(original.1.links[0].trace_id, ids::order_trace_id("SO-1"));
    assert_eq!(original.1.links[0].span_id, ids::root_span_id("SO-1"));
    assert_eq!(attr(&original.1, "order.id").as_deref(), Some("SO-1"));
    // No root yet: the order is open.
    assert!(out.iter().all(|(_, s)| s.name != "order SO-1"));
    assert_eq!(engine.stats().spans_correlated, 1);
}

#[test]
fn blocked_credit_works_on_milestone_and_later_release_reaches_it() {
    let mut engine = engine();
    let out = run(
        &mut engine,
        vec![spec("erp", "credit.check", 1, 1).attr("order.id", "SO-1").attr("credit.decision", "blocked")],
        T0,
    );
    let span = in_order_trace(&out, "SO-1")[0];
    assert_eq!(attr(span, "order.milestone").as_deref(), Some("credit_approval"));
    assert_eq!(attr(span, "order.milestone.reached").as_deref(), Some("false"));
    assert_eq!(attr(span, "order.exception.class").as_deref(), Some("policy"));
    assert_eq!(attr(span, "order.exception.owner").as_deref(), Some("commercial-controls"));
    assert!(out.iter().all(|(_, s)| s.name != "credit_approval"), "not reached yet, so no milestone span");
    let order = engine.order("SO-1").unwrap();
    assert_eq!(order.open_exceptions().count(), 1);

    let out = run(
        &mut engine,
        vec![spec("erp", "credit.check", 2, 2).attr("order.id", "SO-1").attr("credit.decision", "approved")],
        T0 + SECOND,
    );
    assert!(out.iter().any(|(_, s)| s.name == "credit_approval"));
    let order = engine.order("SO-1").unwrap();
    assert!(order.milestone("credit_approval").unwrap().reached.is_some());
    let credit_holds = order.open_exceptions().filter(|e| e.milestone.as_deref() == Some("credit_approval"));
    assert_eq!(credit_holds.filter(|e| e.class != "policy" || e.signature == "credit-hold").count(), 0);
    // No order capture was seen, so the approval is out of order; that finding stays open.
    assert_eq!(
        order.open_exceptions().map(|e| e.signature.as_str()).collect::<Vec<_>>(),
        ["conformance:credit_approval"]
    );
}

#[test]
fn aliases_are_learned_and_chained() {
    let mut engine = engine();
    run(&mut engine, vec![spec("wms", "pack.confirm", 1, 1).attr("order.id", "SO-1").attr("delivery.id", "DL-1")], T0);
    // Only the delivery: joins through the alias and teaches the shipment.
    let out = run(
        &mut engine,
        vec![spec("tms", "carrier.book", 2, 2).attr("delivery.id", "DL-1").attr("shipment.id", "SH-1")],
        T0,
    );
    assert_eq!(in_order_trace(&out, "SO-1").len(), 1);
    // Only the shipment.
    let out = run(&mut engine, vec![spec("tms", "shipment.pickup.confirm", 3, 3).attr("shipment.id", "SH-1")], T0);
    let spans = in_order_trace(&out, "SO-1");
    assert!(spans.iter().any(|s| s.name == "shipment.pickup.confirm"));
    assert!(spans.iter().any(|s| s.name == "shipment_confirmation"));
    let changes = engine.take_changes();
    let kinds: HashSet<_> = changes.aliases.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, HashSet::from(["delivery", "shipment"]));
}

#[test]
fn a_span_for_several_orders_belongs_to_each_order_trace() {
    let mut engine = engine();
    let ids = KeyValue {
        key: "order.ids".into(),
        value: Some(AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: ["SO-1", "SO-2"]
                    .iter()
                    .map(|v| AnyValue { value: Some(Value::StringValue(v.to_string())) })
                    .collect(),
            })),
        }),
        ..Default::default()
    };
    let out = run(&mut engine, vec![spec("finance", "invoice.batch.post", 1, 1).attr_kv(ids)], T0);
    assert_eq!(in_order_trace(&out, "SO-1").iter().filter(|s| s.name == "invoice.batch.post").count(), 1);
    assert_eq!(in_order_trace(&out, "SO-2").iter().filter(|s| s.name == "invoice.batch.post").count(), 1);
    // Invoicing closes both orders, so both roots are out.
    assert!(out.iter().any(|(_, s)| s.name == "order SO-1"));
    assert!(out.iter().any(|(_, s)| s.name == "order SO-2"));
    let original = out.iter().find(|(_, s)| s.trace_id == vec![1; 16]).unwrap();
    assert_eq!(original.1.links.len(), 2);
}

#[test]
fn unkeyed_spans_inherit_from_their_trace_in_either_order() {
    let mut engine = engine();
    // The child arrives first and waits.
    let out = run(&mut engine, vec![spec("integration-middleware", "map ORDERS05 -> wms.order", 7, 2)], T0);
    assert!(out.is_empty());
    assert_eq!(engine.pending_spans(), 1);
    let out =
        run(&mut engine, vec![spec("erp", "publish orders.released", 7, 1).attr("order.id", "SO-1")], T0 + SECOND);
    let spans = in_order_trace(&out, "SO-1");
    assert!(spans.iter().any(|s| s.name == "map ORDERS05 -> wms.order"));
    assert_eq!(engine.pending_spans(), 0);
    // A later child joins at once.
    let out = run(&mut engine, vec![spec("integration-middleware", "process orders.released", 7, 3)], T0 + 2 * SECOND);
    assert_eq!(in_order_trace(&out, "SO-1").len(), 1);
    assert_eq!(engine.stats().spans_inherited, 2);
}

#[test]
fn spans_still_unkeyed_after_the_wait_pass_on_unchanged() {
    let mut engine = engine();
    let out = run(&mut engine, vec![spec("customer-portal", "GET /healthz", 9, 1)], T0);
    assert!(out.is_empty());
    let mut out = Output::default();
    engine.tick(T0 + SECOND, &mut out);
    assert!(out.is_empty(), "still within the 2 s wait");
    engine.tick(T0 + 3 * SECOND, &mut out);
    let spans = collect(out);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].1.trace_id, vec![9; 16]);
    assert!(spans[0].1.attributes.is_empty(), "passed on unchanged");
    assert_eq!(engine.stats().spans_uncorrelated, 1);
}

#[test]
fn the_wait_buffer_is_bounded_and_counts_overflow() {
    let yaml = DEFAULT_CONFIG_YAML.replace("inherit_wait: 2s", "inherit_wait: 2s\n  max_pending_spans: 2");
    let mut engine = Engine::new(Arc::new(parse(&yaml, "t").unwrap()), vec![], vec![]);
    let out = run(&mut engine, (1..=3).map(|i| spec("x", "unkeyed", i, i)).collect(), T0);
    assert_eq!(out.len(), 1);
    assert_eq!(engine.pending_spans(), 2);
    assert_eq!(engine.stats().pending_overflow, 1);
    assert_eq!(engine.stats().spans_uncorrelated, 1);
}

#[test]
fn milestones_are_emitted_once_even_after_a_restart() {
    let mut engine = engine();
    let capture =
        || spec("customer-portal", "POST /api/orders", 1, 1).kind(SpanKind::Server).attr("app.order.id", "SO-1");
    let out = run(&mut engine, vec![capture()], T0);
    assert_eq!(out.iter().filter(|(_, s)| s.name == "order_capture").count(), 1);
    let out = run(&mut engine, vec![capture()], T0);
    assert_eq!(out.iter().filter(|(_, s)| s.name == "order_capture").count(), 0);

    let changes = engine.take_changes();
    let mut restarted = Engine::new(engine.config().clone(), changes.orders, changes.aliases);
    let out = run(&mut restarted, vec![capture()], T0 + SECOND);
    assert_eq!(out.iter().filter(|(_, s)| s.name == "order_capture").count(), 0);
    // The trace continues: same order trace id, same parent.
    let spans = in_order_trace(&out, "SO-1");
    assert_eq!(spans[0].parent_span_id, ids::milestone_span_id("SO-1", "order_capture"));
    assert_eq!(restarted.order("SO-1").unwrap().span_count, 3);
}

#[test]
fn invoicing_closes_the_order_and_emits_unreached_milestones_and_the_root() {
    let mut engine = engine();
    run(
        &mut engine,
        vec![spec("erp", "pricing.check", 1, 1)
            .attr("order.id", "SO-1")
            .attr("pricing.decision", "exception")
            .error("variance")],
        T0,
    );
    let out = run(&mut engine, vec![spec("finance", "invoice.create", 2, 2).attr("order.id", "SO-1")], T0 + SECOND);
    let root = out.iter().find(|(_, s)| s.name == "order SO-1").expect("root").1.clone();
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.span_id, ids::root_span_id("SO-1"));
    assert_eq!(root.status.as_ref().unwrap().code, StatusCode::Error as i32, "an open pricing exception");
    let pricing = out.iter().find(|(_, s)| s.name == "pricing_approval").expect("unreached milestone span").1.clone();
    assert_eq!(attr(&pricing, "order.milestone.reached").as_deref(), Some("false"));
    assert!(engine.order("SO-1").unwrap().is_closed());
    // Nothing is emitted twice when a later span arrives.
    let out = run(&mut engine, vec![spec("finance", "invoice.create", 3, 3).attr("order.id", "SO-1")], T0 + 2 * SECOND);
    assert!(out.iter().all(|(_, s)| s.name != "order SO-1" && s.name != "invoicing" && s.name != "pricing_approval"));
}

#[test]
fn idle_orders_close_after_the_configured_period() {
    let yaml = DEFAULT_CONFIG_YAML.replace("idle_close_after: 168h", "idle_close_after: 10s");
    let mut engine = Engine::new(Arc::new(parse(&yaml, "t").unwrap()), vec![], vec![]);
    run(
        &mut engine,
        vec![spec("erp", "credit.check", 1, 1).attr("order.id", "SO-1").attr("credit.decision", "approved")],
        T0,
    );
    let mut out = Output::default();
    engine.tick(T0 + 5 * SECOND, &mut out);
    assert!(out.is_empty());
    engine.tick(T0 + 11 * SECOND, &mut out);
    let spans = collect(out);
    let root = spans.iter().find(|(_, s)| s.name == "order SO-1").expect("root after idle");
    assert_eq!(attr(&root.1, "order.close_reason").as_deref(), Some("idle"));
    assert_eq!(attr(&root.1, "order.next_milestone").as_deref(), Some("pricing_approval"));
    assert_eq!(attr(&root.1, "order.next_owner").as_deref(), Some("commercial-pricing"));
}

#[test]
fn self_declared_labels_are_checked_against_the_taxonomy() {
    let mut engine = engine();
    let out = run(
        &mut engine,
        vec![
            spec("erp", "custom.step", 1, 1).attr("order.id", "SO-1").attr("order.milestone", "pick_release"),
            spec("erp", "custom.step", 2, 2).attr("order.id", "SO-2").attr("order.milestone", "teleportation"),
        ],
        T0,
    );
    let ok = in_order_trace(&out, "SO-1")[0];
    assert_eq!(attr(ok, "order.milestone").as_deref(), Some("pick_release"));
    let bad = in_order_trace(&out, "SO-2")[0];
    assert_eq!(attr(bad, "order.exception.class").as_deref(), Some("data_quality"));
    assert!(attr(bad, "order.exception.reason").unwrap().contains("teleportation"));
    assert_eq!(engine.order("SO-2").unwrap().exceptions[0].class, "data_quality");
}

#[test]
fn failures_are_classified_by_the_semantic_conventions_when_no_rule_decides() {
    let mut engine = engine();
    let mut timeout = spec("erp", "HTTP POST", 1, 1).kind(SpanKind::Client).attr("order.id", "SO-1").error("upstream");
    timeout.attrs.push(attributes::int("http.response.status_code", 503));
    let mut invalid = spec("erp", "POST /api/orders", 2, 2).kind(SpanKind::Server).attr("order.id", "SO-2");
    invalid.attrs.push(attributes::int("http.response.status_code", 422));
    let crash = spec("wms", "label.print", 3, 3).attr("order.id", "SO-3").error("printer jammed");
    let out = run(&mut engine, vec![timeout, invalid, crash], T0);
    let class = |order: &str| attr(in_order_trace(&out, order)[0], "order.exception.class");
    assert_eq!(class("SO-1").as_deref(), Some("integration"));
    assert_eq!(class("SO-2").as_deref(), Some("data_quality"));
    assert_eq!(class("SO-3").as_deref(), Some("execution"));
    assert_eq!(
        attr(in_order_trace(&out, "SO-3")[0], "order.exception.owner").as_deref(),
        Some("operations-management")
    );
}

#[test]
fn a_failed_mapping_inherits_the_order_of_a_known_shipment_and_is_an_integration_exception() {
    let mut engine = engine();
    run(&mut engine, vec![spec("tms", "carrier.book", 1, 1).attr("order.ids", "SO-9").attr("shipment.id", "SH-9")], T0);
    let mut mapping =
        spec("integration-middleware", "map carrier.status -> erp.shipment_confirmation", 4, 3).error("field ShipDate");
    mapping.events.push(Event {
        name: "exception".into(),
        attributes: vec![kv("exception.type", "MappingError"), kv("exception.message", "field ShipDate")],
        ..Default::default()
    });
    // The mapping span comes first and waits; the client span names the shipment only in its URL path.
    let out = run(&mut engine, vec![mapping], T0);
    assert!(out.is_empty());
    let out = run(
        &mut engine,
        vec![spec("tms", "PUT /api/shipments/{id}/status", 4, 2)
            .kind(SpanKind::Client)
            .attr("url.path", "/api/shipments/SH-9/status")],
        T0,
    );
    let spans = in_order_trace(&out, "SO-9");
    let mapped = spans.iter().find(|s| s.name.starts_with("map carrier.status")).expect("inherited");
    assert_eq!(attr(mapped, "order.milestone").as_deref(), Some("shipment_confirmation"));
    assert_eq!(attr(mapped, "order.milestone.reached").as_deref(), Some("false"));
    assert_eq!(attr(mapped, "order.exception.class").as_deref(), Some("integration"));
    assert_eq!(attr(mapped, "order.exception.owner").as_deref(), Some("integration-team"));
}

// --- SLA clocks and conformance -------------------------------------------------------------------------------

const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
/// A span that starts at `t` ends 5 ms later; milestones are reached at the end.
const END: u64 = 5_000_000;

fn capture(trace: u8, order: &str, segment: &str, at: u64) -> SpanSpec {
    spec("erp", "order.create", trace, 1).attr("order.id", order_static(order)).attr("customer.segment", segment).at(at)
}

fn order_static(order: &str) -> &'static str {
    Box::leak(order.to_string().into_boxed_str())
}

fn milestone(service: &'static str, name: &'static str, order: &str, at: u64) -> SpanSpec {
    spec(service, name, 9, 9).attr("order.id", order_static(order)).at(at)
}

fn tick(engine: &mut Engine, now: u64) -> (Vec<(String, Span)>, Vec<events::Event>) {
    let mut out = Output::default();
    engine.tick(now, &mut out);
    let events = std::mem::take(&mut out.events);
    (collect(out), events)
}

fn process(engine: &mut Engine, spans: Vec<SpanSpec>, now: u64) -> (Vec<(String, Span)>, Vec<events::Event>) {
    let mut out = Output::default();
    engine.process(spans.into_iter().map(SpanSpec::build).collect(), now, &mut out);
    let events = std::mem::take(&mut out.events);
    (collect(out), events)
}

fn breaches(events: &[events::Event]) -> usize {
    events.iter().filter(|e| matches!(e, events::Event::SlaBreached { .. })).count()
}

#[test]
fn a_missed_deadline_is_breached_once_at_the_deadline_and_owned_by_the_awaited_milestone() {
    let mut engine = engine();
    process(&mut engine, vec![capture(1, "SO-1", "standard", T0)], T0);
    tick(&mut engine, T0);
    let deadline = T0 + END + 4 * HOUR;
    let order = engine.order("SO-1").unwrap();
    assert_eq!(order.sla("order_release").unwrap().deadline_unix_nanos, deadline);

    // The default detection delay of 500 ms lets a span in flight arrive; the breach comes right after it.
    let detected = deadline + 500_000_000;
    let (spans, events) = tick(&mut engine, detected - 1);
    assert!(spans.is_empty() && breaches(&events) == 0, "not due yet");
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

#[test]
fn a_late_milestone_resolves_the_breach_and_records_its_lateness() {
    let mut engine = engine();
    process(&mut engine, vec![capture(1, "SO-1", "standard", T0)], T0);
    tick(&mut engine, T0);
    let deadline = T0 + END + 4 * HOUR;
    let (_, events) = tick(&mut engine, deadline + SECOND);
    assert_eq!(breaches(&events), 1);
    let release_at = deadline + 30 * MINUTE;
    let (spans, events) =
        process(&mut engine, vec![milestone("wms", "wave.release", "SO-1", release_at - END)], release_at);
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
    process(&mut engine, vec![capture(1, "SO-1", "standard", T0), capture(2, "SO-2", "standard", T0)], T0);
    let deadline = T0 + END + 4 * HOUR;
    process(&mut engine, vec![milestone("wms", "wave.release", "SO-1", T0 + HOUR)], T0 + HOUR);
    // SO-2's release happened after its deadline, and its span arrives before any tick has checked.
    let (_, events) =
        process(&mut engine, vec![milestone("wms", "wave.release", "SO-2", deadline + MINUTE)], deadline + MINUTE);
    assert_eq!(breaches(&events), 1);
    let (_, events) = tick(&mut engine, deadline + 2 * HOUR);
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
    let (_, events) = tick(&mut engine, now + SECOND);
    assert_eq!(breaches(&events), 0);
    assert_eq!(engine.order("SO-1").unwrap().sla("order_release").unwrap().status().as_str(), "met");
}

#[test]
fn deadlines_survive_a_restart_and_a_breach_is_not_repeated_after_one() {
    let config = Arc::new(default_config());
    let mut first = Engine::new(config.clone(), vec![], vec![]);
    process(&mut first, vec![capture(1, "SO-1", "standard", T0)], T0);
    let deadline = T0 + END + 4 * HOUR;
    let saved: Vec<OrderRecord> = first.take_changes().orders;

    // Restarted before the deadline: the clock is still running and breaches on time.
    let mut second = Engine::new(config.clone(), saved, vec![]);
    assert_eq!(second.stats().pending_deadlines, 0, "gauge is set on the first tick");
    let (_, events) = tick(&mut second, deadline - SECOND);
    assert_eq!(breaches(&events), 0);
    assert_eq!(second.stats().pending_deadlines, 1);
    let (_, events) = tick(&mut second, deadline + SECOND);
    assert_eq!(breaches(&events), 1);
    let saved: Vec<OrderRecord> = second.take_changes().orders;

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
    let config = parse(&format!("{yaml}{extra}\nconformance:{rest}"), "test.yaml").unwrap();
    let mut engine = Engine::new(Arc::new(config), vec![], vec![]);
    // Friday 2026-11-20 15:00 Paris time is 14:00 UTC: 2 working hours left on Friday, 2 more on Monday.
    let friday = 1_795_183_200 * SECOND;
    process(
        &mut engine,
        vec![capture(1, "SO-STD", "standard", friday - END), capture(2, "SO-KEY", "key-account", friday - END)],
        friday,
    );
    let monday_11_paris = friday + 3 * 24 * HOUR - 4 * HOUR;
    assert_eq!(engine.order("SO-STD").unwrap().sla("order_release").unwrap().deadline_unix_nanos, monday_11_paris);
    assert_eq!(engine.order("SO-KEY").unwrap().sla("order_release").unwrap().deadline_unix_nanos, friday + 30 * MINUTE);
}

#[test]
fn an_invoice_before_shipment_confirmation_is_a_policy_exception_of_the_invoicing_team() {
    let mut engine = engine();
    let steps = [
        ("erp", "order.create", 0),
        ("erp", "credit.check", 1),
        ("erp", "inventory.allocate", 2),
        ("wms", "wave.release", 3),
        ("wms", "pack.confirm", 4),
        ("finance", "invoice.create", 6),
    ];
    let spans = steps.iter().map(|(svc, name, h)| milestone(svc, name, "SO-1", T0 + h * HOUR)).collect();
    let (out, _) = process(&mut engine, spans, T0 + 6 * HOUR);
    let order = engine.order("SO-1").unwrap();
    let open: Vec<_> = order.open_exceptions().collect();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].class, "policy");
    assert_eq!(open[0].owner, "finance-billing");
    assert_eq!(open[0].reason, "invoicing reached before shipment_confirmation");
    let finding = out.iter().map(|(_, s)| s).find(|s| s.name == "invoicing reached before shipment_confirmation");
    let finding = finding.expect("the finding is visible in the order trace");
    assert_eq!(finding.parent_span_id, ids::milestone_span_id("SO-1", "invoicing"));

    // The shipment confirmation arrives afterwards but happened before the invoice: the events were merely
    // delivered out of order, and the finding is resolved.
    process(&mut engine, vec![milestone("tms", "shipment.pickup.confirm", "SO-1", T0 + 5 * HOUR)], T0 + 7 * HOUR);
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
    process(&mut engine, vec![milestone("wms", "pack.confirm", "SO-1", T0 + 2 * HOUR)], T0 + 2 * HOUR);
    // SO-2: the pick span arrives before the cancellation that preceded it.
    process(
        &mut engine,
        vec![milestone("erp", "order.create", "SO-2", T0), milestone("wms", "pack.confirm", "SO-2", T0 + 2 * HOUR)],
        T0 + 2 * HOUR,
    );
    process(&mut engine, vec![milestone("erp", "order.cancel", "SO-2", T0 + HOUR)], T0 + 3 * HOUR);
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
    tick(&mut engine, T0);
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
fn an_order_with_uncommitted_changes_is_not_evicted() {
    let yaml = DEFAULT_CONFIG_YAML.replace("  inherit_wait: 2s", "  inherit_wait: 2s\n  max_orders: 2");
    let mut engine = Engine::new(Arc::new(parse(&yaml, "test.yaml").unwrap()), vec![], vec![]);
    // SO-A closes (invoiced) and, in the same group, two new orders arrive: without the guard SO-A would be
    // evicted before its closed record is taken for the commit.
    process(
        &mut engine,
        vec![
            milestone("finance", "invoice.post", "SO-A", T0),
            milestone("erp", "order.create", "SO-B", T0),
            milestone("erp", "order.create", "SO-C", T0),
        ],
        T0,
    );
    let changes = engine.take_changes();
    let closed_a = changes.orders.iter().find(|o| o.key == "SO-A").expect("SO-A's final state is committed");
    assert!(closed_a.is_closed());
    assert_eq!(engine.stats().orders_refused, 1, "SO-C waits for room instead");
    // Once committed, SO-A may make room.
    process(&mut engine, vec![milestone("erp", "order.create", "SO-D", T0)], T0);
    assert!(engine.order("SO-A").is_none());
    assert!(engine.order("SO-D").is_some());
}

#[test]
fn a_remembered_technical_trace_survives_a_restart_and_is_forgotten_in_the_store_when_it_expires() {
    let config = Arc::new(default_config());
    let mut first = Engine::new(config.clone(), vec![], vec![]);
    // Trace 5 is tied to SO-T by its keyed span; an unkeyed span of trace 6 waits for its keyed one.
    process(&mut first, vec![spec("wms", "pick.confirm", 5, 1).attr("order.id", "SO-T")], T0);
    process(&mut first, vec![spec("wms", "db.query", 6, 2)], T0);
    let changes = first.take_changes();
    let stored = |rows: Vec<(Vec<u8>, Option<Vec<u8>>)>| -> Vec<(Vec<u8>, Vec<u8>)> {
        rows.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
    };
    let traces = stored(changes.traces);
    assert_eq!(traces.len(), 1);
    let pending = stored(changes.pending);
    assert_eq!(pending.len(), 1);

    // After the restart, a late unkeyed span of trace 5 joins SO-T at once instead of waiting and passing on.
    let mut second = Engine::new(config.clone(), changes.orders, vec![]);
    second.restore_traces(traces.clone(), T0 + SECOND);
    let mut out = Output::default();
    second.restore_pending(pending, T0 + SECOND, &mut out);
    let (spans, _) = process(&mut second, vec![spec("wms", "db.query", 5, 3)], T0 + SECOND);
    assert_eq!(in_order_trace(&spans, "SO-T").len(), 1, "the late span joined its order");
    assert_eq!(second.stats().spans_inherited, 1);
    assert_eq!(second.pending_spans(), 1, "trace 6 is still unknown, so its span waits again");

    // Ten minutes later (`trace_memory`) the trace is forgotten, and the store is told to forget it too.
    let mut out = Output::default();
    second.tick(T0 + 11 * 60 * SECOND, &mut out);
    let changes = second.take_changes();
    assert!(changes.traces.iter().any(|(k, v)| k == &vec![5u8; 16] && v.is_none()), "{:?}", changes.traces);

    // A restart after expiry drops the stale row instead of reviving it.
    let mut third = Engine::new(config, vec![], vec![]);
    third.restore_traces(traces, T0 + 11 * 60 * SECOND);
    let changes = third.take_changes();
    assert_eq!(changes.traces, vec![(vec![5u8; 16], None)]);
}

#[test]
fn correlation_coverage_is_counted_per_route_and_bounded() {
    let yaml = DEFAULT_CONFIG_YAML.replace("    max_coverage_routes: 500", "    max_coverage_routes: 3");
    let mut engine = Engine::new(Arc::new(parse(&yaml, "test.yaml").unwrap()), vec![], vec![]);
    let spans = vec![
        spec("erp", "credit.check", 1, 1).attr("order.id", "SO-1"),
        spec("erp", "credit.check", 2, 2).attr("order.id", "SO-2"),
        spec("wms", "GET /stock", 3, 3).attr("http.route", "/stock/{sku}"),
        spec("tms", "carrier.poll", 4, 4),
    ];
    process(&mut engine, spans, T0);
    tick(&mut engine, T0 + 10 * SECOND);
    let coverage = &engine.stats().coverage;
    let get = |service: &str, route: &str| coverage.get(&(service.to_string(), route.to_string())).copied();
    assert_eq!(get("erp", "credit.check"), Some(Coverage { correlated: 2, uncorrelated: 0 }));
    assert_eq!(get("wms", "/stock/{sku}"), Some(Coverage { correlated: 0, uncorrelated: 1 }), "{coverage:?}");
    assert_eq!(
        get("other", "other"),
        Some(Coverage { correlated: 0, uncorrelated: 1 }),
        "the third route is over the bound"
    );
    assert_eq!(coverage.len(), 3);
}
