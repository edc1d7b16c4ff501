//! No sender can starve the rest, and memory and file descriptors stay within their bounds, tested on the real
//! binary as the field produces the faults: gzip bombs of valid OTLP from one address while another sends
//! ordinary requests, and more idle and half-sent connections than the process has file descriptors. Each test
//! prints its figures, which RELIABILITY.md records.

mod common;

use common::binary::*;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

const MIB: u64 = 1024 * 1024;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }),
        ..Default::default()
    }
}

/// One span for `order` with an attribute of `payload` bytes.
fn request(order: &str, n: u64, payload: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "erp")], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: [&[0xC0][..], &n.to_be_bytes(), &[7; 7]].concat(),
                    span_id: (0xC000_0000_0000_0000 | n).to_be_bytes().to_vec(),
                    name: "credit.check".into(),
                    start_time_unix_nano: 1_780_000_000_000_000_000,
                    end_time_unix_nano: 1_780_000_000_100_000_000,
                    attributes: vec![kv("order.id", order), kv("erp.note", &"a".repeat(payload))],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// An HTTP client whose connections come from `source`, a loopback address of its own: the receivers share
/// their budget by sender address.
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::from(source)).build().unwrap()
}

fn config_file(dir: &std::path::Path, yaml: &str) -> std::path::PathBuf {
    let path = dir.join("ordertrail.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gzip_bombs_from_one_sender_are_refused_within_the_budget_and_other_senders_keep_flowing() {
    const ADMISSION_MIB: u64 = 128;
    let (_sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    // No memory limit: the admission budget alone must hold memory.
    let config = config_file(dir.path(), &format!("pipeline:\n  admission_limit_mib: {ADMISSION_MIB}\n"));
    let (child, ports) = spawn(&config, &dir.path().join("data"), Ports::ANY, sink_addr);
    let pid = child.0.id();
    wait_ready(ports.api_http).await;
    let idle = peak_resident(pid);

    // 48 bodies of valid OTLP, each about 60 KB on the wire and 60 MiB inflated (one 60 MiB attribute).
    let bomb = gzip(&request("SO-BOMB", 1, 60 << 20).encode_to_vec());
    assert!(bomb.len() < 200 * 1024, "{} bytes on the wire", bomb.len());
    let url = format!("http://127.0.0.1:{}/v1/traces", ports.http);
    let mut bombers = Vec::new();
    for _ in 0..8 {
        let (client, url, bomb) = (client_from([127, 0, 0, 1]), url.clone(), bomb.clone());
        bombers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..6 {
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "gzip")
                    .body(bomb.clone())
                    .send()
                    .await
                    .unwrap();
                statuses.push(response.status().as_u16());
            }
            statuses
        }));
    }
    // Meanwhile an ordinary sender from another address.
    let good = client_from([127, 0, 0, 2]);
    let (mut good_ok, mut good_other) = (0, Vec::new());
    let mut n = 100;
    while bombers.iter().any(|b| !b.is_finished()) || n < 120 {
        n += 1;
        let body = gzip(&request(&format!("SO-G{n}"), n, 200).encode_to_vec());
        let response = good
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "gzip")
            .body(body)
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => good_ok += 1,
            other => good_other.push(other),
        }
    }
    let mut bomb_statuses = std::collections::BTreeMap::new();
    for bomber in bombers {
        for status in bomber.await.unwrap() {
            *bomb_statuses.entry(status).or_insert(0) += 1;
        }
    }
    let peak = peak_resident(pid);
    println!(
        "gzip bomb result: 48 bodies of {} KB inflating to 60 MiB from one address: {bomb_statuses:?}; ordinary \
         sender: {good_ok} accepted, refused {good_other:?}; resident memory idle {} MiB, peak {} MiB, admission \
         budget {ADMISSION_MIB} MiB",
        bomb.len() / 1024,
        idle / MIB,
        peak / MIB
    );
    assert!(good_other.is_empty(), "the ordinary sender was refused: {good_other:?}");
    assert!(bomb_statuses.keys().all(|s| *s == 503 || *s == 413), "bombs are refused, retryably or for size");
    // The budget covers the bodies, their inflation and their decoding; the rest is the engine and the runtime.
    assert!(peak < idle + ADMISSION_MIB * MIB + 64 * MIB, "peak {} MiB", peak / MIB);
    // Every reservation was given back, as the gauge shows.
    let api = ports.api_http;
    eventually("the admission gauge back at 0", Duration::from_secs(10), || async move {
        let metrics = reqwest::get(format!("http://127.0.0.1:{api}/metrics")).await.ok()?.text().await.ok()?;
        let limit = gauge(&metrics, "ordertrail_receiver_admission_limit_bytes")?;
        let admitted = gauge(&metrics, "ordertrail_receiver_admitted_bytes")?;
        (limit == (ADMISSION_MIB * MIB) as f64 && admitted == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_idle_and_half_sent_connections_than_file_descriptors_do_not_lock_out_senders_or_probes() {
    const OPEN_FILES: u64 = 1024;
    // This test process holds 2,200 connections itself.
    ordertrail::connections::raise_open_file_limit();
    let (sink, sink_addr) = Sink::start(None).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml =
        "receivers:\n  otlp:\n    protocols:\n      grpc:\n        connections:\n          read_header_timeout: 2s\n\
                \x20     http:\n        connections:\n          read_header_timeout: 2s\n";
    let config = config_file(dir.path(), yaml);
    let (child, ports) = spawn_with_open_files(OPEN_FILES, &config, &dir.path().join("data"), sink_addr);
    let pid = child.0.id();
    wait_ready(ports.api_http).await;

    // 1,100 connections to each receiver: half say nothing, half send the start of a request and stall.
    let mut held = Vec::new();
    for port in [ports.grpc, ports.http] {
        for i in 0..1100 {
            let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { continue };
            if i % 2 == 0 {
                use tokio::io::AsyncWriteExt;
                let _ = stream.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n").await;
            }
            held.push(stream);
        }
    }
    let descriptors = open_descriptors(pid);
    // Probes answer at once: the API listener has places of its own.
    let started = std::time::Instant::now();
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", ports.api_http)).await.unwrap();
    let probe_time = started.elapsed();
    assert_eq!(ready.status(), 200);
    // A sender gets through once the stalled connections are closed (read_header_timeout 2 s).
    let started = std::time::Instant::now();
    let endpoint = format!("http://127.0.0.1:{}", ports.grpc);
    eventually("an OTLP export during the connection flood", Duration::from_secs(20), || {
        let endpoint = endpoint.clone();
        async move {
            let mut client = TraceServiceClient::connect(endpoint).await.ok()?;
            client.export(request("SO-LEGIT", 1, 10)).await.ok()
        }
    })
    .await;
    let export_time = started.elapsed();
    // The stalled connections are closed by the server: those over the cap at once, the rest when their
    // read_header_timeout (2 s) runs out. The export may have got through before that, so this waits for it.
    let closed_by_server = |held: &[tokio::net::TcpStream]| {
        let mut closed = 0;
        for stream in held {
            let mut buf = [0u8; 64];
            match stream.try_read(&mut buf) {
                Ok(0) => closed += 1,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => closed += 1,
                _ => {}
            }
        }
        closed
    };
    let waiting_since = std::time::Instant::now();
    let mut closed = closed_by_server(&held);
    while closed <= held.len() / 2 && waiting_since.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        closed = closed_by_server(&held);
    }
    let metrics =
        reqwest::get(format!("http://127.0.0.1:{}/metrics", ports.api_http)).await.unwrap().text().await.unwrap();
    let refused = counter(&metrics, "ordertrail_connections_refused_total");
    println!(
        "connection flood result: open-file limit {OPEN_FILES}; 2,200 idle or half-sent connections; {descriptors} \
         descriptors open in ordertrail; {refused} connections closed on accept; /readyz answered in {probe_time:?}; \
         an export got through after {export_time:?}; {closed} of {} held connections closed by the server",
        held.len()
    );
    assert!((descriptors as u64) < OPEN_FILES, "{descriptors} descriptors");
    assert!(probe_time < Duration::from_secs(1), "{probe_time:?}");
    assert!(refused > 0);
    assert!(closed > held.len() / 2, "{closed} of {} closed", held.len());
    sink.wait_for(Duration::from_secs(10), "the legitimate span", |spans| {
        spans.iter().any(|r| r.span.span_id == (0xC000_0000_0000_0001u64).to_be_bytes().to_vec())
    })
    .await;
}
