//! Throughput of receive → correlate → label → commit → export, through the real server, in one process.
//!
//! `cargo bench --bench pipeline_throughput` prints spans per second and the cost of one store group commit.
//! The load generator and the OTLP sink share the machine with ordertrail, so the figure is a floor.

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
use ordertrail_core::engine::StateChanges;
use ordertrail_core::order::OrderRecord;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
struct CountingSink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for CountingSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize =
            request.into_inner().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
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
    let (service, _, _) = NAMES[(seq % 4) as usize];
    let spans = (0..spans as u64)
        .map(|i| {
            let (_, name, attribute) = NAMES[(i % 4) as usize];
            let order = (seq * orders_per_request + i % orders_per_request) % total_orders;
            let id = seq * 1_000_000 + i + 1;
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&(seq * 1_000 + i % orders_per_request + 1).to_be_bytes());
            trace_id[8..].copy_from_slice(&0x5eed_u64.to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: id.to_be_bytes().to_vec(),
                name: name.into(),
                kind: 1,
                start_time_unix_nano: 1_780_000_000_000_000_000 + id * 1000,
                end_time_unix_nano: 1_780_000_000_000_000_000 + id * 1000 + 500,
                attributes: vec![
                    kv("order.id", &format!("SO-{order:07}")),
                    kv(attribute, "complete"),
                    kv("http.route", "/api/orders/{id}"),
                    kv("customer.segment", "standard"),
                ],
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
    let sink = CountingSink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(sink.clone()).accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
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
    while sink.0.load(Ordering::Relaxed) < queued {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let exported = started.elapsed();
    let sent = requests * spans_per_request as u64;
    println!(
        "pipeline: {sent} spans in {requests} requests of {spans_per_request} from {senders} senders: accepted in {:.2}s \
         ({:.0} spans/s), all {} output spans exported after {:.2}s ({:.0} input spans/s end to end); {refused} UNAVAILABLE answers retried",
        accepted.as_secs_f64(),
        sent as f64 / accepted.as_secs_f64(),
        sink.0.load(Ordering::Relaxed),
        exported.as_secs_f64(),
        sent as f64 / exported.as_secs_f64(),
    );
    server.shutdown(Duration::from_secs(10)).await;
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
                order
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
    store_group_commit(if quick { 20 } else { 500 }, 64);
    store_group_commit(if quick { 20 } else { 500 }, 1);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(pipeline_throughput(if quick { 20_480 } else { 1_024_000 }, 512, 4));
}
