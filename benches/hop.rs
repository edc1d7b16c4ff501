//! ordertrail as one more hop, side by side with a plain collector hop (rotel-agent), each as its own process.
//!
//! `scripts/bench` runs it (it installs rotel-agent from PyPI into a cache first); by hand:
//! `cargo bench --bench hop -- --rotel PATH/rotel-agent [--quick] [--only NAME,...] [--markdown FILE]`.
//!
//! The load generator and the counting OTLP sink live in this process; the hop under test is a child process,
//! so its CPU time (user + system, all threads) and resident memory are read from `/proc/<pid>` and are its own.
//! Scenarios:
//! - `cpu`: closed loop, 4 senders as fast as the hop answers; CPU microseconds per input span, spans/s.
//! - `rate`: open loop at 10,000 spans/s; the share of one core and the resident memory while it lasts.
//! - `latency`: open loop at 5,000 spans/s; time from a request being sent to its spans reaching the backend.
//! - `small`: the project's earlier small spans (4 attributes, 512 a request), closed loop.
//! - `batches`: closed loop at 10, 512 and 8,192 spans a request.
//! - `stores` (with `--postgres CONNECTION`): the `cpu` load on the embedded store and on PostgreSQL.
//! - `orders`: ordertrail alone, one keyed span per new order at 4,000 a second: resident memory and disk per
//!   open order, with the default hot set (all 200,000 orders in memory) and with `max_orders: 100000`.
//!
//! The payload is OpenTelemetry-demo-like: about a dozen attributes and ~490 bytes a span, 96 spans a request, in
//! technical traces of 12 spans whose keyed span comes last (SDKs export children first, so the others wait for
//! it), a span per trace that names only a shipment (an alias learned from an earlier request), and a new order
//! per trace, up to `--orders` distinct orders (default 1,000,000) before they repeat.

// Measured figures are floats turned back into counts and indices (a metric's value, a percentile's rank): all
// non-negative and far below 2^52.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

#[path = "payload/mod.rs"]
mod payload;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use payload::{request, Payload, MARK};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SENDERS: u64 = 4;

fn wall_nanos() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

// --- the backend ---------------------------------------------------------------------------------------------

/// Counts the spans it accepts; records how long after they ended the generator's spans arrived.
#[derive(Clone, Default)]
struct CountingSink {
    received: Arc<AtomicU64>,
    latencies_micros: Arc<Mutex<Vec<u64>>>,
}

#[tonic::async_trait]
impl TraceService for CountingSink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let now = wall_nanos();
        let mut count = 0;
        let mut latencies = Vec::new();
        for span in request.into_inner().resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans) {
            count += 1;
            if span.span_id.starts_with(&MARK) {
                latencies.push(now.saturating_sub(span.end_time_unix_nano) / 1000);
            }
        }
        self.latencies_micros.lock().unwrap().extend(latencies);
        self.received.fetch_add(count, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl CountingSink {
    async fn start() -> (CountingSink, std::net::SocketAddr) {
        let sink = CountingSink::default();
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

// --- the hops ------------------------------------------------------------------------------------------------

/// A hop under test.
#[derive(Clone, Debug)]
enum Hop {
    Rotel(String),
    /// ordertrail with this configuration over the embedded default.
    Ordertrail {
        label: &'static str,
        yaml: &'static str,
    },
    /// Replicas of ordertrail sharing PostgreSQL, each sent the requests a gateway routing by trace id would send
    /// it (the payload's requests hold whole traces, so a request goes where its traces go).
    Replicas {
        label: &'static str,
        replicas: usize,
    },
}

impl Hop {
    fn label(&self) -> &'static str {
        match self {
            Hop::Rotel(_) => "rotel-agent",
            Hop::Ordertrail { label, .. } | Hop::Replicas { label, .. } => label,
        }
    }
}

const ORDERTRAIL_DEFAULT: Hop = Hop::Ordertrail { label: "ordertrail (durable)", yaml: "" };
const ORDERTRAIL_NO_PASSTHROUGH: Hop =
    Hop::Ordertrail { label: "ordertrail (durable, pass-through off)", yaml: "order_traces:\n  passthrough: false\n" };
const ORDERTRAIL_HOT_SET: Hop =
    Hop::Ordertrail { label: "ordertrail (durable, max_orders 100000)", yaml: "correlation:\n  max_orders: 100000\n" };
/// The state in PostgreSQL (`--postgres CONNECTION`, into the schema `ordertrail_bench`, made afresh per run).
const ORDERTRAIL_POSTGRES_YAML: &str = "storage:\n  postgres:\n    url_env: ORDERTRAIL_BENCH_POSTGRES\n";
const ORDERTRAIL_POSTGRES: Hop =
    Hop::Ordertrail { label: "ordertrail (durable, PostgreSQL)", yaml: ORDERTRAIL_POSTGRES_YAML };
const ORDERTRAIL_POSTGRES_3: Hop = Hop::Replicas { label: "ordertrail (durable, PostgreSQL, 3 replicas)", replicas: 3 };
const ORDERTRAIL_MEMORY: Hop =
    Hop::Ordertrail { label: "ordertrail (memory)", yaml: "storage:\n  durability: memory\n" };
const ORDERTRAIL_MEMORY_NO_PASSTHROUGH: Hop = Hop::Ordertrail {
    label: "ordertrail (memory, pass-through off)",
    yaml: "storage:\n  durability: memory\norder_traces:\n  passthrough: false\n",
};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running hop: its processes (one, or the replicas), where they listen, and (for ordertrail) their metrics
/// pages.
struct Running {
    children: Vec<Child>,
    grpc: Vec<u16>,
    metrics: Vec<String>,
    dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_ordertrail(dir: &std::path::Path, yaml: &str, sink: std::net::SocketAddr) -> (Child, u16, String) {
    let grpc = free_port();
    let config = dir.join("config.yaml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&config, yaml).unwrap();
    let api = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ordertrail"))
        .args(["run", "--config", config.to_str().unwrap()])
        .args(["--data-dir", dir.join("data").to_str().unwrap()])
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .args(["--http-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--api-http-listen", &format!("127.0.0.1:{api}")])
        .args(["--api-grpc-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--export-endpoint", &format!("http://{sink}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("ordertrail starts");
    (child, grpc, format!("http://127.0.0.1:{api}/metrics"))
}

async fn start(hop: &Hop, sink: std::net::SocketAddr) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let mut running = Running { children: Vec::new(), grpc: Vec::new(), metrics: Vec::new(), dir };
    match hop {
        Hop::Rotel(path) => {
            let grpc = free_port();
            let child = Command::new(path)
                .args(["start", "--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}"), "--exporter", "otlp"])
                .args(["--otlp-http-endpoint", &format!("127.0.0.1:{}", free_port())])
                .args(["--otlp-exporter-endpoint", &format!("http://{sink}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("rotel-agent starts");
            running.children.push(child);
            running.grpc.push(grpc);
        }
        Hop::Ordertrail { yaml, .. } => {
            let (child, grpc, metrics) = start_ordertrail(running.dir.path(), yaml, sink);
            running.children.push(child);
            running.grpc.push(grpc);
            running.metrics.push(metrics);
        }
        Hop::Replicas { replicas, .. } => {
            for n in 0..*replicas {
                let own = running.dir.path().join(format!("replica-{n}"));
                let (child, grpc, metrics) = start_ordertrail(&own, ORDERTRAIL_POSTGRES_YAML, sink);
                running.children.push(child);
                running.grpc.push(grpc);
                running.metrics.push(metrics);
            }
        }
    }
    for grpc in &running.grpc {
        let endpoint = format!("http://127.0.0.1:{grpc}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TraceServiceClient::connect(endpoint.clone()).await.is_err() {
            assert!(Instant::now() < deadline, "{} did not start listening", hop.label());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    running
}

/// CPU time (user + system, all threads) and resident memory of a process, from `/proc`.
#[derive(Clone, Copy, Debug)]
struct ProcSample {
    cpu: Duration,
    resident: u64,
}

fn sample(pid: u32) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces: utime and stime are the 12th
    // and 13th of them, in clock ticks (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let resident = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    ProcSample { cpu: Duration::from_millis(ticks * 10), resident }
}

/// The hop's count of spans handed to its exporter (ordertrail), or the number sent (a plain hop passes each on).
async fn expected_output(running: &Running, sent: u64) -> u64 {
    if running.metrics.is_empty() {
        return sent;
    }
    let mut queued = 0;
    for url in &running.metrics {
        let page = reqwest::get(url).await.unwrap().text().await.unwrap();
        queued += page
            .lines()
            .find(|l| l.starts_with("ordertrail_exporter_spans_queued_total "))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64);
    }
    queued
}

/// Waits until the backend has everything the hop took on and nothing more arrives for a second.
async fn drain(running: &Running, sink: &CountingSink, sent: u64) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = (u64::MAX, Instant::now());
    loop {
        let received = sink.received.load(Ordering::Relaxed);
        let expected = expected_output(running, sent).await;
        if received != last.0 {
            last = (received, Instant::now());
        }
        if (received >= expected && last.1.elapsed() >= Duration::from_secs(1)) || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- the scenarios -------------------------------------------------------------------------------------------

/// One result line.
#[derive(Clone, Debug)]
struct Figure {
    scenario: String,
    hop: &'static str,
    input_spans: u64,
    output_spans: u64,
    cpu_micros_per_span: f64,
    core_share: f64,
    spans_per_second: f64,
    peak_resident_mib: f64,
    /// Resident memory gained over the run, and the data directory's size at its end, per input span.
    resident_growth_per_span: f64,
    disk_per_span: f64,
    latency: Option<(f64, f64, f64)>,
}

/// Bytes in the files under `dir`.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Sends `requests` requests from 4 senders per hop process, each as soon as its previous one is answered; with
/// replicas, request `seq` goes to replica `seq % replicas`, as a gateway routing by trace id sends a trace.
async fn closed_loop(grpc: &[u16], payload: Payload, requests: u64) {
    let mut tasks = Vec::new();
    let hops = grpc.len() as u64;
    for sender in 0..SENDERS * hops {
        let port = grpc[usize::try_from(sender % hops).unwrap()];
        tasks.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}"))
                .await
                .unwrap()
                .max_encoding_message_size(usize::MAX);
            for seq in (sender..requests).step_by(usize::try_from(SENDERS * hops).unwrap()) {
                loop {
                    match client.export(request(&payload, seq, wall_nanos())).await {
                        Ok(_) => break,
                        Err(status) if status.code() == tonic::Code::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(status) => panic!("{status:?}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Sends at `rate` spans a second for `length`, each request on schedule whether or not earlier ones were
/// answered (open loop: a slow hop does not slow the load down); returns the spans the hop accepted.
async fn open_loop(grpc: u16, payload: Payload, rate: u64, length: Duration) -> u64 {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{grpc}")).unwrap().connect().await.unwrap();
    let interval = Duration::from_secs_f64(payload.spans_per_request as f64 / rate as f64);
    let requests = (length.as_secs_f64() / interval.as_secs_f64()) as u64;
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for seq in 0..requests {
        tokio::time::sleep_until(started + interval.mul_f64(seq as f64)).await;
        let mut client = TraceServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move { client.export(request(&payload, seq, wall_nanos())).await.is_ok() }));
    }
    // An open loop does not retry: a request the hop refuses (UNAVAILABLE when it is behind) is not counted.
    let mut accepted = 0;
    for task in tasks {
        if task.await.unwrap_or(false) {
            accepted += 1;
        }
    }
    if accepted < requests {
        println!("open loop: the hop refused {} of {requests} requests", requests - accepted);
    }
    accepted * payload.spans_per_request as u64
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

/// How a scenario drives the hop.
#[derive(Clone, Copy, Debug)]
enum Drive {
    Closed { requests: u64 },
    Open { rate: u64, length: Duration },
}

/// CPU time and resident memory summed over `pids` (the replicas of one hop).
fn sample_processes(pids: &[u32]) -> ProcSample {
    pids.iter().map(|pid| sample(*pid)).fold(ProcSample { cpu: Duration::ZERO, resident: 0 }, |a, b| ProcSample {
        cpu: a.cpu + b.cpu,
        resident: a.resident + b.resident,
    })
}

async fn run(scenario: &str, hop: &Hop, payload: Payload, drive: Drive) -> Figure {
    let (sink, sink_addr) = CountingSink::start().await;
    let running = start(hop, sink_addr).await;
    let pids: Vec<u32> = running.children.iter().map(Child::id).collect();
    let sample_all = move || sample_processes(&pids);
    // Let startup settle (ordertrail opens its store, rotel starts its pipelines) before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = sample_all();
    let peak = Arc::new(AtomicU64::new(before.resident));
    let watcher = {
        let peak = peak.clone();
        let sample_all = sample_all.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(sample_all().resident, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    let (sent, window) = match drive {
        Drive::Closed { requests } => {
            closed_loop(&running.grpc, payload, requests).await;
            drain(&running, &sink, requests * payload.spans_per_request as u64).await;
            (requests * payload.spans_per_request as u64, started.elapsed())
        }
        Drive::Open { rate, length } => {
            let sent = open_loop(running.grpc[0], payload, rate, length).await;
            (sent, started.elapsed())
        }
    };
    let after = sample_all();
    if matches!(drive, Drive::Open { .. }) {
        drain(&running, &sink, sent).await;
    }
    watcher.abort();
    let cpu = after.cpu.saturating_sub(before.cpu);
    let mut latencies = std::mem::take(&mut *sink.latencies_micros.lock().unwrap());
    latencies.sort_unstable();
    let latency = matches!(drive, Drive::Open { .. })
        .then(|| (percentile(&latencies, 0.5), percentile(&latencies, 0.99), percentile(&latencies, 1.0)));
    let figure = Figure {
        scenario: scenario.to_string(),
        hop: hop.label(),
        input_spans: sent,
        output_spans: sink.received.load(Ordering::Relaxed),
        cpu_micros_per_span: cpu.as_secs_f64() * 1e6 / sent as f64,
        core_share: cpu.as_secs_f64() / window.as_secs_f64(),
        spans_per_second: sent as f64 / window.as_secs_f64(),
        peak_resident_mib: peak.load(Ordering::Relaxed).max(after.resident) as f64 / (1024.0 * 1024.0),
        resident_growth_per_span: after.resident.saturating_sub(before.resident) as f64 / sent as f64,
        disk_per_span: disk_bytes(running.dir.path()) as f64 / sent as f64,
        latency,
    };
    println!("{figure:?}");
    figure
}

fn markdown(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| scenario | hop | input spans | output spans | CPU µs / input span | × rotel | share of a core | input spans/s | peak RSS MiB | RSS growth B / input span | disk B / input span | latency p50 / p99 / max ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for f in figures {
        let rotel = figures.iter().find(|r| r.scenario == f.scenario && r.hop == "rotel-agent");
        let ratio =
            rotel.map_or(String::from("—"), |r| format!("{:.2}", f.cpu_micros_per_span / r.cpu_micros_per_span));
        let latency =
            f.latency.map_or(String::from("—"), |(p50, p99, max)| format!("{p50:.1} / {p99:.1} / {max:.1}"));
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {} | {:.0} % | {:.0} | {:.0} | {:.0} | {:.0} | {} |\n",
            f.scenario,
            f.hop,
            f.input_spans,
            f.output_spans,
            f.cpu_micros_per_span,
            ratio,
            f.core_share * 100.0,
            f.spans_per_second,
            f.peak_resident_mib,
            f.resident_growth_per_span,
            f.disk_per_span,
            latency
        ));
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    // `cargo bench` passes `--bench`; anything else (`cargo test --benches`, a bare run) gets the short version.
    let quick = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--quick");
    let only: Option<Vec<String>> = value("--only").map(|s| s.split(',').map(str::to_string).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|w| w == name));
    let orders: u64 = value("--orders").map_or(1_000_000, |v| v.parse().unwrap());
    let Some(rotel) = value("--rotel") else {
        eprintln!("hop: no --rotel PATH given; nothing to compare with (scripts/bench installs rotel-agent)");
        return;
    };
    let rotel = Hop::Rotel(rotel);
    let demo = Payload { spans_per_request: 96, orders, demo_like: true, spans_per_trace: 12 };
    let scale = if quick { 10 } else { 1 };
    let seconds = if quick { 3 } else { 20 };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut figures = Vec::new();
    let mut measure = |scenario: &str, hops: &[Hop], payload: Payload, drive: Drive| {
        if wanted(scenario.split(' ').next().unwrap()) {
            for hop in hops {
                figures.push(runtime.block_on(run(scenario, hop, payload, drive)));
            }
        }
    };
    let all = [
        rotel.clone(),
        ORDERTRAIL_DEFAULT,
        ORDERTRAIL_NO_PASSTHROUGH,
        ORDERTRAIL_MEMORY,
        ORDERTRAIL_MEMORY_NO_PASSTHROUGH,
    ];
    measure("cpu", &all, demo, Drive::Closed { requests: 5_000 / scale });
    let pair = [rotel.clone(), ORDERTRAIL_DEFAULT];
    let rate = Drive::Open { rate: 10_000, length: Duration::from_secs(seconds) };
    measure("rate 10k/s", &pair, demo, rate);
    let slow = Drive::Open { rate: 5_000, length: Duration::from_secs(seconds) };
    measure("latency 5k/s", &pair, demo, slow);
    let small = Payload { spans_per_request: 512, orders, demo_like: false, spans_per_trace: 12 };
    measure("small", &pair, small, Drive::Closed { requests: 1_000 / scale });
    for size in [10, 512, 8192] {
        let payload = Payload { spans_per_request: size, ..demo };
        let requests = (480_000 / scale / size as u64).max(8);
        measure(&format!("batches of {size}"), &pair, payload, Drive::Closed { requests });
    }
    // Memory per open order: one keyed span per new order, none closing, at 4,000 a second (a rate ordertrail
    // sustains with a new order per span, so that every order is taken on), 200,000 orders in all.
    let one_each = Payload { spans_per_request: 96, orders: u64::MAX, demo_like: true, spans_per_trace: 1 };
    let length = Duration::from_secs(if quick { 3 } else { 50 });
    measure("orders", &[ORDERTRAIL_DEFAULT, ORDERTRAIL_HOT_SET], one_each, Drive::Open { rate: 4_000, length });
    // The embedded store against PostgreSQL on the same load (`--postgres "host=127.0.0.1 user=postgres
    // dbname=test"`): one replica and three sharing it, the database on this machine. The schema is made afresh
    // for each, so that every run starts from an empty database.
    if let Some(postgres) = value("--postgres") {
        let schema = "ordertrail_bench";
        std::env::set_var("ORDERTRAIL_BENCH_POSTGRES", format!("{postgres} options='-c search_path={schema}'"));
        measure("stores", &[rotel.clone(), ORDERTRAIL_DEFAULT], demo, Drive::Closed { requests: 5_000 / scale });
        for hop in [ORDERTRAIL_POSTGRES, ORDERTRAIL_POSTGRES_3] {
            let fresh = std::process::Command::new("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", postgres.as_str(), "-c"])
                .arg(format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"))
                .status()
                .expect("psql runs");
            assert!(fresh.success(), "cannot make the schema {schema}");
            measure("stores", &[hop], demo, Drive::Closed { requests: 5_000 / scale });
        }
    }
    let table = markdown(&figures);
    println!("\n{table}");
    if let Some(path) = value("--markdown") {
        std::fs::write(path, table).unwrap();
    }
}
