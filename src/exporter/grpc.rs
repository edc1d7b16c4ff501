//! OTLP/gRPC client.

use super::ExportError;
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

/// The OTLP specification's retryable gRPC codes; everything else is permanent.
pub(crate) fn classify(status: tonic::Status) -> ExportError {
    use tonic::Code::*;
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Cancelled | DeadlineExceeded | Aborted | OutOfRange | Unavailable | DataLoss | ResourceExhausted => {
            ExportError::Retryable { message, retry_after: None }
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
    }
}
