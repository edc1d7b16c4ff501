//! OTLP/gRPC client.

use super::compress::compress;
use super::ExportError;
use crate::google_rpc::{RetryInfo, Status as RpcStatus, RETRY_INFO_TYPE};
use bytes::Bytes;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use ordertrail_core::config::{Compression, ExporterConfig};
use prost::Message;
use std::time::Duration;
use tonic::codegen::http;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tower_service::Service;

/// The OTLP/gRPC trace client. It sends requests that are encoded and compressed already, framed as gRPC
/// messages, over tonic's channel (connection management, TLS, HTTP/2), instead of tonic's generated client,
/// which would decode nothing but encode and compress the message again on every attempt.
#[derive(Debug, Clone)]
pub(crate) struct GrpcClient {
    channel: Channel,
    headers: http::HeaderMap,
    compression: Compression,
}

/// The method OTLP/gRPC trace export calls.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// The length-prefixed message header of gRPC: a compressed flag and a 4-byte big-endian length.
const FRAME_HEADER: usize = 5;

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
        let mut headers = metadata(config)?.into_headers();
        let fixed = [
            (http::header::CONTENT_TYPE, "application/grpc"),
            (http::header::TE, "trailers"),
            (http::header::USER_AGENT, concat!("ordertrail/", env!("CARGO_PKG_VERSION"))),
        ];
        for (name, value) in fixed {
            headers.insert(name, http::HeaderValue::from_static(value));
        }
        let millis = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX).clamp(1, 99_999_999);
        let timeout =
            http::HeaderValue::try_from(format!("{millis}m")).map_err(|e| ExportError::Setup(e.to_string()))?;
        headers.insert("grpc-timeout", timeout);
        if let Some(name) = config.compression.name() {
            headers.insert("grpc-encoding", http::HeaderValue::from_static(name));
        }
        Ok(GrpcClient { channel: channel(config)?, headers, compression: config.compression })
    }

    /// One request as it goes on the wire: `parts` (together an encoded `ExportTraceServiceRequest`) compressed
    /// as configured, in a gRPC message frame. Retries send these bytes again.
    pub(crate) fn prepare(&self, parts: &[&[u8]]) -> Result<Bytes, ExportError> {
        let mut frame = compress(self.compression, parts, FRAME_HEADER)
            .map_err(|e| ExportError::Permanent(format!("cannot compress the request: {e}")))?;
        let length = u32::try_from(frame.len() - FRAME_HEADER)
            .map_err(|_| ExportError::TooLarge("a gRPC message is at most 4 GiB".into()))?;
        frame[0] = u8::from(self.compression != Compression::None);
        frame[1..FRAME_HEADER].copy_from_slice(&length.to_be_bytes());
        Ok(Bytes::from(frame))
    }

    /// Sends a prepared request and reads the answer: the status from the trailers (or from the headers of a
    /// trailers-only answer), and any partial success.
    pub(crate) async fn send(&self, frame: Bytes) -> Result<(), ExportError> {
        let mut request = http::Request::new(tonic::body::Body::new(http_body_util::Full::new(frame)));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = http::Uri::from_static(EXPORT_PATH);
        *request.headers_mut() = self.headers.clone();
        let mut channel = self.channel.clone();
        let transport = |e: tonic::transport::Error| ExportError::Retryable {
            message: format!(
                "transport: {e}{}",
                std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default()
            ),
            retry_after: None,
        };
        std::future::poll_fn(|cx| channel.poll_ready(cx)).await.map_err(transport)?;
        let response = channel.call(request).await.map_err(transport)?;
        let (parts, body) = response.into_parts();
        if let Some(status) = tonic::Status::from_header_map(&parts.headers) {
            if status.code() != tonic::Code::Ok {
                return Err(classify(status));
            }
        }
        if parts.status != http::StatusCode::OK {
            if parts.status == http::StatusCode::PAYLOAD_TOO_LARGE {
                // A proxy in front of the backend (nginx allows 1 MiB by default) refusing the body's size.
                return Err(ExportError::TooLarge(format!(
                    "HTTP {} from a proxy in front of the backend",
                    parts.status
                )));
            }
            return Err(classify(http_status(parts.status)));
        }
        let encoding = parts.headers.get("grpc-encoding").and_then(|v| v.to_str().ok()).map(str::to_string);
        let collected = http_body_util::Limited::new(body, MAX_ANSWER_BYTES).collect().await.map_err(|e| {
            ExportError::Retryable { message: format!("the answer was cut off: {e}"), retry_after: None }
        })?;
        let status = collected.trailers().and_then(tonic::Status::from_header_map).or_else(|| {
            // A trailers-only answer carried its status in the headers, checked above.
            tonic::Status::from_header_map(&parts.headers)
        });
        match status {
            Some(status) if status.code() == tonic::Code::Ok => {}
            Some(status) => return Err(classify(status)),
            // A complete answer without a status is not gRPC (a stream cut off fails above, as retryable);
            // tonic reports this as UNKNOWN, which is permanent.
            None => return Err(classify(tonic::Status::unknown("the answer had no grpc-status"))),
        }
        if let Some((rejected, message)) = rejected_spans(&collected.to_bytes(), encoding.as_deref()) {
            tracing::warn!(rejected, message = %message, "backend rejected spans");
        }
        Ok(())
    }
}

/// Largest answer read: an `ExportTraceServiceResponse` is a count and an error message.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The spans a backend says it rejected (`partial_success`) and why. Go servers answer in the encoding the request
/// came in, so a compressed answer is inflated first, within `MAX_ANSWER_BYTES`.
fn rejected_spans(body: &[u8], encoding: Option<&str>) -> Option<(i64, String)> {
    use std::io::Read;
    if body.len() < FRAME_HEADER {
        return None;
    }
    let message = &body[FRAME_HEADER..];
    let limit = u64::try_from(MAX_ANSWER_BYTES).unwrap_or(u64::MAX);
    let mut inflated = Vec::new();
    let message: &[u8] = match (body[0], encoding) {
        (0, _) => message,
        (_, Some("gzip")) => {
            flate2::read::GzDecoder::new(message).take(limit).read_to_end(&mut inflated).ok()?;
            &inflated
        }
        (_, Some("zstd")) => {
            zstd::stream::read::Decoder::new(message).and_then(|d| d.take(limit).read_to_end(&mut inflated)).ok()?;
            &inflated
        }
        _ => return None,
    };
    let partial = ExportTraceServiceResponse::decode(message).ok()?.partial_success?;
    (partial.rejected_spans > 0).then_some((partial.rejected_spans, partial.error_message))
}

/// The gRPC status of an HTTP answer without one, as gRPC's "HTTP to gRPC status code mapping" gives it.
fn http_status(status: http::StatusCode) -> tonic::Status {
    let code = match status.as_u16() {
        400 => tonic::Code::Internal,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::Unimplemented,
        429 | 502 | 503 | 504 => tonic::Code::Unavailable,
        _ => tonic::Code::Unknown,
    };
    tonic::Status::new(code, format!("HTTP {status} without a gRPC status"))
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
    fn rejected_spans_are_read_from_plain_and_compressed_answers() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;
        let answer = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess { rejected_spans: 3, error_message: "bad ids".into() }),
        }
        .encode_to_vec();
        let frame = |flag: u8, message: Vec<u8>| {
            let mut frame = vec![flag];
            frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
            frame.extend(message);
            frame
        };
        let expected = Some((3, "bad ids".to_string()));
        assert_eq!(rejected_spans(&frame(0, answer.clone()), None), expected);
        let gzip = compress(Compression::Gzip { level: 6 }, &[&answer], 0).unwrap();
        assert_eq!(rejected_spans(&frame(1, gzip), Some("gzip")), expected);
        let zstd = compress(Compression::Zstd { level: 1 }, &[&answer], 0).unwrap();
        assert_eq!(rejected_spans(&frame(1, zstd.clone()), Some("zstd")), expected);
        assert_eq!(rejected_spans(&frame(1, zstd), Some("snappy")), None, "an unknown encoding is skipped");
        assert_eq!(rejected_spans(&frame(0, Vec::new()), None), None, "nothing rejected");
    }

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
