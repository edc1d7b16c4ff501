//! Delivery order through the real server: the same business day, sent by real OpenTelemetry SDK exporters of six
//! systems, once flushed in business order and once in reverse (the invoice first, the order capture last, the
//! carrier's shipment before the delivery that names its order). Both runs must give the same order traces and the
//! same answers from the order API. `crates/core/src/engine/tests/invariance.rs` covers random interleavings; this
//! test covers the wire: batching exporters, the receiver, the pipeline's ticks and the store.

mod common;

use common::*;
use opentelemetry::trace::{
    Span as _, SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, IdGenerator, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(30);
const SYSTEMS: [&str; 6] = ["customer-portal", "erp", "integration-middleware", "wms", "tms", "finance"];

/// Span and trace ids from a counter per system, so that both runs send the very same spans.
#[derive(Debug)]
struct SequentialIds {
    system: u8,
    next: AtomicU64,
}

impl IdGenerator for SequentialIds {
    fn new_trace_id(&self) -> TraceId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        TraceId::from_bytes(((u128::from(self.system) << 120) | 0x7700 << 64 | u128::from(n)).to_be_bytes())
    }
    fn new_span_id(&self) -> SpanId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        SpanId::from_bytes(((u64::from(self.system) << 56) | n).to_be_bytes())
    }
}

/// A system's SDK provider whose batch exporter only sends when flushed, so the test decides who flushes first.
fn system(service: &'static str, index: u8, addr: SocketAddr) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{addr}"))
        .build()
        .unwrap();
    let batch = BatchConfigBuilder::default().with_scheduled_delay(Duration::from_secs(3600)).build();
    SdkTracerProvider::builder()
        .with_resource(Resource::builder_empty().with_attributes([KeyValue::new("service.name", service)]).build())
        .with_id_generator(SequentialIds { system: index + 1, next: AtomicU64::new(1) })
        .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batch).build())
        .build()
}

/// One business step: system, span name, kind, minute of the day, attributes, error message, and whether it is a
/// child of the step before (the same technical trace, another system).
type Step =
    (&'static str, &'static str, SpanKind, u64, &'static [(&'static str, &'static str)], Option<&'static str>, bool);

/// The business day of the regional distributor.
const DAY: &[Step] = &[
    ("customer-portal", "order.create", SpanKind::Server, 0, &[("order.id", "SO-1")], None, false),
    ("customer-portal", "order.create", SpanKind::Server, 1, &[("order.id", "SO-2")], None, false),
    (
        "erp",
        "credit.check",
        SpanKind::Internal,
        5,
        &[("order.id", "SO-1"), ("credit.decision", "approved")],
        None,
        false,
    ),
    // SO-2 is held for credit and stays so: open, with its next action owned by commercial controls.
    (
        "erp",
        "credit.check",
        SpanKind::Internal,
        6,
        &[("order.id", "SO-2"), ("credit.decision", "hold")],
        Some("credit limit exceeded"),
        false,
    ),
    ("erp", "inventory.allocate", SpanKind::Internal, 10, &[("order.id", "SO-1")], None, false),
    // The release crosses the middleware in one technical trace; only the ERP's span names the order.
    ("erp", "publish orders.released", SpanKind::Producer, 20, &[("order.id", "SO-1")], None, false),
    ("integration-middleware", "map ORDERS05 -> wms.order", SpanKind::Consumer, 20, &[], None, true),
    ("wms", "wave.release", SpanKind::Internal, 30, &[("order.id", "SO-1")], None, false),
    (
        "wms",
        "pick.line",
        SpanKind::Internal,
        45,
        &[("order.id", "SO-1"), ("wms.pick.status", "partial")],
        Some("short pick"),
        false,
    ),
    ("wms", "pack.confirm", SpanKind::Internal, 60, &[("order.id", "SO-1"), ("delivery.id", "DL-1")], None, false),
    // The carrier knows the delivery and the shipment, never the order.
    ("tms", "carrier.book", SpanKind::Client, 70, &[("delivery.id", "DL-1"), ("shipment.id", "SH-1")], None, false),
    ("tms", "shipment.pickup.confirm", SpanKind::Internal, 80, &[("shipment.id", "SH-1")], None, false),
    ("finance", "invoice.create", SpanKind::Internal, 100, &[("order.id", "SO-1")], None, false),
];

/// Records the day that began at `day` (not yet sent) with the systems that lived it, each step lasting a second.
fn record_the_day(providers: &BTreeMap<&'static str, SdkTracerProvider>, day: SystemTime) {
    let mut previous = Context::new();
    for (system, name, kind, minute, attributes, error, under_previous) in DAY {
        let parent = if *under_previous { previous.clone() } else { Context::new() };
        let tracer = providers[system].tracer("delivery-order-test");
        let at = day + Duration::from_secs(minute * 60);
        let mut span = tracer
            .span_builder(*name)
            .with_kind(kind.clone())
            .with_start_time(at)
            .with_attributes(attributes.iter().map(|(k, v)| KeyValue::new(*k, *v)))
            .start_with_context(&tracer, &parent);
        if let Some(message) = error {
            span.set_status(Status::error(*message));
        }
        span.end_with_timestamp(at + Duration::from_secs(1));
        previous = parent.with_span(span);
    }
}

/// What one run answered: the spans of both order traces, and both orders from the API.
#[derive(Debug, PartialEq)]
struct Answer {
    spans: BTreeMap<String, String>,
    orders: BTreeMap<&'static str, Value>,
}

/// Everything about a span that must not depend on delivery order. The closing span's attributes are the state at
/// the close and its status says so; they are compared through the API instead.
fn describe(span: &opentelemetry_proto::tonic::trace::v1::Span) -> String {
    let status = span.status.as_ref().map_or(0, |s| s.code);
    let mut labels: Vec<String> = span
        .attributes
        .iter()
        .filter(|a| a.key.starts_with("order.") && !a.key.ends_with("count"))
        .map(|a| format!("{}={:?}", a.key, a.value))
        .collect();
    labels.sort();
    if span.name.ends_with(" closed") {
        labels.clear();
    }
    format!("{} parent={} status={status} {labels:?}", span.name, hex::encode(&span.parent_span_id))
}

/// The API's order without what is ordertrail's own clock (when it saw, settled or closed something).
fn without_own_times(mut order: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|key, _| {
                    !matches!(key.as_str(), "closed_at" | "updated_at" | "detected_at" | "age_seconds")
                });
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut order);
    order
}

/// Plays the day that began at `day`, flushing the systems in `flush_order`, and returns what ordertrail made of
/// it.
async fn play(day: SystemTime, flush_order: &[&'static str]) -> Answer {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(sink_addr, dir.path(), "");
    // The windows within which delivery order must not matter: every flush below lands well inside them, even on a
    // loaded machine.
    config.sla.detection_delay = Duration::from_secs(3);
    config.correlation.inherit_wait = Duration::from_secs(3);
    let server = start_server(config).await;
    let addr = server.grpc_addr.unwrap();
    let providers: BTreeMap<&'static str, SdkTracerProvider> =
        SYSTEMS.iter().enumerate().map(|(i, name)| (*name, system(name, u8::try_from(i).unwrap(), addr))).collect();
    record_the_day(&providers, day);
    for name in flush_order {
        flush(&providers[name]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    sink.wait_for(WAIT, "SO-1's closing span", |spans| spans.iter().any(|r| r.span.name == "order SO-1 closed")).await;
    // Nothing of SO-2 settles later than SO-1's close; one more delay lets anything still due settle.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let received = sink.spans.lock().unwrap().clone();
    let mut described = BTreeMap::new();
    for order in ["SO-1", "SO-2"] {
        for r in received.iter().filter(|r| r.span.trace_id == trace_of(order)) {
            let key = format!("{order} {}", hex::encode(&r.span.span_id));
            assert!(described.insert(key, describe(&r.span)).is_none(), "{order}: {} sent twice", r.span.name);
        }
    }
    let http = reqwest::Client::new();
    let api = format!("http://{}", server.api_http_addr.unwrap());
    let mut orders = BTreeMap::new();
    for order in ["SO-1", "SO-2"] {
        let text = http.get(format!("{api}/v1/orders/{order}")).send().await.unwrap().text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        orders.insert(order, without_own_times(body));
    }
    for provider in providers.into_values() {
        tokio::task::spawn_blocking(move || provider.shutdown()).await.unwrap().unwrap();
    }
    server.shutdown(Duration::from_secs(5)).await;
    Answer { spans: described, orders }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systems_flushing_in_reverse_give_the_same_order_traces_and_answers() {
    let day = SystemTime::now() - Duration::from_secs(3 * 3600);
    let in_business_order = play(day, &SYSTEMS).await;
    let mut reverse = SYSTEMS;
    reverse.reverse();
    let in_reverse = play(day, &reverse).await;

    // The day is what it should be, so that agreeing means something.
    let so1 = &in_business_order.orders["SO-1"];
    assert_eq!(so1["status"], "closed", "{so1:#}");
    let reached: Vec<&str> = so1["milestones"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !m["reached_at"].is_null())
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(reached.contains(&"shipment_confirmation"), "the shipment joined through the delivery: {reached:?}");
    let so2 = &in_business_order.orders["SO-2"];
    assert_eq!(so2["status"], "open", "{so2:#}");
    assert!(in_business_order.spans.values().any(|s| s.starts_with("map ORDERS05 -> wms.order")), "inherited");
    assert!(in_business_order.spans.values().all(|s| !s.contains("withdrawn")), "nothing to take back in order");

    for (key, span) in &in_business_order.spans {
        assert_eq!(in_reverse.spans.get(key), Some(span), "{key} in reverse");
    }
    assert_eq!(in_reverse.spans.len(), in_business_order.spans.len(), "{:#?}", in_reverse.spans);
    for order in ["SO-1", "SO-2"] {
        assert_eq!(in_reverse.orders[order], in_business_order.orders[order], "{order}");
    }
}
