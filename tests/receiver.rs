//! The OTLP receivers' contract: malformed input is refused with the right status and disturbs nothing else,
//! invalid spans are reported in partial_success, and a full pipeline answers with a retryable status.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::io::Write;
use std::time::Duration;

fn request(order: &str, trace: u8, span_ids: &[Vec<u8>]) -> ExportTraceServiceRequest {
    let spans = span_ids
        .iter()
        .map(|id| Span {
            trace_id: vec![trace; 16],
            span_id: id.clone(),
            name: "credit.check".into(),
            start_time_unix_nano: 1_780_000_000_000_000_000,
            end_time_unix_nano: 1_780_000_000_100_000_000,
            attributes: vec![KeyValue {
                key: "order.id".into(),
                value: Some(AnyValue { value: Some(Value::StringValue(order.into())) }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(Value::StringValue("erp".into())) }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_bodies_get_the_right_status_and_the_rest_keeps_flowing() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(sink_addr, dir.path(), "");
    let http = config.receivers.http.as_mut().unwrap();
    http.max_request_body_size = 65536;
    http.max_decompressed_body_size = 131072;
    let server = start_server(config).await;
    let url = format!("http://{}/v1/traces", server.http_addr.unwrap());
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>, content_type: &'static str, gzip: bool| {
        let mut request = client.post(&url).header("content-type", content_type).body(body);
        if gzip {
            request = request.header("content-encoding", "gzip");
        }
        request.send()
    };
    let gzip = |bytes: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    };

    // Garbage protobuf, broken JSON, invalid UTF-8 in JSON, corrupt gzip: 400 with a google.rpc.Status body.
    let response = post(vec![0xff, 0xff, 0xff, 0x0f], "application/x-protobuf", false).await.unwrap();
    assert_eq!(response.status(), 400);
    let body = response.bytes().await.unwrap();
    #[derive(prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    let status = RpcStatus::decode(body).unwrap();
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(status.message.contains("invalid protobuf"), "{}", status.message);
    assert_eq!(post(b"{\"resourceSpans\": [".to_vec(), "application/json", false).await.unwrap().status(), 400);
    assert_eq!(post(b"{\"resourceSpans\": \"\xff\"}".to_vec(), "application/json", false).await.unwrap().status(), 400);
    assert_eq!(post(b"not gzip".to_vec(), "application/x-protobuf", true).await.unwrap().status(), 400);
    // Wrong media type: 415. Too large as sent: 413. A small gzip body that inflates past the limit: 413.
    assert_eq!(post(b"x".to_vec(), "text/plain", false).await.unwrap().status(), 415);
    assert_eq!(post(vec![0; 70_000], "application/x-protobuf", false).await.unwrap().status(), 413);
    let bomb = gzip(&vec![0u8; 1_000_000]);
    assert!(bomb.len() < 65536);
    assert_eq!(post(bomb, "application/x-protobuf", true).await.unwrap().status(), 413);

    // A valid JSON request (OTLP/JSON: hex ids, camelCase) and a gzip protobuf request still go through.
    let json = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "erp"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "credit.check",
            "kind": 1, "startTimeUnixNano": "1780000000000000000", "endTimeUnixNano": "1780000000100000000",
            "attributes": [{"key": "order.id", "value": {"stringValue": "SO-JSON"}},
                           {"key": "credit.decision", "value": {"stringValue": "approved"}}]
        }]}]
    }]});
    let response = post(serde_json::to_vec(&json).unwrap(), "application/json", false).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let protobuf = gzip(&request("SO-PB", 3, &[vec![3; 8]]).encode_to_vec());
    let response = post(protobuf, "application/x-protobuf", true).await.unwrap();
    assert_eq!(response.status(), 200);
    ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();

    sink.wait_for(Duration::from_secs(20), "both valid requests", |spans| {
        spans.iter().any(|r| r.span.trace_id == trace_of("SO-JSON"))
            && spans.iter().any(|r| r.span.trace_id == trace_of("SO-PB"))
    })
    .await;
    assert_eq!(ordertrail::telemetry::Counters::get(&server.counters().requests_malformed), 7);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_with_invalid_ids_are_reported_in_partial_success_over_grpc() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(test_config(sink_addr, dir.path(), "")).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc_addr.unwrap())).await.unwrap();
    let response = client.export(request("SO-G", 4, &[vec![4; 8], vec![0; 8], vec![5; 3]])).await.unwrap().into_inner();
    let partial = response.partial_success.expect("partial success reported");
    assert_eq!(partial.rejected_spans, 2);
    assert!(partial.error_message.contains("span_id"), "{}", partial.error_message);
    sink.wait_for(Duration::from_secs(20), "the valid span", |spans| {
        spans.iter().any(|r| r.span.trace_id == trace_of("SO-G"))
    })
    .await;

    // A message over the size limit is refused without affecting the connection, with the code Go servers use and
    // without RetryInfo: OTLP clients retry RESOURCE_EXHAUSTED only when the server says when, and OUT_OF_RANGE
    // always, which would resend a message that can never pass.
    let huge = "x".repeat(5 * 1024 * 1024);
    let mut big = request("SO-BIG", 6, &[vec![6; 8]]);
    big.resource_spans[0].scope_spans[0].spans[0].name = huge;
    let status = client.export(big).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.details().is_empty(), "no RetryInfo");
    client.export(request("SO-AFTER", 7, &[vec![7; 8]])).await.unwrap();
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_answers_unavailable_instead_of_growing() {
    // The sink holds every export for a long time, so the exporter's queue and then the pipeline's fill up.
    let (_sink, sink_addr) = Sink::start(Some(Duration::from_secs(60))).await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "pipeline:\n  queue_size: 1\n  max_group_commit: 1\n";
    let mut config = test_config(sink_addr, dir.path(), extra);
    // In memory mode the exporter's bounded channel is what fills; the durable queue has its own test below.
    config.storage.durability = ordertrail::store::Durability::Memory;
    let exporter = config.exporter.as_mut().unwrap();
    exporter.queue_size = 1;
    exporter.num_consumers = 1;
    exporter.send_batch_size = 1;
    exporter.timeout = Duration::from_secs(60);
    let server = start_server(config).await;
    let addr = server.grpc_addr.unwrap();
    let mut tasks = Vec::new();
    for i in 0..12u8 {
        let endpoint = format!("http://{addr}");
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(endpoint).await.unwrap();
            let call = client.export(request(&format!("SO-F{i}"), 10 + i, &[vec![10 + i; 8]]));
            match tokio::time::timeout(Duration::from_secs(5), call).await {
                Ok(Ok(_)) => "ok",
                Ok(Err(status)) if status.code() == tonic::Code::Unavailable => "unavailable",
                Ok(Err(_)) => "other error",
                Err(_) => "waiting",
            }
        }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert!(outcomes.contains(&"unavailable"), "{outcomes:?}");
    assert!(!outcomes.contains(&"other error"), "{outcomes:?}");
    assert!(ordertrail::telemetry::Counters::get(&server.counters().requests_refused_busy) > 0);
    // Shutdown with a short deadline must not hang on the stuck exporter.
    tokio::time::timeout(Duration::from_secs(20), server.shutdown(Duration::from_millis(500)))
        .await
        .expect("shutdown honours its deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_export_queue_on_disk_answers_unavailable_and_counts_it() {
    // The backend is stuck, so everything to export accumulates in the persistent queue until its bound.
    let (_sink, sink_addr) = Sink::start(Some(Duration::from_secs(60))).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(sink_addr, dir.path(), "");
    let exporter = config.exporter.as_mut().unwrap();
    exporter.max_queue_bytes = 1024 * 1024;
    exporter.num_consumers = 1;
    exporter.timeout = Duration::from_secs(60);
    let server = start_server(config).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc_addr.unwrap())).await.unwrap();
    let mut refused = None;
    for i in 0..40u8 {
        let mut big = request(&format!("SO-Q{i}"), 20 + i, &[vec![20 + i; 8]]);
        // Each span is re-emitted into its order trace and passed on, so 200 KB of input queues about 400 KB.
        big.resource_spans[0].scope_spans[0].spans[0].name = "q".repeat(200 * 1024);
        if let Err(status) = client.export(big).await {
            refused = Some((i, status));
            break;
        }
    }
    let (after, status) = refused.expect("the bounded queue refuses eventually");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("export queue is full"), "{status:?}");
    assert!(after >= 2, "the first requests fit in 1 MiB");
    assert!(ordertrail::telemetry::Counters::get(&server.counters().requests_refused_queue_full) > 0);
    tokio::time::timeout(Duration::from_secs(20), server.shutdown(Duration::from_millis(500)))
        .await
        .expect("shutdown honours its deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_whose_sender_gave_up_is_not_processed_and_readiness_does_not_wait_behind_work() {
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(test_config(sink_addr, dir.path(), "")).await;
    // The engine thread is held busy for 3 s, as a burst of large requests would hold it.
    let pipeline = server.pipeline();
    let busy = tokio::spawn(async move { pipeline.inspect(|_| std::thread::sleep(Duration::from_secs(3))).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc_addr.unwrap())).await.unwrap();
    let mut late = tonic::Request::new(request("SO-LATE", 0x51, &[vec![0x51; 8]]));
    late.set_timeout(Duration::from_millis(300));
    let answer = client.export(late).await.expect_err("the sender's deadline passes while the engine is busy");
    assert!(
        matches!(answer.code(), tonic::Code::DeadlineExceeded | tonic::Code::Cancelled),
        "{:?}: {}",
        answer.code(),
        answer.message()
    );
    // Readiness answers from state at once, busy engine or not.
    let started = std::time::Instant::now();
    let ready = reqwest::get(format!("http://{}/readyz", server.api_http_addr.unwrap())).await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap_or_default());
    assert!(started.elapsed() < Duration::from_secs(1), "readiness waited {:?}", started.elapsed());
    busy.await.unwrap();
    // A request after the busy spell goes through; the abandoned one was skipped, not processed for nobody.
    client.export(request("SO-AFTER", 0x52, &[vec![0x52; 8]])).await.expect("accepted");
    sink.wait_for(Duration::from_secs(10), "the later request's span", |spans| {
        spans.iter().any(|r| r.span.span_id == vec![0x52; 8])
    })
    .await;
    assert!(!sink.snapshot().iter().any(|r| r.span.span_id == vec![0x51; 8]), "the abandoned span was exported");
    assert_eq!(ordertrail::telemetry::Counters::get(&server.counters().requests_abandoned), 1);
    server.shutdown(Duration::from_secs(5)).await;
}
