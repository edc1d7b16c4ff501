//! The load both benchmarks send: OpenTelemetry-demo-like spans (about a dozen attributes, ~490 bytes each) in
//! technical traces of 12 spans whose keyed span comes last (SDKs export children first), a carrier span per trace
//! that names only a shipment learned from an earlier request, and a new order per trace, up to `orders` distinct
//! orders before they repeat; or the project's earlier small spans (four attributes).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// The first two bytes of every span id the generator makes, so that a sink can tell input spans (passed on
/// with their ids) from the spans a hop makes itself.
pub(crate) const MARK: [u8; 2] = [0x0a, 0x0a];

/// What the requests look like.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Payload {
    pub(crate) spans_per_request: usize,
    pub(crate) orders: u64,
    /// Demo-like (a dozen attributes) or the project's earlier small spans (four).
    pub(crate) demo_like: bool,
    /// Spans in each technical trace: 12 (the keyed one last), or 1 for one keyed span per order.
    pub(crate) spans_per_trace: usize,
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

const MILESTONE_SPANS: [(&str, &str, &str); 4] = [
    ("erp", "credit.check", "credit.decision"),
    ("erp", "pricing.approve", "pricing.decision"),
    ("wms", "inventory.allocate", "warehouse.id"),
    ("wms", "pick.confirm", "wms.pick.status"),
];
const CHILD_NAMES: [&str; 5] =
    ["oteldemo.CartService/GetCart", "SELECT inventory", "GET /api/products", "publish order.events", "HTTP POST"];

/// The attributes the OpenTelemetry demo's services put on a span.
fn demo_attributes(i: u64, out: &mut Vec<KeyValue>) {
    out.extend([
        kv("http.request.method", "POST"),
        kv("url.path", "/api/checkout/cart"),
        kv("server.address", "checkout.distributor.internal"),
        kv("network.peer.address", "10.42.7.19"),
        kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0"),
        kv("rpc.system", "grpc"),
        kv("rpc.service", "oteldemo.CheckoutService"),
        kv("app.product.id", &format!("OLJCESPC7Z{:04}", i % 10_000)),
        kv("session.id", "7f3a9c2e-5b1d-4e8f-a6c0-2d9b4e1f8a73"),
    ]);
}

fn order_of(payload: &Payload, seq: u64, trace: u64) -> u64 {
    let traces = (payload.spans_per_request / payload.spans_per_trace).max(1) as u64;
    (seq * traces + trace) % payload.orders
}

/// Request `seq`, its spans ending at `now` (so that the sink can tell how long they took).
pub(crate) fn request(payload: &Payload, seq: u64, now: u64) -> ExportTraceServiceRequest {
    let (service, _, _) = MILESTONE_SPANS[usize::try_from(seq % 4).unwrap()];
    let n = payload.spans_per_request;
    let mut spans = Vec::with_capacity(n);
    for i in 0..n {
        let i64_ = i as u64;
        let trace = i64_ / payload.spans_per_trace as u64;
        let position = i % payload.spans_per_trace;
        let order = order_of(payload, seq, trace);
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&(seq + 1).to_be_bytes());
        trace_id[8..].copy_from_slice(&(trace + 1).to_be_bytes());
        let mut span_id = [0u8; 8];
        span_id[..2].copy_from_slice(&MARK);
        span_id[2..6].copy_from_slice(&u32::try_from(seq % u64::from(u32::MAX)).unwrap().to_be_bytes());
        span_id[6..].copy_from_slice(&u16::try_from(i).unwrap().to_be_bytes());
        let mut attributes = Vec::with_capacity(14);
        let last_of_trace = position == payload.spans_per_trace - 1 || i == n - 1;
        let name;
        if last_of_trace {
            // The keyed span: names the order and its shipment, and reaches a milestone.
            let (_, milestone, attribute) = MILESTONE_SPANS[usize::try_from(seq % 4).unwrap()];
            name = milestone.to_string();
            attributes.push(kv("order.id", &format!("SO-{order:08}")));
            attributes.push(kv("shipment.id", &format!("SHP-{order:08}")));
            attributes.push(kv(attribute, "complete"));
            attributes.push(kv("customer.segment", "standard"));
        } else if payload.spans_per_trace > 2 && position == payload.spans_per_trace - 2 && seq >= 8 {
            // A carrier's span in a trace of its own that names only a shipment learned 8 requests earlier.
            name = "carrier.status".to_string();
            trace_id[..8].copy_from_slice(&(u64::MAX - seq).to_be_bytes());
            attributes.push(kv("shipment.id", &format!("SHP-{:08}", order_of(payload, seq - 8, trace))));
            attributes.push(kv("carrier.status", "in_transit"));
        } else {
            name = CHILD_NAMES[i % CHILD_NAMES.len()].to_string();
            attributes.push(kv("http.route", "/api/cart"));
        }
        if payload.demo_like {
            demo_attributes(i64_, &mut attributes);
        }
        spans.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            name,
            kind: 2,
            start_time_unix_nano: now - 1_000_000,
            end_time_unix_nano: now,
            attributes,
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", service),
                    kv("service.version", "2.1.0"),
                    kv("host.name", "erp-app-07"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}
