//! Shared pieces of the integration tests: an in-process OTLP sink, a server on port 0, and real SDK senders.
#![allow(dead_code)]

pub(crate) mod binary;

use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use ordertrail::server::Server;
use ordertrail_core::config::{self, Config, Overrides};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A received span with the `service.name` of its resource.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) service: String,
    pub(crate) span: Span,
}

/// An OTLP/gRPC trace sink that records everything it receives; optionally slow, to hold the exporter up.
#[derive(Clone, Default)]
pub(crate) struct Sink {
    pub(crate) spans: Arc<Mutex<Vec<Received>>>,
    delay: Option<Duration>,
    /// Stops the server, for outage tests.
    stop: Arc<Mutex<Option<SinkServer>>>,
}

/// A running sink server: its stop signal and task.
type SinkServer = (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay).await;
        }
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push(Received { service: service.clone(), span });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Sink {
    /// Starts a sink on `addr`, which may be the address of a sink stopped before (an outage ending).
    pub(crate) async fn start_at(addr: SocketAddr) -> Sink {
        Sink::serve_until_stopped(tokio::net::TcpListener::bind(addr).await.unwrap())
    }

    /// Starts a sink that [`Sink::stop`] can take down, on a free loopback port it binds itself.
    pub(crate) async fn start_stoppable() -> (Sink, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (Sink::serve_until_stopped(listener), addr)
    }

    /// Starts a stoppable sink that holds every request for `delay` before answering, so that it can be taken
    /// down while an export is in flight.
    pub(crate) async fn start_stoppable_holding(delay: Duration) -> (Sink, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (Sink::serve(listener, Some(delay)), addr)
    }

    fn serve_until_stopped(listener: tokio::net::TcpListener) -> Sink {
        Sink::serve(listener, None)
    }

    /// Starts a sink that speaks only TLS, presenting `identity`, as a Tempo or Jaeger behind TLS does.
    pub(crate) async fn start_tls(identity: tonic::transport::Identity) -> (Sink, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = Sink::default();
        let service = TraceServiceServer::new(sink.clone()).accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .unwrap()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        (sink, addr)
    }

    /// Serves on `listener` with tonic's default 4 MiB message limit, as Go gRPC servers (the collector, Jaeger,
    /// Tempo) have by default.
    fn serve(listener: tokio::net::TcpListener, delay: Option<Duration>) -> Sink {
        let sink = Sink { delay, ..Sink::default() };
        let service = TraceServiceServer::new(sink.clone()).accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        *sink.stop.lock().unwrap() = Some((stop, task));
        sink
    }

    /// Stops the sink and waits until its port is closed (an outage beginning).
    pub(crate) async fn stop(&self) {
        let stop = self.stop.lock().unwrap().take();
        if let Some((stop, task)) = stop {
            let _ = stop.send(());
            // Graceful shutdown waits for open connections, which the exporter keeps alive; aborting the task
            // closes them too, as a backend going down would.
            task.abort();
            let _ = task.await;
        }
    }

    /// Starts a sink on a free loopback port.
    pub(crate) async fn start(delay: Option<Duration>) -> (Sink, SocketAddr) {
        let sink = Sink { spans: Arc::default(), delay, stop: Arc::default() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(sink.clone()).accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        (sink, addr)
    }

    pub(crate) fn snapshot(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the received spans, failing after `timeout`.
    pub(crate) async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.snapshot();
            if done(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() > deadline {
                let names: Vec<_> = spans.iter().map(|r| (r.service.clone(), r.span.name.clone())).collect();
                panic!("timed out waiting for {what}; received {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The default configuration on loopback port 0, exporting to `sink`, with short waits for tests.
pub(crate) fn test_config(sink: SocketAddr, data_dir: &Path, extra_yaml: &str) -> Config {
    test_config_from(config::DEFAULT_CONFIG_YAML, sink, data_dir, extra_yaml)
}

/// `base_yaml` (a variant of the default configuration) on loopback port 0, exporting to `sink`.
pub(crate) fn test_config_from(base_yaml: &str, sink: SocketAddr, data_dir: &Path, extra_yaml: &str) -> Config {
    let yaml = format!("{}\n{extra_yaml}", base_yaml.replace("inherit_wait: 10s", "inherit_wait: 500ms"));
    let mut config = config::parse(&yaml, "test config").unwrap();
    config
        .apply(&Overrides {
            grpc_listen: Some("127.0.0.1:0".into()),
            http_listen: Some("127.0.0.1:0".into()),
            export_endpoint: Some(format!("http://{sink}")),
            export_protocol: None,
            data_dir: Some(data_dir.to_path_buf()),
            api_http_listen: Some("127.0.0.1:0".into()),
            api_grpc_listen: Some("127.0.0.1:0".into()),
        })
        .unwrap();
    // Spans of one test arrive within milliseconds of each other: a short settling delay keeps tests quick.
    config.sla.detection_delay = Duration::from_millis(300);
    let exporter = config.exporter.as_mut().unwrap();
    exporter.batch_timeout = Duration::from_millis(20);
    exporter.retry.initial_interval = Duration::from_millis(50);
    exporter.retry.max_interval = Duration::from_millis(200);
    config
}

pub(crate) async fn start_server(config: Config) -> Server {
    Server::start(config).await.expect("server starts")
}

/// A real OpenTelemetry SDK tracer provider for one simulated service, exporting OTLP/gRPC to `addr`.
pub(crate) fn sdk_provider(service: &'static str, addr: SocketAddr) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{addr}"))
        .build()
        .unwrap();
    SdkTracerProvider::builder()
        .with_resource(Resource::builder_empty().with_attributes([KeyValue::new("service.name", service)]).build())
        .with_batch_exporter(exporter)
        .build()
}

/// Records one finished span through the SDK; returns its context so children can be created under it.
pub(crate) fn record(
    provider: &SdkTracerProvider,
    parent: &Context,
    name: &'static str,
    kind: SpanKind,
    attributes: Vec<KeyValue>,
) -> Context {
    let tracer = provider.tracer("ordertrail-tests");
    let mut span =
        tracer.span_builder(name).with_kind(kind).with_attributes(attributes).start_with_context(&tracer, parent);
    span.end();
    parent.with_span(span)
}

/// Flushes a provider from a blocking thread, as the SDK's flush blocks.
pub(crate) async fn flush(provider: &SdkTracerProvider) {
    let provider = provider.clone();
    tokio::task::spawn_blocking(move || provider.force_flush().expect("flush succeeds")).await.unwrap();
}

pub(crate) fn attr(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| match &v.value {
        Some(Value::StringValue(s)) => Some(s.clone()),
        Some(Value::BoolValue(b)) => Some(b.to_string()),
        Some(Value::IntValue(i)) => Some(i.to_string()),
        Some(Value::ArrayValue(a)) => {
            Some(format!("{:?}", a.values.iter().map(|v| format!("{:?}", v.value)).collect::<Vec<_>>()))
        }
        _ => None,
    })
}

pub(crate) fn trace_of(order: &str) -> Vec<u8> {
    ordertrail_core::ids::order_trace_id(order).to_vec()
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > end {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A request of one span named `credit.check` carrying `order.id`, with trace and span ids made of byte `id`.
pub(crate) fn keyed_span_request(order: &str, id: u8) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue as ProtoKeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    let span = Span {
        trace_id: vec![id; 16],
        span_id: vec![id; 8],
        name: "credit.check".into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_100_000_000,
        attributes: vec![ProtoKeyValue {
            key: "order.id".into(),
            value: Some(AnyValue { value: Some(Value::StringValue(order.into())) }),
            ..Default::default()
        }],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        }],
    }
}
