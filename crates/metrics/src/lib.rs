//! The registry: families of counters, gauges and histograms, each holding a bounded number of series, rendered
//! as Prometheus text, as OpenMetrics text with exemplars, or as one OTLP metrics request.
//!
//! Metric and label names come from our code and are checked with assertions at registration, so a wrong name
//! fails the first test that registers it. Label values are user data (order channels, stages, systems): they
//! are escaped in the text formats and their number of distinct combinations is bounded per metric.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1 as otlp;
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The label that marks the overflow series in the text formats, after the OpenTelemetry SDK's cardinality limit.
const OVERFLOW_LABEL: &str = "otel_metric_overflow";
/// The attribute that marks the overflow series in OTLP.
const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";

/// The span an observation was made for, kept beside a histogram bucket so that a dashboard can jump from a slow
/// bucket to the order's trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exemplar {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub timestamp_unix_nanos: u64,
}

/// A set of metric families. Clones share the same families.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    max_series_per_metric: usize,
    /// In registration order, which is the order of every rendering.
    families: Mutex<Vec<Arc<Family>>>,
    overflowed: Arc<AtomicU64>,
}

/// A counter family; clones share it.
#[derive(Clone)]
pub struct Counter {
    family: Arc<Family>,
}

/// A gauge family; clones share it.
#[derive(Clone)]
pub struct Gauge {
    family: Arc<Family>,
}

/// A histogram family with fixed bucket bounds; clones share it.
#[derive(Clone)]
pub struct Histogram {
    family: Arc<Family>,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    /// Finite, strictly increasing upper bounds; the `+Inf` bucket is implicit.
    Histogram {
        bounds: Vec<f64>,
    },
}

struct Family {
    name: String,
    help: String,
    unit: String,
    label_names: Vec<String>,
    kind: Kind,
    max_series: usize,
    overflowed: Arc<AtomicU64>,
    state: Mutex<FamilyState>,
}

#[derive(Default)]
struct FamilyState {
    /// Keyed by label values in the order of `label_names`, so iteration is sorted by label values.
    series: BTreeMap<Vec<String>, Value>,
    /// Everything that arrived with a new label set after `series` reached the limit.
    overflow: Option<Value>,
    /// Whether the limit has been logged, so that a flood of new label sets logs once and not per observation.
    warned: bool,
}

enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(HistogramValue),
}

struct HistogramValue {
    /// Per bucket, not cumulative; the last one is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
    min: f64,
    max: f64,
    /// The latest exemplar per bucket with the value it was observed with.
    exemplars: Vec<Option<(f64, Exemplar)>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while a family was locked leaves plain numbers behind, which are still worth exposing.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Value {
    fn zero(kind: &Kind) -> Value {
        match kind {
            Kind::Counter => Value::Counter(0),
            Kind::Gauge => Value::Gauge(0.0),
            Kind::Histogram { bounds } => Value::Histogram(HistogramValue {
                counts: vec![0; bounds.len() + 1],
                sum: 0.0,
                count: 0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                exemplars: vec![None; bounds.len() + 1],
            }),
        }
    }
}

impl HistogramValue {
    /// True when the sum and count may be exposed as OpenMetrics counters: OpenMetrics forbids `_sum` with
    /// negative buckets, and a sum of negative observations is no counter either.
    fn counter_like(&self, bounds: &[f64]) -> bool {
        bounds.iter().all(|b| *b >= 0.0) && (self.count == 0 || self.min >= 0.0)
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// The sample names a family writes, so that two families cannot write the same one.
fn exposed_names(name: &str, kind: &Kind) -> Vec<String> {
    match kind {
        Kind::Counter => vec![name.to_string(), format!("{name}_total")],
        Kind::Gauge => vec![name.to_string()],
        Kind::Histogram { .. } => {
            vec![name.to_string(), format!("{name}_bucket"), format!("{name}_sum"), format!("{name}_count")]
        }
    }
}

impl Registry {
    /// A registry whose metrics each hold at most `max_series_per_metric` label sets besides the overflow series.
    pub fn new(max_series_per_metric: usize) -> Registry {
        Registry {
            shared: Arc::new(Shared {
                max_series_per_metric,
                families: Mutex::new(Vec::new()),
                overflowed: Arc::new(AtomicU64::new(0)),
            }),
        }
    }

    /// A monotonic counter. `name` is given without `_total`, which the text formats add.
    pub fn counter(&self, name: &str, help: &str, labels: &[&str]) -> Counter {
        assert!(!name.ends_with("_total"), "counter `{name}` must be named without `_total`");
        Counter { family: self.register(name, help, "", labels, Kind::Counter) }
    }

    pub fn gauge(&self, name: &str, help: &str, labels: &[&str]) -> Gauge {
        Gauge { family: self.register(name, help, "", labels, Kind::Gauge) }
    }

    /// A histogram with the given upper bucket bounds; a trailing `+Inf` may be given or left out. A non-empty
    /// `unit` (such as `seconds`) must also end the name, as OpenMetrics requires.
    pub fn histogram(&self, name: &str, help: &str, unit: &str, labels: &[&str], buckets: &[f64]) -> Histogram {
        let bounds: Vec<f64> = buckets.iter().copied().filter(|b| *b != f64::INFINITY).collect();
        assert!(
            bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram `{name}` needs finite, strictly increasing bucket bounds, got {buckets:?}"
        );
        assert!(!labels.contains(&"le"), "histogram `{name}` cannot have a label named `le`");
        Histogram { family: self.register(name, help, unit, labels, Kind::Histogram { bounds }) }
    }

    /// Registering a name again with the same kind, labels, unit and buckets returns the existing family. Any
    /// other definition under a taken name panics, in release too: both could not be exposed under one name, and
    /// since names are fixed in our code the first test that registers them finds the clash.
    fn register(&self, name: &str, help: &str, unit: &str, labels: &[&str], kind: Kind) -> Arc<Family> {
        assert!(valid_metric_name(name), "invalid metric name `{name}`");
        for label in labels {
            assert!(valid_label_name(label) && *label != OVERFLOW_LABEL, "metric `{name}`: invalid label `{label}`");
        }
        for (i, label) in labels.iter().enumerate() {
            assert!(!labels[..i].contains(label), "metric `{name}`: label `{label}` given twice");
        }
        assert!(unit.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "metric `{name}`: invalid unit `{unit}`");
        if !unit.is_empty() {
            assert!(name.ends_with(&format!("_{unit}")), "metric `{name}` must end with its unit `_{unit}`");
        }
        let mut families = lock(&self.shared.families);
        if let Some(existing) = families.iter().find(|f| f.name == name) {
            assert!(
                existing.kind == kind && existing.label_names == labels && existing.unit == unit,
                "metric `{name}` is registered twice with different definitions"
            );
            return existing.clone();
        }
        let exposed = exposed_names(name, &kind);
        if let Some(clash) =
            families.iter().find(|f| exposed_names(&f.name, &f.kind).iter().any(|n| exposed.contains(n)))
        {
            panic!("metric `{name}` would expose the same sample names as metric `{}`", clash.name);
        }
        let mut state = FamilyState::default();
        // A metric without labels has exactly one series, which is shown from the start at zero, as Prometheus
        // clients do, so that a rate over it works from the first scrape.
        if labels.is_empty() && self.shared.max_series_per_metric > 0 {
            state.series.insert(Vec::new(), Value::zero(&kind));
        }
        let family = Arc::new(Family {
            name: name.to_string(),
            help: help.to_string(),
            unit: unit.to_string(),
            label_names: labels.iter().map(|l| l.to_string()).collect(),
            kind,
            max_series: self.shared.max_series_per_metric,
            overflowed: self.shared.overflowed.clone(),
            state: Mutex::new(state),
        });
        families.push(family.clone());
        family
    }

    fn families(&self) -> Vec<Arc<Family>> {
        lock(&self.shared.families).clone()
    }

    /// Prometheus text exposition 0.0.4 (no exemplars).
    pub fn render_prometheus(&self) -> String {
        self.render(Format::Prometheus)
    }

    /// OpenMetrics 1.0 text with exemplars, ending in "# EOF\n".
    pub fn render_openmetrics(&self) -> String {
        let mut out = self.render(Format::OpenMetrics);
        out.push_str("# EOF\n");
        out
    }

    fn render(&self, format: Format) -> String {
        let mut out = String::new();
        for family in self.families() {
            family.render(&mut out, format);
        }
        out
    }

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

    /// Observations that went to the overflow series because a metric reached its series limit.
    pub fn overflowed(&self) -> u64 {
        self.shared.overflowed.load(Ordering::Relaxed)
    }
}

impl Family {
    /// Label values in the order of the family's label names. A slice of the wrong length is our bug: tests catch
    /// it through the debug assertion, and a release build fills missing values with "" and ignores extra ones.
    fn key(&self, labels: &[&str]) -> Vec<String> {
        debug_assert_eq!(
            labels.len(),
            self.label_names.len(),
            "metric `{}` takes labels {:?}, got values {labels:?}",
            self.name,
            self.label_names
        );
        (0..self.label_names.len()).map(|i| labels.get(i).copied().unwrap_or_default().to_string()).collect()
    }

    fn note_overflow(&self, state: &mut FamilyState, observations: u64) {
        self.overflowed.fetch_add(observations, Ordering::Relaxed);
        if !state.warned {
            state.warned = true;
            tracing::warn!(
                metric = %self.name,
                limit = self.max_series,
                "metric reached its series limit; new label sets go to the overflow series"
            );
        }
    }

    /// Applies `f` to the series of `labels`, creating it while the family is under its limit and using the
    /// overflow series after that. `f` is told whether it got the overflow series.
    fn update(&self, labels: &[&str], f: impl FnOnce(&mut Value, bool)) {
        let key = self.key(labels);
        let mut state = lock(&self.state);
        if let Some(value) = state.series.get_mut(&key) {
            f(value, false);
            return;
        }
        if state.series.len() < self.max_series {
            f(state.series.entry(key).or_insert_with(|| Value::zero(&self.kind)), false);
            return;
        }
        self.note_overflow(&mut state, 1);
        f(state.overflow.get_or_insert_with(|| Value::zero(&self.kind)), true);
    }

    fn render(&self, out: &mut String, format: Format) {
        let state = lock(&self.state);
        let (type_name, family_name) = match (&self.kind, format) {
            // Prometheus 0.0.4 names the family like its sample; OpenMetrics names it without the suffix.
            (Kind::Counter, Format::Prometheus) => ("counter", format!("{}_total", self.name)),
            (Kind::Counter, Format::OpenMetrics) => ("counter", self.name.clone()),
            (Kind::Gauge, _) => ("gauge", self.name.clone()),
            (Kind::Histogram { .. }, _) => ("histogram", self.name.clone()),
        };
        if !self.help.is_empty() {
            let _ = writeln!(out, "# HELP {family_name} {}", escape_help(&self.help, format));
        }
        let _ = writeln!(out, "# TYPE {family_name} {type_name}");
        if format == Format::OpenMetrics && !self.unit.is_empty() {
            let _ = writeln!(out, "# UNIT {family_name} {}", self.unit);
        }
        let overflow_values = vec![String::new(); self.label_names.len()];
        let regular = state.series.iter().map(|(values, value)| (values.as_slice(), value, false));
        let overflow = state.overflow.iter().map(|value| (overflow_values.as_slice(), value, true));
        for (values, value, is_overflow) in regular.chain(overflow) {
            let labels = Labels { names: &self.label_names, values, overflow: is_overflow };
            match value {
                Value::Counter(total) => {
                    let _ = writeln!(out, "{}_total{} {total}", self.name, labels.render(None));
                }
                Value::Gauge(v) => {
                    let _ = writeln!(out, "{}{} {}", self.name, labels.render(None), format_float(*v));
                }
                Value::Histogram(h) => self.render_histogram(out, format, &labels, h),
            }
        }
    }

    fn render_histogram(&self, out: &mut String, format: Format, labels: &Labels<'_>, h: &HistogramValue) {
        let bounds = match &self.kind {
            Kind::Histogram { bounds } => bounds.as_slice(),
            _ => &[],
        };
        let mut cumulative = 0u64;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = bounds.get(i).map_or_else(|| "+Inf".to_string(), |b| format_float(*b));
            let _ = write!(out, "{}_bucket{} {cumulative}", self.name, labels.render(Some(&le)));
            if let (Format::OpenMetrics, Some(Some((value, exemplar)))) = (format, h.exemplars.get(i)) {
                let _ = write!(
                    out,
                    " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {}",
                    hex::encode(exemplar.trace_id),
                    hex::encode(exemplar.span_id),
                    format_float(*value),
                    format_timestamp(exemplar.timestamp_unix_nanos)
                );
            }
            out.push('\n');
        }
        // OpenMetrics allows leaving out sum and count together, and requires it when they are not counters.
        if format == Format::Prometheus || h.counter_like(bounds) {
            let _ = writeln!(out, "{}_sum{} {}", self.name, labels.render(None), format_float(h.sum));
            let _ = writeln!(out, "{}_count{} {}", self.name, labels.render(None), h.count);
        }
    }

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

impl Counter {
    pub fn add(&self, labels: &[&str], n: u64) {
        self.family.update(labels, |value, _| {
            if let Value::Counter(total) = value {
                *total = total.saturating_add(n);
            }
        });
    }

    /// Mirrors an external monotonic counter, such as one of `crate::telemetry::Counters`. In the overflow series,
    /// which several label sets share, the largest total wins: that keeps it monotonic, at the price of counting
    /// low, which the overflow series does anyway.
    pub fn set_total(&self, labels: &[&str], total: u64) {
        self.family.update(labels, |value, is_overflow| {
            if let Value::Counter(current) = value {
                *current = if is_overflow { (*current).max(total) } else { total };
            }
        });
    }
}

impl Gauge {
    pub fn set(&self, labels: &[&str], v: f64) {
        self.family.update(labels, |value, _| {
            if let Value::Gauge(current) = value {
                *current = v;
            }
        });
    }

    /// Replaces every series with the ones listed, so that a label set that no longer occurs (an order stage with
    /// no open orders) disappears instead of showing its last value forever. Label sets beyond the series limit go
    /// to the overflow series, in label order, the last one's value winning as with `set`.
    pub fn replace_all(&self, series: Vec<(Vec<String>, f64)>) {
        let family = &self.family;
        let mut listed = BTreeMap::new();
        for (labels, v) in series {
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            listed.insert(family.key(&labels), v);
        }
        let mut state = lock(&family.state);
        state.series.clear();
        state.overflow = None;
        let mut overflowed = 0;
        for (key, v) in listed {
            if state.series.len() < family.max_series {
                state.series.insert(key, Value::Gauge(v));
            } else {
                state.overflow = Some(Value::Gauge(v));
                overflowed += 1;
            }
        }
        if overflowed > 0 {
            family.note_overflow(&mut state, overflowed);
        }
    }
}

impl Histogram {
    /// Records `v`; a NaN is ignored, since it would turn the sum into NaN for the rest of the process.
    pub fn observe(&self, labels: &[&str], v: f64, exemplar: Option<Exemplar>) {
        if v.is_nan() {
            return;
        }
        let bucket = match &self.family.kind {
            Kind::Histogram { bounds } => bounds.partition_point(|b| *b < v),
            _ => return,
        };
        self.family.update(labels, |value, _| {
            if let Value::Histogram(h) = value {
                h.counts[bucket] += 1;
                h.count += 1;
                h.sum += v;
                h.min = h.min.min(v);
                h.max = h.max.max(v);
                if let Some(exemplar) = exemplar {
                    h.exemplars[bucket] = Some((v, exemplar));
                }
            }
        });
    }
}

macro_rules! debug_by_name {
    ($($handle:ident),*) => {$(
        impl std::fmt::Debug for $handle {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($handle)).field("name", &self.family.name).finish_non_exhaustive()
            }
        }
    )*};
}
debug_by_name!(Counter, Gauge, Histogram);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.families().iter().map(|family| family.name.clone()).collect();
        f.debug_struct("Registry").field("families", &names).finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Prometheus,
    OpenMetrics,
}

/// One series' labels: the family's names with this series' values, plus the overflow marker.
struct Labels<'a> {
    names: &'a [String],
    values: &'a [String],
    overflow: bool,
}

impl Labels<'_> {
    fn render(&self, le: Option<&str>) -> String {
        let mut pairs: Vec<(&str, String)> =
            self.names.iter().zip(self.values).map(|(n, v)| (n.as_str(), escape_label_value(v))).collect();
        if self.overflow {
            pairs.push((OVERFLOW_LABEL, "true".to_string()));
        }
        if let Some(le) = le {
            pairs.push(("le", le.to_string()));
        }
        if pairs.is_empty() {
            return String::new();
        }
        let inner: Vec<String> = pairs.iter().map(|(n, v)| format!("{n}=\"{v}\"")).collect();
        format!("{{{}}}", inner.join(","))
    }

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

fn otlp_exemplar(value: f64, exemplar: &Exemplar) -> otlp::Exemplar {
    otlp::Exemplar {
        time_unix_nano: exemplar.timestamp_unix_nanos,
        span_id: exemplar.span_id.to_vec(),
        trace_id: exemplar.trace_id.to_vec(),
        value: Some(otlp::exemplar::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// The UCUM unit OTLP expects for the OpenMetrics unit words we use; other units pass through unchanged.
fn otlp_unit(unit: &str) -> String {
    match unit {
        "seconds" => "s",
        "milliseconds" => "ms",
        "bytes" => "By",
        "ratio" => "1",
        other => other,
    }
    .to_string()
}

/// Label values are escaped alike in both formats, as is OpenMetrics help text.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Prometheus 0.0.4 escapes only backslash and line feed in help text; a `\"` there would be read literally.
fn escape_help(help: &str, format: Format) -> String {
    match format {
        Format::OpenMetrics => escape_label_value(help),
        Format::Prometheus => help.replace('\\', "\\\\").replace('\n', "\\n"),
    }
}

/// Rust's shortest round-trip form (`1.0`, `0.005`, `1e-7`), which both text formats and OpenMetrics' canonical
/// `le` values accept, with the spellings of the infinities and NaN that Prometheus expects.
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v:?}")
    }
}

/// Seconds with the exact nanosecond fraction, trailing zeros trimmed; going through f64 would lose digits.
fn format_timestamp(unix_nanos: u64) -> String {
    let seconds = unix_nanos / 1_000_000_000;
    let nanos = unix_nanos % 1_000_000_000;
    let fraction = format!("{nanos:09}");
    let fraction = fraction.trim_end_matches('0');
    format!("{seconds}.{}", if fraction.is_empty() { "0" } else { fraction })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: [u8; 16] = [0xab; 16];
    const SPAN: [u8; 8] = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];

    fn exemplar(timestamp_unix_nanos: u64) -> Option<Exemplar> {
        Some(Exemplar { trace_id: TRACE, span_id: SPAN, timestamp_unix_nanos })
    }

    fn attribute(kv: &KeyValue) -> (String, Option<any_value::Value>) {
        (kv.key.clone(), kv.value.clone().and_then(|v| v.value))
    }

    fn metrics(request: &ExportMetricsServiceRequest) -> &[otlp::Metric] {
        &request.resource_metrics[0].scope_metrics[0].metrics
    }

    #[test]
    fn counter_renders_with_total_suffix_in_both_formats() {
        let registry = Registry::new(10);
        let orders = registry.counter("ordertrail_orders", "Orders seen.", &["channel"]);
        orders.add(&["edi"], 2);
        orders.add(&["web"], 1);
        orders.add(&["edi"], 3);
        assert_eq!(
            registry.render_prometheus(),
            "# HELP ordertrail_orders_total Orders seen.\n\
             # TYPE ordertrail_orders_total counter\n\
             ordertrail_orders_total{channel=\"edi\"} 5\n\
             ordertrail_orders_total{channel=\"web\"} 1\n"
        );
        assert_eq!(
            registry.render_openmetrics(),
            "# HELP ordertrail_orders Orders seen.\n\
             # TYPE ordertrail_orders counter\n\
             ordertrail_orders_total{channel=\"edi\"} 5\n\
             ordertrail_orders_total{channel=\"web\"} 1\n\
             # EOF\n"
        );
    }

    #[test]
    fn set_total_mirrors_an_external_counter() {
        let registry = Registry::new(10);
        let spans = registry.counter("ordertrail_spans_received", "Spans.", &[]);
        spans.set_total(&[], 41);
        spans.set_total(&[], 42);
        assert!(registry.render_prometheus().contains("\nordertrail_spans_received_total 42\n"));
    }

    #[test]
    fn a_metric_without_labels_shows_zero_from_the_start() {
        let registry = Registry::new(10);
        registry.counter("ordertrail_requests", "", &[]);
        registry.gauge("ordertrail_queue_depth", "", &[]);
        assert_eq!(
            registry.render_prometheus(),
            "# TYPE ordertrail_requests_total counter\n\
             ordertrail_requests_total 0\n\
             # TYPE ordertrail_queue_depth gauge\n\
             ordertrail_queue_depth 0.0\n"
        );
    }

    #[test]
    fn gauge_renders_and_replace_all_drops_unlisted_series() {
        let registry = Registry::new(10);
        let open = registry.gauge("ordertrail_open_orders", "Open orders by stage.", &["stage"]);
        open.set(&["picked"], 3.0);
        open.set(&["shipped"], 7.5);
        assert_eq!(
            registry.render_openmetrics(),
            "# HELP ordertrail_open_orders Open orders by stage.\n\
             # TYPE ordertrail_open_orders gauge\n\
             ordertrail_open_orders{stage=\"picked\"} 3.0\n\
             ordertrail_open_orders{stage=\"shipped\"} 7.5\n\
             # EOF\n"
        );
        open.replace_all(vec![(vec!["invoiced".into()], 2.0), (vec!["picked".into()], 1.0)]);
        let text = registry.render_prometheus();
        assert!(text.contains("ordertrail_open_orders{stage=\"invoiced\"} 2.0\n"), "{text}");
        assert!(text.contains("ordertrail_open_orders{stage=\"picked\"} 1.0\n"), "{text}");
        assert!(!text.contains("shipped"), "{text}");
        open.replace_all(Vec::new());
        assert!(!registry.render_prometheus().contains("ordertrail_open_orders{"));
    }

    #[test]
    fn replace_all_beyond_the_limit_uses_the_overflow_series() {
        let registry = Registry::new(1);
        let open = registry.gauge("ordertrail_open_orders", "", &["stage"]);
        open.replace_all(vec![(vec!["b".into()], 2.0), (vec!["a".into()], 1.0), (vec!["c".into()], 3.0)]);
        assert_eq!(
            registry.render_prometheus(),
            "# TYPE ordertrail_open_orders gauge\n\
             ordertrail_open_orders{stage=\"a\"} 1.0\n\
             ordertrail_open_orders{stage=\"\",otel_metric_overflow=\"true\"} 3.0\n"
        );
        assert_eq!(registry.overflowed(), 2);
        open.replace_all(vec![(vec!["a".into()], 1.0)]);
        assert!(!registry.render_prometheus().contains("otel_metric_overflow"));
    }

    #[test]
    fn histogram_renders_cumulative_buckets_unit_and_exemplars() {
        let registry = Registry::new(10);
        let transition = registry.histogram(
            "ordertrail_milestone_transition_seconds",
            "Time between milestones.",
            "seconds",
            &["to"],
            &[0.5, 1.0, 60.0],
        );
        transition.observe(&["shipped"], 0.25, None);
        transition.observe(&["shipped"], 0.75, exemplar(1_700_000_000_123_000_000));
        transition.observe(&["shipped"], 1.0, None);
        transition.observe(&["shipped"], 90.0, exemplar(1_700_000_001_000_000_000));
        assert_eq!(
            registry.render_prometheus(),
            "# HELP ordertrail_milestone_transition_seconds Time between milestones.\n\
             # TYPE ordertrail_milestone_transition_seconds histogram\n\
             ordertrail_milestone_transition_seconds_bucket{to=\"shipped\",le=\"0.5\"} 1\n\
             ordertrail_milestone_transition_seconds_bucket{to=\"shipped\",le=\"1.0\"} 3\n\
             ordertrail_milestone_transition_seconds_bucket{to=\"shipped\",le=\"60.0\"} 3\n\
             ordertrail_milestone_transition_seconds_bucket{to=\"shipped\",le=\"+Inf\"} 4\n\
             ordertrail_milestone_transition_seconds_sum{to=\"shipped\"} 92.0\n\
             ordertrail_milestone_transition_seconds_count{to=\"shipped\"} 4\n"
        );
        let trace = "abababababababababababababababab";
        assert_eq!(
            registry.render_openmetrics(),
            format!(
                "# HELP ordertrail_milestone_transition_seconds Time between milestones.\n\
                 # TYPE ordertrail_milestone_transition_seconds histogram\n\
                 # UNIT ordertrail_milestone_transition_seconds seconds\n\
                 ordertrail_milestone_transition_seconds_bucket{{to=\"shipped\",le=\"0.5\"}} 1\n\
                 ordertrail_milestone_transition_seconds_bucket{{to=\"shipped\",le=\"1.0\"}} 3 \
                 # {{trace_id=\"{trace}\",span_id=\"0102030405060708\"}} 0.75 1700000000.123\n\
                 ordertrail_milestone_transition_seconds_bucket{{to=\"shipped\",le=\"60.0\"}} 3\n\
                 ordertrail_milestone_transition_seconds_bucket{{to=\"shipped\",le=\"+Inf\"}} 4 \
                 # {{trace_id=\"{trace}\",span_id=\"0102030405060708\"}} 90.0 1700000001.0\n\
                 ordertrail_milestone_transition_seconds_sum{{to=\"shipped\"}} 92.0\n\
                 ordertrail_milestone_transition_seconds_count{{to=\"shipped\"}} 4\n\
                 # EOF\n"
            )
        );
    }

    #[test]
    fn the_latest_exemplar_per_bucket_wins_and_nan_is_ignored() {
        let registry = Registry::new(10);
        let h = registry.histogram("h_seconds", "", "seconds", &[], &[1.0]);
        h.observe(&[], 0.1, exemplar(1_000_000_000));
        h.observe(&[], 0.2, exemplar(2_000_000_000));
        h.observe(&[], f64::NAN, exemplar(3_000_000_000));
        let text = registry.render_openmetrics();
        assert!(text.contains("} 0.2 2.0\n"), "{text}");
        assert!(text.contains("h_seconds_count 2\n"), "{text}");
    }

    #[test]
    fn negative_observations_leave_out_sum_and_count_in_openmetrics_only() {
        let registry = Registry::new(10);
        let skew = registry.histogram("clock_skew_seconds", "", "seconds", &[], &[0.0, 1.0]);
        skew.observe(&[], -0.5, None);
        assert!(!registry.render_openmetrics().contains("clock_skew_seconds_sum"));
        assert!(registry.render_prometheus().contains("clock_skew_seconds_sum -0.5\n"));
        let point =
            match &metrics(&registry.to_otlp(Resource::default(), InstrumentationScope::default(), 1, 2))[0].data {
                Some(otlp::metric::Data::Histogram(h)) => h.data_points[0].clone(),
                other => panic!("expected a histogram, got {other:?}"),
            };
        assert_eq!((point.sum, point.min, point.count), (None, Some(-0.5), 1));
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let registry = Registry::new(10);
        let c = registry.counter("weird", "Back\\slash \"quoted\"\nnext line.", &["value"]);
        c.add(&["a\\b\"c\nd"], 1);
        let prometheus = registry.render_prometheus();
        assert!(prometheus.contains("# HELP weird_total Back\\\\slash \"quoted\"\\nnext line.\n"), "{prometheus}");
        assert!(prometheus.contains("weird_total{value=\"a\\\\b\\\"c\\nd\"} 1\n"), "{prometheus}");
        let openmetrics = registry.render_openmetrics();
        assert!(openmetrics.contains("# HELP weird Back\\\\slash \\\"quoted\\\"\\nnext line.\n"), "{openmetrics}");
    }

    #[test]
    fn new_label_sets_beyond_the_limit_go_to_one_overflow_series() {
        let registry = Registry::new(2);
        let c = registry.counter("orders", "", &["customer", "channel"]);
        c.add(&["c1", "edi"], 1);
        c.add(&["c2", "edi"], 1);
        c.add(&["c3", "edi"], 1);
        c.add(&["c4", "web"], 5);
        c.add(&["c1", "edi"], 1);
        assert_eq!(registry.overflowed(), 2);
        assert_eq!(
            registry.render_prometheus(),
            "# TYPE orders_total counter\n\
             orders_total{customer=\"c1\",channel=\"edi\"} 2\n\
             orders_total{customer=\"c2\",channel=\"edi\"} 1\n\
             orders_total{customer=\"\",channel=\"\",otel_metric_overflow=\"true\"} 6\n"
        );
        let request = registry.to_otlp(Resource::default(), InstrumentationScope::default(), 1, 2);
        let points = match &metrics(&request)[0].data {
            Some(otlp::metric::Data::Sum(sum)) => sum.data_points.clone(),
            other => panic!("expected a sum, got {other:?}"),
        };
        assert_eq!(points.len(), 3);
        assert_eq!(
            points[2].attributes.iter().map(attribute).collect::<Vec<_>>(),
            vec![(OVERFLOW_ATTRIBUTE.to_string(), Some(any_value::Value::BoolValue(true)))]
        );
    }

    #[test]
    fn registering_a_name_twice_returns_the_same_family() {
        let registry = Registry::new(10);
        registry.counter("orders", "", &["channel"]).add(&["edi"], 1);
        registry.counter("orders", "", &["channel"]).add(&["edi"], 1);
        assert!(registry.render_prometheus().contains("orders_total{channel=\"edi\"} 2\n"));
    }

    #[test]
    #[should_panic(expected = "registered twice with different definitions")]
    fn registering_a_name_with_another_kind_panics() {
        let registry = Registry::new(10);
        registry.counter("orders", "", &[]);
        registry.gauge("orders", "", &[]);
    }

    #[test]
    #[should_panic(expected = "same sample names")]
    fn clashing_sample_names_panic() {
        let registry = Registry::new(10);
        registry.counter("orders", "", &[]);
        registry.gauge("orders_total", "", &[]);
    }

    #[test]
    #[should_panic(expected = "invalid metric name")]
    fn an_invalid_name_panics() {
        Registry::new(10).gauge("orders-open", "", &[]);
    }

    #[test]
    #[should_panic(expected = "must end with its unit")]
    fn a_unit_must_end_the_name() {
        Registry::new(10).histogram("transition", "", "seconds", &[], &[1.0]);
    }

    #[test]
    fn otlp_carries_cumulative_sums_gauges_and_histograms_with_exemplars() {
        let registry = Registry::new(10);
        registry.counter("orders", "Orders.", &["channel"]).add(&["edi"], 3);
        registry.gauge("open", "Open.", &[]).set(&[], 4.5);
        let h = registry.histogram("transition_seconds", "Transitions.", "seconds", &["to"], &[1.0, 10.0]);
        h.observe(&["shipped"], 0.5, None);
        h.observe(&["shipped"], 5.0, exemplar(1_234));
        h.observe(&["shipped"], 7.0, None);
        h.observe(&["shipped"], 50.0, None);
        registry.gauge("unused", "", &["x"]);
        let resource = Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue { value: Some(any_value::Value::StringValue("ordertrail".into())) }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let request = registry.to_otlp(resource.clone(), InstrumentationScope::default(), 100, 200);
        assert_eq!(request.resource_metrics[0].resource, Some(resource));
        let metrics = metrics(&request);
        assert_eq!(
            metrics.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            ["orders", "open", "transition_seconds"]
        );

        let Some(otlp::metric::Data::Sum(sum)) = &metrics[0].data else { panic!("orders is not a sum") };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, otlp::AggregationTemporality::Cumulative as i32);
        let point = &sum.data_points[0];
        assert_eq!((point.start_time_unix_nano, point.time_unix_nano), (100, 200));
        assert_eq!(point.value, Some(otlp::number_data_point::Value::AsInt(3)));
        assert_eq!(
            point.attributes.iter().map(attribute).collect::<Vec<_>>(),
            vec![("channel".to_string(), Some(any_value::Value::StringValue("edi".into())))]
        );

        let Some(otlp::metric::Data::Gauge(gauge)) = &metrics[1].data else { panic!("open is not a gauge") };
        assert_eq!(gauge.data_points[0].value, Some(otlp::number_data_point::Value::AsDouble(4.5)));

        assert_eq!(metrics[2].unit, "s");
        let Some(otlp::metric::Data::Histogram(histogram)) = &metrics[2].data else {
            panic!("transition_seconds is not a histogram")
        };
        assert_eq!(histogram.aggregation_temporality, otlp::AggregationTemporality::Cumulative as i32);
        let point = &histogram.data_points[0];
        assert_eq!(point.explicit_bounds, vec![1.0, 10.0]);
        assert_eq!(point.bucket_counts, vec![1, 2, 1], "OTLP bucket counts are per bucket, not cumulative");
        assert_eq!((point.count, point.sum, point.min, point.max), (4, Some(62.5), Some(0.5), Some(50.0)));
        assert_eq!(point.exemplars.len(), 1);
        let exemplar = &point.exemplars[0];
        assert_eq!(exemplar.trace_id, TRACE.to_vec());
        assert_eq!(exemplar.span_id, SPAN.to_vec());
        assert_eq!(exemplar.time_unix_nano, 1_234);
        assert_eq!(exemplar.value, Some(otlp::exemplar::Value::AsDouble(5.0)));
    }

    #[test]
    fn floats_and_timestamps_use_canonical_forms() {
        assert_eq!(format_float(1.0), "1.0");
        assert_eq!(format_float(0.005), "0.005");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_timestamp(1_700_000_000_000_000_001), "1700000000.000000001");
        assert_eq!(format_timestamp(5_000_000_000), "5.0");
    }

    #[test]
    fn handles_are_send_sync_and_shared_between_clones() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Registry>();
        assert_send_sync::<Counter>();
        assert_send_sync::<Gauge>();
        assert_send_sync::<Histogram>();
        let registry = Registry::new(10);
        let c = registry.counter("orders", "", &[]);
        let clone = registry.clone();
        std::thread::spawn(move || c.add(&[], 2)).join().expect("the thread does not panic");
        assert!(clone.render_prometheus().contains("orders_total 2\n"));
    }
}
