//! The exporter against real OTLP servers: OTLP/HTTP into a second ordertrail, and retries against a backend
//! that is briefly unavailable.

mod common;

use common::*;
use opentelemetry::trace::SpanKind;
use opentelemetry::{Context, KeyValue};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use ordertrail::telemetry::Counters;
use ordertrail_core::config::Overrides;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_reaches_a_real_otlp_http_server() {
    // The backend is a second ordertrail without an exporter: its OTLP/HTTP receiver is a real OTLP/HTTP server.
    let backend_dir = tempfile::tempdir().unwrap();
    let mut backend_config = ordertrail_core::config::default_config();
    backend_config
        .apply(&Overrides {
            grpc_listen: Some("127.0.0.1:0".into()),
            http_listen: Some("127.0.0.1:0".into()),
            data_dir: Some(backend_dir.path().to_path_buf()),
            api_http_listen: Some("127.0.0.1:0".into()),
            api_grpc_listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        })
        .unwrap();
    let backend = start_server(backend_config).await;

    let (_unused_sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(sink_addr, dir.path(), "");
    config
        .apply(&Overrides {
            export_endpoint: Some(format!("http://{}", backend.http_addr.unwrap())),
            export_protocol: Some("http/protobuf".into()),
            ..Default::default()
        })
        .unwrap();
    assert!(config.exporter.as_ref().unwrap().endpoint.ends_with("/v1/traces"));
    let server = start_server(config).await;
    let erp = sdk_provider("erp", server.grpc_addr.unwrap());
    record(&erp, &Context::new(), "credit.check", SpanKind::Internal, vec![KeyValue::new("order.id", "SO-H")]);
    flush(&erp).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    // The input span comes out twice (re-emitted and enriched) plus the milestone span.
    while Counters::get(&backend.counters().spans_received) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the backend did not receive the export");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The backend, seeing the re-emitted span with its order.id, files it under the same order.
    assert!(backend.pipeline().order("SO-H").await.is_some());
    assert_eq!(Counters::get(&server.counters().export_spans_failed), 0);
    server.shutdown(Duration::from_secs(5)).await;
    backend.shutdown(Duration::from_secs(5)).await;
}

/// A backend that answers UNAVAILABLE to its first `failures` requests.
#[derive(Clone)]
struct Flaky {
    failures: u32,
    calls: Arc<AtomicU32>,
    sink: Sink,
}

#[tonic::async_trait]
impl TraceService for Flaky {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(tonic::Status::unavailable("warming up"));
        }
        self.sink.export(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_until_delivered() {
    let flaky = Flaky { failures: 3, calls: Arc::default(), sink: Sink::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(flaky.clone()).accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(test_config(addr, dir.path(), "")).await;
    let erp = sdk_provider("erp", server.grpc_addr.unwrap());
    record(&erp, &Context::new(), "credit.check", SpanKind::Internal, vec![KeyValue::new("order.id", "SO-R")]);
    flush(&erp).await;
    flaky
        .sink
        .wait_for(Duration::from_secs(20), "delivery after retries", |spans| {
            spans.iter().any(|r| r.span.trace_id == trace_of("SO-R"))
        })
        .await;
    assert!(Counters::get(&server.counters().export_retries) >= 3);
    assert_eq!(Counters::get(&server.counters().export_spans_failed), 0);
    server.shutdown(Duration::from_secs(5)).await;
}

/// An export queue in memory whose first removals fail, as on a full disk.
struct FlakyQueue {
    entries: std::sync::Mutex<std::collections::BTreeMap<u64, ordertrail::store::QueuedExport>>,
    failing_removals: AtomicU32,
}

impl ordertrail::store::ExportQueue for FlakyQueue {
    fn read_after(
        &self,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<(u64, ordertrail::store::QueuedExport)>, ordertrail::store::StoreError> {
        let entries = self.entries.lock().unwrap();
        let start = after.map_or(0, |a| a + 1);
        Ok(entries.range(start..).take(max).map(|(n, e)| (*n, e.clone())).collect())
    }
    fn remove(&self, numbers: &[u64]) -> Result<(), ordertrail::store::StoreError> {
        if self.failing_removals.load(Ordering::SeqCst) > 0 {
            self.failing_removals.fetch_sub(1, Ordering::SeqCst);
            return Err(ordertrail::store::StoreError::Write("no space left on device".into()));
        }
        let mut entries = self.entries.lock().unwrap();
        for n in numbers {
            entries.remove(n);
        }
        Ok(())
    }
    fn queued_bytes(&self) -> u64 {
        self.entries.lock().unwrap().values().map(|e| e.request.len() as u64).sum()
    }
    fn queued_entries(&self) -> u64 {
        self.entries.lock().unwrap().len() as u64
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_entries_whose_removal_failed_are_removed_later_not_left_behind() {
    use prost::Message;
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(sink_addr, dir.path(), "").exporter.unwrap();
    let mut entries = std::collections::BTreeMap::new();
    for n in 0..5u8 {
        let span = opentelemetry_proto::tonic::trace::v1::Span {
            trace_id: vec![0x42; 16],
            span_id: vec![n + 1; 8],
            name: format!("queued {n}"),
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
                scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        entries.insert(u64::from(n), ordertrail::store::QueuedExport { spans: 1, request: request.encode_to_vec() });
    }
    let queue = Arc::new(FlakyQueue { entries: std::sync::Mutex::new(entries), failing_removals: AtomicU32::new(2) });
    let counters = Arc::new(Counters::default());
    let exporter = ordertrail::exporter::Exporter::start_from_queue(
        config,
        counters.clone(),
        queue.clone(),
        Arc::new(tokio::sync::Notify::new()),
    )
    .unwrap();
    eventually("the queue to empty despite failed removals", Duration::from_secs(10), || {
        let empty = ordertrail::store::ExportQueue::queued_entries(&*queue) == 0;
        async move { empty.then_some(()) }
    })
    .await;
    let names: std::collections::BTreeSet<String> = sink.snapshot().into_iter().map(|r| r.span.name).collect();
    assert_eq!(names.len(), 5, "every entry delivered: {names:?}");
    assert_eq!(Counters::get(&counters.export_spans_sent), 5, "and delivered once, not re-read after the failure");
    exporter.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_export_at_a_configured_level_reaches_a_grpc_backend_that_accepts_only_zstd() {
    // The backend accepts zstd and nothing else, so a request compressed otherwise (or framed wrongly) is refused.
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(sink.clone()).accept_compressed(tonic::codec::CompressionEncoding::Zstd),
            )
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    // A file's exporter section is whole, so it names an endpoint; the test points it at the sink.
    let config = test_config(
        sink_addr,
        dir.path(),
        "exporters:\n  otlp:\n    endpoint: http://backend:4317\n    compression: zstd\n    compression_params:\n      level: 7\n",
    );
    assert_eq!(config.exporter.as_ref().unwrap().compression, ordertrail_core::config::Compression::Zstd { level: 7 });
    let server = start_server(config).await;
    let erp = sdk_provider("erp", server.grpc_addr.unwrap());
    record(&erp, &Context::new(), "credit.check", SpanKind::Internal, vec![KeyValue::new("order.id", "SO-Z")]);
    flush(&erp).await;
    // The input span comes out twice (re-emitted and enriched) plus the milestone span and the order's root.
    sink.wait_for(Duration::from_secs(20), "the zstd export", |spans| spans.len() >= 3).await;
    assert_eq!(Counters::get(&server.counters().export_spans_failed), 0);
    server.shutdown(Duration::from_secs(5)).await;
}
