//! `exporters.otlp`: where labelled spans and order traces go, with the collector's field names. The same checks
//! serve `telemetry.metrics.otlp`, which pushes ordertrail's own metrics.

use super::check::{Checker, ConfigError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Exporters, named as in the collector.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawExporters {
    /// OTLP exporter; absent means nothing is exported (spans are still labelled and recorded).
    pub otlp: Option<RawOtlpExporter>,
}

/// OTLP exporter settings, named as the collector's `otlp` / `otlphttp` exporters.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawOtlpExporter {
    /// `http://host:4317` for gRPC, `http://host:4318` for HTTP (the `/v1/traces` path is added when absent).
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: String,
    /// Extra headers or gRPC metadata, e.g. `X-Scope-OrgID` for Tempo.
    pub headers: BTreeMap<String, String>,
    /// TLS settings; plain text when absent and the endpoint is `http://`.
    pub tls: Option<RawTls>,
    /// `gzip`, `zstd` or `none`.
    pub compression: String,
    /// The compression level, as the collector's `compression_params`.
    pub compression_params: RawCompressionParams,
    /// Timeout of one export request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Batching before export.
    pub batch: RawBatch,
    /// Retry of retryable failures.
    pub retry_on_failure: RawRetry,
    /// Queue between the pipeline and the export workers.
    pub sending_queue: RawSendingQueue,
}

impl Default for RawOtlpExporter {
    fn default() -> RawOtlpExporter {
        RawOtlpExporter {
            endpoint: None,
            protocol: "grpc".into(),
            headers: BTreeMap::new(),
            tls: None,
            compression: "gzip".into(),
            compression_params: RawCompressionParams::default(),
            timeout: Duration::from_secs(10),
            batch: RawBatch::default(),
            retry_on_failure: RawRetry::default(),
            sending_queue: RawSendingQueue::default(),
        }
    }
}

/// `compression_params`, as the collector's exporters have it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawCompressionParams {
    /// gzip 1 (fastest) to 9 (smallest), zstd 1 to 22; absent or 0 means 1 for either. A hop in front of every
    /// span is judged by its CPU: on OTLP spans, which repeat the same keys and values, the fastest level comes
    /// close to the usual default level's size at a fraction of its cost (BENCHMARKS.md, codec floor). The trace
    /// exporter and the HTTP metrics push use it; the gRPC metrics push compresses at tonic's own level.
    pub level: i32,
}

/// Client TLS.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawTls {
    /// Send in plain text even though a `tls` section is present.
    pub insecure: bool,
    /// PEM file of the CA that signed the server certificate; the system roots when absent.
    pub ca_file: Option<String>,
    /// PEM client certificate for mutual TLS.
    pub cert_file: Option<String>,
    /// PEM client key for mutual TLS.
    pub key_file: Option<String>,
    /// Server name to verify, when it differs from the endpoint host.
    pub server_name_override: Option<String>,
    /// The collector's switch to accept any server certificate. ordertrail does not offer it: the order traces
    /// carry customers' and approvers' data. Stating it `true` stops startup with what to do instead.
    pub insecure_skip_verify: bool,
}

/// Batching, as the collector's batch processor.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawBatch {
    /// Spans per export request.
    pub send_batch_size: usize,
    /// Longest a span waits for its batch to fill.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest export request in bytes, as encoded before compression. gRPC servers in Go (the collector's OTLP
    /// receiver, Jaeger, Tempo) refuse messages over 4 MiB after decompression by default, so the default stays
    /// under that; a request is split by bytes as well as by spans.
    pub max_size_bytes: usize,
}

impl Default for RawBatch {
    fn default() -> RawBatch {
        RawBatch { send_batch_size: 2048, timeout: Duration::from_millis(200), max_size_bytes: 3 * 1024 * 1024 }
    }
}

/// Retry with exponential backoff and jitter.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawRetry {
    /// Whether to retry at all.
    pub enabled: bool,
    /// First backoff.
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    /// Largest backoff.
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// Give up on a batch after this long and count it as failed; `0s` retries until the backend accepts it,
    /// holding the queue, which pushes back on senders instead of dropping.
    #[serde(with = "humantime_serde")]
    pub max_elapsed_time: Duration,
    /// Each backoff is the previous one times this, as the collector's `retry_on_failure.multiplier`.
    pub multiplier: f64,
    /// Each backoff is drawn within this share either side of its value, so that senders recovering from one
    /// outage do not retry in step.
    pub randomization_factor: f64,
}

impl RawRetry {
    /// Checks a `retry_on_failure` section at `key`.
    pub(crate) fn check(&self, check: &Checker<'_>, key: &str) -> Result<RetryConfig, ConfigError> {
        if !(1.0..=100.0).contains(&self.multiplier) {
            return Err(check.err(format!("{key}.multiplier"), "must be within 1..=100"));
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            return Err(check.err(format!("{key}.randomization_factor"), "must be within 0..=1"));
        }
        if self.initial_interval.is_zero() || self.max_interval < self.initial_interval {
            return Err(check
                .err(format!("{key}.max_interval"), "initial_interval must be positive and not above max_interval"));
        }
        Ok(RetryConfig {
            enabled: self.enabled,
            initial_interval: self.initial_interval,
            max_interval: self.max_interval,
            max_elapsed_time: (!self.max_elapsed_time.is_zero()).then_some(self.max_elapsed_time),
            multiplier: self.multiplier,
            randomization_factor: self.randomization_factor,
        })
    }
}

impl Default for RawRetry {
    fn default() -> RawRetry {
        RawRetry {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::ZERO,
            // The collector's defaults.
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

/// Sending queue.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawSendingQueue {
    /// The collector's switch for its queue. ordertrail always queues (its export queue is what keeps an
    /// acknowledged span through a crash); stating `false` stops startup with why.
    pub enabled: bool,
    /// Batches waiting for a worker; when full the pipeline pushes back on receivers.
    pub queue_size: usize,
    /// Concurrent export requests.
    pub num_consumers: usize,
    /// Largest export queue on disk, in bytes, with `storage.durability: durable`; when it is full, senders get a
    /// retryable error until the backend catches up.
    pub max_bytes: u64,
}

impl Default for RawSendingQueue {
    fn default() -> RawSendingQueue {
        RawSendingQueue { enabled: true, queue_size: 64, num_consumers: 4, max_bytes: 1024 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportProtocol {
    Grpc,
    HttpProtobuf,
}

impl ExportProtocol {
    /// The name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportProtocol::Grpc => "grpc",
            ExportProtocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// How export requests are compressed, once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Compression {
    /// The name in the configuration and in `grpc-encoding` / `content-encoding`.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip { .. } => Some("gzip"),
            Compression::Zstd { .. } => Some("zstd"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name_override: Option<String>,
}

impl TlsConfig {
    /// TLS verified against the system's roots, with no client certificate.
    pub fn system_roots() -> TlsConfig {
        TlsConfig { ca_file: None, cert_file: None, key_file: None, server_name_override: None }
    }
}

impl RawTls {
    /// Checks a client `tls` section at `key`; `None` when it asks for plain text (`insecure`). `peer` names
    /// what the certificate belongs to, in the refusal of `insecure_skip_verify`.
    pub(crate) fn check(&self, check: &Checker<'_>, key: &str, peer: &str) -> Result<Option<TlsConfig>, ConfigError> {
        if self.insecure_skip_verify {
            return Err(check.err(
                format!("{key}.insecure_skip_verify"),
                format!(
                    "is not supported: ordertrail always verifies the {peer}'s certificate; give the CA that signed \
                     it with tls.ca_file (or tls.insecure for plain text inside a trusted network)"
                ),
            ));
        }
        if self.insecure {
            return Ok(None);
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(check.err(key, "cert_file and key_file go together"));
        }
        for (field, path) in [("ca_file", &self.ca_file), ("cert_file", &self.cert_file), ("key_file", &self.key_file)]
        {
            if let Some(path) = path {
                if !std::path::Path::new(path).is_file() {
                    return Err(check.err(format!("{key}.{field}"), format!("file `{path}` does not exist")));
                }
            }
        }
        Ok(Some(TlsConfig {
            ca_file: self.ca_file.as_ref().map(PathBuf::from),
            cert_file: self.cert_file.as_ref().map(PathBuf::from),
            key_file: self.key_file.as_ref().map(PathBuf::from),
            server_name_override: self.server_name_override.clone(),
        }))
    }
}

#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub enabled: bool,
    pub initial_interval: Duration,
    pub max_interval: Duration,
    /// `None` retries forever.
    pub max_elapsed_time: Option<Duration>,
    pub multiplier: f64,
    pub randomization_factor: f64,
}

#[derive(Debug, Clone)]
pub struct ExporterConfig {
    /// Full URL; for HTTP it includes the `/v1/traces` path.
    pub endpoint: String,
    pub protocol: ExportProtocol,
    pub headers: BTreeMap<String, String>,
    /// `None` means plain text.
    pub tls: Option<TlsConfig>,
    pub compression: Compression,
    pub timeout: Duration,
    pub send_batch_size: usize,
    pub batch_timeout: Duration,
    /// Largest export request in bytes (encoded, before compression).
    pub max_batch_bytes: usize,
    pub retry: RetryConfig,
    pub queue_size: usize,
    pub num_consumers: usize,
    /// Bound of the persistent export queue.
    pub max_queue_bytes: u64,
}

impl RawExporters {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<Option<ExporterConfig>, ConfigError> {
        self.otlp.as_ref().map(|e| e.check(check, "exporters.otlp", "/v1/traces")).transpose()
    }
}

impl RawOtlpExporter {
    /// Validates an OTLP client section found under `key`; `signal_path` (`/v1/traces`, `/v1/metrics`) completes
    /// HTTP endpoints that name only the host.
    pub(crate) fn check(
        &self,
        check: &Checker<'_>,
        key: &str,
        signal_path: &str,
    ) -> Result<ExporterConfig, ConfigError> {
        let protocol = match self.protocol.as_str() {
            "grpc" => ExportProtocol::Grpc,
            "http/protobuf" => ExportProtocol::HttpProtobuf,
            other => {
                return Err(check.err(format!("{key}.protocol"), format!("`{other}` is not one of grpc, http/protobuf")))
            }
        };
        let endpoint = self.endpoint.clone().ok_or_else(|| check.err(format!("{key}.endpoint"), "is required"))?;
        let endpoint = self.endpoint_url(check, key, endpoint, protocol)?;
        let endpoint = match protocol {
            ExportProtocol::Grpc => endpoint,
            ExportProtocol::HttpProtobuf => {
                let trimmed = endpoint.trim_end_matches('/');
                if trimmed.ends_with(signal_path) {
                    trimmed.to_string()
                } else {
                    format!("{trimmed}{signal_path}")
                }
            }
        };
        for (name, value) in &self.headers {
            let valid_name =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_name || value.bytes().any(|b| b < 0x20 || b == 0x7f) {
                return Err(check.err(format!("{key}.headers.{name}"), "not a valid header name and value"));
            }
        }
        let tls = self.tls_config(check, key, &endpoint)?;
        let compression = self.compression_config(check, key)?;
        if self.timeout.is_zero() {
            return Err(check.err(format!("{key}.timeout"), "must be greater than zero"));
        }
        let retry = self.retry_on_failure.check(check, &format!("{key}.retry_on_failure"))?;
        if !self.sending_queue.enabled {
            return Err(check.err(
                format!("{key}.sending_queue.enabled"),
                "ordertrail always queues what it exports: its export queue is what keeps an acknowledged span \
                 through a crash or a backend outage; remove the key, and bound the queue with sending_queue.max_bytes",
            ));
        }
        let queue = &self.sending_queue;
        let send_batch_size = check.positive(&format!("{key}.batch.send_batch_size"), self.batch.send_batch_size)?;
        let queue_size = check.positive(&format!("{key}.sending_queue.queue_size"), queue.queue_size)?;
        let num_consumers = check.positive(&format!("{key}.sending_queue.num_consumers"), queue.num_consumers)?;
        // A span of ordinary size must fit in a request with room to spare; below this, most spans with a few
        // large attributes could not be sent at all.
        if self.batch.max_size_bytes < 64 * 1024 {
            return Err(check.err(format!("{key}.batch.max_size_bytes"), "must be at least 65536 (64 KiB)"));
        }
        if queue.max_bytes < 1024 * 1024 {
            return Err(check.err(format!("{key}.sending_queue.max_bytes"), "must be at least 1 MiB"));
        }
        Ok(ExporterConfig {
            endpoint,
            protocol,
            headers: self.headers.clone(),
            tls,
            compression,
            timeout: self.timeout,
            send_batch_size,
            batch_timeout: self.batch.timeout,
            max_batch_bytes: self.batch.max_size_bytes,
            retry,
            queue_size,
            num_consumers,
            max_queue_bytes: queue.max_bytes,
        })
    }

    fn compression_config(&self, check: &Checker<'_>, key: &str) -> Result<Compression, ConfigError> {
        let level = self.compression_params.level;
        let out_of_range =
            |max: i32| check.err(format!("{key}.compression_params.level"), format!("{level} is not within 1..={max}"));
        match self.compression.as_str() {
            "none" | "" if level == 0 => Ok(Compression::None),
            "none" | "" => Err(check.err(
                format!("{key}.compression_params.level"),
                "is set but compression is none; remove it or choose gzip or zstd",
            )),
            "gzip" => match level {
                0 => Ok(Compression::Gzip { level: 1 }),
                1..=9 => Ok(Compression::Gzip { level: level.unsigned_abs() }),
                _ => Err(out_of_range(9)),
            },
            "zstd" => match level {
                0 => Ok(Compression::Zstd { level: 1 }),
                1..=22 => Ok(Compression::Zstd { level }),
                _ => Err(out_of_range(22)),
            },
            other => Err(check.err(format!("{key}.compression"), format!("`{other}` is not one of gzip, zstd, none"))),
        }
    }

    /// The endpoint as a URL. A URL is taken as it is; for gRPC, `host:port` too, as the collector takes it: over
    /// TLS unless `tls.insecure` is true.
    fn endpoint_url(
        &self,
        check: &Checker<'_>,
        key: &str,
        endpoint: String,
        protocol: ExportProtocol,
    ) -> Result<String, ConfigError> {
        let has_scheme = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if has_scheme && endpoint.len() > "https://".len() {
            return Ok(endpoint);
        }
        let host_port = !endpoint.contains("://")
            && endpoint.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
        match protocol {
            ExportProtocol::Grpc if host_port => {
                let insecure = self.tls.as_ref().is_some_and(|t| t.insecure);
                Ok(format!("{}://{endpoint}", if insecure { "http" } else { "https" }))
            }
            ExportProtocol::Grpc => Err(check.err(
                format!("{key}.endpoint"),
                format!("`{endpoint}` is neither an http:// or https:// URL nor host:port"),
            )),
            ExportProtocol::HttpProtobuf => Err(check.err(
                format!("{key}.endpoint"),
                format!(
                    "`{endpoint}` must be an http:// or https:// URL for protocol http/protobuf (host:port is \
                     taken for grpc only, as the collector does)"
                ),
            )),
        }
    }

    fn tls_config(&self, check: &Checker<'_>, key: &str, endpoint: &str) -> Result<Option<TlsConfig>, ConfigError> {
        let tls = match &self.tls {
            Some(t) => t.check(check, &format!("{key}.tls"), "backend")?,
            None if endpoint.starts_with("https://") => Some(TlsConfig::system_roots()),
            None => None,
        };
        if tls.is_some() && endpoint.starts_with("http://") {
            return Err(check.err(
                format!("{key}.endpoint"),
                "TLS is configured but the endpoint is http://; use https:// or tls.insecure",
            ));
        }
        Ok(tls)
    }
}
