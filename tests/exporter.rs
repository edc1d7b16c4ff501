//! The exporter against real OTLP servers: OTLP/HTTP into a second ordertrail, and retries against a backend
//! that is briefly unavailable.

mod common;

use common::*;
use opentelemetry::trace::SpanKind;
use opentelemetry::{Context, KeyValue};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use ordertrail::config::Overrides;
use ordertrail::telemetry::Counters;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_reaches_a_real_otlp_http_server() {
    // The backend is a second ordertrail without an exporter: its OTLP/HTTP receiver is a real OTLP/HTTP server.
    let backend_dir = tempfile::tempdir().unwrap();
    let mut backend_config = ordertrail::config::default_config();
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
