//! A broken backend costs no acknowledged span: one killed while an export is in flight, and one that refuses
//! messages over 4 MiB as Go gRPC servers (the collector, Jaeger, Tempo) do by default. The sink here is a real
//! tonic OTLP server with tonic's default 4 MiB limit; ordertrail is the real binary, on port 0.

mod common;

use common::binary::*;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::collections::HashSet;
use std::time::Duration;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// A request of `count` spans named `<prefix> <n>`, each carrying `payload` bytes in one attribute, keyed to one
/// of 50 orders, as a busy ERP's exporter sends them.
fn request(prefix: &str, first: u32, count: u32, payload: usize) -> ExportTraceServiceRequest {
    let now =
        u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()).unwrap();
    let spans = (first..first + count)
        .map(|n| Span {
            trace_id: [&[0xE0, 1][..], &u64::from(n).to_be_bytes(), &[1, 2, 3, 4, 5, 6]].concat(),
            span_id: (0xE000_0000_0000_0000u64 | u64::from(n)).to_be_bytes().to_vec(),
            name: format!("{prefix} {n}"),
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            attributes: vec![kv("order.id", &format!("SO-X{}", n % 50)), kv("erp.document", &"d".repeat(payload))],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "erp")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// Every enriched original the sink received with `prefix`, duplicates included.
fn all_originals(sink: &Sink, prefix: &str) -> usize {
    sink.snapshot()
        .iter()
        .filter(|r| r.span.trace_id.starts_with(&[0xE0, 1]) && r.span.name.starts_with(prefix))
        .count()
}

/// The distinct names of the enriched originals the sink received with `prefix`. Order-trace copies are left
/// out (they are in the order's trace, not the sender's), so each input span counts once.
fn originals(sink: &Sink, prefix: &str) -> HashSet<String> {
    sink.snapshot()
        .into_iter()
        .filter(|r| r.span.trace_id.starts_with(&[0xE0, 1]) && r.span.name.starts_with(prefix))
        .map(|r| r.span.name)
        .collect()
}

/// A backend on a runtime of its own, holding each request for `delay`. Killing it drops that runtime, which
/// closes every connection at once, mid-request, as `kill -9` of a collector does.
fn dying_backend(delay: Duration) -> (Sink, std::net::SocketAddr, impl FnOnce()) {
    let (started, ready) = std::sync::mpsc::channel();
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            started.send(Sink::start_stoppable_holding(delay).await).unwrap();
            let _ = killed.await;
        });
        drop(runtime);
    });
    let (sink, addr) = ready.recv().unwrap();
    let kill = move || {
        let _ = kill.send(());
        thread.join().unwrap();
    };
    (sink, addr, kill)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backend_killed_while_an_export_is_in_flight_loses_no_acknowledged_span() {
    // The backend holds each request for 2 s, so it is certainly mid-export when it is killed.
    let (dying, addr, kill) = dying_backend(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let (_binary, ports) = start_binary(dir.path(), addr, None).await;
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc)).await.unwrap();
    client.export(request("killed", 0, 10, 10)).await.expect("acknowledged");
    tokio::time::sleep(Duration::from_millis(700)).await;
    tokio::task::spawn_blocking(kill).await.unwrap();
    assert!(originals(&dying, "killed").is_empty(), "the killed backend answered nothing");
    // The backend comes back on the same address, as a restarted pod behind the same Service would.
    let back = Sink::start_at(addr).await;
    back.wait_for(Duration::from_secs(20), "the 10 acknowledged spans", |_| originals(&back, "killed").len() >= 10)
        .await;
    assert_eq!(originals(&back, "killed").len(), 10);
    // The metrics mirror the exporter's counters every 100 ms.
    let metrics = eventually("the retry in the metrics", Duration::from_secs(5), || async move {
        let metrics = metrics(ports).await;
        (counter(&metrics, "ordertrail_exporter_retries_total") > 0).then_some(metrics)
    })
    .await;
    println!(
        "backend kill result: sent 10, acknowledged 10, delivered {} distinct, duplicates {}, lost 0, retries {}",
        originals(&back, "killed").len(),
        all_originals(&back, "killed") - originals(&back, "killed").len(),
        counter(&metrics, "ordertrail_exporter_retries_total")
    );
    assert_eq!(counter(&metrics, "ordertrail_exporter_spans_failed_total"), 0, "nothing was given up on");
    assert!(counter(&metrics, "ordertrail_exporter_retries_total") > 0, "the dropped connection was retried");
}

/// The binary exporting to `sink`, receiving gRPC messages up to 32 MiB, cutting export requests at
/// `max_batch_bytes` (the default when `None`), and retrying quickly.
async fn start_binary(
    dir: &std::path::Path,
    sink: std::net::SocketAddr,
    max_batch_bytes: Option<usize>,
) -> (Server, Ports) {
    let max_size = max_batch_bytes.map(|m| format!("      max_size_bytes: {m}\n")).unwrap_or_default();
    let yaml = format!(
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        max_recv_msg_size_mib: 32\n\
         exporters:\n  otlp:\n    endpoint: http://127.0.0.1:1\n    batch:\n      timeout: 20ms\n{max_size}\
         \x20   retry_on_failure:\n      initial_interval: 50ms\n      max_interval: 200ms\n"
    );
    let config = dir.join("ordertrail.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (binary, ports) = spawn(&config, &dir.join("data"), Ports::ANY, sink);
    wait_ready(ports.api_http).await;
    (binary, ports)
}

/// The binary's metrics page.
async fn metrics(ports: Ports) -> String {
    reqwest::get(format!("http://127.0.0.1:{}/metrics", ports.api_http)).await.unwrap().text().await.unwrap()
}

/// Sends three requests of 2,000 spans of ~2.7 KB (5.4 MB each; ordertrail's output is about twice its input,
/// so a batch of 2,048 output spans is over 4 MiB) and checks that every span reaches a sink that refuses
/// messages over 4 MiB.
async fn large_requests_reach_a_4_mib_backend(max_batch_bytes: Option<usize>) -> String {
    let (sink, addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let (_binary, ports) = start_binary(dir.path(), addr, max_batch_bytes).await;
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap()
        .max_encoding_message_size(64 * 1024 * 1024);
    for r in 0..3 {
        let request = request("large", r * 2000, 2000, 2600);
        assert!(request.encoded_len() > 5_000_000);
        client.export(request).await.expect("acknowledged");
    }
    // One small request after them, which must not wait behind refused batches.
    client.export(request("small", 100_000, 5, 10)).await.expect("acknowledged");
    sink.wait_for(Duration::from_secs(60), "all 6,005 spans", |_| {
        originals(&sink, "large").len() >= 6000 && originals(&sink, "small").len() >= 5
    })
    .await;
    assert_eq!(originals(&sink, "large").len(), 6000);
    let metrics = metrics(ports).await;
    println!(
        "4 MiB backend result (max_batch_bytes {max_batch_bytes:?}): sent 6,005, acknowledged 6,005, delivered {} \
         distinct, duplicates {}, lost 0, retries {}, requests halved {}, dropped too large {}",
        originals(&sink, "large").len() + originals(&sink, "small").len(),
        all_originals(&sink, "large") + all_originals(&sink, "small")
            - originals(&sink, "large").len()
            - originals(&sink, "small").len(),
        counter(&metrics, "ordertrail_exporter_retries_total"),
        counter(&metrics, "ordertrail_exporter_requests_halved_total"),
        counter(&metrics, "ordertrail_exporter_spans_too_large_total")
    );
    assert_eq!(counter(&metrics, "ordertrail_exporter_spans_failed_total"), 0);
    assert_eq!(counter(&metrics, "ordertrail_exporter_spans_too_large_total"), 0);
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_requests_are_cut_by_bytes_under_the_4_mib_limit_of_go_grpc_servers() {
    let metrics = large_requests_reach_a_4_mib_backend(None).await;
    // Cut before sending: the backend never refused anything, so nothing was retried or halved.
    assert_eq!(counter(&metrics, "ordertrail_exporter_retries_total"), 0);
    assert_eq!(counter(&metrics, "ordertrail_exporter_requests_halved_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_the_backend_refuses_as_too_large_is_halved_until_it_passes() {
    // With the byte limit set above the backend's, only the backend's refusals make the requests smaller.
    let metrics = large_requests_reach_a_4_mib_backend(Some(64 * 1024 * 1024)).await;
    // The backend did refuse requests as too large: without the halving, nothing here would have passed.
    assert!(counter(&metrics, "ordertrail_exporter_requests_halved_total") > 0, "nothing was halved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_span_too_large_alone_is_dropped_counted_and_named_and_the_rest_flows() {
    let (sink, addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let (_binary, ports) = start_binary(dir.path(), addr, Some(64 * 1024 * 1024)).await;
    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc))
        .await
        .unwrap()
        .max_encoding_message_size(64 * 1024 * 1024);
    let mut poisoned = request("around", 0, 100, 100);
    let giant = request("giant", 500, 1, 5 * 1024 * 1024).resource_spans[0].scope_spans[0].spans[0].clone();
    poisoned.resource_spans[0].scope_spans[0].spans.insert(50, giant);
    client.export(poisoned).await.expect("acknowledged");
    client.export(request("after", 1000, 20, 100)).await.expect("acknowledged");
    sink.wait_for(Duration::from_secs(30), "the spans around and after the giant", |_| {
        originals(&sink, "around").len() >= 100 && originals(&sink, "after").len() >= 20
    })
    .await;
    assert!(originals(&sink, "giant").is_empty());
    // The giant span (and its copy in the order trace) counted; the metrics mirror the counters every 100 ms.
    let metrics = eventually("the dropped span in the metrics", Duration::from_secs(5), || async move {
        let metrics = metrics(ports).await;
        (counter(&metrics, "ordertrail_exporter_spans_too_large_total") >= 1).then_some(metrics)
    })
    .await;
    assert_eq!(counter(&metrics, "ordertrail_exporter_spans_failed_total"), 0);
}
