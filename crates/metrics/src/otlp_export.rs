//! The OTLP rendering: one `ExportMetricsServiceRequest` of cumulative sums, gauges and histograms with exemplars;
//! the overflow series carries the attribute `otel.metric.overflow`.

use super::{lock, Exemplar, Family, Kind, Labels, Registry, Value, OVERFLOW_ATTRIBUTE};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1 as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;

impl Registry {
    /// All series as one OTLP metrics request (cumulative temporality). Metrics without any series are left out,
    /// since a metric without data points is of no use to a backend.
    pub fn to_otlp(
        &self,
        resource: Resource,
        scope: InstrumentationScope,
        start_unix_nanos: u64,
        now_unix_nanos: u64,
    ) -> ExportMetricsServiceRequest {
        let metrics = self.families().iter().filter_map(|f| f.to_otlp(start_unix_nanos, now_unix_nanos)).collect();
        ExportMetricsServiceRequest {
            resource_metrics: vec![otlp::ResourceMetrics {
                resource: Some(resource),
                scope_metrics: vec![otlp::ScopeMetrics { scope: Some(scope), metrics, schema_url: String::new() }],
                schema_url: String::new(),
            }],
        }
    }
}

impl Family {
    fn to_otlp(&self, start: u64, now: u64) -> Option<otlp::Metric> {
        let state = lock(&self.state);
        let overflow_values = vec![String::new(); self.label_names.len()];
        let regular = state.series.iter().map(|(values, value)| (values.as_slice(), value, false));
        let overflow = state.overflow.iter().map(|value| (overflow_values.as_slice(), value, true));
        let series: Vec<(&[String], &Value, bool)> = regular.chain(overflow).collect();
        if series.is_empty() {
            return None;
        }
        let attributes = |values: &[String], is_overflow: bool| {
            Labels { names: &self.label_names, values, overflow: is_overflow }.attributes()
        };
        let data = match &self.kind {
            Kind::Counter => otlp::metric::Data::Sum(otlp::Sum {
                data_points: series
                    .iter()
                    .filter_map(|(values, value, is_overflow)| match value {
                        Value::Counter(total) => Some(otlp::NumberDataPoint {
                            attributes: attributes(values, *is_overflow),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            value: Some(otlp::number_data_point::Value::AsInt(
                                i64::try_from(*total).unwrap_or(i64::MAX),
                            )),
                            ..Default::default()
                        }),
                        _ => None,
                    })
                    .collect(),
                aggregation_temporality: otlp::AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            Kind::Gauge => otlp::metric::Data::Gauge(otlp::Gauge {
                data_points: series
                    .iter()
                    .filter_map(|(values, value, is_overflow)| match value {
                        Value::Gauge(v) => Some(otlp::NumberDataPoint {
                            attributes: attributes(values, *is_overflow),
                            time_unix_nano: now,
                            value: Some(otlp::number_data_point::Value::AsDouble(*v)),
                            ..Default::default()
                        }),
                        _ => None,
                    })
                    .collect(),
            }),
            Kind::Histogram { bounds } => otlp::metric::Data::Histogram(otlp::Histogram {
                data_points: series
                    .iter()
                    .filter_map(|(values, value, is_overflow)| match value {
                        Value::Histogram(h) => Some(otlp::HistogramDataPoint {
                            attributes: attributes(values, *is_overflow),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: h.count,
                            // OTLP asks for no sum once negative values were recorded, like OpenMetrics.
                            sum: (h.count == 0 || h.min >= 0.0).then_some(h.sum),
                            bucket_counts: h.counts.clone(),
                            explicit_bounds: bounds.clone(),
                            exemplars: h.exemplars.iter().flatten().map(|(v, e)| otlp_exemplar(*v, e)).collect(),
                            min: (h.count > 0).then_some(h.min),
                            max: (h.count > 0).then_some(h.max),
                            ..Default::default()
                        }),
                        _ => None,
                    })
                    .collect(),
                aggregation_temporality: otlp::AggregationTemporality::Cumulative as i32,
            }),
        };
        Some(otlp::Metric {
            name: self.name.clone(),
            description: self.help.clone(),
            unit: otlp_unit(&self.unit),
            data: Some(data),
            ..Default::default()
        })
    }
}

impl Labels<'_> {
    /// The overflow series carries only the overflow attribute, as in the OpenTelemetry SDK: its other labels
    /// are empty, which Prometheus treats as absent too.
    fn attributes(&self) -> Vec<KeyValue> {
        if self.overflow {
            return vec![KeyValue {
                key: OVERFLOW_ATTRIBUTE.to_string(),
                value: Some(AnyValue { value: Some(any_value::Value::BoolValue(true)) }),
                ..Default::default()
            }];
        }
        self.names
            .iter()
            .zip(self.values)
            .map(|(name, value)| KeyValue {
                key: name.clone(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.clone())) }),
                ..Default::default()
            })
            .collect()
    }
}

pub(crate) fn otlp_exemplar(value: f64, exemplar: &Exemplar) -> otlp::Exemplar {
    otlp::Exemplar {
        time_unix_nano: exemplar.timestamp_unix_nanos,
        span_id: exemplar.span_id.to_vec(),
        trace_id: exemplar.trace_id.to_vec(),
        value: Some(otlp::exemplar::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// The UCUM unit OTLP expects for the OpenMetrics unit words we use; other units pass through unchanged.
pub(crate) fn otlp_unit(unit: &str) -> String {
    match unit {
        "seconds" => "s",
        "milliseconds" => "ms",
        "bytes" => "By",
        "ratio" => "1",
        other => other,
    }
    .to_string()
}
