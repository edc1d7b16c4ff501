//! OTLP/gRPC client.

use super::ExportError;
use crate::google_rpc::{RetryInfo, Status as RpcStatus, RETRY_INFO_TYPE};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use ordertrail_core::config::ExporterConfig;
use std::time::Duration;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Debug, Clone)]
pub(crate) struct GrpcClient {
    client: TraceServiceClient<Channel>,
    metadata: MetadataMap,
    timeout: Duration,
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ExportError> {
    std::fs::read(path).map_err(|e| ExportError::Setup(format!("cannot read {}: {e}", path.display())))
}

/// The channel to the backend with the exporter's endpoint, timeouts and TLS, shared by the trace and metrics
/// clients. It connects lazily, so a backend that is down at startup does not stop ordertrail.
pub(crate) fn channel(config: &ExporterConfig) -> Result<Channel, ExportError> {
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|e| ExportError::Setup(format!("endpoint `{}`: {e}", config.endpoint)))?
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .tcp_nodelay(true);
    if let Some(tls) = &config.tls {
        let mut tls_config = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &tls.ca_file {
            tls_config = tls_config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            tls_config = tls_config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &tls.server_name_override {
            tls_config = tls_config.domain_name(name.clone());
        }
        endpoint = endpoint.tls_config(tls_config).map_err(|e| ExportError::Setup(format!("tls: {e}")))?;
    }
    Ok(endpoint.connect_lazy())
}

/// The configured headers as gRPC metadata, sent with every request.
pub(crate) fn metadata(config: &ExporterConfig) -> Result<MetadataMap, ExportError> {
    let mut metadata = MetadataMap::new();
    for (name, value) in &config.headers {
        let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
            .map_err(|e| ExportError::Setup(format!("header `{name}`: {e}")))?;
        let value =
            MetadataValue::try_from(value.as_str()).map_err(|e| ExportError::Setup(format!("header `{name}`: {e}")))?;
        metadata.insert(key, value);
    }
    Ok(metadata)
}

/// A request carrying the configured metadata and the exporter's timeout.
pub(crate) fn request<T>(message: T, metadata: &MetadataMap, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    *request.metadata_mut() = metadata.clone();
    request.set_timeout(timeout);
    request
}

impl GrpcClient {
    pub(crate) fn new(config: &ExporterConfig) -> Result<GrpcClient, ExportError> {
        let mut client = TraceServiceClient::new(channel(config)?).max_decoding_message_size(16 * 1024 * 1024);
        if config.gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        client = client.accept_compressed(CompressionEncoding::Gzip);
        Ok(GrpcClient { client, metadata: metadata(config)?, timeout: config.timeout })
    }

    pub(crate) async fn send(&self, batch: Vec<ResourceSpans>) -> Result<(), ExportError> {
        let request = request(ExportTraceServiceRequest { resource_spans: batch }, &self.metadata, self.timeout);
        let mut client = self.client.clone();
        match client.export(request).await {
            Ok(response) => {
                if let Some(partial) = response.into_inner().partial_success {
                    if partial.rejected_spans > 0 {
                        tracing::warn!(rejected = partial.rejected_spans, message = %partial.error_message, "backend rejected spans");
                    }
                }
                Ok(())
            }
            Err(status) => Err(classify(status)),
        }
    }
}

/// The delay of a `RetryInfo` among the status details, if the server sent one.
fn retry_delay(status: &tonic::Status) -> Option<Duration> {
    use prost::Message;
    let details = RpcStatus::decode(status.details()).ok()?;
    let info = details.details.iter().find(|any| any.type_url == RETRY_INFO_TYPE)?;
    let delay = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
    let seconds = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).ok()?;
    Some(Duration::new(seconds, nanos))
}

/// Whether a status refuses the request for its size: gRPC servers in Go answer RESOURCE_EXHAUSTED
/// ("grpc: received message larger than max", "… after decompression larger than max"), tonic OUT_OF_RANGE
/// ("decoded message length too large") or RESOURCE_EXHAUSTED ("size limit … exceeded while decompressing").
fn refuses_size(status: &tonic::Status) -> bool {
    let message = status.message().to_ascii_lowercase();
    matches!(status.code(), tonic::Code::ResourceExhausted | tonic::Code::OutOfRange)
        && (message.contains("larger than max") || message.contains("too large") || message.contains("size limit"))
}

/// Sorts a failed export as OTLP and the collector's exporter do, with two additions that keep acknowledged
/// spans from being dropped:
/// - A status the client made itself (it carries the transport error as its source: a refused or reset
///   connection, a stream the backend dropped mid-request) is retryable whatever its code, because the backend
///   may never have seen the request. tonic reports such failures as UNKNOWN or INTERNAL, codes that would
///   otherwise be permanent.
/// - A refusal for size is neither retried as it is nor given up on: the caller sends the spans in smaller
///   requests.
///
/// Otherwise the codes OTLP lists as retryable are retried (RESOURCE_EXHAUSTED too, honouring the server's
/// `RetryInfo` when it sends one, since a rate-limited backend recovers), and every other code is permanent.
pub(crate) fn classify(status: tonic::Status) -> ExportError {
    use tonic::Code::*;
    let message = format!("{:?}: {}", status.code(), status.message());
    if refuses_size(&status) {
        return ExportError::TooLarge(message);
    }
    if std::error::Error::source(&status).is_some() {
        return ExportError::Retryable { message, retry_after: None };
    }
    match status.code() {
        Cancelled | DeadlineExceeded | Aborted | OutOfRange | Unavailable | DataLoss | ResourceExhausted => {
            ExportError::Retryable { message, retry_after: retry_delay(&status) }
        }
        _ => ExportError::Permanent(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_specified_codes_are_retried() {
        assert!(matches!(classify(tonic::Status::unavailable("x")), ExportError::Retryable { .. }));
        assert!(matches!(classify(tonic::Status::deadline_exceeded("x")), ExportError::Retryable { .. }));
        assert!(matches!(classify(tonic::Status::invalid_argument("x")), ExportError::Permanent(_)));
        assert!(matches!(classify(tonic::Status::unauthenticated("x")), ExportError::Permanent(_)));
        assert!(matches!(classify(tonic::Status::unknown("backend said so")), ExportError::Permanent(_)));
    }

    #[test]
    fn a_failure_of_the_connection_is_retried_whatever_its_code() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let status = tonic::Status::from_error(Box::new(reset));
        assert_eq!(status.code(), tonic::Code::Unknown);
        assert!(matches!(classify(status), ExportError::Retryable { .. }));
    }

    #[test]
    fn a_refusal_for_size_asks_for_smaller_requests() {
        let go = tonic::Status::resource_exhausted("grpc: received message larger than max (5242880 vs. 4194304)");
        assert!(matches!(classify(go), ExportError::TooLarge(_)));
        let tonic_server = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 5242880 bytes, the limit is: 4194304 bytes",
        );
        assert!(matches!(classify(tonic_server), ExportError::TooLarge(_)));
        let gzip = tonic::Status::resource_exhausted(
            "Error decompressing: size limit, of 4194304 bytes, exceeded while decompressing message",
        );
        assert!(matches!(classify(gzip), ExportError::TooLarge(_)));
        let overloaded = tonic::Status::resource_exhausted("rate limited");
        assert!(matches!(classify(overloaded), ExportError::Retryable { retry_after: None, .. }));
    }

    #[test]
    fn the_servers_retry_info_sets_the_wait() {
        use prost::Message;
        let info = RetryInfo { retry_delay: Some(prost_types::Duration { seconds: 3, nanos: 500_000_000 }) };
        let details = RpcStatus {
            code: tonic::Code::ResourceExhausted as i32,
            message: "slow down".into(),
            details: vec![prost_types::Any { type_url: RETRY_INFO_TYPE.into(), value: info.encode_to_vec() }],
        };
        let status =
            tonic::Status::with_details(tonic::Code::ResourceExhausted, "slow down", details.encode_to_vec().into());
        match classify(status) {
            ExportError::Retryable { retry_after, .. } => assert_eq!(retry_after, Some(Duration::from_millis(3500))),
            other => panic!("{other:?}"),
        }
    }
}
