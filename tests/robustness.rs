//! Bad input never panics and never earns a server error.
//!
//! Two layers are exercised. The engine is fed arbitrary `ResourceSpans` directly (ids of any length, unicode and
//! huge strings, nested attribute values, weird numbers and timestamps, out-of-range enums), which is fast and
//! pure. The real server is then fed undecodable, oversized, compressed and pathological requests over OTLP/HTTP
//! and OTLP/gRPC; each must get the documented OTLP answer, and a valid request afterwards must still travel all
//! the way to the exporter, which shows that neither the receivers nor the engine thread died.
//!
//! # Time budget
//!
//! The number of generated cases is fixed and shrinking is capped, so the file runs in bounded time: about ten
//! seconds in a debug build on two cores. The engine properties default to 256 cases and the server properties,
//! which send a request per case, to 32; `PROPTEST_CASES` overrides both. Nothing here asserts on timing.
//!
//! # A longer campaign
//!
//! ```text
//! PROPTEST_CASES=5000 cargo test --release --test robustness
//! ```
//!
//! A failing case is shrunk and printed, and its seed is saved next to this file in
//! `robustness.proptest-regressions` so that later runs try it first; commit that file with the fix.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
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
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use prost::Message;
use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const SECOND: u64 = 1_000_000_000;
const T0: u64 = 1_780_000_000 * SECOND;
const MIB: usize = 1024 * 1024;

/// The number of cases of a property: `PROPTEST_CASES` when set, so that one variable scales a campaign.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The proptest configuration of this file: a fixed number of cases and bounded shrinking, so a failure cannot
/// turn a CI run into an hours-long search.
fn proptest_config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        max_shrink_iters: 2048,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    }
}

/// A runner for the properties that drive the server. They run outside the `proptest!` macro, which knows no
/// source file for them, so failures are printed rather than persisted.
fn server_runner() -> TestRunner {
    TestRunner::new(ProptestConfig { failure_persistence: None, ..proptest_config(32) })
}

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

fn kv(key: String, value: AnyValue) -> KeyValue {
    KeyValue { key, value: Some(value), ..Default::default() }
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
    for now in ticks {
        let mut out = Output::default();
        engine.tick(now, &mut out);
        emitted.extend(out.into_resource_spans());
    }
    let mut out = Output::default();
    engine.flush_pending(&mut out);
    emitted.extend(out.into_resource_spans());
    let _ = engine.take_changes();

    let stats = engine.stats().clone();
    prop_assert_eq!(stats.spans_in, fed);
    prop_assert_eq!(engine.pending_spans(), 0);
    // Every span that came in is accounted for exactly once: correlated to at least one order, or passed on.
    prop_assert_eq!(stats.spans_correlated + stats.spans_uncorrelated, fed, "{:?}", stats);
    prop_assert_eq!(stats.root_spans_emitted, stats.orders_closed);

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

fn string(value: &str) -> AnyValue {
    AnyValue { value: Some(Value::StringValue(value.to_string())) }
}

/// One string wrapped `depth` levels deep, alternately in an array and in a key-value list.
fn nested(depth: usize, leaf: &str) -> AnyValue {
    let mut value = string(leaf);
    for i in 0..depth {
        value = if i % 2 == 0 {
            AnyValue { value: Some(Value::ArrayValue(ArrayValue { values: vec![value] })) }
        } else {
            AnyValue { value: Some(Value::KvlistValue(KeyValueList { values: vec![kv("k".into(), value)] })) }
        };
    }
    value
}

/// A span of order `order` with `attributes` after its `order.id`.
fn order_span(order: &str, trace: u8, span: u8, name: &str, attributes: Vec<KeyValue>) -> Span {
    let mut all = vec![kv("order.id".into(), string(order))];
    all.extend(attributes);
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![span; 8],
        name: name.into(),
        kind: 1,
        start_time_unix_nano: T0,
        end_time_unix_nano: T0 + SECOND,
        attributes: all,
        ..Default::default()
    }
}

fn request_of(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name".into(), string(service))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            schema_url: String::new(),
        }],
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
    assert!(engine.order("SO-WIDE").is_some_and(|o| o.is_closed()), "invoicing closes the order");
}

// ---------------------------------------------------------------------------------------------------------------
// The real server
// ---------------------------------------------------------------------------------------------------------------

/// An OTLP sink that accepts messages of any size: the spans these tests send are re-exported, and a megabyte
/// attribute copied into several spans would otherwise exceed tonic's default 4 MiB and stall the exporter.
async fn start_big_sink() -> (Sink, SocketAddr) {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(sink.clone())
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_decoding_message_size(512 * MIB);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (sink, addr)
}

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// A running server with its sink, for the HTTP tests.
struct Http {
    server: ordertrail::server::Server,
    sink: Sink,
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Http {
    async fn start(max_body: usize, max_decompressed: usize) -> Http {
        let (sink, sink_addr) = start_big_sink().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(sink_addr, dir.path(), "");
        let http = config.receivers.http.as_mut().unwrap();
        http.max_request_body_size = max_body;
        http.max_decompressed_body_size = max_decompressed;
        let server = start_server(config).await;
        let url = format!("http://{}/v1/traces", server.http_addr.unwrap());
        Http { server, sink, url, client: reqwest::Client::new(), _dir: dir }
    }

    async fn post(&self, body: Vec<u8>, content_type: &str, gzip: bool) -> (u16, Vec<u8>) {
        let mut request = self.client.post(&self.url).header("content-type", content_type).body(body);
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("the body arrives").to_vec())
    }

    /// Sends one valid request for `order` and waits until its span reaches the exporter's sink: the receiver,
    /// the engine thread and the exporter are all still working.
    async fn still_serving(&self, order: &str, trace: u8) {
        let body = request_of("erp", vec![order_span(order, trace, trace, "credit.check", vec![])]).encode_to_vec();
        let (status, body) = self.post(body, "application/x-protobuf", false).await;
        assert_eq!(status, 200, "a valid request after bad ones: {}", String::from_utf8_lossy(&body));
        let trace = trace_of(order);
        self.sink
            .wait_for(Duration::from_secs(30), order, |spans| spans.iter().any(|r| r.span.trace_id == trace))
            .await;
    }

    fn malformed(&self) -> u64 {
        ordertrail::telemetry::Counters::get(&self.server.counters().requests_malformed)
    }
}

/// Checks one OTLP/HTTP answer to a request that may or may not decode: 200 with an `ExportTraceServiceResponse`,
/// or 400 with a `google.rpc.Status` of INVALID_ARGUMENT, in the request's encoding; never a server error.
fn check_answer(status: u16, body: &[u8], json: bool) -> Result<bool, TestCaseError> {
    match status {
        200 => {
            if json {
                prop_assert!(serde_json::from_slice::<ExportTraceServiceResponse>(body).is_ok());
            } else {
                prop_assert!(ExportTraceServiceResponse::decode(body).is_ok());
            }
            Ok(true)
        }
        400 => {
            let code = if json {
                serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| v["code"].as_i64())
            } else {
                RpcStatus::decode(body).ok().map(|s| i64::from(s.code))
            };
            prop_assert_eq!(
                code,
                Some(tonic::Code::InvalidArgument as i64),
                "body {:?}",
                String::from_utf8_lossy(body)
            );
            Ok(false)
        }
        other => Err(TestCaseError::fail(format!("status {other}: {}", String::from_utf8_lossy(body)))),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A valid request, encoded, to mutate: mutations of real messages reach deeper into the decoder than noise.
fn valid_protobuf() -> Vec<u8> {
    let mut span = order_span("SO-SEED", 1, 1, "pick.line", vec![kv("wms.pick.status".into(), string("partial"))]);
    span.events.push(Event {
        name: "exception".into(),
        attributes: vec![kv("exception.type".into(), string("E"))],
        ..Default::default()
    });
    span.attributes.push(kv("nested".into(), nested(6, "x")));
    request_of("wms", vec![span]).encode_to_vec()
}

/// Bytes derived from `seed`: flipped, overwritten, truncated or extended.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len();
    (vec((0..len, any::<u8>()), 0..6), 0..=len, vec(any::<u8>(), 0..8)).prop_map(move |(edits, cut, tail)| {
        let mut bytes = seed.clone();
        for (at, byte) in edits {
            bytes[at] = byte;
        }
        bytes.truncate(cut.max(1));
        bytes.extend(tail);
        bytes
    })
}

/// Arbitrary and mutated OTLP/HTTP protobuf bodies get 200 or 400, never a server error, and the malformed ones
/// are counted; a valid request afterwards still goes all the way through.
#[test]
fn http_protobuf_garbage_gets_400_and_the_server_keeps_serving() {
    let rt = runtime();
    let http = rt.block_on(Http::start(4 * MIB, 16 * MIB));
    let bodies = prop_oneof![vec(any::<u8>(), 0..512), mutated(valid_protobuf())];
    let mut runner = server_runner();
    let rejected = std::cell::Cell::new(0u64);
    runner
        .run(&(bodies, any::<bool>()), |(body, gzip)| {
            let body = if gzip { gzip_bytes(&body) } else { body };
            let (status, answer) = rt.block_on(http.post(body, "application/x-protobuf", gzip));
            if !check_answer(status, &answer, false)? {
                rejected.set(rejected.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(http.malformed(), rejected.get(), "every 400 is counted as malformed, and nothing else");
    rt.block_on(http.still_serving("SO-AFTER-PB", 0x21));
    rt.block_on(http.server.shutdown(Duration::from_secs(5)));
}

fn gzip_bytes(bytes: &[u8]) -> Vec<u8> {
    gzip_bytes_with(bytes, flate2::Compression::fast())
}

fn gzip_bytes_with(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn valid_json() -> String {
    serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "erp"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "credit.check",
            "kind": 1, "startTimeUnixNano": "1780000000000000000", "endTimeUnixNano": "1780000000100000000",
            "attributes": [{"key": "order.id", "value": {"stringValue": "SO-JSON-SEED"}},
                           {"key": "n", "value": {"arrayValue": {"values": [{"intValue": "5"}, {"doubleValue": 1.5}]}}}]
        }]}]
    }]})
    .to_string()
}

/// Arbitrary and mutated OTLP/HTTP JSON bodies, including invalid UTF-8, get 200 or 400 and never a server error.
#[test]
fn http_json_garbage_gets_400_and_the_server_keeps_serving() {
    let rt = runtime();
    let http = rt.block_on(Http::start(4 * MIB, 16 * MIB));
    let bodies = prop_oneof![
        vec(any::<u8>(), 0..256),
        ".{0,64}".prop_map(String::into_bytes),
        mutated(valid_json().into_bytes()),
    ];
    let mut runner = server_runner();
    let rejected = std::cell::Cell::new(0u64);
    runner
        .run(&bodies, |body| {
            let (status, answer) = rt.block_on(http.post(body, "application/json", false));
            if !check_answer(status, &answer, true)? {
                rejected.set(rejected.get() + 1);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(http.malformed(), rejected.get());
    rt.block_on(http.still_serving("SO-AFTER-JSON", 0x22));
    rt.block_on(http.server.shutdown(Duration::from_secs(5)));
}

/// Hand-picked JSON that a fuzzer would take long to find: each is refused with 400, or accepted and processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_pathological_bodies_are_refused_or_handled() {
    let http = Http::start(4 * MIB, 16 * MIB).await;
    let span_with = |field: &str| {
        format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",{field}}}]}}]}}]}}"#
        )
    };
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("invalid UTF-8 in a string", b"{\"resourceSpans\": [{\"schemaUrl\": \"\xff\xfe\"}]}".to_vec()),
        ("invalid UTF-8 outside strings", b"\xc3\x28{}".to_vec()),
        ("a lone surrogate escape", span_with(r#""name":"\ud800""#).into_bytes()),
        ("truncated", valid_json().as_bytes()[..valid_json().len() / 2].to_vec()),
        ("100k opening brackets", "[".repeat(100_000).into_bytes()),
        ("100k nested objects", "{\"a\":".repeat(100_000).into_bytes()),
        (
            "arrays nested 300 deep in an attribute",
            span_with(&format!(
                r#""attributes":[{{"key":"k","value":{}"x"{}}}]"#,
                r#"{"arrayValue":{"values":["#.repeat(300) + r#"{"stringValue":"x"}"#,
                "]}}".repeat(300)
            ))
            .into_bytes(),
        ),
        ("a number for a string", span_with(r#""name":5"#).into_bytes()),
        ("a string for an array", r#"{"resourceSpans":"many"}"#.as_bytes().to_vec()),
        ("odd-length hex id", span_with(r#""parentSpanId":"abc""#).into_bytes()),
        ("non-hex id", span_with(r#""parentSpanId":"zzzzzzzzzzzzzzzz""#).into_bytes()),
        ("a timestamp past u64", span_with(r#""startTimeUnixNano":"18446744073709551616""#).into_bytes()),
        ("a negative timestamp", span_with(r#""endTimeUnixNano":-1"#).into_bytes()),
        ("a kind past i32", span_with(r#""kind":4294967296"#).into_bytes()),
        (
            "an intValue that is not a number",
            span_with(r#""attributes":[{"key":"k","value":{"intValue":"x"}}]"#).into_bytes(),
        ),
        (
            "bytesValue that is not base64",
            span_with(r#""attributes":[{"key":"k","value":{"bytesValue":"!!"}}]"#).into_bytes(),
        ),
        ("trailing garbage", format!("{} x", valid_json()).into_bytes()),
        ("empty body", Vec::new()),
        ("null", b"null".to_vec()),
    ];
    for (what, body) in &refused {
        let (status, answer) = http.post(body.clone(), "application/json", false).await;
        assert_eq!(status, 400, "{what}: {}", String::from_utf8_lossy(&answer));
        let status: serde_json::Value = serde_json::from_slice(&answer).expect("a JSON google.rpc.Status");
        assert_eq!(status["code"], tonic::Code::InvalidArgument as i32, "{what}");
    }
    assert_eq!(http.malformed(), refused.len() as u64);

    // Valid but unusual: huge strings, out-of-range enums, extreme timestamps, an empty object, empty ids (which
    // are rejected per span in partial_success, not for the whole request).
    let accepted: Vec<(&str, String, i64)> = vec![
        ("an empty request", "{}".into(), 0),
        ("a huge name", span_with(&format!(r#""name":"{}""#, "é".repeat(MIB))), 0),
        ("kind and status out of range", span_with(r#""kind":-7,"status":{"code":99}"#), 0),
        (
            "timestamps 0 and u64::MAX",
            span_with(r#""startTimeUnixNano":"18446744073709551615","endTimeUnixNano":0"#),
            0,
        ),
        (
            "empty ids",
            r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"","spanId":"","name":"x"}]}]}]}"#.into(),
            1,
        ),
    ];
    for (what, body, rejected) in &accepted {
        let (status, answer) = http.post(body.clone().into_bytes(), "application/json", false).await;
        assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&answer));
        let response: ExportTraceServiceResponse = serde_json::from_slice(&answer).expect("a JSON response");
        assert_eq!(response.partial_success.map_or(0, |p| p.rejected_spans), *rejected, "{what}");
    }
    http.still_serving("SO-AFTER-PATHOLOGICAL", 0x23).await;
    http.server.shutdown(Duration::from_secs(5)).await;
}

/// Nesting is bounded by protobuf's recursion limit over OTLP/HTTP as well: past it the body is refused with 400,
/// below it the span is processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_nesting_past_the_recursion_limit_gets_400() {
    let http = Http::start(4 * MIB, 16 * MIB).await;
    let deep = order_span("SO-DEEP", 0x25, 0x25, "credit.check", vec![kv("deep".into(), nested(200, "x"))]);
    let (status, answer) =
        http.post(request_of("erp", vec![deep]).encode_to_vec(), "application/x-protobuf", false).await;
    assert_eq!(status, 400);
    let rpc = RpcStatus::decode(&answer[..]).expect("a protobuf google.rpc.Status");
    assert!(rpc.message.contains("recursion limit"), "{}", rpc.message);
    let shallow = order_span("SO-SHALLOW", 0x26, 0x26, "credit.check", vec![kv("deep".into(), nested(24, "x"))]);
    let (status, _) =
        http.post(request_of("erp", vec![shallow]).encode_to_vec(), "application/x-protobuf", false).await;
    assert_eq!(status, 200);
    http.still_serving("SO-AFTER-DEEP", 0x27).await;
    http.server.shutdown(Duration::from_secs(5)).await;
}

/// OTLP/JSON follows the protobuf JSON mapping, in which a double may be the string "NaN", "Infinity" or
/// "-Infinity"; such a value is valid and must not cost the sender its whole request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_special_doubles_are_accepted() {
    let http = Http::start(4 * MIB, 16 * MIB).await;
    for special in ["NaN", "Infinity", "-Infinity"] {
        let body = valid_json().replace(r#"{"doubleValue":1.5}"#, &format!(r#"{{"doubleValue":"{special}"}}"#));
        assert!(body.contains(special));
        let (status, answer) = http.post(body.into_bytes(), "application/json", false).await;
        assert_eq!(status, 200, "{special}: {}", String::from_utf8_lossy(&answer));
    }
    http.server.shutdown(Duration::from_secs(5)).await;
}

/// A request whose protobuf encoding is exactly `size` bytes: one span, its name padding it out.
fn request_of_size(size: usize) -> Vec<u8> {
    let mut padding = size;
    // A few rounds suffice: every length prefix involved stays within one varint width near the sizes used here.
    for _ in 0..64 {
        let mut span = order_span("SO-EXACT", 0x31, 0x31, "credit.check", vec![]);
        span.name = "x".repeat(padding);
        let bytes = request_of("erp", vec![span]).encode_to_vec();
        match bytes.len().cmp(&size) {
            std::cmp::Ordering::Equal => return bytes,
            std::cmp::Ordering::Greater => padding -= bytes.len() - size,
            // Shrinking the name shortened a length prefix by a byte too many; pad the name back by one.
            std::cmp::Ordering::Less => padding += 1,
        }
    }
    panic!("no request encodes to exactly {size} bytes");
}

/// A gzip body that inflates past `max_decompressed_body_size` is refused with 413 whatever its media type; one
/// that inflates to exactly the limit is accepted; the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bombs_get_413_and_the_limit_is_exact() {
    const LIMIT: usize = MIB;
    let http = Http::start(256 * 1024, LIMIT).await;
    // 16 MiB of zeros compress to about 16 KiB, well under the 256 KiB body limit.
    let bomb = gzip_bytes_with(&vec![0u8; 16 * MIB], flate2::Compression::best());
    assert!(bomb.len() < 256 * 1024, "the bomb is small on the wire: {} bytes", bomb.len());
    for content_type in ["application/x-protobuf", "application/json"] {
        let (status, answer) = http.post(bomb.clone(), content_type, true).await;
        assert_eq!(status, 413, "{content_type}: {}", String::from_utf8_lossy(&answer));
    }
    let (status, answer) = http.post(bomb.clone(), "application/x-protobuf", true).await;
    let rpc = RpcStatus::decode(&answer[..]).expect("a protobuf google.rpc.Status");
    assert_eq!(status, 413);
    assert!(rpc.message.contains("exceeds"), "{}", rpc.message);

    // A gzip stream that is cut short is corrupt: 400.
    let valid = request_of("erp", vec![order_span("SO-GZ", 0x32, 0x32, "credit.check", vec![])]).encode_to_vec();
    let compressed = gzip_bytes(&valid);
    let (status, _) = http.post(compressed[..compressed.len() / 2].to_vec(), "application/x-protobuf", true).await;
    assert_eq!(status, 400, "truncated gzip");

    // Exactly at the limit is accepted, one byte over is not.
    let exact = request_of_size(LIMIT);
    let (status, answer) = http.post(gzip_bytes(&exact), "application/x-protobuf", true).await;
    assert_eq!(status, 200, "exactly at the limit: {}", String::from_utf8_lossy(&answer));
    let over = request_of_size(LIMIT + 1);
    let (status, _) = http.post(gzip_bytes(&over), "application/x-protobuf", true).await;
    assert_eq!(status, 413, "one byte over the limit");
    assert_eq!(http.malformed(), 5);
    http.still_serving("SO-AFTER-BOMB", 0x24).await;
    http.server.shutdown(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------------------------------
// OTLP/gRPC
// ---------------------------------------------------------------------------------------------------------------

/// A tonic codec that sends and receives raw bytes, to put arbitrary bytes in a well-formed gRPC frame.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends `body` as the Export request message, unchecked.
async fn export_raw(channel: tonic::transport::Channel, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    call_raw(channel, EXPORT_PATH, body).await
}

/// Sends `body` as the request message of the method at `path`.
async fn call_raw(
    channel: tonic::transport::Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(body), path, RawCodec).await.map(tonic::Response::into_inner)
}

struct Grpc {
    server: ordertrail::server::Server,
    sink: Sink,
    client: TraceServiceClient<tonic::transport::Channel>,
    channel: tonic::transport::Channel,
    _dir: tempfile::TempDir,
}

impl Grpc {
    async fn start() -> Grpc {
        let (sink, sink_addr) = start_big_sink().await;
        let dir = tempfile::tempdir().unwrap();
        let server = start_server(test_config(sink_addr, dir.path(), "")).await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let client = TraceServiceClient::new(channel.clone()).max_decoding_message_size(64 * MIB);
        Grpc { server, sink, client, channel, _dir: dir }
    }

    async fn export(
        &mut self,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, tonic::Status> {
        self.client.export(request).await.map(tonic::Response::into_inner)
    }

    /// As `Http::still_serving`, over gRPC.
    async fn still_serving(&mut self, order: &str, trace: u8) {
        let request = request_of("erp", vec![order_span(order, trace, trace, "credit.check", vec![])]);
        let response = self.export(request).await.expect("a valid request after bad ones is accepted");
        assert_eq!(response.partial_success, None);
        let trace = trace_of(order);
        self.sink
            .wait_for(Duration::from_secs(30), order, |spans| spans.iter().any(|r| r.span.trace_id == trace))
            .await;
    }
}

/// Requests that decode but are extreme in every dimension: all are answered OK (with the invalid spans counted in
/// partial_success), and their order spans reach the exporter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_extreme_but_valid_requests_are_accepted_and_processed() {
    let mut grpc = Grpc::start().await;

    // Ten thousand attributes on one span, the order key among the last.
    let mut wide: Vec<KeyValue> =
        (0..10_000).map(|i| kv(format!("attr.{i}"), AnyValue { value: Some(Value::IntValue(i)) })).collect();
    wide.push(kv("customer.segment".into(), string("key-account")));
    let mut span = order_span("SO-WIDE", 0x41, 0x41, "credit.check", vec![]);
    span.attributes.splice(0..0, wide);
    assert_eq!(grpc.export(request_of("erp", vec![span])).await.unwrap().partial_success, None);

    // Megabyte values: an attribute, a status message, an event attribute, and a megabyte-long order key.
    let megabyte = "é".repeat(MIB / 2);
    let mut span = order_span("SO-MEGA", 0x42, 0x42, "pick.line", vec![kv("blob".into(), string(&megabyte))]);
    span.status = Some(Status { code: 2, message: megabyte.clone() });
    span.events.push(Event {
        name: "exception".into(),
        attributes: vec![kv("exception.message".into(), string(&megabyte))],
        ..Default::default()
    });
    assert_eq!(grpc.export(request_of("wms", vec![span])).await.unwrap().partial_success, None);
    let long_key = format!("SO-{}", "9".repeat(MIB));
    let span = order_span(&long_key, 0x43, 0x43, "credit.check", vec![]);
    assert_eq!(grpc.export(request_of("erp", vec![span])).await.unwrap().partial_success, None);

    // Duplicate span ids, within one request and across requests.
    let dup = order_span("SO-DUP", 0x44, 0x44, "credit.check", vec![]);
    let request = request_of("erp", vec![dup.clone(), dup.clone(), dup.clone()]);
    assert_eq!(grpc.export(request.clone()).await.unwrap().partial_success, None);
    assert_eq!(grpc.export(request).await.unwrap().partial_success, None);

    // Timestamps at the extremes, end before start, kinds and status codes out of range, nesting 24 levels deep
    // (within protobuf's recursion limit of 100 messages; a level is two or three messages).
    let mut odd = Vec::new();
    for (i, (start, end)) in
        [(0, 0), (u64::MAX, u64::MAX), (u64::MAX, 0), (1, u64::MAX), (T0, T0 - 1)].into_iter().enumerate()
    {
        let mut span = order_span(
            "SO-TIME",
            0x45,
            0x50 + u8::try_from(i).unwrap(),
            "pack.carton",
            vec![kv("deep".into(), nested(24, "x"))],
        );
        span.start_time_unix_nano = start;
        span.end_time_unix_nano = end;
        span.kind = [-1, 6, 99, i32::MIN, i32::MAX][i];
        span.status = Some(Status { code: [-1, 3, 99, i32::MIN, i32::MAX][i], message: String::new() });
        odd.push(span);
    }
    assert_eq!(grpc.export(request_of("wms", odd)).await.unwrap().partial_success, None);

    // Weird quantities and numeric rule inputs.
    let weird_numbers = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, f64::MAX]
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            order_span(
                "SO-QTY",
                0x46,
                0x60 + u8::try_from(i).unwrap(),
                "inventory.allocate",
                vec![
                    kv("order.quantity.ordered".into(), AnyValue { value: Some(Value::DoubleValue(q)) }),
                    kv("order.quantity.shipped".into(), AnyValue { value: Some(Value::DoubleValue(-q)) }),
                    kv("inventory.snapshot_age_s".into(), AnyValue { value: Some(Value::DoubleValue(q)) }),
                    kv("http.response.status_code".into(), AnyValue { value: Some(Value::DoubleValue(q)) }),
                ],
            )
        })
        .collect();
    assert_eq!(grpc.export(request_of("erp", weird_numbers)).await.unwrap().partial_success, None);

    // Every kind of invalid id is rejected per span, and the valid span beside them is kept.
    let mut invalid = Vec::new();
    for (trace_id, span_id, parent) in [
        (vec![], vec![1; 8], vec![]),
        (vec![1; 16], vec![], vec![]),
        (vec![0; 16], vec![1; 8], vec![]),
        (vec![1; 16], vec![0; 8], vec![]),
        (vec![1; 20], vec![1; 8], vec![]),
        (vec![1; 16], vec![1; 9], vec![]),
        (vec![1; 16], vec![1; 8], vec![1; 3]),
    ] {
        let mut span = order_span("SO-IDS", 1, 1, "credit.check", vec![]);
        (span.trace_id, span.span_id, span.parent_span_id) = (trace_id, span_id, parent);
        invalid.push(span);
    }
    invalid.push(order_span("SO-IDS", 0x47, 0x47, "credit.check", vec![]));
    let partial = grpc.export(request_of("erp", invalid)).await.unwrap().partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 7, "{}", partial.error_message);
    assert!(!partial.error_message.is_empty());
    // A request with no spans at all, or only invalid ones, is still a success.
    assert_eq!(grpc.export(ExportTraceServiceRequest::default()).await.unwrap().partial_success, None);
    let only_invalid = request_of("erp", vec![Span::default()]);
    assert_eq!(grpc.export(only_invalid).await.unwrap().partial_success.map(|p| p.rejected_spans), Some(1));

    // Every order above made it through the engine to the exporter.
    let wanted: Vec<Vec<u8>> = ["SO-WIDE", "SO-MEGA", long_key.as_str(), "SO-DUP", "SO-TIME", "SO-QTY", "SO-IDS"]
        .iter()
        .map(|o| trace_of(o))
        .collect();
    let spans = grpc
        .sink
        .wait_for(Duration::from_secs(60), "the order spans of every request", |spans| {
            wanted.iter().all(|t| spans.iter().any(|r| &r.span.trace_id == t))
        })
        .await;
    let wide = spans.iter().find(|r| r.span.trace_id == trace_of("SO-WIDE")).unwrap();
    assert!(wide.span.attributes.len() > 10_000, "the wide span kept its attributes");
    grpc.still_serving("SO-AFTER-GRPC", 0x48).await;
    grpc.server.shutdown(Duration::from_secs(5)).await;
}

/// Requests that tonic refuses before they reach the receiver get a code a sender can act on, and the connection
/// and the server carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_oversized_and_compressed_bombs_are_refused_with_resource_codes() {
    let mut grpc = Grpc::start().await;

    // Over the 4 MiB default as sent: OUT_OF_RANGE, which tonic checks from the frame header.
    let mut big = order_span("SO-BIG", 0x51, 0x51, "credit.check", vec![]);
    big.name = "x".repeat(5 * MIB);
    let status = grpc.export(request_of("erp", vec![big.clone()])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");

    // The same message gzip-compressed is tiny on the wire but inflates past the limit: RESOURCE_EXHAUSTED.
    let mut gzip_client = grpc.client.clone().send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let status = gzip_client.export(request_of("erp", vec![big])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    grpc.still_serving("SO-AFTER-BIG", 0x52).await;
    grpc.server.shutdown(Duration::from_secs(5)).await;
}

/// A gRPC message that does not decode as an `ExportTraceServiceRequest` is the sender's error: INVALID_ARGUMENT,
/// as the receiver documents, not INTERNAL, which would blame the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_undecodable_messages_get_invalid_argument() {
    let mut grpc = Grpc::start().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a truncated varint", vec![0x0a, 0xff, 0xff]),
        ("a length past the end", vec![0x0a, 0x10, 0x01]),
        ("an invalid wire type", vec![0x0f]),
        ("field number zero", vec![0x00, 0x01]),
        // resource_spans { schema_url: "\xff" }
        ("invalid UTF-8 in a string", vec![0x0a, 0x03, 0x1a, 0x01, 0xff]),
    ];
    for (what, body) in cases {
        let status = export_raw(grpc.channel.clone(), body).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{what}: {status:?}");
    }
    // Nesting past protobuf's recursion limit, sent with the ordinary client.
    let span = order_span("SO-DEEP", 0x61, 0x61, "credit.check", vec![kv("deep".into(), nested(200, "x"))]);
    let status = grpc.export(request_of("erp", vec![span])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    // A method the service does not have.
    let status = call_raw(grpc.channel.clone(), "/opentelemetry.proto.collector.trace.v1.TraceService/Nope", vec![])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    grpc.still_serving("SO-AFTER-UNDECODABLE", 0x62).await;
    grpc.server.shutdown(Duration::from_secs(5)).await;
}

/// Arbitrary bytes in a well-formed gRPC frame: decoded and answered OK, or refused as INVALID_ARGUMENT; never
/// INTERNAL or UNKNOWN, and the server keeps serving.
#[test]
fn grpc_arbitrary_messages_get_ok_or_invalid_argument() {
    let rt = runtime();
    let mut grpc = rt.block_on(Grpc::start());
    let bodies = prop_oneof![vec(any::<u8>(), 0..512), mutated(valid_protobuf())];
    let mut runner = server_runner();
    runner
        .run(&bodies, |body| {
            match rt.block_on(export_raw(grpc.channel.clone(), body)) {
                Ok(answer) => prop_assert!(ExportTraceServiceResponse::decode(&answer[..]).is_ok()),
                Err(status) => prop_assert_eq!(status.code(), tonic::Code::InvalidArgument, "{:?}", status),
            }
            Ok(())
        })
        .unwrap();
    rt.block_on(grpc.still_serving("SO-AFTER-GRPC-FUZZ", 0x63));
    rt.block_on(grpc.server.shutdown(Duration::from_secs(5)));
}
