//! The engine is fed arbitrary `ResourceSpans` directly (ids of any length, unicode and huge strings, nested
//! attribute values, weird numbers and timestamps, out-of-range enums, clocks that jump); it must never panic,
//! and what it emits must be well formed. `robustness_http.rs` and `robustness_grpc.rs` feed the real server.
//!
//! # Time budget
//!
//! The number of generated cases is fixed and shrinking is capped, so the three robustness files run in bounded
//! time: about ten seconds together in a debug build on two cores. The engine properties default to 256 cases and
//! the server properties, which send a request per case, to 32; `PROPTEST_CASES` overrides both (see
//! `hostile/mod.rs`). Nothing here asserts on timing.
//!
//! # A longer campaign
//!
//! ```text
//! PROPTEST_CASES=5000 cargo test --release --test robustness_engine --test robustness_http --test robustness_grpc
//! ```
//!
//! A failing engine case is shrunk and printed, and its seed is saved next to this file in
//! `robustness_engine.proptest-regressions` so that later runs try it first; commit that file with the fix.

mod common;
mod hostile;

use hostile::*;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use ordertrail_core::config::Config;
use ordertrail_core::engine::{Engine, Output};
use ordertrail_core::ids;
use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

/// The default configuration, parsed once: parsing compiles every rule's regex, which is slow in debug builds.
fn config() -> Arc<Config> {
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    CONFIG.get_or_init(|| Arc::new(ordertrail_core::config::default_config())).clone()
}

/// The default configuration with every memory bound of correlation tiny, so that a handful of spans drive the
/// engine into its eviction and refusal paths.
fn tight_config() -> Arc<Config> {
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut config = ordertrail_core::config::default_config();
            let c = &mut config.correlation;
            (c.max_orders, c.max_aliases, c.max_pending_spans, c.max_tracked_traces) = (2, 1, 2, 1);
            Arc::new(config)
        })
        .clone()
}

// ---------------------------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------------------------

/// Attribute keys that the default configuration reads, so that generated spans reach its rules and key sources.
const KEYS: &[&str] = &[
    "order.id",
    "app.order.id",
    "order.ids",
    "url.path",
    "shipment.id",
    "delivery.id",
    "invoice.id",
    "edi.asn.id",
    "order.milestone",
    "order.milestone.reached",
    "order.exception.class",
    "order.exception.owner",
    "customer.id",
    "customer.segment",
    "warehouse.id",
    "approval.channel",
    "wms.pick.status",
    "finance.hold.reason",
    "pricing.decision",
    "credit.decision",
    "inventory.snapshot_age_s",
    "order.quantity.ordered",
    "order.quantity.shipped",
    "http.response.status_code",
    "http.status_code",
    "rpc.grpc.status_code",
    "error.type",
    "enduser.id",
    "order.actor",
    "http.route",
];

/// String values that mean something to the default configuration, and some that merely look like they might.
const WORDS: &[&str] = &[
    "SO-1",
    "SO-2",
    "SO-3",
    " SO-1 ",
    "",
    "   ",
    "/api/orders/SO-2/lines",
    "/api/orders//x",
    "/api/orders/",
    "/api/shipments/SH-1/events",
    "SH-1",
    "DL-1",
    "INV-1",
    "order_capture",
    "credit_approval",
    "pricing_approval",
    "inventory_allocation",
    "pick_release",
    "pick_pack",
    "shipment_confirmation",
    "invoicing",
    "customer_notification",
    "order_cancellation",
    "no_such_milestone",
    "policy",
    "execution",
    "data_quality",
    "integration",
    "bogus_class",
    "email",
    "phone",
    "partial",
    "exception",
    "blocked",
    "key-account",
    "NaN",
    "inf",
    "-inf",
    "-1",
    "1e400",
    "3601",
    "500",
    "400",
    "14",
    "connection refused",
    "timed out",
    "true",
    "\u{0}",
    "\u{202e}evil",
    "日本語の注文",
    "🦀🦀",
];

/// Span names that trigger the default rules.
const NAMES: &[&str] = &[
    "credit.check",
    "pricing.approve",
    "pricing.review",
    "inventory.allocate",
    "inventory.allocation",
    "orders.released",
    "wave.start",
    "POST /api/orders/SO-1/release",
    "pick.line",
    "pack.carton",
    "shipment.confirm",
    "shipment.status",
    "edi 856",
    "carrier.book",
    "invoice.post",
    "notify.customer",
    "order.cancel",
    "order.create",
    "POST /api/orders",
    "substitution.propose",
    "GET /api/orders/SO-3/lines",
];

const SERVICES: &[&str] = &["erp", "wms", "tms", "edi-middleware", "finance", "", "unknown_service"];

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(WORDS).prop_map(str::to_string)
}

/// A string of up to `max_chars` repetitions of one character, ASCII or multi-byte, cheap to generate at any size.
fn huge_string(max_chars: usize) -> impl Strategy<Value = String> {
    (0..=max_chars, prop::sample::select(vec!['x', 'é', '😀', '\u{0}', ' ']))
        .prop_map(|(n, c)| std::iter::repeat_n(c, n).collect())
}

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        5 => word(),
        3 => ".{0,24}",
        1 => huge_string(64 * 1024),
    ]
    .boxed()
}

fn weird_i64() -> impl Strategy<Value = i64> {
    prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(-1), Just(0), 0..5000i64, any::<i64>()]
}

fn weird_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-1.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        0.0..1e6f64,
        any::<f64>(),
    ]
}

/// Timestamps and `now` values: zero, the extremes, today, and anything at all.
fn time() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(i64::MAX as u64),
        Just(T0),
        T0 - 86_400 * SECOND..T0 + 86_400 * SECOND,
        any::<u64>(),
    ]
}

/// Ids: mostly of the right length from a small pool, so that duplicates and shared traces are common, and
/// otherwise empty, all-zero, random or of the wrong length.
fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => (1u8..5).prop_map(move |b| vec![b; len]),
        2 => vec(any::<u8>(), len),
        1 => Just(Vec::new()),
        1 => Just(vec![0; len]),
        1 => vec(any::<u8>(), 0..20),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => ".{0,12}",
        1 => Just(String::new()),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => text().prop_map(Value::StringValue),
        2 => weird_i64().prop_map(Value::IntValue),
        2 => weird_f64().prop_map(Value::DoubleValue),
        1 => any::<bool>().prop_map(Value::BoolValue),
        1 => vec(any::<u8>(), 0..32).prop_map(Value::BytesValue),
        1 => any::<i32>().prop_map(Value::StringValueStrindex),
    ]
}

/// Any attribute value, arrays and key-value lists nested up to ten levels deep.
fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![9 => scalar().prop_map(Some), 1 => Just(None)].prop_map(|value| AnyValue { value });
    leaf.prop_recursive(10, 48, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4)
                .prop_map(|values| AnyValue { value: Some(Value::ArrayValue(ArrayValue { values })) }),
            vec((key(), inner), 0..4).prop_map(|pairs| AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: pairs.into_iter().map(|(k, v)| kv(k, v)).collect(),
                })),
            }),
        ]
    })
}

fn attribute() -> impl Strategy<Value = KeyValue> {
    prop_oneof![
        8 => (key(), any_value()).prop_map(|(k, v)| kv(k, v)),
        // An attribute whose value is missing altogether, which the protocol allows.
        1 => key().prop_map(|key| KeyValue { key, value: None, ..Default::default() }),
    ]
}

/// An attribute that names an order or an alias, in any of the shapes the key sources accept or should ignore.
fn order_reference() -> impl Strategy<Value = KeyValue> {
    let key = prop::sample::select(vec![
        "order.id",
        "app.order.id",
        "order.ids",
        "url.path",
        "shipment.id",
        "delivery.id",
        "invoice.id",
        "edi.asn.id",
    ]);
    let reference = prop::sample::select(vec![
        "SO-1",
        "SO-2",
        "SO-3",
        " SO-1 ",
        "SH-1",
        "DL-1",
        "INV-1",
        "/api/orders/SO-2/lines",
        "/api/shipments/SH-1/events",
        "",
    ]);
    let value = prop_oneof![
        4 => reference.clone().prop_map(|s| Value::StringValue(s.to_string())),
        1 => (0i64..4).prop_map(Value::IntValue),
        1 => vec(reference, 0..4)
            .prop_map(|refs| Value::ArrayValue(ArrayValue { values: refs.into_iter().map(string).collect() })),
        1 => scalar(),
    ];
    (key, value).prop_map(|(k, v)| kv(k.to_string(), AnyValue { value: Some(v) }))
}

/// An attribute that the labelling rules or the order record read, with a value that may or may not fit.
fn label_attribute() -> impl Strategy<Value = KeyValue> {
    let key = prop::sample::select(vec![
        "order.milestone",
        "order.milestone.reached",
        "order.exception.class",
        "order.exception.owner",
        "approval.channel",
        "wms.pick.status",
        "finance.hold.reason",
        "pricing.decision",
        "credit.decision",
        "inventory.snapshot_age_s",
        "customer.segment",
        "warehouse.id",
        "order.quantity.ordered",
        "order.quantity.shipped",
        "http.response.status_code",
        "rpc.grpc.status_code",
        "error.type",
        "enduser.id",
    ]);
    let value = prop_oneof![
        4 => word().prop_map(Value::StringValue),
        2 => weird_f64().prop_map(Value::DoubleValue),
        1 => weird_i64().prop_map(Value::IntValue),
        1 => any::<bool>().prop_map(Value::BoolValue),
    ];
    (key, value).prop_map(|(k, v)| kv(k.to_string(), AnyValue { value: Some(v) }))
}

fn span_attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    (vec(attribute(), 0..8), vec(order_reference(), 0..3), vec(label_attribute(), 0..4))
        .prop_map(|(mut all, references, labels)| {
            all.extend(references);
            all.extend(labels);
            all
        })
        .prop_shuffle()
}

fn event() -> impl Strategy<Value = Event> {
    let exception_attribute =
        (prop::sample::select(vec!["exception.type", "exception.message", "exception.stacktrace"]), text())
            .prop_map(|(k, v)| kv(k.to_string(), AnyValue { value: Some(Value::StringValue(v)) }));
    (
        prop_oneof![3 => Just("exception".to_string()), 1 => ".{0,8}"],
        time(),
        vec(prop_oneof![3 => exception_attribute, 1 => attribute()], 0..4),
        any::<u32>(),
    )
        .prop_map(|(name, time_unix_nano, attributes, dropped_attributes_count)| Event {
            name,
            time_unix_nano,
            attributes,
            dropped_attributes_count,
        })
}

fn link() -> impl Strategy<Value = Link> {
    (id(16), id(8), ".{0,8}", vec(attribute(), 0..2), any::<u32>(), any::<u32>()).prop_map(
        |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| Link {
            trace_id,
            span_id,
            trace_state,
            attributes,
            dropped_attributes_count,
            flags,
        },
    )
}

fn status() -> impl Strategy<Value = Option<Status>> {
    prop::option::of(
        (prop_oneof![3 => 0..=2i32, 1 => any::<i32>()], text()).prop_map(|(code, message)| Status { code, message }),
    )
}

fn span() -> impl Strategy<Value = Span> {
    let ids = (id(16), id(8), id(8), ".{0,8}", any::<u32>());
    let what = (
        prop_oneof![5 => prop::sample::select(NAMES).prop_map(str::to_string), 3 => ".{0,32}", 1 => huge_string(64 * 1024)],
        prop_oneof![5 => 0..=5i32, 1 => any::<i32>()],
        time(),
        time(),
        status(),
    );
    let details = (span_attributes(), vec(event(), 0..3), vec(link(), 0..3), any::<(u32, u32, u32)>());
    (ids, what, details).prop_map(
        |(
            (trace_id, span_id, parent_span_id, trace_state, flags),
            (name, kind, start, end, status),
            (attributes, events, links, (dropped_attributes, dropped_events, dropped_links)),
        )| Span {
            trace_id,
            span_id,
            trace_state,
            parent_span_id,
            flags,
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            dropped_attributes_count: dropped_attributes,
            events,
            dropped_events_count: dropped_events,
            links,
            dropped_links_count: dropped_links,
            status,
        },
    )
}

fn resource() -> impl Strategy<Value = Option<Resource>> {
    let service_name = prop_oneof![
        4 => prop::sample::select(SERVICES).prop_map(|s| AnyValue { value: Some(Value::StringValue(s.to_string())) }),
        1 => any_value(),
    ];
    prop::option::weighted(0.9, (service_name, vec(attribute(), 0..3))).prop_map(|resource| {
        resource.map(|(name, mut attributes)| {
            attributes.insert(0, kv("service.name".into(), name));
            Resource { attributes, ..Default::default() }
        })
    })
}

fn scope_spans() -> impl Strategy<Value = ScopeSpans> {
    let scope =
        prop::option::of((".{0,8}", ".{0,8}", vec(attribute(), 0..2)).prop_map(|(name, version, attributes)| {
            InstrumentationScope { name, version, attributes, dropped_attributes_count: 0 }
        }));
    (scope, vec(span(), 0..6), ".{0,8}").prop_map(|(scope, spans, schema_url)| ScopeSpans { scope, spans, schema_url })
}

fn resource_spans() -> impl Strategy<Value = ResourceSpans> {
    (resource(), vec(scope_spans(), 0..3), ".{0,8}").prop_map(|(resource, scope_spans, schema_url)| ResourceSpans {
        resource,
        scope_spans,
        schema_url,
    })
}

/// One generated engine run: batches, each with the `now` it is processed at, then ticks. `now` values are
/// arbitrary: they may go backwards, sit at zero or at `u64::MAX`.
#[derive(Debug, Clone)]
struct EngineRun {
    steps: Vec<(Vec<ResourceSpans>, u64)>,
    ticks: Vec<u64>,
    /// Whether the batches go through the receivers' sanitising first, as they do in the server.
    sanitise: bool,
    /// Whether the engine runs with tiny correlation bounds.
    tight: bool,
}

fn engine_run() -> impl Strategy<Value = EngineRun> {
    (vec((vec(resource_spans(), 0..4), time()), 1..4), vec(time(), 0..4), any::<bool>(), any::<bool>())
        .prop_map(|(steps, ticks, sanitise, tight)| EngineRun { steps, ticks, sanitise, tight })
}

fn span_count(batch: &[ResourceSpans]) -> usize {
    batch.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum()
}

fn spans_of(batches: &[ResourceSpans]) -> impl Iterator<Item = &Span> {
    batches.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans)
}

// ---------------------------------------------------------------------------------------------------------------
// Engine properties
// ---------------------------------------------------------------------------------------------------------------

/// Feeds one generated run to a fresh engine and checks what must hold whatever the input.
fn check_engine_run(run: EngineRun) -> Result<(), TestCaseError> {
    let EngineRun { steps, ticks, sanitise, tight } = run;
    let config = if tight { tight_config() } else { config() };
    let mut engine = Engine::new(config.clone(), vec![], vec![]);
    let mut fed = 0u64;
    let mut emitted: Vec<ResourceSpans> = Vec::new();
    for (mut batch, now) in steps {
        if sanitise {
            // The receivers' path: spans with invalid ids are dropped before the engine sees them.
            let before = span_count(&batch) as u64;
            let result = ordertrail::receiver::sanitise(&mut batch);
            prop_assert_eq!(result.accepted + result.rejected, before);
            prop_assert_eq!(result.accepted, span_count(&batch) as u64);
            prop_assert!(batch.iter().all(|rs| !rs.scope_spans.is_empty()));
        }
        fed += span_count(&batch) as u64;
        let mut out = Output::default();
        engine.process(batch, now, &mut out);
        emitted.extend(out.into_resource_spans());
        let _ = engine.take_changes();
        prop_assert!(engine.orders().count() <= config.correlation.max_orders);
        prop_assert!(engine.pending_spans() <= config.correlation.max_pending_spans);
    }
    let mut last = 0;
    for now in ticks {
        let mut out = Output::default();
        engine.tick(now, &mut out);
        emitted.extend(out.into_resource_spans());
        last = last.max(now);
    }
    let mut out = Output::default();
    engine.flush_pending(last, &mut out);
    emitted.extend(out.into_resource_spans());
    let _ = engine.take_changes();

    let stats = engine.stats().clone();
    prop_assert_eq!(stats.spans_in, fed);
    prop_assert_eq!(engine.pending_spans(), 0);
    // Every span that came in is accounted for exactly once: correlated to at least one order, or passed on.
    prop_assert_eq!(stats.spans_correlated + stats.spans_uncorrelated, fed, "{:?}", stats);
    // Every order emits its root once, when it is first seen (again when it comes back after eviction).
    prop_assert_eq!(stats.root_spans_emitted, stats.orders_created);

    let mut order_traces = HashSet::new();
    for order in engine.orders() {
        order_traces.insert(ids::order_trace_id(&order.key).to_vec());
        prop_assert!(!order.key.trim().is_empty(), "an order with a blank key: {:?}", order.key);
        prop_assert!(order.span_count >= 1, "order {:?} has no span", order.key);
        for exception in &order.exceptions {
            prop_assert!(exception.count >= 1, "exception {:?} of {:?} counted zero times", exception, order.key);
        }
        for value in order.dimensions.values() {
            prop_assert!(value.chars().count() <= 128, "dimension value not cut: {} chars", value.chars().count());
        }
        for quantity in [order.ordered_quantity, order.shipped_quantity].into_iter().flatten() {
            prop_assert!(quantity.is_finite() && quantity >= 0.0, "quantity {quantity} of {:?}", order.key);
        }
        if order.is_closed() {
            let root = ids::root_span_id(&order.key);
            prop_assert!(
                spans_of(&emitted).any(|s| s.span_id == root),
                "closed order {:?} emitted no root span",
                order.key
            );
        }
    }
    for span in spans_of(&emitted) {
        let in_order_trace = order_traces.contains(&span.trace_id);
        if in_order_trace || sanitise {
            // Spans of order traces are made by the engine; originals passed on were checked by the receiver.
            prop_assert_eq!(span.trace_id.len(), 16, "span {:?}", span.name);
            prop_assert_eq!(span.span_id.len(), 8, "span {:?}", span.name);
            prop_assert!(span.trace_id.iter().any(|b| *b != 0) && span.span_id.iter().any(|b| *b != 0));
        }
        if in_order_trace {
            prop_assert!(
                span.parent_span_id.is_empty() || span.parent_span_id.len() == 8,
                "span {:?} in an order trace has a {}-byte parent",
                span.name,
                span.parent_span_id.len()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(256))]

    /// Arbitrary spans, batches and clocks never panic the engine, and its books balance.
    #[test]
    fn engine_survives_arbitrary_spans_and_clocks(run in engine_run()) {
        check_engine_run(run)?;
    }

    /// The same span processed repeatedly, at clocks that need not move forward, is correlated each time under
    /// the same deterministic output ids.
    #[test]
    fn duplicate_spans_map_to_the_same_order_span(span in span(), nows in vec(time(), 2..5), order in word()) {
        let mut span = span;
        span.trace_id = vec![7; 16];
        span.span_id = vec![8; 8];
        // Only the order id chosen here names an order; `url.path` could name another through its pattern.
        span.attributes.retain(|a| !["order.id", "app.order.id", "order.ids", "url.path"].contains(&a.key.as_str()));
        span.attributes.insert(0, kv("order.id".into(), AnyValue { value: Some(Value::StringValue(order.clone())) }));
        let batch = vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name".into(), string("erp"))], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            schema_url: String::new(),
        }];
        let mut engine = Engine::new(config(), vec![], vec![]);
        let trace = ids::order_trace_id(order.trim()).to_vec();
        let expected = ids::correlated_span_id(order.trim(), &[7; 16], &[8; 8]).to_vec();
        let mut copies = 0;
        for now in &nows {
            let mut out = Output::default();
            engine.process(batch.clone(), *now, &mut out);
            let emitted = out.into_resource_spans();
            // The copy of the span in the order trace is the one linked to it as its technical span.
            let is_copy = |s: &&Span| {
                s.trace_id == trace
                    && s.links.iter().any(|l| {
                        l.span_id == [8; 8] && l.attributes.iter().any(|a| a.value == Some(string("technical_span")))
                    })
            };
            for copy in spans_of(&emitted).filter(is_copy) {
                prop_assert_eq!(&copy.span_id, &expected, "a re-sent span got another id in the order trace");
                copies += 1;
            }
        }
        let stats = engine.stats();
        prop_assert_eq!(stats.spans_in, nows.len() as u64);
        if order.trim().is_empty() {
            // A blank order id names no order; the span waits for its trace to be keyed instead.
            prop_assert_eq!(stats.spans_correlated, 0);
        } else {
            prop_assert_eq!(stats.spans_correlated, nows.len() as u64);
            prop_assert_eq!(copies, nows.len(), "one copy in the order trace per time the span was sent");
            prop_assert_eq!(engine.order(order.trim()).map(|o| o.span_count), Some(nows.len() as u64));
        }
    }
}

/// Ten thousand attributes, the order key last, a megabyte-long value and deep nesting: the order is still found
/// and its labels are still written.
#[test]
fn engine_handles_ten_thousand_attributes_and_megabyte_values() {
    let mut attributes: Vec<KeyValue> =
        (0..10_000).map(|i| kv(format!("attr.{i}"), AnyValue { value: Some(Value::IntValue(i)) })).collect();
    attributes.push(kv("deep".into(), nested(64, "bottom")));
    attributes.push(kv("blob".into(), string(&"é".repeat(MIB / 2))));
    attributes.push(kv("order.id".into(), string("SO-WIDE")));
    let mut span = order_span("ignored", 9, 9, "invoice.post", vec![]);
    span.attributes = attributes;
    span.name = format!("invoice.post {}", "x".repeat(MIB));
    let mut engine = Engine::new(config(), vec![], vec![]);
    let mut out = Output::default();
    engine.process(request_of("finance", vec![span]).resource_spans, T0, &mut out);
    let emitted = out.into_resource_spans();
    let trace = ids::order_trace_id("SO-WIDE").to_vec();
    let correlated = spans_of(&emitted)
        .find(|s| s.trace_id == trace && s.attributes.len() > 10_000)
        .expect("the wide span is re-emitted into the order trace");
    assert!(correlated.attributes.iter().any(|a| a.key == "order.milestone"), "the invoice rule labelled the span");
    assert_eq!(engine.stats().spans_correlated, 1);
    // Invoicing closes the order once it has settled.
    let mut out = Output::default();
    engine.tick(T0, &mut out);
    engine.tick(T0 + 60 * SECOND, &mut out);
    assert!(engine.order("SO-WIDE").is_some_and(|o| o.is_closed()), "invoicing closes the order");
}
