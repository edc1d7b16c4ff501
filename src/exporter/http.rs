//! OTLP/HTTP client (binary protobuf).

use super::ExportError;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use ordertrail_core::config::ExporterConfig;
use prost::Message;
use std::io::Write;
use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    endpoint: String,
    headers: reqwest::header::HeaderMap,
    gzip: bool,
}

fn setup(e: impl std::fmt::Display) -> ExportError {
    ExportError::Setup(e.to_string())
}

/// The reqwest client with the exporter's timeouts and TLS, shared by the trace and metrics clients.
pub(crate) fn client(config: &ExporterConfig) -> Result<reqwest::Client, ExportError> {
    let mut builder = reqwest::Client::builder().timeout(config.timeout).connect_timeout(config.timeout);
    if let Some(tls) = &config.tls {
        if let Some(ca) = &tls.ca_file {
            let pem = std::fs::read(ca).map_err(|e| setup(format!("cannot read {}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).map_err(setup)?);
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            let mut pem = std::fs::read(cert).map_err(|e| setup(format!("cannot read {}: {e}", cert.display())))?;
            pem.extend(std::fs::read(key).map_err(|e| setup(format!("cannot read {}: {e}", key.display())))?);
            builder = builder.identity(reqwest::Identity::from_pem(&pem).map_err(setup)?);
        }
    }
    builder.build().map_err(setup)
}

/// The configured headers, sent with every request.
pub(crate) fn headers(config: &ExporterConfig) -> Result<reqwest::header::HeaderMap, ExportError> {
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in &config.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(setup)?;
        headers.insert(name, reqwest::header::HeaderValue::from_str(value).map_err(setup)?);
    }
    Ok(headers)
}

impl HttpClient {
    /// A client that posts to `config.endpoint` as it is, so the caller's configuration carries the signal's path
    /// (`/v1/traces`, `/v1/metrics`).
    pub(crate) fn new(config: &ExporterConfig) -> Result<HttpClient, ExportError> {
        Ok(HttpClient {
            client: client(config)?,
            endpoint: config.endpoint.clone(),
            headers: headers(config)?,
            gzip: config.gzip,
        })
    }

    pub(crate) async fn send(&self, batch: Vec<ResourceSpans>) -> Result<(), ExportError> {
        self.post(ExportTraceServiceRequest { resource_spans: batch }.encode_to_vec()).await
    }

    /// Posts one encoded OTLP request, compressed if configured, and sorts a failure into retryable or permanent.
    pub(crate) async fn post(&self, body: Vec<u8>) -> Result<(), ExportError> {
        let mut request = self
            .client
            .post(&self.endpoint)
            .headers(self.headers.clone())
            .header("content-type", "application/x-protobuf");
        let body = if self.gzip {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder
                .write_all(&body)
                .and_then(|_| encoder.finish())
                .map_err(|e| ExportError::Permanent(e.to_string()))?
        } else {
            body
        };
        if self.gzip {
            request = request.header("content-encoding", "gzip");
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| ExportError::Retryable { message: e.to_string(), retry_after: None })?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let message = format!("HTTP {status} from {}", self.endpoint);
        // OTLP/HTTP: 429, 502, 503 and 504 are retryable; every other failure is permanent, except that 413 asks
        // for the same spans in smaller requests.
        if status == 413 {
            Err(ExportError::TooLarge(message))
        } else if matches!(status, 429 | 502 | 503 | 504) {
            Err(ExportError::Retryable { message, retry_after })
        } else {
            Err(ExportError::Permanent(message))
        }
    }
}
