//! A broken backend costs no acknowledged span: one killed while an export is in flight, and one that refuses
//! messages over 4 MiB as Go gRPC servers (the collector, Jaeger, Tempo) do by default. The sink here is a real
//! tonic OTLP server with tonic's default 4 MiB limit; ordertrail is the real server on port 0.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use ordertrail::telemetry::Counters;
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
    let server = start_server(test_config(addr, dir.path(), "")).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc_addr.unwrap())).await.unwrap();
    client.export(request("killed", 0, 10, 10)).await.expect("acknowledged");
    tokio::time::sleep(Duration::from_millis(700)).await;
    tokio::task::spawn_blocking(kill).await.unwrap();
    assert!(originals(&dying, "killed").is_empty(), "the killed backend answered nothing");
    // The backend comes back on the same address, as a restarted pod behind the same Service would.
    let back = Sink::start_at(addr).await;
    back.wait_for(Duration::from_secs(20), "the 10 acknowledged spans", |_| originals(&back, "killed").len() >= 10)
        .await;
    assert_eq!(originals(&back, "killed").len(), 10);
    let counters = server.counters().clone();
    println!(
        "backend kill result: sent 10, acknowledged 10, delivered {} distinct, duplicates {}, lost 0, retries {}",
        originals(&back, "killed").len(),
        all_originals(&back, "killed") - originals(&back, "killed").len(),
        Counters::get(&counters.export_retries)
    );
    assert_eq!(Counters::get(&counters.export_spans_failed), 0, "nothing was given up on");
    assert!(Counters::get(&counters.export_retries) > 0, "the dropped connection was retried");
    server.shutdown(Duration::from_secs(5)).await;
}

/// The test configuration, receiving gRPC messages up to 32 MiB and cutting export requests at `max_batch_bytes`
/// (the default when `None`).
fn config(
    sink: std::net::SocketAddr,
    dir: &std::path::Path,
    max_batch_bytes: Option<usize>,
) -> ordertrail_core::config::Config {
    let mut config = test_config(sink, dir, "");
    config.receivers.grpc.as_mut().unwrap().max_recv_msg_size = 32 * 1024 * 1024;
    if let Some(max) = max_batch_bytes {
        config.exporter.as_mut().unwrap().max_batch_bytes = max;
    }
    config
}

/// Sends three requests of 2,000 spans of ~1.3 KB (2.7 MB each; ordertrail's output is about twice its input)
/// and checks that every span reaches a sink that refuses messages over 4 MiB.
async fn large_requests_reach_a_4_mib_backend(
    max_batch_bytes: Option<usize>,
) -> (ordertrail::server::Server, tempfile::TempDir) {
    let (sink, addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(addr, dir.path(), max_batch_bytes)).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc_addr.unwrap()))
        .await
        .unwrap()
        .max_encoding_message_size(64 * 1024 * 1024);
    for r in 0..3 {
        let request = request("large", r * 2000, 2000, 1300);
        assert!(request.encoded_len() > 2_600_000);
        client.export(request).await.expect("acknowledged");
    }
    // One small request after them, which must not wait behind refused batches.
    client.export(request("small", 100_000, 5, 10)).await.expect("acknowledged");
    sink.wait_for(Duration::from_secs(60), "all 6,005 spans", |_| {
        originals(&sink, "large").len() >= 6000 && originals(&sink, "small").len() >= 5
    })
    .await;
    assert_eq!(originals(&sink, "large").len(), 6000);
    let counters = server.counters().clone();
    println!(
        "4 MiB backend result (max_batch_bytes {max_batch_bytes:?}): sent 6,005, acknowledged 6,005, delivered {} \
         distinct, duplicates {}, lost 0, retries {}, dropped too large {}",
        originals(&sink, "large").len() + originals(&sink, "small").len(),
        all_originals(&sink, "large") + all_originals(&sink, "small")
            - originals(&sink, "large").len()
            - originals(&sink, "small").len(),
        Counters::get(&counters.export_retries),
        Counters::get(&counters.export_spans_too_large)
    );
    assert_eq!(Counters::get(&counters.export_spans_failed), 0);
    assert_eq!(Counters::get(&counters.export_spans_too_large), 0);
    (server, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_requests_are_cut_by_bytes_under_the_4_mib_limit_of_go_grpc_servers() {
    let (server, _dir) = large_requests_reach_a_4_mib_backend(None).await;
    // Cut before sending: the backend never refused anything, so nothing was retried.
    assert_eq!(Counters::get(&server.counters().export_retries), 0);
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_the_backend_refuses_as_too_large_is_halved_until_it_passes() {
    // With the byte limit set above the backend's, only the backend's refusals make the requests smaller.
    let (server, _dir) = large_requests_reach_a_4_mib_backend(Some(64 * 1024 * 1024)).await;
    server.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_span_too_large_alone_is_dropped_counted_and_named_and_the_rest_flows() {
    let (sink, addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(config(addr, dir.path(), Some(64 * 1024 * 1024))).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc_addr.unwrap()))
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
    let counters = server.counters().clone();
    // The giant span and its copy in the order trace.
    assert!(Counters::get(&counters.export_spans_too_large) >= 1);
    assert_eq!(Counters::get(&counters.export_spans_failed), 0);
    server.shutdown(Duration::from_secs(5)).await;
}
