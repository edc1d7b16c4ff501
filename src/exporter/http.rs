//! OTLP/HTTP client (binary protobuf).

use super::compress::compress;
use super::ExportError;
use bytes::Bytes;
use ordertrail_core::config::{Compression, ExporterConfig};
use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    endpoint: String,
    headers: reqwest::header::HeaderMap,
    compression: Compression,
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
            compression: config.compression,
        })
    }

    /// One request as it goes on the wire: `parts` (together one encoded OTLP request) compressed as configured.
    /// Retries send these bytes again.
    pub(crate) fn prepare(&self, parts: &[&[u8]]) -> Result<Bytes, ExportError> {
        compress(self.compression, parts, 0)
            .map(Bytes::from)
            .map_err(|e| ExportError::Permanent(format!("cannot compress the request: {e}")))
    }

    /// Compresses and posts one encoded OTLP request.
    pub(crate) async fn post(&self, body: Vec<u8>) -> Result<(), ExportError> {
        let prepared = self.prepare(&[&body])?;
        self.send(prepared).await
    }

    /// Posts a prepared request and sorts a failure into retryable, permanent or too large.
    pub(crate) async fn send(&self, body: Bytes) -> Result<(), ExportError> {
        let mut request = self
            .client
            .post(&self.endpoint)
            .headers(self.headers.clone())
            .header("content-type", "application/x-protobuf");
        if let Some(name) = self.compression.name() {
            request = request.header("content-encoding", name);
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
