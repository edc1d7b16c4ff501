//! `telemetry.metrics`: bounds of ordertrail's own metrics, and their optional OTLP push.

use super::check::{Checker, ConfigError};
use super::exporter::{ExporterConfig, RawOtlpExporter, RawTls};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// ordertrail's own telemetry.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawTelemetry {
    /// Metrics served on `/metrics` and optionally pushed over OTLP.
    pub metrics: RawMetrics,
}

/// Metrics served on `/metrics` and optionally pushed over OTLP.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawMetrics {
    /// Most label sets per metric; further ones go to one overflow series.
    pub max_series_per_metric: usize,
    /// Most `service`/`route` pairs tracked for correlation coverage.
    pub max_coverage_routes: usize,
    /// Span attributes whose value is the `route` label of correlation coverage, the first one present. Only
    /// attributes that are templates by their semantic conventions belong here: a label value is kept by every
    /// scrape and shown to anyone who can read `/metrics`.
    pub route_attributes: Vec<String>,
    /// Use the span name as the route when none of `route_attributes` is present. Off by default: span names
    /// often carry order numbers, e-mail addresses or card-like numbers, which must not become label values.
    pub route_from_span_name: bool,
    /// OTLP metrics push; absent means `/metrics` only.
    pub otlp: Option<RawMetricsOtlp>,
}

impl Default for RawMetrics {
    fn default() -> RawMetrics {
        RawMetrics {
            max_series_per_metric: 2000,
            max_coverage_routes: 500,
            route_attributes: vec!["http.route".into(), "rpc.method".into(), "messaging.destination.template".into()],
            route_from_span_name: false,
            otlp: None,
        }
    }
}

/// OTLP metrics push, named as the collector's `otlp` exporter plus the periodic reader's `interval`. Its fields
/// repeat those of [`RawOtlpExporter`] without batching and queueing, which a periodic push of cumulative values
/// does not need; serde cannot combine `flatten` with `deny_unknown_fields`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawMetricsOtlp {
    /// `http://host:4317` for gRPC, `http://host:4318` for HTTP (the `/v1/metrics` path is added when absent).
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: String,
    /// Extra headers or gRPC metadata.
    pub headers: BTreeMap<String, String>,
    /// TLS settings.
    pub tls: Option<RawTls>,
    /// `gzip`, `zstd` or `none`.
    pub compression: String,
    /// Timeout of one push.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Time between pushes.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for RawMetricsOtlp {
    /// The client settings are the trace exporter's defaults; only the interval is the push's own.
    fn default() -> RawMetricsOtlp {
        let exporter = RawOtlpExporter::default();
        RawMetricsOtlp {
            endpoint: None,
            protocol: exporter.protocol,
            headers: BTreeMap::new(),
            tls: None,
            compression: exporter.compression,
            timeout: exporter.timeout,
            interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub max_series_per_metric: usize,
    pub max_coverage_routes: usize,
    pub route_attributes: Vec<String>,
    pub route_from_span_name: bool,
    pub push: Option<MetricsPushConfig>,
}

#[derive(Debug, Clone)]
pub struct MetricsPushConfig {
    pub export: ExporterConfig,
    pub interval: Duration,
}

impl RawTelemetry {
    pub(crate) fn check(&self, check: &Checker<'_>) -> Result<MetricsConfig, ConfigError> {
        let raw = &self.metrics;
        let push = match &raw.otlp {
            None => None,
            Some(m) => {
                let exporter = RawOtlpExporter {
                    endpoint: m.endpoint.clone(),
                    protocol: m.protocol.clone(),
                    headers: m.headers.clone(),
                    tls: m.tls.clone(),
                    compression: m.compression.clone(),
                    timeout: m.timeout,
                    ..RawOtlpExporter::default()
                };
                let export = exporter.check(check, "telemetry.metrics.otlp", "/v1/metrics")?;
                if m.interval < Duration::from_millis(100) {
                    return Err(check.err("telemetry.metrics.otlp.interval", "must be at least 100ms"));
                }
                Some(MetricsPushConfig { export, interval: m.interval })
            }
        };
        Ok(MetricsConfig {
            max_series_per_metric: check
                .positive("telemetry.metrics.max_series_per_metric", raw.max_series_per_metric)?,
            max_coverage_routes: check.positive("telemetry.metrics.max_coverage_routes", raw.max_coverage_routes)?,
            route_attributes: raw.route_attributes.clone(),
            route_from_span_name: raw.route_from_span_name,
            push,
        })
    }
}
