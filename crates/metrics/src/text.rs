//! The text renderings: Prometheus exposition 0.0.4 and OpenMetrics 1.0 with exemplars. Label values and help
//! are escaped; the overflow series carries `otel_metric_overflow="true"`.

use super::{lock, Family, HistogramValue, Kind, Labels, Registry, Value, OVERFLOW_LABEL};
use std::fmt::Write;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Prometheus,
    OpenMetrics,
}

impl Registry {
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

    pub(crate) fn render(&self, format: Format) -> String {
        let mut out = String::new();
        for family in self.families() {
            family.render(&mut out, format);
        }
        out
    }
}

impl Family {
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
}

/// Label values are escaped alike in both formats, as is OpenMetrics help text.
pub(crate) fn escape_label_value(value: &str) -> String {
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
pub(crate) fn escape_help(help: &str, format: Format) -> String {
    match format {
        Format::OpenMetrics => escape_label_value(help),
        Format::Prometheus => help.replace('\\', "\\\\").replace('\n', "\\n"),
    }
}

/// Rust's shortest round-trip form (`1.0`, `0.005`, `1e-7`), which both text formats and OpenMetrics' canonical
/// `le` values accept, with the spellings of the infinities and NaN that Prometheus expects.
pub(crate) fn format_float(v: f64) -> String {
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
pub(crate) fn format_timestamp(unix_nanos: u64) -> String {
    let seconds = unix_nanos / 1_000_000_000;
    let nanos = unix_nanos % 1_000_000_000;
    let fraction = format!("{nanos:09}");
    let fraction = fraction.trim_end_matches('0');
    format!("{seconds}.{}", if fraction.is_empty() { "0" } else { fraction })
}
