//! `dimensions`: low-cardinality order attributes (customer, segment, warehouse) read from spans, used by SLA
//! overrides, API filters and metric labels.

use super::check::{is_snake_name, Checker, ConfigError};
use serde::{Deserialize, Serialize};

/// Most distinct values of a dimension used as metric labels when a dimension does not say.
const MAX_METRIC_VALUES: usize = 50;

fn default_max_metric_values() -> usize {
    MAX_METRIC_VALUES
}

/// An order attribute read from spans, e.g. the customer or the warehouse.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawDimension {
    /// Name used in SLA overrides, API filters and metric labels, e.g. `segment`; lower snake case.
    pub name: String,
    /// Span attributes holding the value, tried in order.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Resource attributes holding the value, tried after the span attributes.
    #[serde(default)]
    pub resource_attributes: Vec<String>,
    /// Whether the dimension labels the transition and exception metrics.
    #[serde(default)]
    pub metric_label: bool,
    /// Most distinct values used as metric labels; further values are reported as `other`.
    #[serde(default = "default_max_metric_values")]
    pub max_metric_values: usize,
}

/// An order attribute read from spans.
#[derive(Debug, Clone)]
pub struct Dimension {
    pub name: String,
    pub attributes: Vec<String>,
    pub resource_attributes: Vec<String>,
    pub metric_label: bool,
    pub max_metric_values: usize,
}

pub(crate) fn check_dimensions(check: &Checker<'_>, raw: &[RawDimension]) -> Result<Vec<Dimension>, ConfigError> {
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
            max_metric_values: check.positive(&format!("{key}.max_metric_values"), d.max_metric_values)?,
        });
    }
    Ok(out)
}
