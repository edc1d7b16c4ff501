//! The registry: families of counters, gauges and histograms, each holding a bounded number of series, rendered
//! as Prometheus text, as OpenMetrics text with exemplars, or as one OTLP metrics request.
//!
//! Metric and label names come from our code and are checked with assertions at registration, so a wrong name
//! fails the first test that registers it. Label values are user data (order channels, stages, systems): they
//! are escaped in the text formats and their number of distinct combinations is bounded per metric.
//!
//! This file holds the families and their series; `text` renders them as Prometheus and OpenMetrics text and
//! `otlp_export` as OTLP.

use std::collections::BTreeMap;
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

/// One series' labels: the family's names with this series' values, plus the overflow marker.
struct Labels<'a> {
    names: &'a [String],
    values: &'a [String],
    overflow: bool,
}

mod otlp_export;
mod text;

#[cfg(test)]
mod tests;
