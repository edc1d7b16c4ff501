//! Pushes the registry to an OTLP backend at a fixed interval, over gRPC or HTTP/protobuf, through the same
//! connection setup as the trace exporter.
//!
//! Every push carries cumulative values, so a failed push is not retried: it is counted and logged, and the next
//! interval's push makes up for it with fresher numbers.

use crate::clock::unix_nanos_now;
use crate::exporter::ExportError;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use ordertrail_core::config::{Compression, ExportProtocol, ExporterConfig};
use ordertrail_metrics::Registry;
use prost::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;

/// The running push task. Dropping it without `shutdown` stops it as well, after one last push.
#[derive(Debug)]
pub struct MetricsPusher {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    counts: Arc<PushCounts>,
}

#[derive(Debug, Default)]
struct PushCounts {
    sent: AtomicU64,
    failed: AtomicU64,
}

enum Client {
    Grpc { client: MetricsServiceClient<Channel>, metadata: MetadataMap, timeout: Duration },
    Http(crate::exporter::http::HttpClient),
}

impl Client {
    fn new(config: &ExporterConfig) -> Result<Client, ExportError> {
        Ok(match config.protocol {
            ExportProtocol::Grpc => {
                let mut client = MetricsServiceClient::new(crate::exporter::grpc::channel(config)?)
                    .accept_compressed(CompressionEncoding::Gzip);
                match config.compression {
                    Compression::Gzip { .. } => client = client.send_compressed(CompressionEncoding::Gzip),
                    Compression::Zstd { .. } => client = client.send_compressed(CompressionEncoding::Zstd),
                    Compression::None => {}
                }
                Client::Grpc { client, metadata: crate::exporter::grpc::metadata(config)?, timeout: config.timeout }
            }
            ExportProtocol::HttpProtobuf => Client::Http(crate::exporter::http::HttpClient::new(config)?),
        })
    }

    async fn send(&self, request: ExportMetricsServiceRequest) -> Result<(), ExportError> {
        match self {
            Client::Grpc { client, metadata, timeout } => {
                let request = crate::exporter::grpc::request(request, metadata, *timeout);
                let response = client.clone().export(request).await.map_err(crate::exporter::grpc::classify)?;
                if let Some(partial) = response.into_inner().partial_success {
                    if partial.rejected_data_points > 0 {
                        tracing::warn!(
                            rejected = partial.rejected_data_points,
                            message = %partial.error_message,
                            "backend rejected metric data points"
                        );
                    }
                }
                Ok(())
            }
            Client::Http(client) => client.post(request.encode_to_vec()).await,
        }
    }
}

/// The instrumentation scope of ordertrail's own metrics.
fn own_scope() -> InstrumentationScope {
    InstrumentationScope {
        name: env!("CARGO_PKG_NAME").to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

impl MetricsPusher {
    /// Starts pushing `registry` every `interval`, the first push one interval from now. `export` is the exporter
    /// configuration: for http/protobuf its endpoint already ends in `/v1/metrics`, for gRPC it is the base URL.
    /// Its batch, queue and retry settings do not apply. Connection happens lazily, so a backend that is down at
    /// startup only costs failed pushes. Must be called inside a Tokio runtime.
    pub fn start(
        export: ExporterConfig,
        interval: Duration,
        registry: Registry,
        resource: Resource,
    ) -> Result<MetricsPusher, ExportError> {
        if interval.is_zero() {
            return Err(ExportError::Setup("the metrics push interval must be longer than zero".to_string()));
        }
        let client = Client::new(&export)?;
        let counts = Arc::new(PushCounts::default());
        let (stop, stopped) = oneshot::channel();
        let pusher = Pusher {
            client,
            registry,
            resource,
            start_unix_nanos: unix_nanos_now(),
            timeout: export.timeout,
            counts: counts.clone(),
        };
        let task = tokio::spawn(pusher.run(interval, stopped));
        Ok(MetricsPusher { stop, task, counts })
    }

    /// Pushes one last time (bounded by the exporter timeout) and stops.
    pub async fn shutdown(self) {
        // The task may already have ended, in which case nobody listens; that is fine.
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "metrics push task ended abnormally");
        }
    }

    pub fn pushes_failed(&self) -> u64 {
        self.counts.failed.load(Ordering::Relaxed)
    }

    pub fn pushes_sent(&self) -> u64 {
        self.counts.sent.load(Ordering::Relaxed)
    }
}

struct Pusher {
    client: Client,
    registry: Registry,
    resource: Resource,
    start_unix_nanos: u64,
    timeout: Duration,
    counts: Arc<PushCounts>,
}

impl Pusher {
    async fn run(self, interval: Duration, mut stopped: oneshot::Receiver<()>) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        // After a slow push the next one waits a whole interval rather than catching up in a burst.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A stop request and a dropped `MetricsPusher` both end the loop.
                _ = &mut stopped => break,
                _ = ticks.tick() => self.push().await,
            }
        }
        self.push().await;
    }

    /// One push, bounded by the exporter timeout in total: the client's own timeouts apply to connecting and to
    /// the request separately, and shutdown must not wait for both.
    async fn push(&self) {
        let request =
            self.registry.to_otlp(self.resource.clone(), own_scope(), self.start_unix_nanos, unix_nanos_now());
        let empty = request.resource_metrics.iter().flat_map(|rm| &rm.scope_metrics).all(|sm| sm.metrics.is_empty());
        if empty {
            return;
        }
        let result = match tokio::time::timeout(self.timeout, self.client.send(request)).await {
            Ok(result) => result,
            Err(_) => Err(ExportError::Retryable { message: "metrics push timed out".to_string(), retry_after: None }),
        };
        match result {
            Ok(()) => {
                self.counts.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "metrics push failed; the next push sends fresh cumulative values");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
    use opentelemetry_proto::tonic::metrics::v1::{exemplar, metric, number_data_point, Metric};
    use ordertrail_core::config::RetryConfig;
    use ordertrail_metrics::Exemplar;
    use std::collections::BTreeMap;
    use std::io::Read;
    use tokio::sync::mpsc;

    const TRACE: [u8; 16] = [7; 16];

    fn config(endpoint: String, protocol: ExportProtocol, gzip: bool) -> ExporterConfig {
        ExporterConfig {
            endpoint,
            protocol,
            headers: BTreeMap::from([("X-Tenant".to_string(), "acme".to_string())]),
            tls: None,
            compression: if gzip { Compression::Gzip { level: 1 } } else { Compression::None },
            timeout: Duration::from_secs(5),
            send_batch_size: 1,
            batch_timeout: Duration::from_secs(1),
            max_batch_bytes: 3 * 1024 * 1024,
            retry: RetryConfig {
                enabled: false,
                initial_interval: Duration::from_secs(1),
                max_interval: Duration::from_secs(1),
                max_elapsed_time: None,
                multiplier: 1.5,
                randomization_factor: 0.5,
            },
            queue_size: 1,
            num_consumers: 1,
            max_queue_bytes: 1024 * 1024,
        }
    }

    fn recorded_registry() -> Registry {
        let registry = Registry::new(10);
        registry.counter("ordertrail_orders", "Orders.", &["channel"]).add(&["edi"], 3);
        let exemplar = Exemplar { trace_id: TRACE, span_id: [1; 8], timestamp_unix_nanos: 42 };
        registry.histogram("ordertrail_transition_seconds", "Transitions.", "seconds", &[], &[1.0, 10.0]).observe(
            &[],
            2.5,
            Some(exemplar),
        );
        registry
    }

    /// Checks that `request` carries what `recorded_registry` recorded.
    fn assert_carries_the_recorded_metrics(request: &ExportMetricsServiceRequest) {
        let metrics: Vec<&Metric> =
            request.resource_metrics.iter().flat_map(|rm| &rm.scope_metrics).flat_map(|sm| &sm.metrics).collect();
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["ordertrail_orders", "ordertrail_transition_seconds"]);
        let Some(metric::Data::Sum(sum)) = &metrics[0].data else { panic!("the counter is not a sum") };
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points[0].value, Some(number_data_point::Value::AsInt(3)));
        let Some(metric::Data::Histogram(histogram)) = &metrics[1].data else { panic!("not a histogram") };
        let point = &histogram.data_points[0];
        assert_eq!((point.count, point.bucket_counts.as_slice()), (1, [0, 1, 0].as_slice()));
        assert_eq!(point.exemplars[0].trace_id, TRACE.to_vec());
        assert_eq!(point.exemplars[0].value, Some(exemplar::Value::AsDouble(2.5)));
    }

    /// A gRPC metrics backend that hands each request and its tenant header to the test.
    struct Backend {
        received: mpsc::UnboundedSender<(ExportMetricsServiceRequest, Option<String>)>,
    }

    #[tonic::async_trait]
    impl MetricsService for Backend {
        async fn export(
            &self,
            request: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            let tenant = request.metadata().get("x-tenant").and_then(|v| v.to_str().ok()).map(str::to_string);
            let _ = self.received.send((request.into_inner(), tenant));
            Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
        }
    }

    #[tokio::test]
    async fn grpc_pushes_reach_a_metrics_service_every_interval() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (received, mut requests) = mpsc::unbounded_channel();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    MetricsServiceServer::new(Backend { received }).accept_compressed(CompressionEncoding::Gzip),
                )
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );

        let config = config(format!("http://{addr}"), ExportProtocol::Grpc, true);
        let pusher = MetricsPusher::start(config, Duration::from_millis(50), recorded_registry(), Resource::default())
            .expect("pusher starts");
        for _ in 0..2 {
            let (request, tenant) = tokio::time::timeout(Duration::from_secs(10), requests.recv())
                .await
                .expect("a push arrives within the interval")
                .expect("the backend is running");
            assert_carries_the_recorded_metrics(&request);
            assert_eq!(tenant.as_deref(), Some("acme"));
        }
        pusher.shutdown().await;
        server.abort();
    }

    #[tokio::test]
    async fn http_protobuf_shutdown_pushes_once_more_gzipped() {
        type Received = mpsc::UnboundedSender<(axum::http::HeaderMap, ExportMetricsServiceRequest)>;
        async fn receive(
            axum::extract::State(received): axum::extract::State<Received>,
            headers: axum::http::HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::http::StatusCode {
            let mut decoded = Vec::new();
            let gzipped = headers.get("content-encoding").is_some_and(|v| v == "gzip");
            let body = if gzipped {
                if flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut decoded).is_err() {
                    return axum::http::StatusCode::BAD_REQUEST;
                }
                decoded.as_slice()
            } else {
                &body[..]
            };
            match ExportMetricsServiceRequest::decode(body) {
                Ok(request) => {
                    let _ = received.send((headers, request));
                    axum::http::StatusCode::OK
                }
                Err(_) => axum::http::StatusCode::BAD_REQUEST,
            }
        }
        let (received, mut requests) = mpsc::unbounded_channel();
        let app = axum::Router::new().route("/v1/metrics", axum::routing::post(receive)).with_state(received);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        // An interval of an hour leaves only the push at shutdown.
        let config = config(format!("http://{addr}/v1/metrics"), ExportProtocol::HttpProtobuf, true);
        let pusher = MetricsPusher::start(config, Duration::from_secs(3600), recorded_registry(), Resource::default())
            .expect("pusher starts");
        let counts = pusher.counts.clone();
        pusher.shutdown().await;
        let (headers, request) = requests.try_recv().expect("shutdown pushed once");
        assert_carries_the_recorded_metrics(&request);
        assert_eq!(headers.get("content-type").map(|v| v.as_bytes()), Some(&b"application/x-protobuf"[..]));
        assert_eq!(headers.get("content-encoding").map(|v| v.as_bytes()), Some(&b"gzip"[..]));
        assert_eq!(headers.get("x-tenant").map(|v| v.as_bytes()), Some(&b"acme"[..]));
        assert_eq!((counts.sent.load(Ordering::Relaxed), counts.failed.load(Ordering::Relaxed)), (1, 0));
        server.abort();
    }

    #[tokio::test]
    async fn a_failed_push_is_counted_and_not_retried() {
        // A port that was just free: nothing listens there, so the connection is refused at once.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
        let config = config(format!("http://{addr}/v1/metrics"), ExportProtocol::HttpProtobuf, false);
        let pusher = MetricsPusher::start(config, Duration::from_millis(20), recorded_registry(), Resource::default())
            .expect("pusher starts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while pusher.pushes_failed() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "pushes to a closed port were not counted as failed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pusher.pushes_sent(), 0);
        pusher.shutdown().await;
    }

    #[tokio::test]
    async fn a_zero_interval_is_refused() {
        let config = config("http://127.0.0.1:1".to_string(), ExportProtocol::Grpc, false);
        let result = MetricsPusher::start(config, Duration::ZERO, Registry::new(1), Resource::default());
        assert!(matches!(result, Err(ExportError::Setup(_))));
    }
}
