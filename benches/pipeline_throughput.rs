//! Throughput of receive → correlate → label → commit → export, through the real server, in one process.
//!
//! `cargo bench --bench pipeline_throughput` prints spans per second and the cost of one store group commit.
//! The load generator and the OTLP sink share the machine with ordertrail, so the figure is a floor.
//!
//! `cargo bench --bench pipeline_throughput -- --bench --side-by-side PATH/rotel-agent` instead plays the same
//! OTel-demo-like load (a dozen attributes, ~500 bytes a span, 20,000 orders) through ordertrail and through
//! rotel-agent (a plain collector hop, `pip install rotel`) to the same sink, in three deliveries: in order, with
//! every sender going backwards through its requests (systems flushing out of order), and with the backend
//! refusing everything (UNAVAILABLE) for three seconds once a third of the output has arrived.

/// The binary's allocator, so that the figures are the service's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use ordertrail::server::Server;
use ordertrail::store::{Durability, OrderStore, RedbStore};
use ordertrail_core::config::{self, Overrides};
use ordertrail_core::engine::{OrderWrite, StateChanges};
use ordertrail_core::order::OrderRecord;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The backend: counts the spans it accepts; optionally refuses everything for a while once it has `fail_after`.
#[derive(Clone, Default)]
struct CountingSink {
    received: Arc<AtomicU64>,
    outage: Option<(u64, Duration)>,
    outage_started: Arc<std::sync::Mutex<Option<Instant>>>,
    refused: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for CountingSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some((after, length)) = self.outage {
            if self.received.load(Ordering::Relaxed) >= after {
                let started = *self.outage_started.lock().unwrap().get_or_insert_with(Instant::now);
                if started.elapsed() < length {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(tonic::Status::unavailable("backend down"));
                }
            }
        }
        let spans: usize =
            request.into_inner().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.received.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl CountingSink {
    async fn start(outage: Option<(u64, Duration)>) -> (CountingSink, std::net::SocketAddr) {
        let sink = CountingSink { outage, ..Default::default() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    TraceServiceServer::new(sink.clone())
                        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                        .max_decoding_message_size(64 * 1024 * 1024),
                )
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (sink, addr)
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

const NAMES: [(&str, &str, &str); 4] = [
    ("erp", "credit.check", "credit.decision"),
    ("erp", "pricing.approve", "pricing.decision"),
    ("wms", "inventory.allocate", "warehouse.id"),
    ("wms", "pick.confirm", "wms.pick.status"),
];

/// One request: `spans` spans over `orders_per_request` orders, typical ERP/WMS attributes.
fn request(seq: u64, spans: usize, orders_per_request: u64, total_orders: u64) -> ExportTraceServiceRequest {
    request_with(seq, spans, orders_per_request, total_orders, false)
}

/// The attributes the OpenTelemetry demo's services put on a span, beyond the order key: with them a span is
/// about 500 bytes encoded.
fn demo_attributes(i: u64) -> Vec<KeyValue> {
    vec![
        kv("http.request.method", "POST"),
        kv("http.response.status_code", "200"),
        kv("url.path", "/api/checkout/orders"),
        kv("server.address", "checkout.distributor.internal"),
        kv("network.peer.address", "10.42.7.19"),
        kv(
            "user_agent.original",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0",
        ),
        kv("rpc.system", "grpc"),
        kv("rpc.service", "oteldemo.CheckoutService"),
        kv("app.product.id", &format!("OLJCESPC7Z{:04}", i % 10_000)),
        kv("app.cart.items.count", "3"),
        kv("session.id", "7f3a9c2e-5b1d-4e8f-a6c0-2d9b4e1f8a73"),
    ]
}

fn request_with(
    seq: u64,
    spans: usize,
    orders_per_request: u64,
    total_orders: u64,
    demo_like: bool,
) -> ExportTraceServiceRequest {
    let (service, _, _) = NAMES[(seq % 4) as usize];
    let spans = (0..spans as u64)
        .map(|i| {
            let (_, name, attribute) = NAMES[(i % 4) as usize];
            let order = (seq * orders_per_request + i % orders_per_request) % total_orders;
            let id = seq * 1_000_000 + i + 1;
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&(seq * 1_000 + i % orders_per_request + 1).to_be_bytes());
            trace_id[8..].copy_from_slice(&0x5eed_u64.to_be_bytes());
            let mut attributes = vec![
                kv("order.id", &format!("SO-{order:07}")),
                kv(attribute, "complete"),
                kv("http.route", "/api/orders/{id}"),
                kv("customer.segment", "standard"),
            ];
            if demo_like {
                attributes.extend(demo_attributes(i));
            }
            Span {
                trace_id: trace_id.to_vec(),
                span_id: id.to_be_bytes().to_vec(),
                name: name.into(),
                kind: 1,
                start_time_unix_nano: 1_780_000_000_000_000_000 + id * 1000,
                end_time_unix_nano: 1_780_000_000_000_000_000 + id * 1000 + 500,
                attributes,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

async fn pipeline_throughput(total_spans: u64, spans_per_request: usize, senders: u64) {
    let (sink, sink_addr) = CountingSink::start(None).await;
    let dir = std::env::temp_dir().join(format!("ordertrail-bench-{}", std::process::id()));
    let mut config = config::default_config();
    config
        .apply(&Overrides {
            grpc_listen: Some("127.0.0.1:0".into()),
            http_listen: Some("127.0.0.1:0".into()),
            export_endpoint: Some(format!("http://{sink_addr}")),
            export_protocol: None,
            data_dir: Some(dir.clone()),
            api_http_listen: Some("127.0.0.1:0".into()),
            api_grpc_listen: Some("127.0.0.1:0".into()),
        })
        .unwrap();
    let server = Server::start(config).await.unwrap();
    let endpoint = format!("http://{}", server.grpc_addr.unwrap());
    let requests = total_spans / spans_per_request as u64;
    let total_orders = 20_000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for sender in 0..senders {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(endpoint).await.unwrap();
            let mut refused = 0u64;
            let mut seq = sender;
            while seq < requests {
                match client.export(request(seq, spans_per_request, 8, total_orders)).await {
                    Ok(_) => seq += senders,
                    Err(status) if status.code() == tonic::Code::Unavailable => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(status) => panic!("{status:?}"),
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await.unwrap();
    }
    let accepted = started.elapsed();
    server.pipeline().flush().await;
    let queued = ordertrail::telemetry::Counters::get(&server.counters().export_spans_queued);
    while sink.received.load(Ordering::Relaxed) < queued {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let exported = started.elapsed();
    let sent = requests * spans_per_request as u64;
    println!(
        "pipeline: {sent} spans in {requests} requests of {spans_per_request} from {senders} senders: accepted in {:.2}s \
         ({:.0} spans/s), all {} output spans exported after {:.2}s ({:.0} input spans/s end to end); {refused} UNAVAILABLE answers retried",
        accepted.as_secs_f64(),
        sent as f64 / accepted.as_secs_f64(),
        sink.received.load(Ordering::Relaxed),
        exported.as_secs_f64(),
        sent as f64 / exported.as_secs_f64(),
    );
    server.shutdown(Duration::from_secs(10)).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// How the load is delivered in the side-by-side runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Delivery {
    InOrder,
    Backwards,
    BackendOutage,
}

/// What receives the load in the side-by-side runs.
enum Hop {
    Ordertrail,
    Rotel(String),
}

/// Sends `requests` demo-like requests of 512 spans from 4 senders to `endpoint`; returns UNAVAILABLE answers.
async fn send_load(endpoint: String, requests: u64, delivery: Delivery) -> u64 {
    const SENDERS: usize = 4;
    let mut tasks = Vec::new();
    for sender in 0..u64::try_from(SENDERS).unwrap() {
        let endpoint = endpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(endpoint).await.unwrap();
            let mine: Vec<u64> = (sender..requests).step_by(SENDERS).collect();
            let order: Vec<u64> = if delivery == Delivery::Backwards { mine.into_iter().rev().collect() } else { mine };
            let mut refused = 0u64;
            for seq in order {
                loop {
                    match client.export(request_with(seq, 512, 8, 20_000, true)).await {
                        Ok(_) => break,
                        Err(status) if status.code() == tonic::Code::Unavailable => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(status) => panic!("{status:?}"),
                    }
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await.unwrap();
    }
    refused
}

/// One side-by-side run: the load through `hop` to a sink; prints input spans per second end to end.
async fn side_by_side_run(hop: &Hop, delivery: Delivery, total_spans: u64) {
    let requests = total_spans / 512;
    let sent = requests * 512;
    // Ordertrail sends about two spans per input span (copy and enriched original); a plain hop sends one.
    let expected_output = match hop {
        Hop::Ordertrail => sent * 2,
        Hop::Rotel(_) => sent,
    };
    let outage = (delivery == Delivery::BackendOutage).then(|| (expected_output / 3, Duration::from_secs(3)));
    let (sink, sink_addr) = CountingSink::start(outage).await;
    let dir = std::env::temp_dir().join(format!("ordertrail-bench-side-{}", std::process::id()));
    let started = Instant::now();
    let (name, refused, queued, server, mut child) = match hop {
        Hop::Ordertrail => {
            let mut config = config::default_config();
            config
                .apply(&Overrides {
                    grpc_listen: Some("127.0.0.1:0".into()),
                    http_listen: Some("127.0.0.1:0".into()),
                    export_endpoint: Some(format!("http://{sink_addr}")),
                    export_protocol: None,
                    data_dir: Some(dir.clone()),
                    api_http_listen: Some("127.0.0.1:0".into()),
                    api_grpc_listen: Some("127.0.0.1:0".into()),
                })
                .unwrap();
            let server = Server::start(config).await.unwrap();
            let refused = send_load(format!("http://{}", server.grpc_addr.unwrap()), requests, delivery).await;
            server.pipeline().flush().await;
            let queued = ordertrail::telemetry::Counters::get(&server.counters().export_spans_queued);
            ("ordertrail", refused, queued, Some(server), None)
        }
        Hop::Rotel(path) => {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = std::process::Command::new(path)
                .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{port}"), "--exporter", "otlp"])
                .args(["--otlp-exporter-endpoint", &format!("http://{sink_addr}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("rotel-agent starts");
            let endpoint = format!("http://127.0.0.1:{port}");
            while TraceServiceClient::connect(endpoint.clone()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let refused = send_load(endpoint, requests, delivery).await;
            ("rotel-agent", refused, sent, None, Some(child))
        }
    };
    let accepted = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.received.load(Ordering::Relaxed) < queued && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let exported = started.elapsed();
    let received = sink.received.load(Ordering::Relaxed);
    println!(
        "side by side, {delivery:?}, {name}: {sent} demo-like spans accepted in {:.2}s ({:.0} spans/s); {received} of \
         {queued} output spans at the backend after {:.2}s ({:.0} input spans/s end to end); {refused} UNAVAILABLE \
         answers to the senders, {} refused exports by the backend{}",
        accepted.as_secs_f64(),
        sent as f64 / accepted.as_secs_f64(),
        exported.as_secs_f64(),
        sent as f64 / exported.as_secs_f64(),
        sink.refused.load(Ordering::Relaxed),
        if received < queued { " — INCOMPLETE after 120 s" } else { "" },
    );
    if let Some(server) = server {
        server.shutdown(Duration::from_secs(10)).await;
    }
    if let Some(child) = child.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn store_group_commit(commits: usize, orders_per_commit: usize) {
    let dir = std::env::temp_dir().join(format!("ordertrail-bench-store-{}", std::process::id()));
    let mut store = RedbStore::open(&dir, Durability::Durable).unwrap();
    let started = Instant::now();
    for c in 0..commits {
        let orders = (0..orders_per_commit)
            .map(|i| {
                let mut order = OrderRecord::new(format!("SO-{:07}", (c * orders_per_commit + i) % 50_000));
                order.span_count = c as u64;
                OrderWrite { record: order, wake_unix_nanos: Some(u64::MAX - 1) }
            })
            .collect();
        store.commit(&StateChanges { orders, ..Default::default() }, &[]).unwrap();
    }
    let elapsed = started.elapsed();
    println!(
        "redb store: {commits} durable commits of {orders_per_commit} order records: {:.2} ms per commit, {:.0} order writes/s",
        elapsed.as_secs_f64() * 1000.0 / commits as f64,
        (commits * orders_per_commit) as f64 / elapsed.as_secs_f64()
    );
    drop(store);
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (`cargo test --benches`, a bare run) gets the short version.
    let quick = !std::env::args().any(|a| a == "--bench") || std::env::args().any(|a| a == "--quick");
    let args: Vec<String> = std::env::args().collect();
    if let Some(rotel) = args.iter().position(|a| a == "--side-by-side").and_then(|i| args.get(i + 1)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let spans = if quick { 20_480 } else { 512_000 };
        for delivery in [Delivery::InOrder, Delivery::Backwards, Delivery::BackendOutage] {
            for hop in [Hop::Ordertrail, Hop::Rotel(rotel.clone())] {
                runtime.block_on(side_by_side_run(&hop, delivery, spans));
            }
        }
        return;
    }
    store_group_commit(if quick { 20 } else { 500 }, 64);
    store_group_commit(if quick { 20 } else { 500 }, 1);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(pipeline_throughput(if quick { 20_480 } else { 1_024_000 }, 512, 4));
}
