//! Nothing acknowledged is lost: `kill -9` of the real binary at random moments while a real OTLP client sends,
//! and an outage of the export backend while spans keep arriving. Each test prints its figures (sent,
//! acknowledged, delivered, lost), which RELIABILITY.md records.

mod common;

use common::binary::*;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type SpanKey = (Vec<u8>, Vec<u8>);

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// Request `n` of sender `sender`: spans with ids derived from (sender, n), over 200 orders. Every third trace
/// has an unkeyed child that arrives one request before its keyed parent, so spans also wait to inherit their
/// order across requests, and across a kill.
fn request(sender: u8, n: u32, spans_per_request: u32) -> (ExportTraceServiceRequest, Vec<SpanKey>) {
    let now =
        u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()).unwrap();
    let mut spans = Vec::new();
    for i in 0..spans_per_request {
        // The top byte keeps every id non-zero, which OTLP requires.
        let global = (0xB0 << 56) | (u64::from(sender) << 40) | (u64::from(n) << 16) | u64::from(i);
        let mut trace_id = vec![0xA0, sender];
        trace_id.extend_from_slice(&(u64::from(n) * 1000 + u64::from(i)).to_be_bytes());
        trace_id.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let order = format!("SO-K{}", global % 200);
        let keyed = i % 3 != 0;
        let mut attributes = vec![kv("http.route", "/api/orders/{id}")];
        if keyed {
            attributes.push(kv("order.id", &order));
        }
        spans.push(Span {
            trace_id,
            span_id: global.to_be_bytes().to_vec(),
            name: if keyed { "pick.confirm".into() } else { "db.query".into() },
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000_000,
            attributes,
            ..Default::default()
        });
    }
    let keys = spans.iter().map(|s| (s.trace_id.clone(), s.span_id.clone())).collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "wms")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            schema_url: String::new(),
        }],
    };
    (request, keys)
}

/// The original span ids that reached the sink, passed through or linked from an order trace.
fn delivered(sink: &Sink) -> HashSet<SpanKey> {
    let mut keys = HashSet::new();
    for received in sink.snapshot() {
        keys.insert((received.span.trace_id.clone(), received.span.span_id.clone()));
        for link in &received.span.links {
            keys.insert((link.trace_id.clone(), link.span_id.clone()));
        }
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_span() {
    let seed: u64 = std::env::var("KILL_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let kills: usize = std::env::var("KILL_TEST_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    println!("kill test: seed {seed}, {kills} kills");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ordertrail.yaml");
    let yaml = ordertrail_core::config::DEFAULT_CONFIG_YAML.replace("inherit_wait: 10s", "inherit_wait: 1s")
        + "\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:1\n    retry_on_failure:\n      initial_interval: 100ms\n      max_interval: 500ms\n";
    std::fs::write(&config, yaml).unwrap();
    let data = dir.path().join("data");
    let (mut child, ports) = spawn(&config, &data, Ports::ANY, sink_addr);

    let acknowledged: Arc<Mutex<HashSet<SpanKey>>> = Arc::default();
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..3u8 {
        let (acknowledged, sent, stop) = (acknowledged.clone(), sent.clone(), stop.clone());
        let endpoint = format!("http://127.0.0.1:{}", ports.grpc);
        senders.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(mut client) = TraceServiceClient::connect(endpoint.clone()).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (request, keys) = request(sender, n, 30);
                    n += 1;
                    sent.fetch_add(keys.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    match client.export(request).await {
                        Ok(response) => {
                            // Spans rejected in partial_success were not accepted; none are expected here.
                            assert!(response.into_inner().partial_success.is_none_or(|p| p.rejected_spans == 0));
                            acknowledged.lock().unwrap().extend(keys);
                        }
                        Err(status) => {
                            // Refused (UNAVAILABLE) or cut off by the kill (a transport error): not
                            // acknowledged, so not owed. Anything else would be a bug in the server.
                            let cut_off = status.code() == tonic::Code::Unavailable
                                || status.code() == tonic::Code::Unknown && status.message().contains("transport");
                            assert!(cut_off, "unexpected status {status:?}");
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    for kill in 0..kills {
        wait_ready(ports.api_http).await;
        let after = Duration::from_millis(rng.gen_range(300..1500));
        tokio::time::sleep(after).await;
        child.0.kill().unwrap(); // SIGKILL: no shutdown code runs.
        child.0.wait().unwrap();
        println!(
            "kill {}: after {after:?}, {} spans acknowledged so far",
            kill + 1,
            acknowledged.lock().unwrap().len()
        );
        child = spawn(&config, &data, ports, sink_addr).0;
    }
    wait_ready(ports.api_http).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for sender in senders {
        sender.await.unwrap();
    }

    let owed = acknowledged.lock().unwrap().clone();
    assert!(owed.len() > 1000, "the senders got going: {}", owed.len());
    let missing = eventually("every acknowledged span to be exported", Duration::from_secs(60), || {
        let got = delivered(&sink);
        let missing: Vec<SpanKey> = owed.iter().filter(|k| !got.contains(*k)).cloned().collect();
        async move { missing.is_empty().then_some(missing) }
    })
    .await;
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    let got = delivered(&sink);
    let delivered_owed = owed.iter().filter(|k| got.contains(*k)).count();
    println!(
        "kill test result: sent {sent}, acknowledged {}, delivered {delivered_owed}, lost {}",
        owed.len(),
        missing.len()
    );
    // A clean stop after the kills: SIGTERM.
    let _ = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "SIGTERM stops cleanly: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_outage_delays_delivery_but_loses_nothing() {
    // The sink comes back on the port it first bound, where the exporter expects it.
    let (sink, addr) = Sink::start_stoppable().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(test_config(addr, dir.path(), "")).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc_addr.unwrap())).await.unwrap();
    let mut owed = HashSet::new();
    let mut send = |n: u32| {
        let (request, keys) = request(9, n, 40);
        owed.extend(keys);
        request
    };
    for n in 0..20 {
        client.export(send(n)).await.unwrap();
    }
    sink.stop().await;
    let first_sink_spans = sink.snapshot();
    // The backend is down: requests are still acknowledged, their spans wait in the queue on disk.
    for n in 20..60 {
        client.export(send(n)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let queued = server.counters().clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(ordertrail::telemetry::Counters::get(&queued.export_retries) > 0, "the exporter retried during the outage");
    let before_outage = delivered(&sink);
    let sink = Sink::start_at(addr).await;
    for n in 60..70 {
        client.export(send(n)).await.unwrap();
    }
    let missing = eventually("everything after the backend returns", Duration::from_secs(30), || {
        let mut got = delivered(&sink);
        got.extend(before_outage.iter().cloned());
        let missing = owed.iter().filter(|k| !got.contains(*k)).count();
        async move { (missing == 0).then_some(missing) }
    })
    .await;
    // Order traces are complete: each keyed span also has its copy in its order's trace.
    let copies = first_sink_spans
        .into_iter()
        .chain(sink.snapshot())
        .filter(|r| r.span.name == "pick.confirm" && r.span.links.iter().any(|l| l.trace_id != r.span.trace_id))
        .count();
    let keyed = owed.len() - owed.len() / 3;
    assert!(copies >= keyed, "{copies} order-trace copies for {keyed} keyed spans");
    println!(
        "outage test result: sent {}, acknowledged {}, delivered {}, lost {missing}",
        owed.len(),
        owed.len(),
        owed.len()
    );
    server.shutdown(Duration::from_secs(5)).await;
}

/// An OTLP/gRPC backend that only counts, so that the flood's output does not fill the test's own memory.
#[derive(Clone, Default)]
struct CountingBackend {
    spans: Arc<std::sync::atomic::AtomicU64>,
}

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for CountingBackend {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        let n: usize =
            request.into_inner().resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        self.spans.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_refused_with_retryable_codes_and_memory_stays_under_the_limit() {
    const LIMIT_MIB: u64 = 128;
    let seconds: u64 = std::env::var("FLOOD_TEST_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let backend = CountingBackend::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                    backend.clone(),
                )
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .max_decoding_message_size(64 * 1024 * 1024),
            )
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ordertrail.yaml");
    let yaml = format!(
        // The spike allowance covers what is already admitted when refusing starts: a group commit of up to 64
        // requests and the output it builds (about three copies of each span).
        "{}\npipeline:\n  memory_limit_mib: {LIMIT_MIB}\n  memory_spike_limit_mib: 40\nexporters:\n  otlp:\n    endpoint: http://127.0.0.1:1\n",
        ordertrail_core::config::DEFAULT_CONFIG_YAML
    );
    std::fs::write(&config, yaml).unwrap();
    let (child, ports) = spawn(&config, &dir.path().join("data"), Ports::ANY, sink_addr);
    wait_ready(ports.api_http).await;
    let idle = peak_resident(child.0.id());

    let outcomes: Arc<Mutex<std::collections::BTreeMap<String, u64>>> = Arc::default();
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut senders = Vec::new();
    for sender in 0..8u8 {
        let outcomes = outcomes.clone();
        let endpoint = format!("http://127.0.0.1:{}", ports.grpc);
        senders.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(endpoint).await.unwrap();
            let mut n = 0;
            while tokio::time::Instant::now() < end {
                let (mut request, _) = request(100 + sender, n, 512);
                for span in &mut request.resource_spans[0].scope_spans[0].spans {
                    span.attributes.push(kv("payload", &"p".repeat(256)));
                }
                n += 1;
                let outcome = match client.export(request).await {
                    Ok(_) => "ok".to_string(),
                    Err(status) => format!("{:?}", status.code()),
                };
                *outcomes.lock().unwrap().entry(outcome).or_default() += 1;
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let peak = peak_resident(child.0.id());
    let outcomes = outcomes.lock().unwrap().clone();
    let metrics =
        reqwest::get(format!("http://127.0.0.1:{}/metrics", ports.api_http)).await.unwrap().text().await.unwrap();
    let refused_memory = counter(&metrics, "ordertrail_receiver_requests_refused_memory_total");
    let refused_admission = counter(&metrics, "ordertrail_receiver_requests_refused_admission_total");
    println!(
        "flood test result: {seconds} s, 8 senders x 512 spans of ~300 B; outcomes {outcomes:?}; refused for memory \
         {refused_memory}, by the admission budget {refused_admission}; resident memory idle {} MiB, peak {} MiB, \
         limit {LIMIT_MIB} MiB; exported {} spans",
        idle / 1024 / 1024,
        peak / 1024 / 1024,
        backend.spans.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert!(outcomes.get("ok").copied().unwrap_or(0) > 0, "some requests get through: {outcomes:?}");
    for code in outcomes.keys() {
        assert!(code == "ok" || code == "Unavailable", "only retryable refusals: {outcomes:?}");
    }
    assert!(peak < LIMIT_MIB * 1024 * 1024, "peak resident memory {} MiB over the {LIMIT_MIB} MiB limit", peak >> 20);
    // The process still serves after the flood.
    let client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", ports.grpc)).await.unwrap();
    let ok = eventually("a request after the flood", Duration::from_secs(30), || {
        let mut client = client.clone();
        async move { client.export(request(200, 0, 1).0).await.ok() }
    })
    .await;
    drop(ok);
}
