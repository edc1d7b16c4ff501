//! `conformance` and `kpis`: checks that milestones happen in the taxonomy's order, and the span attributes that
//! carry the quantities behind the fill-rate KPI.

use super::check::{Checker, ConfigError};
use super::taxonomy::{ClassId, Taxonomy};
use serde::{Deserialize, Serialize};

/// Milestone order checks.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawConformance {
    /// Whether milestones reached out of the taxonomy's order are recorded as exceptions.
    pub enabled: bool,
    /// Exception class of an out-of-order milestone.
    pub exception_class: String,
}

impl Default for RawConformance {
    fn default() -> RawConformance {
        RawConformance { enabled: true, exception_class: "policy".into() }
    }
}

/// KPI inputs read from span attributes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawKpis {
    /// Span attributes with the quantity ordered, tried in order.
    pub ordered_quantity_attributes: Vec<String>,
    /// Span attributes with the cumulative quantity shipped, tried in order.
    pub shipped_quantity_attributes: Vec<String>,
}

impl Default for RawKpis {
    fn default() -> RawKpis {
        RawKpis {
            ordered_quantity_attributes: vec!["order.quantity.ordered".into()],
            shipped_quantity_attributes: vec!["order.quantity.shipped".into()],
        }
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

impl RawConformance {
    pub(crate) fn check(&self, check: &Checker<'_>, taxonomy: &Taxonomy) -> Result<ConformanceConfig, ConfigError> {
        let class = taxonomy.class_at(check, "conformance.exception_class".into(), &self.exception_class)?;
        Ok(ConformanceConfig { enabled: self.enabled, class })
    }
}

impl RawKpis {
    pub(crate) fn check(&self) -> KpiConfig {
        KpiConfig {
            ordered_quantity_attributes: self.ordered_quantity_attributes.clone(),
            shipped_quantity_attributes: self.shipped_quantity_attributes.clone(),
        }
    }
}
