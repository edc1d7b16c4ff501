//! The validated form of the accountability settings: order dimensions, SLA targets with their calendars,
//! conformance, KPI inputs, the API listeners and ordertrail's own metrics.

use super::raw::*;
use super::validated::{exporter_config_checked, is_snake_name, socket_addr, Checker};
use super::{ClassId, ConfigError, ExporterConfig, MilestoneId, Taxonomy};
use crate::calendar::{BusinessCalendar, WEEKDAYS};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// An order attribute read from spans.
#[derive(Debug, Clone)]
pub struct Dimension {
    pub name: String,
    pub attributes: Vec<String>,
    pub resource_attributes: Vec<String>,
    pub metric_label: bool,
    pub max_metric_values: usize,
}

#[derive(Debug, Clone)]
pub struct SlaConfig {
    pub targets: Vec<SlaTarget>,
    pub detection_delay: std::time::Duration,
}

/// A compiled SLA target: `to` within `within` of `from`.
#[derive(Debug, Clone)]
pub struct SlaTarget {
    pub name: String,
    pub from: MilestoneId,
    pub to: MilestoneId,
    pub within: Duration,
    pub calendar: Option<Arc<BusinessCalendar>>,
    pub class: ClassId,
    pub overrides: Vec<SlaOverride>,
}

#[derive(Debug, Clone)]
pub struct SlaOverride {
    pub dimension: String,
    pub values: Vec<String>,
    pub within: Duration,
    pub calendar: Option<Arc<BusinessCalendar>>,
}

impl SlaTarget {
    /// The allowance for an order with these dimension values: the first matching override, else the target's.
    pub fn allowance(&self, dimensions: &BTreeMap<String, String>) -> (Duration, Option<&BusinessCalendar>) {
        for o in &self.overrides {
            if dimensions.get(&o.dimension).is_some_and(|v| o.values.contains(v)) {
                return (o.within, o.calendar.as_deref().or(self.calendar.as_deref()));
            }
        }
        (self.within, self.calendar.as_deref())
    }

    /// The deadline of an order whose clock started at `start` (Unix nanoseconds).
    pub fn deadline(&self, start: u64, dimensions: &BTreeMap<String, String>) -> (u64, Duration) {
        let (within, calendar) = self.allowance(dimensions);
        let due = match calendar {
            Some(calendar) => calendar.add_working_time(start, within),
            None => start.saturating_add(u64::try_from(within.as_nanos()).unwrap_or(u64::MAX)),
        };
        (due, within)
    }
}

#[derive(Debug, Clone)]
pub struct ConformanceConfig {
    pub enabled: bool,
    pub class: ClassId,
}

#[derive(Debug, Clone)]
pub struct KpiConfig {
    pub ordered_quantity_attributes: Vec<String>,
    pub shipped_quantity_attributes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub http: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    pub max_page_size: usize,
    pub trace_url_template: Option<String>,
}

impl ApiConfig {
    /// The link to an order trace in the tracing UI, when a template is configured.
    pub fn trace_url(&self, trace_id: &str) -> Option<String> {
        self.trace_url_template.as_ref().map(|t| t.replace("{trace_id}", trace_id))
    }
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub max_series_per_metric: usize,
    pub max_coverage_routes: usize,
    pub push: Option<MetricsPushConfig>,
}

#[derive(Debug, Clone)]
pub struct MetricsPushConfig {
    pub export: ExporterConfig,
    pub interval: Duration,
}

pub(super) fn dimensions(check: &Checker, raw: &[RawDimension]) -> Result<Vec<Dimension>, ConfigError> {
    let mut out: Vec<Dimension> = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        let key = format!("dimensions[{i}]");
        if !is_snake_name(&d.name) {
            return Err(check.err(format!("{key}.name"), format!("`{}` must be lower snake case", d.name)));
        }
        if out.iter().any(|x| x.name == d.name) {
            return Err(check.err(format!("{key}.name"), format!("dimension `{}` is defined twice", d.name)));
        }
        if d.attributes.is_empty() && d.resource_attributes.is_empty() {
            return Err(check.err(key, "a dimension needs at least one attribute or resource attribute"));
        }
        out.push(Dimension {
            name: d.name.clone(),
            attributes: d.attributes.clone(),
            resource_attributes: d.resource_attributes.clone(),
            metric_label: d.metric_label,
            max_metric_values: check.positive(&format!("{key}.max_metric_values"), d.max_metric_values, 50)?,
        });
    }
    Ok(out)
}

fn calendar(check: &Checker, key: &str, raw: &RawCalendar) -> Result<BusinessCalendar, ConfigError> {
    let days = raw.working_days.clone().unwrap_or_else(|| WEEKDAYS[..5].iter().map(|d| d.to_string()).collect());
    BusinessCalendar::new(
        raw.time_zone.as_deref().unwrap_or("UTC"),
        &days,
        raw.working_hours.as_deref().unwrap_or("00:00-24:00"),
        &raw.holidays,
    )
    .map_err(|e| check.err(key, e.to_string()))
}

pub(super) fn sla(
    check: &Checker,
    raw: &RawSla,
    taxonomy: &Taxonomy,
    dimensions: &[Dimension],
) -> Result<SlaConfig, ConfigError> {
    let mut calendars = BTreeMap::new();
    for (name, c) in &raw.calendars {
        calendars.insert(name.clone(), Arc::new(calendar(check, &format!("sla.calendars.{name}"), c)?));
    }
    let find_calendar = |key: String, name: &Option<String>| -> Result<Option<Arc<BusinessCalendar>>, ConfigError> {
        match name {
            None => Ok(None),
            Some(n) => calendars
                .get(n)
                .cloned()
                .map(Some)
                .ok_or_else(|| check.err(key, format!("calendar `{n}` is not defined under sla.calendars"))),
        }
    };
    let find_class = |key: String, name: &str| {
        taxonomy
            .class(name)
            .ok_or_else(|| check.err(key, format!("`{name}` is not a class of taxonomy.exception_classes")))
    };
    let default_class = match &raw.exception_class {
        Some(name) => find_class("sla.exception_class".into(), name)?,
        None => taxonomy.execution,
    };
    let mut targets: Vec<SlaTarget> = Vec::new();
    for (i, t) in raw.targets.iter().enumerate() {
        let key = format!("sla.targets[{i}]");
        if !is_snake_name(&t.name) {
            return Err(check.err(format!("{key}.name"), format!("`{}` must be lower snake case", t.name)));
        }
        if targets.iter().any(|x| x.name == t.name) {
            return Err(check.err(format!("{key}.name"), format!("target `{}` is defined twice", t.name)));
        }
        let milestone = |field: &str, name: &str| {
            taxonomy.milestone(name).ok_or_else(|| {
                check.err(format!("{key}.{field}"), format!("`{name}` is not a milestone of taxonomy.milestones"))
            })
        };
        let (from, to) = (milestone("from", &t.from)?, milestone("to", &t.to)?);
        if from == to {
            return Err(check.err(format!("{key}.to"), "must differ from `from`"));
        }
        if t.within.is_zero() {
            return Err(check.err(format!("{key}.within"), "must be greater than zero"));
        }
        let class = match &t.exception_class {
            Some(name) => find_class(format!("{key}.exception_class"), name)?,
            None => default_class,
        };
        let mut overrides = Vec::new();
        for (j, o) in t.overrides.iter().enumerate() {
            let okey = format!("{key}.overrides[{j}]");
            if !dimensions.iter().any(|d| d.name == o.dimension) {
                return Err(check.err(
                    format!("{okey}.dimension"),
                    format!("`{}` is not a dimension defined under dimensions", o.dimension),
                ));
            }
            if o.values.is_empty() {
                return Err(check.err(format!("{okey}.values"), "must not be empty"));
            }
            if o.within.is_zero() {
                return Err(check.err(format!("{okey}.within"), "must be greater than zero"));
            }
            overrides.push(SlaOverride {
                dimension: o.dimension.clone(),
                values: o.values.clone(),
                within: o.within,
                calendar: find_calendar(format!("{okey}.calendar"), &o.calendar)?,
            });
        }
        targets.push(SlaTarget {
            name: t.name.clone(),
            from,
            to,
            within: t.within,
            calendar: find_calendar(format!("{key}.calendar"), &t.calendar)?,
            class,
            overrides,
        });
    }
    Ok(SlaConfig { targets, detection_delay: raw.detection_delay.unwrap_or(Duration::from_millis(500)) })
}

pub(super) fn conformance(
    check: &Checker,
    raw: &RawConformance,
    taxonomy: &Taxonomy,
) -> Result<ConformanceConfig, ConfigError> {
    let class = match &raw.exception_class {
        Some(name) => taxonomy.class(name).ok_or_else(|| {
            check.err("conformance.exception_class", format!("`{name}` is not a class of taxonomy.exception_classes"))
        })?,
        None => taxonomy.policy,
    };
    Ok(ConformanceConfig { enabled: raw.enabled.unwrap_or(true), class })
}

pub(super) fn kpis(raw: &RawKpis) -> KpiConfig {
    KpiConfig {
        ordered_quantity_attributes: raw
            .ordered_quantity_attributes
            .clone()
            .unwrap_or_else(|| vec!["order.quantity.ordered".into()]),
        shipped_quantity_attributes: raw
            .shipped_quantity_attributes
            .clone()
            .unwrap_or_else(|| vec!["order.quantity.shipped".into()]),
    }
}

pub(super) fn api(check: &Checker, raw: &RawApi) -> Result<ApiConfig, ConfigError> {
    let listener = |key: &str, raw: &RawApiListener, default: &str| -> Result<Option<SocketAddr>, ConfigError> {
        if !raw.enabled.unwrap_or(true) {
            return Ok(None);
        }
        socket_addr(check, &format!("{key}.endpoint"), raw.endpoint.as_deref().unwrap_or(default)).map(Some)
    };
    let max_page_size = check.positive("api.max_page_size", raw.max_page_size, 1000)?;
    if let Some(template) = &raw.trace_url_template {
        if !template.contains("{trace_id}") {
            return Err(check.err("api.trace_url_template", "must contain `{trace_id}`"));
        }
    }
    Ok(ApiConfig {
        http: listener("api.http", &raw.http, "0.0.0.0:8080")?,
        grpc: listener("api.grpc", &raw.grpc, "0.0.0.0:8081")?,
        max_page_size,
        trace_url_template: raw.trace_url_template.clone(),
    })
}

pub(super) fn metrics(check: &Checker, raw: &RawMetrics) -> Result<MetricsConfig, ConfigError> {
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
                ..Default::default()
            };
            let export = exporter_config_checked(check, "telemetry.metrics.otlp", "/v1/metrics", &exporter)?;
            let interval = m.interval.unwrap_or(Duration::from_secs(60));
            if interval < Duration::from_millis(100) {
                return Err(check.err("telemetry.metrics.otlp.interval", "must be at least 100ms"));
            }
            Some(MetricsPushConfig { export, interval })
        }
    };
    Ok(MetricsConfig {
        max_series_per_metric: check.positive(
            "telemetry.metrics.max_series_per_metric",
            raw.max_series_per_metric,
            2000,
        )?,
        max_coverage_routes: check.positive("telemetry.metrics.max_coverage_routes", raw.max_coverage_routes, 500)?,
        push,
    })
}
